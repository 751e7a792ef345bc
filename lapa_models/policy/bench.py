"""Benchmark: per-frame policy latency at batch 1, PyTorch eager vs ONNX Runtime (prints JSON), and the
throughput of a policy training step (``lapa bench train``).

    lapa bench policy --configs small,siglip-base --threads 2
    lapa bench policy --configs siglip-base --device cuda --providers cuda      # on a GPU
    lapa bench train --config siglip-base --device cuda --batch-sizes 64,256    # training step, synthetic

For each config the policy is built with random weights (weights do not change latency; siglip-base is
built from a base-size SiglipVisionConfig, no hub download), exported with ``export.py`` (parity checked)
and timed on the per-frame path: uint8 image + instruction embedding + state -> action chunk. Images at
the model's size and at a 640x480 camera size (resized inside the graph / the eager module). ONNX
Runtime is timed through ``PolicyRuntime.predict`` (input validation included), as the robot calls it.
Eager and ONNX Runtime calls alternate, so load from other processes on a shared machine hits both alike.
With ``--device cuda`` eager runs on the GPU in fp32 and under fp16 autocast (inputs copied from host
memory in every call, as a camera frame arrives, and the actions copied back); ``--providers`` picks the
ONNX Runtime execution providers (those that did not load are reported in ``providers_in_use``).

``lapa bench train``: forward + backward + AdamW step with gradient clipping on synthetic batches (uint8
frames at the model's size, cached instruction embeddings as with a frozen text tower, latent-token
targets for ``--phase pretrain``, action chunks for ``--phase finetune``), under bf16 autocast on a GPU
as ``lapa policy pretrain`` trains, or fp32 (``--precisions``). Samples per second, step time, peak GPU
memory; throughput does not depend on the data's content.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from ..timing import latency_summary, sync_device


def _percentiles(fn: Callable[[], object], iterations: int, warmup: int) -> Dict[str, float]:
    return _interleaved({"fn": fn}, iterations, warmup)["fn"]


def _interleaved(fns: Dict[str, Callable[[], object]], iterations: int, warmup: int,
                 block: int = 10) -> Dict[str, Dict[str, float]]:
    """Time several functions in alternating blocks of ``block`` calls: a change in machine load (a shared
    CPU) hits all of them alike, while each block still runs with warm caches as on the robot."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    while any(len(t) < iterations for t in times.values()):
        for name, fn in fns.items():
            for _ in range(min(block, iterations - len(times[name]))):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {name: latency_summary(np.asarray(t) * 1e3) for name, t in times.items()}


def _resolve_vision(config_name: str, text_model: str = "", tokenizer: str = ""):
    """The named config with its vision tower as a random-weight architecture preset (no hub download);
    ``text_model`` / ``tokenizer`` replace the config's (e.g. an architecture as ``config:{JSON}`` with a
    tokenizer folder, on a machine without the MiniLM package: timings do not depend on weights)."""
    from .configuration import get_config

    config = get_config(config_name)
    if text_model:
        config = config.replace(text_model=text_model)
    if tokenizer:
        config = config.replace(tokenizer=tokenizer)
    note = "random weights (latency does not depend on them)"
    if not config.vision_model.startswith("config:"):
        preset = config_name if config_name in ("siglip-base",) else None
        if preset is None:
            raise ValueError(f"{config_name}: benchmark needs an architecture preset for {config.vision_model}")
        note = (f"vision tower built from a base-size SiglipVisionConfig (the architecture of "
                f"{config.vision_model}) with random weights; timings do not depend on weights")
        config = config.replace(vision_model=f"config:{preset}")
    if text_model:
        note += f"; text tower replaced by {text_model if len(text_model) < 60 else text_model[:57] + '...'}"
    return config, note


def _synthetic_stats(rng: np.random.Generator):
    """Normalization statistics of 4-D actions and states (the benchmarks' action head and state token)."""
    from .normalization import NormalizationStats

    return NormalizationStats.from_data(rng.uniform(-0.8, 0.8, (2000, 4)), rng.normal(0.5, 0.1, (2000, 4)))


def _add_tower_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-model", default="", help="replace the config's text tower (a folder, hub id or "
                                                    "config:{JSON} architecture with random weights)")
    p.add_argument("--tokenizer", default="", help="replace the config's tokenizer (a folder or hub id)")


def _no_cuda(device) -> bool:
    """True (after saying so) when ``device`` is a CUDA device this PyTorch cannot see."""
    import torch

    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {device}: this PyTorch sees no CUDA device", file=sys.stderr)
        return True
    return False


def _emit(report: Dict, out) -> int:
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text)
    return 0


