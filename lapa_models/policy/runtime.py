"""Run an exported policy with ONNX Runtime: no torch, no transformers, no ROS.

    runtime = PolicyRuntime("artifacts/policy")                  # providers: TensorRT, CUDA, CPU if present
    embedding = runtime.encode_instruction("close the drawer")   # once per new instruction
    chunk = runtime.predict(image, embedding, state)             # every frame: (B, H, A) float32, robot units

At load the model card is checked before any file reaches ONNX Runtime: its fields are there with the right
types; every file it lists exists with its size and sha256; every graph's inputs and outputs (names, dtypes,
ranks, fixed dimensions) and the sizes the card restates (embedding, state, action, chunk, image) agree with
the ONNX graph itself; action/state names fit their dimensions, the control rate is in (0, 1000] Hz and the
normalization statistics are finite, within +-1e6, with std > 0 and min <= mean <= max
(``check_card_against_graph``; also with ``verify_hashes=False``, and the card itself is not hashed). Anything
else raises one ``ModelCardError`` line naming the file or field and saying what to do.

Inputs are validated before ONNX Runtime sees them (``PolicyInputError``: dtype, shape, empty or over-long
instruction). A GPU execution provider that was requested but did not load is reported loudly
(``logging.warning`` and ``provider_warning``), judged from the session's own provider list, not from what the
installed build claims to have.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import reprlib
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..data.robot_state import GripperMapping

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
GRAPHS = ("instruction_encoder", "policy")
# Sanity bounds for a model card. Statistics are in robot units (metres, radians, m/s, gripper 0..1): a mean,
# min, max, quantile, bin edge or std beyond 1e6 is an edited card or broken data, never a real robot.
# std must be > 0 (export floors it at 1e-3). A control loop faster than 1 kHz is beyond any arm's.
MAX_STAT_MAGNITUDE = 1e6
MAX_CONTROL_RATE_HZ = 1000.0
FIX = "re-export the policy (lapa policy export) or restore the model_card.json written with it"


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


# ============================================================================ model card checks
_MISSING = object()


def _fail(where: str, field: str, problem: str):
    raise ModelCardError(f"{where}: {field} {problem}; {FIX}")


def _lookup(card, field: str, default=_MISSING):
    value = card
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def _field(card: Dict, field: str, ok, expected: str, where: str, optional: bool = False):
    """card[field] (dotted path) after ``ok(value)``; None when ``optional`` and it is missing or null."""
    value = _lookup(card, field, None if optional else _MISSING)
    if value is _MISSING:
        _fail(where, field, f"is missing (expected {expected})")
    if value is None and optional:
        return None
    if not ok(value):
        _fail(where, field, f"is {reprlib.repr(value)}, expected {expected}")
    return value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v) -> bool:
    return _is_int(v) and v > 0


def _numbers(v, ndim: int) -> bool:
    if ndim == 0:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, list) and all(_numbers(x, ndim - 1) for x in v)


def _strings(n: int):
    return lambda v: isinstance(v, list) and len(v) == n and all(isinstance(x, str) for x in v)


def _tensors(v) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("dtype"), str)
        and isinstance(t.get("shape"), list) and all(_is_int(d) or isinstance(d, str) for d in t["shape"])
        for t in v)


def _control_rate(v) -> bool:
    return _numbers(v, 0) and 0 < v <= MAX_CONTROL_RATE_HZ   # False for NaN


def _stat(card: Dict, field: str, shape: Tuple, where: str, optional: bool = False) -> Optional[np.ndarray]:
    """A statistic of ``shape`` (None: any length), finite and within +-MAX_STAT_MAGNITUDE."""
    value = _field(card, field, lambda v: _numbers(v, len(shape)), f"a {len(shape)}-d list of numbers", where,
                   optional)
    if value is None:
        return None
    rows = {len(r) for r in value} if len(shape) == 2 else set()
    got = [len(value)] + sorted(rows)
    if len(rows) > 1 or any(w is not None and g != w for g, w in zip(got, shape)):
        _fail(where, field, f"has shape {got if len(rows) <= 1 else 'ragged'}, expected "
                            f"{['any' if w is None else w for w in shape]} (one per dimension)")
    a = np.asarray(value, np.float64)
    bad = ~(np.abs(a) <= MAX_STAT_MAGNITUDE)      # NaN too
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), a.shape)
        _fail(where, f"{field}{list(map(int, i))}", f"is {a[i]:g}, expected a finite number within "
                                                     f"+-{MAX_STAT_MAGNITUDE:g}")
    return a


def _require(where: str, field: str, values: np.ndarray, ok: np.ndarray, expected: str) -> None:
    if not np.all(ok):
        i = int(np.argmin(ok))
        _fail(where, f"{field}[{i}]", f"is {values[i]:g}, expected {expected}")


def _check_stats(card: Dict, kind: str, dim: int, where: str) -> None:
    """mean/std/min/max of ``kind`` ("action" or "state"): length ``dim``, finite, std > 0, min <= mean <= max."""
    p = f"normalization.{kind}_"
    mean, std, lo, hi = (_stat(card, p + k, (dim,), where) for k in ("mean", "std", "min", "max"))
    _require(where, p + "std", std, std > 0, "> 0 (a spread of zero cannot normalize)")
    _require(where, p + "min", lo, lo <= hi, f"<= {kind}_max")
    slack = 1e-6 * (1 + np.maximum(np.abs(lo), np.abs(hi)))    # float32 rounding of a constant dimension's mean
    _require(where, p + "mean", mean, (lo - slack <= mean) & (mean <= hi + slack), f"within [{kind}_min, {kind}_max]")


def _check_action_extras(card: Dict, dim: int, where: str) -> None:
    """Quantiles and bin edges: optional, but sane when present (the bins head needs its edges)."""
    q01, q99 = (_stat(card, f"normalization.action_{q}", (dim,), where, optional=True) for q in ("q01", "q99"))
    if q01 is not None and q99 is not None:
        _require(where, "normalization.action_q01", q01, q01 <= q99, "<= action_q99")
    bins = card["action"]["head"] == "bins"
    num_bins = _field(card, "action.num_bins", _positive_int, "a positive integer (bins head)", where) if bins else None
    edges = _stat(card, "normalization.bin_edges", (dim, num_bins + 1 if bins else None), where, optional=not bins)
    unsorted = np.flatnonzero(np.any(np.diff(edges, axis=1) < 0, axis=1)) if edges is not None else []
    if len(unsorted):
        _fail(where, f"normalization.bin_edges[{unsorted[0]}]", "is not sorted ascending")


def _check_structure(card: Dict, where: str) -> None:
    """The fields every later check reads are there, with the right types (sizes: positive integers)."""
    if not isinstance(card, dict):
        _fail(where, "the model card", f"is a {type(card).__name__}, expected a JSON object")
    _field(card, "files", lambda v: isinstance(v, dict) and all(
        isinstance(m, dict) and isinstance(m.get("sha256"), str) and _is_int(m.get("bytes")) for m in v.values()),
        "{file name: {sha256, bytes}}", where)
    precisions = _field(card, "precisions", lambda v: isinstance(v, list) and bool(v) and all(
        p in ("fp32", "fp16") for p in v), "a non-empty list of 'fp32'/'fp16'", where)
    for graph in GRAPHS:
        _field(card, f"graphs.{graph}.files", lambda v: isinstance(v, dict) and all(
            isinstance(v.get(p), str) for p in precisions), f"a file name for each of {precisions}", where)
        for kind in ("inputs", "outputs"):
            _field(card, f"graphs.{graph}.{kind}", _tensors, "a list of {name, dtype, shape}", where)
    _field(card, "image.model_size", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_positive_int, v)),
           "[height, width], positive integers", where)
    sizes = ["instruction.embedding_dim", "instruction.max_tokens", "action.dim", "action.chunk_size"]
    for field in sizes + (["state.dim"] if _lookup(card, "state", None) is not None else []):
        _field(card, field, _positive_int, "a positive integer", where)
    _field(card, "instruction.tokenizer", lambda v: isinstance(v, str) and bool(v), "a file name", where)
    _field(card, "action.head", lambda v: v in ("continuous", "bins"), "'continuous' or 'bins'", where)


def _check_contents(card: Dict, where: str) -> None:
    """Names, control rate and normalization statistics (after ``_check_structure``)."""
    dim = card["action"]["dim"]
    _field(card, "action.names", _strings(dim), f"null or a list of {dim} names (action.dim)", where, optional=True)
    _field(card, "action.control_rate_hz", _control_rate, f"null or a number in (0, {MAX_CONTROL_RATE_HZ:g}] Hz",
           where, optional=True)
    _check_stats(card, "action", dim, where)
    _check_action_extras(card, dim, where)
    if card.get("state") is not None:
        state_dim = card["state"]["dim"]
        _field(card, "state.names", _strings(state_dim), f"null or a list of {state_dim} names (state.dim)", where,
               optional=True)
        _check_stats(card, "state", state_dim, where)
        gripper = card["state"].get("gripper")
        if gripper is not None:
            try:
                GripperMapping.from_json(gripper, "state.gripper")
            except ValueError as e:
                raise ModelCardError(f"{where}: {e}; {FIX}") from None


# Card fields that restate a dimension of a graph: (field, graph, tensor, axis).
_CARD_DIMS = (("instruction.embedding_dim", "instruction_encoder", "instruction_embedding", 1),
              ("instruction.embedding_dim", "policy", "instruction_embedding", 1),
              ("action.chunk_size", "policy", "actions", 1),
              ("action.dim", "policy", "actions", 2),
              ("state.dim", "policy", "state", 1))


def _graph_dim(signature: Dict, tensor: str, axis: int):
    shapes = {t["name"]: t["shape"] for t in signature["inputs"] + signature["outputs"]}
    shape = shapes.get(tensor, [])
    return shape[axis] if axis < len(shape) else None


def _check_tensors(card_tensors: List[Dict], graph_tensors: List[Dict], field: str, file: str) -> None:
    want = [(t["name"], t["dtype"]) for t in card_tensors]
    got = [(t["name"], t["dtype"]) for t in graph_tensors]
    if got != want:
        raise ModelCardError(f"{file}: (name, dtype) {got} do not match the model card's {field} {want}; {FIX}")
    for card_t, graph_t in zip(card_tensors, graph_tensors):
        wanted, shape = card_t["shape"], graph_t["shape"]
        # A fixed graph dimension must be restated exactly; a dynamic one (batch, height...) may be named anything.
        if len(shape) != len(wanted) or any(_is_int(g) and g != w for g, w in zip(shape, wanted)):
            raise ModelCardError(f"{file}: {field} '{graph_t['name']}' has shape {shape} in the graph but "
                                 f"{wanted} in the model card; {FIX}")


def check_card_against_graph(card: Dict, graphs: Dict[str, Dict], where: str = CARD_FILE) -> None:
    """Check that ``card`` describes ``graphs`` ({graph name: ``read_graph_signature``}): types, then every
    input/output and restated size against the graphs, then names, control rate and normalization statistics.

    Plain dicts and lists, no ONNX needed: a signature is {"inputs": [{name, dtype, shape}], "outputs": [...],
    "image_size": [h, w] or None, "file": name for messages}; shape entries are int (fixed) or str/None (dynamic)."""
    _check_structure(card, where)
    for graph in GRAPHS:
        signature = graphs[graph]
        for kind in ("inputs", "outputs"):
            _check_tensors(card["graphs"][graph][kind], signature[kind], f"graphs.{graph}.{kind}",
                           signature.get("file", graph))
    restated = [(field, _lookup(card, field, None), _graph_dim(graphs[graph], tensor, axis),
                 f"{graphs[graph].get('file', graph)} ('{tensor}' axis {axis})")
                for field, graph, tensor, axis in _CARD_DIMS]
    if graphs["policy"].get("image_size") is not None:
        restated.append(("image.model_size", card["image"]["model_size"], list(graphs["policy"]["image_size"]),
                         f"{graphs['policy'].get('file', 'policy')} (the size its Resize produces)"))
    for field, card_value, graph_value, source in restated:
        if card_value != graph_value:
            raise ModelCardError(f"{where}: {field} is {card_value!r} in the model card but {graph_value!r} in the "
                                 f"graph {source}; {FIX}")
    _check_contents(card, where)


def _onnx_dtype(elem_type: int) -> str:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return f"onnx type {elem_type}"


def _onnx_shape(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _onnx_tensor(value_info) -> Dict:
    return {"name": value_info.name, "dtype": _onnx_dtype(value_info.type.tensor_type.elem_type),
            "shape": _onnx_shape(value_info)}


def read_graph_signature(path: Path) -> Dict:
    """What ``check_card_against_graph`` compares, read from the ONNX file (weights not loaded): inputs and
    outputs, and the fixed (h, w) of the graph's first Resize (the image resize of the policy graph), if any."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # protobuf raises its own DecodeError for a corrupt file
        raise ModelCardError(f"{path}: not a readable ONNX graph ({type(e).__name__}: {e}); {FIX}") from e
    weights = {i.name for i in graph.initializer}
    shapes = {v.name: _onnx_shape(v) for v in graph.value_info}
    resize = next((n.output[0] for n in graph.node if n.op_type == "Resize"), None)
    size = shapes.get(resize, [])[-2:]
    return {"file": str(path),
            "inputs": [_onnx_tensor(v) for v in graph.input if v.name not in weights],
            "outputs": [_onnx_tensor(v) for v in graph.output],
            "image_size": size if len(size) == 2 and all(map(_positive_int, size)) else None}


