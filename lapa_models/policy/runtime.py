"""Run an exported policy with ONNX Runtime: no torch, no transformers, no ROS.

    runtime = PolicyRuntime("artifacts/policy")                  # providers: TensorRT, CUDA, CPU if present
    embedding = runtime.encode_instruction("close the drawer")   # once per new instruction
    chunk = runtime.predict(image, embedding, state)             # every frame: (B, H, A) float32, robot units

At load the model card is checked before any file reaches ONNX Runtime: every file it lists exists with
its size and sha256, and each graph's input/output names, dtypes and shapes match the card; anything
else raises ``ModelCardError`` naming the file. Inputs are validated before ONNX Runtime sees them
(``PolicyInputError``: dtype, shape, empty or over-long instruction). A GPU execution provider that was
requested but did not load is reported loudly (``logging.warning`` and ``provider_warning``), judged from
the session's own provider list, not from what the installed build claims to have.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)

CARD_FILE = "model_card.json"
CARD_FORMAT = "lapa-policy-onnx"
SUPPORTED_CARD_VERSIONS = (1,)
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "rocm": "ROCMExecutionProvider", "openvino": "OpenVINOExecutionProvider",
             "coreml": "CoreMLExecutionProvider", "cpu": "CPUExecutionProvider"}
GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider"}
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")
# Bounds the exported graph accepts for image height and width.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 4096
_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(int64)": "int64",
              "tensor(float16)": "float16", "tensor(int32)": "int32"}


class ModelCardError(ValueError):
    """The export folder is incomplete, corrupt or inconsistent with its model card (names the file)."""


class PolicyInputError(ValueError):
    """An input the policy cannot take (wrong dtype or shape, empty or over-long instruction)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gpu_present() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists()


def load_card(export_dir: str | Path, verify_hashes: bool = True) -> Dict:
    """The model card of ``export_dir``, after checking that every file it lists is there and intact."""
    export_dir = Path(export_dir)
    path = export_dir / CARD_FILE
    if not export_dir.is_dir():
        raise ModelCardError(f"{export_dir}: export folder does not exist")
    if not path.is_file():
        raise ModelCardError(f"{path}: model card is missing (not an export folder, or the export did not finish)")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelCardError(f"{path}: corrupt model card ({e})") from e
    if card.get("format") != CARD_FORMAT or card.get("version") not in SUPPORTED_CARD_VERSIONS:
        raise ModelCardError(f"{path}: not a {CARD_FORMAT} card of a supported version "
                             f"(format={card.get('format')!r}, version={card.get('version')!r})")
    for key in ("graphs", "files", "action", "instruction", "image"):
        if key not in card:
            raise ModelCardError(f"{path}: model card has no '{key}' section")
    for name, meta in card["files"].items():
        f = export_dir / name
        if not f.is_file():
            raise ModelCardError(f"{f}: listed in the model card but missing")
        size = f.stat().st_size
        if size != meta.get("bytes"):
            raise ModelCardError(f"{f}: {size} bytes, the model card says {meta.get('bytes')} "
                                 f"({'truncated' if size < meta.get('bytes', 0) else 'a different file'}; re-export "
                                 "or copy it again)")
        if verify_hashes and _sha256(f) != meta.get("sha256"):
            raise ModelCardError(f"{f}: sha256 differs from the model card (corrupt, or from another export)")
    return card


