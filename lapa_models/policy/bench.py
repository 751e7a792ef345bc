"""Benchmark: per-frame policy latency at batch 1, PyTorch eager vs ONNX Runtime (prints JSON).

    lapa bench policy --configs small,siglip-base --threads 2

For each config the policy is built with random weights (weights do not change latency; siglip-base is
built from a base-size SiglipVisionConfig, no hub download), exported with ``export.py`` (parity checked)
and timed on the per-frame path: uint8 image + instruction embedding + state -> action chunk. Images at
the model's size and at a 640x480 camera size (resized inside the graph / the eager module). ONNX
Runtime is timed through ``PolicyRuntime.predict`` (input validation included), as the robot calls it.
Eager and ONNX Runtime calls alternate, so load from other processes on a shared machine hits both alike.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from ..timing import latency_summary


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


def _bench_model(config_name: str, sizes: List[str], threads: int, iterations: int, warmup: int,
                 precisions: List[str], workdir: Path) -> Dict:
    import torch

    from .configuration import get_config
    from .export import PerFrameGraph, export_policy
    from .modeling import LapaPolicy
    from .normalization import NormalizationStats
    from .runtime import PolicyRuntime

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    stats = NormalizationStats.from_data(rng.uniform(-0.8, 0.8, (2000, 4)), rng.normal(0.5, 0.1, (2000, 4)))
    config = get_config(config_name).replace(latent_head=False)
    note = "random weights (latency does not depend on them)"
    if not config.vision_model.startswith("config:"):
        preset = config_name if config_name in ("siglip-base",) else None
        if preset is None:
            raise ValueError(f"{config_name}: benchmark needs an architecture preset for {config.vision_model}")
        note = (f"vision tower built from a base-size SiglipVisionConfig (the architecture of "
                f"{config.vision_model}) with random weights; latency does not depend on weights")
        config = config.replace(vision_model=f"config:{preset}")
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
    graph = PerFrameGraph(model)
    result: Dict = {"config": config_name, "note": note, "parameters": model.num_parameters(),
                    "image_model_size": [config.image_size] * 2, "vision_tokens": model.vision.num_tokens,
                    "chunk_size": config.chunk_size, "build_s": round(build_s, 1), "export_s": round(export_s, 1),
                    "parity_max_abs_diff": {k: v["max_abs_diff"] for k, v in card["parity"].items()},
                    "per_frame": {}}
    for size in sizes:
        h, w = (config.image_size, config.image_size) if size == "model" else (int(v) for v in size.split("x"))
        image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        ti = (torch.from_numpy(image), torch.from_numpy(embedding), torch.from_numpy(state[None]))
        runtimes = {p: PolicyRuntime(export_dir, providers=("cpu",), precision=p, intra_op_threads=threads, warmup=0)
                    for p in precisions}

        def run_eager(ti=ti) -> None:
            with torch.inference_mode():
                graph(*ti)

        fns: Dict[str, Callable[[], object]] = {"eager_fp32": run_eager}
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
    runtime = PolicyRuntime(export_dir, providers=("cpu",), intra_op_threads=threads, warmup=0)
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
    p.add_argument("--out", default=None, help="also write the JSON here")


def main(args: argparse.Namespace) -> int:
    import onnxruntime
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    report: Dict = {"benchmark": "lapa policy per-frame latency, batch 1",
                    "machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                                "processor": platform.processor() or platform.machine(),
                                "load_average_before": list(os.getloadavg())},
                    "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
                    "providers": ["CPUExecutionProvider"], "results": []}
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="lapa_policy_bench_") as tmp:
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            iterations = args.big_iterations if "base" in name else args.iterations
            print(f"benchmarking {name} ...", file=sys.stderr)
            report["results"].append(_bench_model(name, sizes, args.threads, iterations, args.warmup,
                                                  precisions, Path(tmp)))
    report["machine"]["load_average_after"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0