def load_card(export_dir: str | Path, verify_hashes: bool = True) -> Dict:
    """The model card of ``export_dir``, after checking that every file it lists is there and intact (sha256:
    ``verify_hashes``) and that the card describes its graphs (always: the card itself is not hashed)."""
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
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or \
            card.get("version") not in SUPPORTED_CARD_VERSIONS:
        raise ModelCardError(f"{path}: not a {CARD_FORMAT} card of a supported version (format="
                             f"{_lookup(card, 'format', None)!r}, version={_lookup(card, 'version', None)!r})")
    _check_structure(card, str(path))
    _check_files(export_dir, card, verify_hashes)
    for precision in card["precisions"]:
        check_card_against_graph(card, {g: read_graph_signature(_graph_path(export_dir, card, g, precision))
                                        for g in GRAPHS}, str(path))
    return card


def _check_files(export_dir: Path, card: Dict, verify_hashes: bool) -> None:
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


def _graph_path(export_dir: Path, card: Dict, graph: str, precision: str) -> Path:
    """The file of ``graph`` at ``precision``; it must be listed (so size- and hash-checked) in the card."""
    name = card["graphs"][graph]["files"][precision]
    if name not in card["files"]:
        raise ModelCardError(f"{export_dir / name}: not listed (with its hash) in the model card")
    return export_dir / name


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
    log_warnings     also log ``provider_warning`` through Python logging (a caller that reports it itself,
                     as the policy node does on its ROS log and /diagnostics, passes False)
    """

    def __init__(self, export_dir: str | Path, providers: Union[str, Sequence[str]] = "auto",
                 precision: str = "fp32", intra_op_threads: Optional[int] = None, warmup: int = 3,
                 verify_hashes: bool = True, device_id: int = 0, trt_cache_dir: Optional[str] = None,
                 instruction_cache_size: int = 64, spin_wait: bool = False, log_warnings: bool = True):
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
        if self.provider_warning and log_warnings:
            log.warning("PolicyRuntime (%s): %s", self.export_dir, self.provider_warning)
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
        camera = self.card["image"].get("camera_size")   # the camera frames it was trained on (H, W)
        self.trained_frame_size: Optional[Tuple[int, int]] = tuple(camera) if camera else None
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

        path = _graph_path(self.export_dir, self.card, graph, self.precision)   # checked by load_card
        try:
            session = ort.InferenceSession(str(path), options, providers=[p for p, _ in provider_args],
                                           provider_options=[o for _, o in provider_args])
        except Exception as e:  # ORT raises its own exception types for unreadable graphs
            raise ModelCardError(f"{path}: ONNX Runtime cannot load this graph ({type(e).__name__}: {e})") from e
        return session

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

    def frame_size_problem(self, height: int, width: int) -> Optional[str]:
        """Why camera frames of this size differ from what the policy was trained on (another aspect
        ratio: the graph squashes both to its square input, so the policy sees a distorted scene), or None."""
        from lapa_models.data.frame_size import ASPECT_TOLERANCE, aspect_change

        if not self.trained_frame_size or aspect_change((height, width), self.trained_frame_size) <= ASPECT_TOLERANCE:
            return None
        th, tw = self.trained_frame_size
        return (f"camera frames are {height}x{width} (H x W, aspect {width / height:.2f}) but the policy "
                f"{self.export_dir.name} was trained on {th}x{tw} (aspect {tw / th:.2f}): it sees a distorted "
                "scene; set the camera to the training aspect ratio")

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
