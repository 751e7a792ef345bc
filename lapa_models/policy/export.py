"""Export a finetuned policy to ONNX, split by how often each part runs, with a model card beside it.

    lapa policy export --checkpoint runs/policy/finetune/final --out artifacts/policy

Writes into ``--out``:

    instruction_encoder.onnx       input_ids, attention_mask (int64, batch x tokens) -> instruction_embedding
                                   (float32, batch x E); runs once per new instruction
    policy.onnx                    image (uint8, batch x height x width x 3 RGB, any size: resized to the model's
                                   size and normalized inside the graph), instruction_embedding (float32,
                                   batch x E)[, state (float32, batch x S, robot units)] -> actions (float32,
                                   batch x H x A, robot units: de-normalized inside the graph); every frame
    *_fp16.onnx                    the same graphs computing in float16 (inputs and outputs stay as above)
    tokenizer.json, ...            so the runtime tokenizes without transformers
    model_card.json                names, shapes, dtypes, action space, normalization, chunk length, control
                                   rate, opset, versions, parity with PyTorch, sha256 of every file

Parity with PyTorch is checked at export on ONNX Runtime (CPU): fp32 within ``--atol`` (1e-4) in robot
units, fp16 within a fraction of each action's range; the export fails loudly otherwise.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .modeling import LapaPolicy

log = logging.getLogger(__name__)

CARD_FILE = "model_card.json"
CARD_FORMAT = "lapa-policy-onnx"
CARD_VERSION = 1
INSTRUCTION_GRAPH = "instruction_encoder"
POLICY_GRAPH = "policy"
# Above this many bytes of weights a graph keeps them in a side file (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1_500_000_000
PARITY_INSTRUCTIONS = ("reach the goal", "push the drawer shut", "press down on the red button from above")


class ExportParityError(RuntimeError):
    """ONNX Runtime disagrees with PyTorch beyond the tolerance."""


# ============================================================================ graphs
class InstructionEncoderGraph(nn.Module):
    """input_ids, attention_mask -> float32 instruction embedding."""

    def __init__(self, policy: LapaPolicy):
        super().__init__()
        self.encoder = policy.instruction_encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask).float()


class PerFrameGraph(nn.Module):
    """uint8 image (B, H, W, 3) + embedding (B, E) [+ state (B, S)] -> actions (B, H, A) in robot units."""

    def __init__(self, policy: LapaPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, image: torch.Tensor, instruction_embedding: torch.Tensor,
                state: Optional[torch.Tensor] = None) -> torch.Tensor:
        pixels = self.policy.prepare_images(image, always_resize=True)
        queries = self.policy.fuse(pixels, instruction_embedding, state)
        return self.policy.decode_actions(self.policy.action_outputs(queries))


def _param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _export_graph(module: nn.Module, args: tuple, path: Path, input_names: List[str], output_names: List[str],
                  dynamic_shapes: Dict, opset: Optional[int], external_data: str) -> None:
    external = external_data == "yes" or (external_data == "auto" and _param_bytes(module) > EXTERNAL_DATA_BYTES)
    for stale in (path, path.with_name(path.name + ".data")):
        if stale.exists():
            stale.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the exporter's deprecation chatter, not the user's concern
        kwargs = dict(dynamo=True, external_data=external, input_names=input_names, output_names=output_names,
                      dynamic_shapes=dynamic_shapes, verbose=False)
        if opset:
            kwargs["opset_version"] = opset
        _quiet_exporter()
        torch.onnx.export(module, args, str(path), **kwargs)


def _quiet_exporter() -> None:
    for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ============================================================================ parity
def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()   # the caller's CPU budget, as for torch
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _parity_inputs(policy: LapaPolicy, sample_images: Optional[np.ndarray],
                   seed: int = 0) -> List[Dict[str, np.ndarray]]:
    """Feeds for the per-frame graph: batch 1 and 3, model size and a 640x480 camera size."""
    rng = np.random.default_rng(seed)
    cfg = policy.config
    with torch.no_grad():
        emb = policy.encode_instructions(list(PARITY_INSTRUCTIONS)).numpy().astype(np.float32)
    feeds = []
    s = cfg.image_size
    for batch, (h, w) in ((1, (s, s)), (3, (s, s)), (1, (480, 640)), (2, (s + 16, s + 24))):
        if sample_images is not None and sample_images.shape[1:3] == (h, w) and len(sample_images) >= batch:
            images = np.ascontiguousarray(sample_images[rng.choice(len(sample_images), batch, replace=False)])
        else:
            images = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        feed = {"image": images, "instruction_embedding": emb[rng.integers(0, len(emb), batch)]}
        if cfg.state_dim:
            stats = policy.stats
            feed["state"] = (stats.state_mean + stats.state_std * rng.standard_normal((batch, cfg.state_dim))
                             ).astype(np.float32)
        feeds.append(feed)
    if sample_images is not None and sample_images.shape[1:3] not in [(f["image"].shape[1:3]) for f in feeds]:
        feed = dict(feeds[0])
        feed["image"] = np.ascontiguousarray(sample_images[:1])
        feeds.append(feed)
    return feeds


def _torch_actions(policy: LapaPolicy, feed: Dict[str, np.ndarray]) -> np.ndarray:
    graph = PerFrameGraph(policy)
    with torch.no_grad():
        return graph(*[torch.from_numpy(feed[k]) for k in _policy_input_names(policy)]).numpy()


def _policy_input_names(policy: LapaPolicy) -> List[str]:
    return ["image", "instruction_embedding"] + (["state"] if policy.config.state_dim else [])


def check_parity(policy: LapaPolicy, out: Path, files: Dict[str, Dict[str, str]], atol: float,
                 fp16_range_fraction: float, sample_images: Optional[np.ndarray]) -> Dict[str, Dict]:
    """Run every exported graph on ONNX Runtime and compare with PyTorch fp32; raise on a mismatch."""
    report: Dict[str, Dict] = {}
    tokens = policy.tokenize(list(PARITY_INSTRUCTIONS))
    ids, mask = tokens["input_ids"].numpy(), tokens["attention_mask"].numpy()
    with torch.no_grad():
        ref_emb = policy.instruction_encoder(tokens["input_ids"], tokens["attention_mask"]).float().numpy()
    feeds = _parity_inputs(policy, sample_images)
    ref_actions = [_torch_actions(policy, f) for f in feeds]
    stats = policy.stats
    action_range = np.maximum(stats.action_max - stats.action_min, 1e-6)
    bins = policy.config.action_head == "bins"
    failures = []
    for precision, names in files.items():
        sess = _ort_session(out / names[INSTRUCTION_GRAPH])
        emb = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        emb_diff = float(np.abs(emb - ref_emb).max())
        emb_tol = atol if precision == "fp32" else 2e-2
        report[f"{INSTRUCTION_GRAPH}.{precision}"] = {"max_abs_diff": emb_diff, "tolerance": emb_tol}
        if not emb_diff <= emb_tol:
            failures.append(f"{names[INSTRUCTION_GRAPH]}: max |ORT - torch| = {emb_diff:.3g} > {emb_tol:g}")
        sess = _ort_session(out / names[POLICY_GRAPH])
        diffs, agree = [], []
        for feed, ref in zip(feeds, ref_actions):
            got = sess.run(None, feed)[0]
            if got.shape != ref.shape:
                failures.append(f"{names[POLICY_GRAPH]}: output shape {got.shape}, torch {ref.shape}")
                continue
            diffs.append(np.abs(got - ref).max(axis=(0, 1)))
            agree.append(float(np.mean(np.isclose(got, ref, atol=1e-5))))
        if not diffs:
            continue
        per_dim = np.max(diffs, axis=0)
        entry = {"max_abs_diff": float(per_dim.max()), "max_abs_diff_per_action": per_dim.tolist(),
                 "inputs": [list(f["image"].shape) for f in feeds]}
        if precision == "fp32":
            entry["tolerance"] = atol
            ok = entry["max_abs_diff"] <= atol
        elif bins:
            # An fp16 rounding can flip the arg-max between two near-equal bins: judge the agreement rate.
            entry["agreement"] = float(np.mean(agree))
            entry["min_agreement"] = 0.9
            ok = entry["agreement"] >= 0.9
        else:
            entry["tolerance_fraction_of_range"] = fp16_range_fraction
            entry["max_fraction_of_range"] = float((per_dim / action_range).max())
            ok = entry["max_fraction_of_range"] <= fp16_range_fraction
        report[f"{POLICY_GRAPH}.{precision}"] = entry
        if not ok:
            failures.append(f"{names[POLICY_GRAPH]}: {json.dumps(entry)}")
    if failures:
        raise ExportParityError("ONNX Runtime does not reproduce PyTorch:\n  " + "\n  ".join(failures))
    return report


# ============================================================================ the card
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    out = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
           "transformers": transformers.__version__}
    try:
        import onnxscript

        out["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return out


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def build_card(policy: LapaPolicy, out: Path, files: Dict[str, Dict[str, str]], parity: Dict,
               source: str, tokenizer_files: Sequence[str]) -> Dict:
    cfg = policy.config
    emb_dim = cfg.instruction_dim
    policy_inputs = [{"name": "image", "dtype": "uint8", "shape": ["batch", "height", "width", 3],
                      "layout": "NHWC, RGB, any height/width (resized in the graph)"},
                     {"name": "instruction_embedding", "dtype": "float32", "shape": ["batch", emb_dim]}]
    if cfg.state_dim:
        policy_inputs.append({"name": "state", "dtype": "float32", "shape": ["batch", cfg.state_dim],
                              "units": "robot units, as in the training data"})
    graphs = {
        INSTRUCTION_GRAPH: {
            "runs": "once per new instruction",
            "files": {p: names[INSTRUCTION_GRAPH] for p, names in files.items()},
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "tokens"]},
                       {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "tokens"]}],
            "outputs": [{"name": "instruction_embedding", "dtype": "float32", "shape": ["batch", emb_dim]}]},
        POLICY_GRAPH: {
            "runs": "every camera frame",
            "files": {p: names[POLICY_GRAPH] for p, names in files.items()},
            "inputs": policy_inputs,
            "outputs": [{"name": "actions", "dtype": "float32",
                         "shape": ["batch", cfg.chunk_size, cfg.action_dim], "units": "robot units"}]},
    }
    # Only what this export wrote (a graph's external weights included); stale files in ``out`` are not listed.
    written = [out / name for names in files.values() for name in names.values()]
    written += [p.with_name(p.name + ".data") for p in written if p.with_name(p.name + ".data").is_file()]
    written += [out / name for name in tokenizer_files]
    card = {
        "format": CARD_FORMAT, "version": CARD_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": source,
        "model": {"config_name": cfg.name, "parameters": policy.num_parameters(),
                  "vision_model": cfg.vision_model, "text_model": cfg.text_model},
        "graphs": graphs,
        "precisions": sorted(files),
        "image": {"model_size": [cfg.image_size, cfg.image_size], "channels": "RGB", "dtype": "uint8",
                  "resize": "bilinear, antialiased, to model_size (aspect ratio not kept), in the graph",
                  "mean": list(cfg.image_mean), "std": list(cfg.image_std),
                  "camera_size": list(cfg.camera_frame_size or cfg.data_frame_size or []) or None},
        "instruction": {"tokenizer": "tokenizer.json", "tokenizer_files": sorted(tokenizer_files),
                        "max_tokens": cfg.max_instruction_tokens, "embedding_dim": emb_dim,
                        "pooling": "mean over tokens", "l2_normalized": cfg.normalize_instruction,
                        "over_long": "error"},
        "action": {"names": cfg.action_names, "units": cfg.action_units, "dim": cfg.action_dim,
                   "chunk_size": cfg.chunk_size, "head": cfg.action_head,
                   "num_bins": cfg.num_bins if cfg.action_head == "bins" else None,
                   "normalization": cfg.action_normalization, "clipped_to_data_range": cfg.clip_actions,
                   "control_rate_hz": cfg.control_rate_hz},
        "state": {"names": cfg.state_names, "dim": cfg.state_dim, "gripper": cfg.gripper}
                 if cfg.state_dim else None,
        "normalization": policy.stats.to_json(),
        "opset": _opset(out / files["fp32"][POLICY_GRAPH]) if "fp32" in files else None,
        "versions": _versions(),
        "parity": parity,
        "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(set(written))},
    }
    return card


# ============================================================================ export
def export_policy(checkpoint, out: str | Path, precisions: Sequence[str] = ("fp32", "fp16"),
                  atol: float = 1e-4, fp16_range_fraction: float = 0.05, opset: Optional[int] = None,
                  external_data: str = "auto", sample_images: Optional[np.ndarray] = None) -> Dict:
    """Export ``checkpoint`` (a folder or a LapaPolicy) to ``out``; returns the model card (also written)."""
    if isinstance(checkpoint, LapaPolicy):
        policy, source = checkpoint, "(in memory)"
    else:
        policy, source = LapaPolicy.from_pretrained(checkpoint), str(checkpoint)
    if policy.action_head is None:
        raise ValueError(f"{source}: the policy has no action head (latent-pretrained only); finetune it first")
    unknown = sorted(set(precisions) - {"fp32", "fp16"})
    if unknown or not precisions:
        raise ValueError(f"precisions must be some of fp32, fp16; got {list(precisions)}")
    policy = policy.to("cpu").float().eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    card_path = out / CARD_FILE
    if card_path.exists():
        card_path.unlink()   # a half-written export must never look complete
    cfg = policy.config
    tokenizer_files = [Path(f).name for f in policy.tokenizer.save_pretrained(str(out))
                       if Path(f).is_file() and Path(f).resolve().parent == out.resolve()]
    if "tokenizer.json" not in tokenizer_files:
        raise ValueError(f"{policy.tokenizer_source}: the tokenizer has no fast (tokenizer.json) form; the "
                         "runtime needs one to tokenize without transformers")

    from torch.export import Dim

    batch = Dim("batch", min=1, max=1024)
    height, width = Dim("height", min=8, max=4096), Dim("width", min=8, max=4096)
    tokens = Dim("tokens", min=2, max=cfg.max_instruction_tokens)
    s = cfg.image_size
    # Traced at batch 2 and an odd image size so no dimension is specialized to a constant.
    image = torch.randint(0, 256, (2, s + 16, s + 24, 3), dtype=torch.uint8)
    example_tokens = policy.tokenize(["reach the goal", "push the drawer shut"])
    files: Dict[str, Dict[str, str]] = {}
    for precision in ("fp32", "fp16"):
        if precision not in precisions:
            continue
        suffix = "" if precision == "fp32" else "_fp16"
        model = policy if precision == "fp32" else copy.deepcopy(policy).set_compute_dtype(torch.float16)
        names = {INSTRUCTION_GRAPH: f"{INSTRUCTION_GRAPH}{suffix}.onnx", POLICY_GRAPH: f"{POLICY_GRAPH}{suffix}.onnx"}
        log.info("exporting %s", names[INSTRUCTION_GRAPH])
        _export_graph(InstructionEncoderGraph(model),
                      (example_tokens["input_ids"], example_tokens["attention_mask"]),
                      out / names[INSTRUCTION_GRAPH], ["input_ids", "attention_mask"], ["instruction_embedding"],
                      {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}},
                      opset, external_data)
        embedding = torch.randn(2, cfg.instruction_dim)
        args = (image, embedding)
        dyn: Dict = {"image": {0: batch, 1: height, 2: width}, "instruction_embedding": {0: batch}}
        if cfg.state_dim:
            args = args + (torch.randn(2, cfg.state_dim),)
            dyn["state"] = {0: batch}
        log.info("exporting %s", names[POLICY_GRAPH])
        _export_graph(PerFrameGraph(model), args, out / names[POLICY_GRAPH], _policy_input_names(policy),
                      ["actions"], dyn, opset, external_data)
        files[precision] = names
    parity = check_parity(policy, out, files, atol, fp16_range_fraction, sample_images)
    card = build_card(policy, out, files, parity, source, tokenizer_files)
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2))
    tmp.replace(card_path)
    return card


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a finetuned policy folder (save_pretrained)")
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument("--precisions", default="fp32,fp16", help="comma separated: fp32, fp16")
    p.add_argument("--atol", type=float, default=1e-4, help="fp32 parity tolerance, robot units")
    p.add_argument("--fp16-tolerance", type=float, default=0.05, help="fp16 parity, fraction of each action's range")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--external-data", choices=["auto", "yes", "no"], default="auto",
                   help="weights in a side file (auto: only above 1.5 GB)")
    p.add_argument("--sample-data", default=None, help="an episode dataset whose frames feed the parity check")


def main(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:   # the export reports its steps through logging
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    sample = None
    if args.sample_data:
        from lapa_models.data.episodes import EpisodeDataset

        sample = EpisodeDataset(args.sample_data).load(0).frames
    card = export_policy(args.checkpoint, args.out, [p.strip() for p in args.precisions.split(",") if p.strip()],
                         atol=args.atol, fp16_range_fraction=args.fp16_tolerance, opset=args.opset,
                         external_data=args.external_data, sample_images=sample)
    print(json.dumps({"out": str(args.out), "files": card["files"], "parity": card["parity"]}, indent=2))
    return 0