def _bench_model(config_name: str, sizes: List[str], threads: int, iterations: int, warmup: int,
                 precisions: List[str], workdir: Path, device: str = "cpu",
                 providers: tuple = ("cpu",), text_model: str = "", tokenizer: str = "") -> Dict:
    import torch

    from .export import PerFrameGraph, export_policy
    from .modeling import LapaPolicy
    from .runtime import PolicyRuntime

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    stats = _synthetic_stats(rng)
    config, note = _resolve_vision(config_name, text_model, tokenizer)
    config = config.replace(latent_head=False)
    t0 = time.perf_counter()
    model = LapaPolicy(config, stats).eval()
    config = model.config
    build_s = time.perf_counter() - t0
    export_dir = workdir / config_name
    t0 = time.perf_counter()
    card = export_policy(model, export_dir, precisions=precisions)
    export_s = time.perf_counter() - t0
    embedding = model.encode_instructions(["close the drawer"]).numpy()
    state = stats.state_mean.copy()
    dev = torch.device(device)
    graph = PerFrameGraph(model.to(dev))
    result: Dict = {"config": config_name, "note": note, "parameters": model.num_parameters(),
                    "image_model_size": [config.image_size] * 2, "vision_tokens": model.vision.num_tokens,
                    "chunk_size": config.chunk_size, "build_s": round(build_s, 1), "export_s": round(export_s, 1),
                    "parity_max_abs_diff": {k: v["max_abs_diff"] for k, v in card["parity"].items()},
                    "per_frame": {}}
    for size in sizes:
        h, w = (config.image_size, config.image_size) if size == "model" else (int(v) for v in size.split("x"))
        image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        ti = (torch.from_numpy(image), torch.from_numpy(embedding), torch.from_numpy(state[None]))
        runtimes = {p: PolicyRuntime(export_dir, providers=providers, precision=p, intra_op_threads=threads, warmup=0)
                    for p in precisions}
        result.setdefault("providers_in_use", {p: r.providers_in_use for p, r in runtimes.items()})

        def run_eager(ti=ti, half: bool = False) -> None:
            # Host -> device and back in every call, as a camera frame arrives and actions leave.
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=half):
                graph(*(t.to(dev) for t in ti)).float().cpu()

        fns: Dict[str, Callable[[], object]] = {"eager_fp32": run_eager}
        if dev.type == "cuda":
            fns["eager_fp16_autocast"] = functools.partial(run_eager, half=True)
        for p, runtime in runtimes.items():
            fns[f"ort_{p}"] = functools.partial(runtime.predict, image, embedding[0], state)
        timings: Dict = _interleaved(fns, iterations, warmup)
        del runtimes
        eager = timings["eager_fp32"]
        for precision in precisions:
            ort_t = timings[f"ort_{precision}"]
            timings[f"speedup_ort_{precision}_vs_eager"] = {
                "p50": round(eager["p50_ms"] / ort_t["p50_ms"], 2), "p99": round(eager["p99_ms"] / ort_t["p99_ms"], 2)}
        result["per_frame"][f"{h}x{w}"] = timings
    runtime = PolicyRuntime(export_dir, providers=providers, intra_op_threads=threads, warmup=0)
    texts = iter([f"close the drawer number {i}" for i in range(10 * iterations + 10 * warmup)])
    result["instruction_encoder_ort_fp32"] = _percentiles(lambda: runtime.encode_instruction(next(texts)),
                                                          min(iterations, 50), min(warmup, 5))
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", default="small,siglip-base", help="comma separated named sizes")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (eager and ORT)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--big-iterations", type=int, default=40, help="iterations for siglip-base")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--precisions", default="fp32,fp16", help="ONNX Runtime precisions to time")
    p.add_argument("--sizes", default="model,480x640", help="image sizes: 'model' and/or HxW")
    p.add_argument("--device", default="cpu", help="where PyTorch eager runs: cpu or cuda[:N]")
    _add_tower_arguments(p)
    p.add_argument("--providers", default="cpu",
                   help="ONNX Runtime execution providers in order of preference: cpu, cuda, tensorrt")
    p.add_argument("--out", default=None, help="also write the JSON here")


def main(args: argparse.Namespace) -> int:
    import onnxruntime
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    device = torch.device(args.device)
    if _no_cuda(device):
        return 2
    report: Dict = {"benchmark": "lapa policy per-frame latency, batch 1",
                    "machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                                "processor": platform.processor() or platform.machine(),
                                "load_average_before": list(os.getloadavg())},
                    "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
                    "eager_device": (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
                    "providers_requested": list(providers),
                    "providers_available": onnxruntime.get_available_providers(), "results": []}
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="lapa_policy_bench_") as tmp:
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            iterations = args.big_iterations if "base" in name else args.iterations
            print(f"benchmarking {name} ...", file=sys.stderr)
            report["results"].append(_bench_model(name, sizes, args.threads, iterations, args.warmup,
                                                  precisions, Path(tmp), device=args.device, providers=providers,
                                                  text_model=args.text_model, tokenizer=args.tokenizer))
    report["machine"]["load_average_after"] = list(os.getloadavg())
    return _emit(report, args.out)