class PolicyRuntime:
    """ONNX Runtime sessions for one export folder, with model-card checks and input validation.

    providers        order of preference: names ("tensorrt", "cuda", "cpu") or ORT provider names;
                     "auto" asks for TensorRT, CUDA and CPU where the installed build has them
    precision        "fp32" or "fp16" (the graphs have the same inputs and outputs)
    intra_op_threads CPU threads per session (None: ONNX Runtime's default, all physical cores)
    warmup           runs at load so the first real frame is not the slow one
    spin_wait        let idle worker threads spin between runs (ONNX Runtime's default). Off here: spinning
                     burns the CPU that camera and control nodes need, and on a loaded 2-core machine it
                     tripled the median frame time (10.5 ms vs 3.0 ms, 2 threads)
    """

    def __init__(self, export_dir: str | Path, providers: Union[str, Sequence[str]] = "auto",
                 precision: str = "fp32", intra_op_threads: Optional[int] = None, warmup: int = 3,
                 verify_hashes: bool = True, device_id: int = 0, trt_cache_dir: Optional[str] = None,
                 instruction_cache_size: int = 64, spin_wait: bool = False):
        import onnxruntime as ort

        self.export_dir = Path(export_dir)
        self.card = load_card(self.export_dir, verify_hashes)
        if precision not in self.card.get("precisions", ["fp32"]):
            raise ModelCardError(f"{self.export_dir / CARD_FILE}: no {precision} graphs in this export "
                                 f"(has {self.card.get('precisions')})")
        self.precision = precision
        self.device_id = device_id
        self.requested_providers = self._provider_list(providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.inter_op_num_threads = 1
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        # Providers the build lacks are left out here (ORT would only warn) and reported below.
        provider_args = [(p, self._provider_options(p, trt_cache_dir)) for p in self.requested_providers
                         if p in ort.get_available_providers()]
        graphs = self.card["graphs"]
        self.instruction_session = self._session("instruction_encoder", options, provider_args)
        self.policy_session = self._session("policy", options, provider_args)
        self.providers_in_use: List[str] = list(self.policy_session.get_providers())
        self.provider_warning: Optional[str] = self._check_providers(providers, ort.get_available_providers())
        self._io_binding = bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(self.providers_in_use))

        self.input_names = [i["name"] for i in graphs["policy"]["inputs"]]
        self.takes_state = "state" in self.input_names
        self.embedding_dim = int(graphs["policy"]["inputs"][1]["shape"][1])
        self.state_dim = int(next(i for i in graphs["policy"]["inputs"] if i["name"] == "state")["shape"][1]) \
            if self.takes_state else 0
        out_shape = graphs["policy"]["outputs"][0]["shape"]
        self.chunk_size, self.action_dim = int(out_shape[1]), int(out_shape[2])
        self.action_names: Optional[List[str]] = self.card["action"].get("names")
        self.control_rate_hz: Optional[float] = self.card["action"].get("control_rate_hz")
        self.model_image_size: Tuple[int, int] = tuple(self.card["image"]["model_size"])
        self.max_instruction_tokens = int(self.card["instruction"]["max_tokens"])
        self._tokenizer = self._load_tokenizer()
        self._embeddings: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._cache_size = instruction_cache_size
        for _ in range(max(0, warmup)):
            self._warm()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _provider_list(providers: Union[str, Sequence[str]], available: Sequence[str]) -> List[str]:
        if isinstance(providers, str):
            if providers != "auto":
                providers = [providers]
            else:
                return [PROVIDERS[p] for p in DEFAULT_PROVIDERS if PROVIDERS[p] in available]
        names = []
        for p in providers:
            name = PROVIDERS.get(p.lower(), p) if isinstance(p, str) else p
            if name not in PROVIDERS.values() and not str(name).endswith("ExecutionProvider"):
                raise ValueError(f"unknown execution provider {p!r}; use one of {sorted(PROVIDERS)} "
                                 "or an ONNX Runtime provider name")
            names.append(name)
        if "CPUExecutionProvider" not in names:
            names.append("CPUExecutionProvider")   # a session always needs a provider that can run every node
        return names

    def _provider_options(self, provider: str, trt_cache_dir: Optional[str]) -> Dict[str, str]:
        if provider == "CUDAExecutionProvider":
            return {"device_id": str(self.device_id)}
        if provider == "TensorrtExecutionProvider":
            opts = {"device_id": str(self.device_id), "trt_fp16_enable": str(self.precision == "fp16")}
            if trt_cache_dir:
                opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(trt_cache_dir))
            return opts
        return {}

    def _session(self, graph: str, options, provider_args):
        import onnxruntime as ort

        files = self.card["graphs"][graph].get("files", {})
        name = files.get(self.precision)
        if name is None:
            raise ModelCardError(f"{self.export_dir / CARD_FILE}: no {self.precision} file for graph '{graph}'")
        path = self.export_dir / name
        if not path.is_file():
            raise ModelCardError(f"{path}: graph '{graph}' is missing")
        if name not in self.card["files"]:
            raise ModelCardError(f"{path}: not listed (with its hash) in the model card")
        try:
            session = ort.InferenceSession(str(path), options, providers=[p for p, _ in provider_args],
                                           provider_options=[o for _, o in provider_args])
        except Exception as e:  # ORT raises its own exception types for unreadable graphs
            raise ModelCardError(f"{path}: ONNX Runtime cannot load this graph ({type(e).__name__}: {e})") from e
        self._check_signature(path, session, self.card["graphs"][graph])
        return session

    @staticmethod
    def _check_signature(path: Path, session, spec: Dict) -> None:
        for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
            expected = spec.get(kind, [])
            got = [(a.name, _ORT_TYPES.get(a.type, a.type), list(a.shape)) for a in actual]
            want = [(e["name"], e["dtype"], list(e["shape"])) for e in expected]
            if [g[:2] for g in got] != [w[:2] for w in want]:
                raise ModelCardError(f"{path}: {kind} {[g[:2] for g in got]} do not match the model card's "
                                     f"{[w[:2] for w in want]} (the file is not the one this card describes)")
            for (name, _, shape), (_, _, wanted) in zip(got, want):
                fixed_mismatch = len(shape) != len(wanted) or any(
                    isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(shape, wanted))
                if fixed_mismatch:
                    raise ModelCardError(f"{path}: {kind[:-1]} '{name}' has shape {shape}, the model card says "
                                         f"{wanted} (the file is not the one this card describes)")

    def _check_providers(self, requested: Union[str, Sequence[str]], available: Sequence[str]) -> Optional[str]:
        in_use = set(self.providers_in_use) | set(self.instruction_session.get_providers())
        missing = [p for p in self.requested_providers if p in GPU_PROVIDERS and p not in in_use]
        message = None
        if missing:
            not_built = [p for p in missing if p not in available]
            failed = [p for p in missing if p in available]
            reasons = []
            if not_built:
                reasons.append(f"{not_built} are not in this onnxruntime build (install onnxruntime-gpu, "
                               "not onnxruntime)")
            if failed:
                reasons.append(f"{failed} are in the build but failed to start (check the CUDA, cuDNN and "
                               "TensorRT libraries and the GPU driver)")
            message = (f"requested GPU execution provider(s) {missing} did NOT load; running on "
                       f"{self.providers_in_use}, per-frame latency will be far higher: " + "; ".join(reasons))
        elif requested == "auto" and not any(p in GPU_PROVIDERS for p in available) and _gpu_present():
            message = ("an NVIDIA GPU is present but this onnxruntime build has no GPU provider; running on CPU. "
                       "Install onnxruntime-gpu instead of onnxruntime to use it.")
        if message:
            log.warning("PolicyRuntime (%s): %s", self.export_dir, message)
        return message

    def _load_tokenizer(self):
        from tokenizers import Tokenizer

        path = self.export_dir / self.card["instruction"].get("tokenizer", "tokenizer.json")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for unreadable files
            raise ModelCardError(f"{path}: cannot read the tokenizer ({e})") from e
        tok.no_truncation()   # over-long instructions are an error, never silently cut
        tok.no_padding()
        return tok

    def _warm(self) -> None:
        h, w = self.model_image_size
        feeds = {"image": np.zeros((1, h, w, 3), np.uint8),
                 "instruction_embedding": np.zeros((1, self.embedding_dim), np.float32)}
        if self.takes_state:
            feeds["state"] = np.zeros((1, self.state_dim), np.float32)
        self._run_policy(feeds)

    # ------------------------------------------------------------------ instruction
    def tokenize(self, instruction: str) -> Tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int64 (1, tokens); raises PolicyInputError if empty or over-long."""
        if not isinstance(instruction, str):
            raise PolicyInputError(f"instruction must be a str, got {type(instruction).__name__}")
        if not instruction.strip():
            raise PolicyInputError("instruction is empty")
        ids = self._tokenizer.encode(instruction).ids
        if len(ids) > self.max_instruction_tokens:
            raise PolicyInputError(f"instruction has {len(ids)} tokens, more than the encoder's limit of "
                                   f"{self.max_instruction_tokens}: shorten it ({instruction[:60]!r}...)")
        input_ids = np.asarray([ids], dtype=np.int64)
        return input_ids, np.ones_like(input_ids)

    def encode_instruction(self, instruction: str) -> np.ndarray:
        """float32 (E,) embedding of one instruction (cached: re-encoding the same text is free)."""
        cached = self._embeddings.get(instruction)
        if cached is not None:
            self._embeddings.move_to_end(instruction)
            return cached
        input_ids, mask = self.tokenize(instruction)
        embedding = self.instruction_session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0][0]
        embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        embedding.setflags(write=False)
        self._embeddings[instruction] = embedding
        if len(self._embeddings) > self._cache_size:
            self._embeddings.popitem(last=False)
        return embedding

    # ------------------------------------------------------------------ per frame
    def _validate(self, image, instruction_embedding, state) -> Dict[str, np.ndarray]:
        if not isinstance(image, np.ndarray):
            raise PolicyInputError(f"image must be a numpy uint8 array (H, W, 3) or (B, H, W, 3), "
                                   f"got {type(image).__name__}")
        if image.dtype != np.uint8:
            hint = (" (a float image in [0, 1]? convert with (image * 255).round().astype(np.uint8))"
                    if np.issubdtype(image.dtype, np.floating) else "")
            raise PolicyInputError(f"image must be uint8 RGB, got dtype {image.dtype}{hint}")
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[-1] != 3:
            hint = ""
            if image.ndim == 4 and image.shape[1] == 3:
                hint = " (channels-first? transpose to (H, W, 3))"
            elif image.ndim == 4 and image.shape[-1] == 4:
                hint = " (RGBA? drop the alpha channel)"
            elif image.ndim == 4 and image.shape[-1] == 1:
                hint = " (greyscale? the policy needs RGB)"
            raise PolicyInputError(f"image must be (H, W, 3) or (B, H, W, 3) RGB, got shape {image.shape}{hint}")
        b, h, w, _ = image.shape
        if b < 1 or not (MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE):
            raise PolicyInputError(f"image of shape {image.shape}: need a batch >= 1 and height/width in "
                                   f"[{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}]")
        feeds = {"image": np.ascontiguousarray(image),
                 "instruction_embedding": self._batch_vector(instruction_embedding, "instruction_embedding",
                                                             self.embedding_dim, b)}
        if self.takes_state:
            if state is None:
                raise PolicyInputError(f"this policy needs the robot state ({self.state_dim} values: "
                                       f"{(self.card.get('state') or {}).get('names')})")
            feeds["state"] = self._batch_vector(state, "state", self.state_dim, b)
        elif state is not None:
            raise PolicyInputError("this policy takes no robot state; pass state=None")
        return feeds

    @staticmethod
    def _batch_vector(value, name: str, dim: int, batch: int) -> np.ndarray:
        try:
            arr = np.asarray(value)
        except Exception as e:  # ragged lists and the like
            raise PolicyInputError(f"{name}: not an array ({e})") from e
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise PolicyInputError(f"{name} must be numeric, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise PolicyInputError(f"{name} must be ({dim},) or (B, {dim}), got shape {arr.shape}")
        if arr.shape[0] not in (1, batch):
            raise PolicyInputError(f"{name} has batch {arr.shape[0]}, the image batch is {batch}")
        if not np.all(np.isfinite(arr)):
            raise PolicyInputError(f"{name} contains NaN or Inf")
        arr = arr.astype(np.float32, copy=False)
        return np.ascontiguousarray(np.broadcast_to(arr, (batch, dim)))

    def _run_policy(self, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        if not self._io_binding:
            return self.policy_session.run(None, feeds)[0]
        # GPU: inputs are copied to the device once, the output is bound on the device and copied back.
        binding = self.policy_session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output("actions", "cuda", self.device_id)
        self.policy_session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def predict(self, image: np.ndarray, instruction_embedding: np.ndarray,
                state: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 (B, H, A) action chunk in robot units for uint8 RGB (H, W, 3) or (B, H, W, 3) images.

        ``instruction_embedding``: (E,) or (B, E) from ``encode_instruction``; ``state``: (S,) or (B, S)."""
        return self._run_policy(self._validate(image, instruction_embedding, state))

    def act(self, image: np.ndarray, instruction: str, state: Optional[np.ndarray] = None) -> np.ndarray:
        """(H, A) chunk for one frame and an instruction text (its embedding is cached)."""
        if isinstance(image, np.ndarray) and image.ndim == 4 and image.shape[0] != 1:
            raise PolicyInputError(f"act() takes one frame, got a batch of {image.shape[0]}: use predict()")
        return self.predict(image, self.encode_instruction(instruction), state)[0]

    def describe(self) -> Dict:
        return {"export_dir": str(self.export_dir), "precision": self.precision,
                "providers_in_use": self.providers_in_use, "provider_warning": self.provider_warning,
                "chunk_size": self.chunk_size, "action_names": self.action_names,
                "control_rate_hz": self.control_rate_hz, "takes_state": self.takes_state,
                "model_image_size": list(self.model_image_size), "cpu_count": os.cpu_count()}
