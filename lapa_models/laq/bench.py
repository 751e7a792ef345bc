"""Benchmark LAQ: training and labelling throughput in frame pairs per second (one JSON object).

    lapa bench laq --config tiny
    lapa bench laq --config paper --device cuda --batch-size 64
    lapa bench laq --data data/sim/video --scale 20 --steps 30 --workers 2   # data paths

Without --data: synthetic uint8 frames at the config's image size (throughput does not depend on their
content). Training = forward + backward + Adam step with gradient clipping (bf16 autocast on a GPU);
labelling = ``LAQModel.encode`` in eval mode.

With --data (an episode dataset): the data paths of ``lapa laq train`` measured end to end, each run in
its own process (peak RSS is per process): in-RAM (``--data-mode memory``, no workers) and streamed
(``--data-mode stream`` with --workers DataLoader workers), on the dataset and on one --scale times
larger (its episodes repeated, linked not copied, in a temporary folder). Reported per run: peak RSS of
the training process and of its largest worker, training throughput (pairs/s over the logged windows
after the first) and the share of step time spent waiting for data. ``--baseline-path DIR`` also runs
the in-RAM training of another checkout of the code (e.g. ``git archive`` of an older commit) for
comparison. Throughput runs alternate (memory, stream, memory, stream, ...) so that load from other
programs affects both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..timing import sync_device
from .configuration import get_config
from .modeling import LAQModel
from .train import ADAM_BETAS, GRAD_CLIP


def benchmark(config_name: str = "tiny", batch_size: int = 0, label_batch_size: int = 256, steps: int = 20,
              warmup: int = 3, device: str = "cpu") -> dict:
    config = get_config(config_name)
    device = torch.device(device)
    batch_size = batch_size or config.batch_size
    generator = torch.Generator().manual_seed(0)
    h, w = config.image_size

    def frames(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, h, w, config.channels), dtype=torch.uint8, generator=generator)

    model = LAQModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=ADAM_BETAS)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    frames_t, frames_tk = frames(batch_size).to(device), frames(batch_size).to(device)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            sync_device(device)
            start = time.perf_counter()
        with autocast:
            loss = model(frames_t, frames_tk).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync_device(device)
    train_seconds = time.perf_counter() - start

    model.eval()
    label_t, label_tk = frames(label_batch_size).to(device), frames(label_batch_size).to(device)
    label_rounds = max(2, steps // 4)
    for i in range(1 + label_rounds):
        if i == 1:
            sync_device(device)
            start = time.perf_counter()
        with autocast:
            model.encode(label_t, label_tk)
    sync_device(device)
    label_seconds = time.perf_counter() - start

    return {"benchmark": "laq", "config": config_name, "parameters": model.num_parameters(),
            "image_size": list(config.image_size), "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else platform.processor() or platform.machine()),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "train": {"batch_size": batch_size, "steps": steps,
                      "pairs_per_s": round(batch_size * steps / train_seconds, 1),
                      "step_ms": round(1000 * train_seconds / steps, 2)},
            "label": {"batch_size": label_batch_size, "batches": label_rounds,
                      "pairs_per_s": round(label_batch_size * label_rounds / label_seconds, 1)}}


# ---------------------------------------------------------------------------- data paths (--data)
def repeat_dataset(source: Path, out: Path, times: int) -> Path:
    """An episode dataset holding ``source``'s episodes ``times`` over (files linked, not copied)."""
    entries = [json.loads(line) for line in (source / "meta" / "episodes.jsonl").read_text().splitlines()
               if line.strip()]
    if not entries:
        raise ValueError(f"{source}: no episodes to repeat")
    (out / "meta").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    (out / "videos").mkdir(exist_ok=True)
    shutil.copy(source / "meta" / "info.json", out / "meta" / "info.json")
    lines, index = [], 0
    for _ in range(times):
        for entry in entries:
            stem, new = f"episode_{int(entry['episode_index']):06d}", f"episode_{index:06d}"
            for folder, suffix in (("data", ".parquet"), ("videos", ".mp4")):
                (out / folder / (new + suffix)).symlink_to((source / folder / (stem + suffix)).resolve())
            lines.append(json.dumps({**entry, "episode_index": index}))
            index += 1
    (out / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return out


# One training run, in a fresh process, importing lapa_models from the tree on its PYTHONPATH (this one
# or --baseline-path): prints what it measured as one JSON line.
CHILD = r"""
import inspect, json, resource, sys, time
from pathlib import Path
import torch
from lapa_models.laq.configuration import get_config
from lapa_models.laq.train import train

spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
kwargs = dict(steps=spec["steps"], batch_size=spec["batch_size"], log_every=max(1, spec["steps"] // 4),
              save_every=10 ** 9, warmup_steps=1, num_monitor_pairs=32, progress=False,
              data_mode=spec["mode"], num_workers=spec["workers"])
accepted = inspect.signature(train).parameters
kwargs = {k: v for k, v in kwargs.items() if k in accepted}   # an older checkout has no data modes
start = time.perf_counter()
train(get_config(spec["config"]), spec["data"], spec["out"], **kwargs)
wall = time.perf_counter() - start
records = [json.loads(line) for line in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines()]
timed = records[1:] or records
steps = sum(r["step"] - (r.get("window_start") or r["step"]) + 1 for r in timed)
seconds = sum((r["step"] - (r.get("window_start") or r["step"]) + 1) * spec["batch_size"] / r["pairs_per_s"]
              for r in timed)
print(json.dumps({
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "worker_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    "pairs_per_s": round(steps * spec["batch_size"] / max(seconds, 1e-9), 1),
    "data_wait_share": round(sum(r.get("data_wait_share", 0.0) for r in timed) / len(timed), 4),
    "wall_s": round(wall, 1)}))
"""


def _run_child(spec: dict, pythonpath: Optional[str] = None) -> dict:
    env = dict(os.environ)
    tree = pythonpath or str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                            env=env, cwd=Path(spec["out"]).parent)
    if result.returncode:
        raise RuntimeError(f"benchmark run {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def benchmark_data(data: Path, scale: int = 20, steps: int = 30, batch_size: int = 16, workers: int = 2,
                   config_name: str = "tiny", repeats: int = 2, threads: Optional[int] = None,
                   baseline_path: Optional[str] = None, work: Optional[Path] = None) -> dict:
    """Peak RSS and throughput of the in-RAM and streamed data paths at 1x and ``scale``x (module doc)."""
    data = Path(data)
    if not (data / "meta" / "episodes.jsonl").is_file():
        raise ValueError(f"{data}: not an episode dataset (meta/episodes.jsonl); --data needs one")
    threads = threads or torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="lapa_bench_data_", dir=work))
    try:
        sets = {"1x": repeat_dataset(data, tmp / "x1", 1), f"{scale}x": repeat_dataset(data, tmp / f"x{scale}", scale)}
        frames = {k: sum(json.loads(line)["length"] for line in (v / "meta" / "episodes.jsonl").read_text().splitlines()
                         if line.strip()) for k, v in sets.items()}
        runs: List[Dict] = []

        def run(name: str, size: str, mode: str, n_workers: int, pythonpath: Optional[str] = None) -> None:
            spec = {"data": str(sets[size]), "out": str(tmp / f"run{len(runs)}"), "mode": mode, "workers": n_workers,
                    "steps": steps, "batch_size": batch_size, "config": config_name, "threads": threads}
            result = _run_child(spec, pythonpath)
            runs.append({"run": name, "dataset": size, "frames": frames[size], "data_mode": mode,
                         "workers": n_workers, **result})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)

        # First runs build the caches / shards (their wall time includes it); memory scaling at both sizes.
        for size in sets:
            run("memory", size, "memory", 0)
            run(f"stream+{workers}w", size, "stream", workers)
        for _ in range(repeats):   # throughput, alternating, caches built
            if baseline_path:
                run("baseline-memory", "1x", "memory", 0, baseline_path)
            run("memory", "1x", "memory", 0)
            run(f"stream+{workers}w", "1x", "stream", workers)
            run("stream+0w", "1x", "stream", 0)

        def pick(name, size, key, first=False):
            values = [r[key] for r in runs if r["run"] == name and r["dataset"] == size]
            return values[0] if first else values[1:] or values

        big = f"{scale}x"
        stream = f"stream+{workers}w"
        # Peak RSS of each path's first run at each size: the runs that also build its cache or shards.
        rss = {mode: {size: pick(mode, size, "peak_rss_mb", first=True) for size in sets}
               for mode in ("memory", stream)}
        median = lambda xs: sorted(xs)[len(xs) // 2]   # noqa: E731
        throughput = {name: median(pick(name, "1x", "pairs_per_s")) for name in
                      (["baseline-memory"] if baseline_path else []) + ["memory", stream, "stream+0w"]}
        return {"benchmark": "laq-data", "data": str(data), "scale": scale, "frames": frames, "config": config_name,
                "steps": steps, "batch_size": batch_size, "threads": threads, "cpus": os.cpu_count(),
                "peak_rss_mb": rss,
                "stream_rss_ratio": round(rss[stream][big] / rss[stream]["1x"], 3),
                "memory_rss_ratio": round(rss["memory"][big] / rss["memory"]["1x"], 3),
                "pairs_per_s_median": throughput,
                "stream_vs_memory_throughput": round(throughput[stream] / throughput["memory"], 3),
                "runs": runs}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="named size or config.json path")
    p.add_argument("--batch-size", type=int, default=0, help="training pairs per step (default: the config's)")
    p.add_argument("--label-batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed training steps")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", default=None, help="an episode dataset: benchmark the training data paths on it "
                                                "(memory vs stream, 1x vs --scale x) instead of the model")
    p.add_argument("--scale", type=int, default=20, help="with --data: the larger dataset repeats it this many times")
    p.add_argument("--workers", type=int, default=2, help="with --data: DataLoader workers of the stream runs")
    p.add_argument("--repeats", type=int, default=2, help="with --data: alternating throughput runs per path")
    p.add_argument("--baseline-path", default=None,
                   help="with --data: a folder holding another checkout's lapa_models, run in memory mode too")
    p.add_argument("--work-dir", default=None, help="with --data: where the temporary datasets go")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data:
        from lapa_models.commands import report_input_errors

        return report_input_errors(lambda a: print(json.dumps(benchmark_data(
            Path(a.data), a.scale, a.steps, a.batch_size or 16, a.workers, a.config, a.repeats, a.threads,
            a.baseline_path, Path(a.work_dir) if a.work_dir else None))) or 0, args)
    print(json.dumps(benchmark(args.config, args.batch_size, args.label_batch_size, args.steps, device=args.device)))
    return 0
