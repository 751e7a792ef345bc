"""`lapa bench sim`: simulator step and render time per frame, and episode generation throughput.

Prints one JSON object. Not part of the test suite: these machines are noisy, so compare numbers
taken in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from .generate import generate
from lapa_models.timing import latency_summary

from .world import SimWorld


def bench_world(task: str, image_size, steps: int) -> dict:
    world = SimWorld(task, seed=0, image_size=image_size)
    step_ms, render_ms = [], []
    for _ in range(steps):
        if world.done:
            world.reset(world.seed + 1)
        v, g = world.expert_command()
        t0 = time.perf_counter()
        world.step(v, g)
        t1 = time.perf_counter()
        world.render()
        t2 = time.perf_counter()
        step_ms.append((t1 - t0) * 1e3)
        render_ms.append((t2 - t1) * 1e3)
    period = world.control_period
    world.close()
    total = np.add(step_ms, render_ms)
    return {"task": task, "image": list(image_size), "control_period_ms": period * 1e3,
            "physics_step": latency_summary(step_ms), "render": latency_summary(render_ms), "step_plus_render": latency_summary(total),
            "max_real_time_factor": round(period * 1e3 / float(np.mean(total)), 1)}


def bench_generation(tasks: str, episodes_per_task: int, workers: int, image_size) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        s = generate(d, tasks=tasks, episodes_per_task=episodes_per_task, image_size=image_size, workers=workers,
                     progress=False)
        dt = time.perf_counter() - t0
    return {"workers": workers, "episodes": s["written"], "frames": s["frames"], "seconds": round(dt, 2),
            "episodes_per_s": round(s["written"] / dt, 2), "frames_per_s": round(s["frames"] / dt, 1)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="push")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--image-size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    p.add_argument("--gen-tasks", default="reach,push,drawer-close,button-press-topdown")
    p.add_argument("--gen-episodes-per-task", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="*", default=[1, os.cpu_count() or 1])


def main(args: argparse.Namespace) -> int:
    size = tuple(args.image_size)
    result = {"benchmark": "sim", "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "mujoco_gl": os.environ.get("MUJOCO_GL")},
              "world": bench_world(args.task, size, args.steps),
              "generation": [bench_generation(args.gen_tasks, args.gen_episodes_per_task, w, size)
                             for w in sorted(set(args.workers))]}
    print(json.dumps(result, indent=2))
    return 0