# ============================================================================ training step (lapa bench train)
def benchmark_training(config_name: str, batch_size: int, steps: int, warmup: int, device: str,
                       precision: str, phase: str, latent_horizon: int = 3, tokens_per_latent: int = 4,
                       codebook_size: int = 8, threads: int = 0, text_model: str = "",
                       tokenizer: str = "") -> Dict:
    """One policy training step (forward, backward, clipped AdamW step) on synthetic batches, timed."""
    import torch

    from .modeling import LapaPolicy

    if phase not in ("pretrain", "finetune"):
        raise ValueError(f"phase must be 'pretrain' or 'finetune', got {phase!r}")
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config, note = _resolve_vision(config_name, text_model, tokenizer)
    config = config.replace(latent_horizon=latent_horizon, latent_num_tokens=latent_horizon * tokens_per_latent,
                            latent_codebook_size=codebook_size)
    model = LapaPolicy(config, _synthetic_stats(rng) if phase == "finetune" else None)
    config = model.config
    with torch.no_grad():
        embeddings = model.eval().encode_instructions([f"task number {i}" for i in range(16)])
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    size = config.image_size
    gen = torch.Generator().manual_seed(0)

    def batch() -> Dict[str, torch.Tensor]:
        b = {"image": torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8, generator=gen),
             "instruction_embedding": embeddings[torch.randint(0, len(embeddings), (batch_size,), generator=gen)]}
        if config.latent_head:
            b["latent_tokens"] = torch.randint(0, config.latent_codebook_size,
                                               (batch_size, config.latent_num_tokens), generator=gen)
        if phase == "finetune":
            b["actions"] = torch.randn(batch_size, config.chunk_size, config.action_dim, generator=gen)
            b["action_is_pad"] = torch.zeros(batch_size, config.chunk_size, dtype=torch.bool)
            if config.state_dim:
                b["state"] = torch.randn(batch_size, config.state_dim, generator=gen)
        return b

    batches = [batch() for _ in range(4)]   # made ahead: the loop times the step, not the data
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync_device(dev)
            start = time.perf_counter()
        inputs = {k: v.to(dev, non_blocking=True) for k, v in batches[i % len(batches)].items()}
        inputs["pixels"] = model.prepare_images(inputs.pop("image"))
        with autocast:
            loss = model(inputs)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync_device(dev)
    seconds = time.perf_counter() - start
    final_loss = float(loss.detach())
    if not math.isfinite(final_loss):
        raise RuntimeError(f"training loss is {final_loss}: the benchmark's step diverged")
    out: Dict = {"config": config_name, "note": note, "phase": phase, "precision": precision,
                 "batch_size": batch_size, "steps": steps,
                 "parameters": model.num_parameters(),
                 "trainable_parameters": int(sum(p.numel() for p in params)),
                 "image_size": size, "latent_tokens": config.latent_num_tokens,
                 "samples_per_s": round(batch_size * steps / seconds, 1),
                 "step_ms": round(1000 * seconds / steps, 2)}
    if dev.type == "cuda":
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return out


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="small", help="named policy size (tiny, small, siglip-base)")
    p.add_argument("--phase", default="pretrain", choices=["pretrain", "finetune"])
    p.add_argument("--batch-sizes", default="64", help="comma separated batch sizes")
    p.add_argument("--precisions", default="",
                   help="comma separated: bf16 (autocast, as training on a GPU) and/or fp32; default: bf16 on "
                        "a GPU, fp32 on a CPU")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--latent-horizon", type=int, default=3, help="latent actions predicted (the presets' 3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    _add_tower_arguments(p)
    p.add_argument("--out", default=None, help="also write the JSON here")


def main_training(args: argparse.Namespace) -> int:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    if _no_cuda(device):
        return 2
    try:
        sizes = [int(v) for v in args.batch_sizes.split(",") if v.strip()]
    except ValueError:
        print(f"error: --batch-sizes {args.batch_sizes!r}: expected comma separated integers", file=sys.stderr)
        return 2
    if not sizes or min(sizes) < 1:
        print(f"error: --batch-sizes {args.batch_sizes!r}: expected positive integers", file=sys.stderr)
        return 2
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()] or \
        (["bf16"] if device.type == "cuda" else ["fp32"])
    report: Dict = {"benchmark": "lapa policy training step", "device": str(device),
                    "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                    else platform.processor() or platform.machine()),
                    "threads": torch.get_num_threads(), "torch": torch.__version__, "results": []}
    for precision in precisions:
        for size in sizes:
            print(f"timing {args.config} {args.phase} batch {size} {precision} ...", file=sys.stderr)
            try:
                report["results"].append(benchmark_training(
                    args.config, size, args.steps, args.warmup, args.device, precision, args.phase,
                    latent_horizon=args.latent_horizon, threads=args.threads, text_model=args.text_model,
                    tokenizer=args.tokenizer))
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
    return _emit(report, args.out)
