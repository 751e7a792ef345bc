"""`lapa demo`: the whole stack on the simulated arm, over ROS 2, in separate processes.

Starts the node graph (simulated arm + what drives it), runs a few episodes over several tasks with
their instructions, prints one line per episode and a summary, and writes a rollout video:

    runs/demo/rollout.mp4      every episode, with its instruction and outcome drawn on the frames
    runs/demo/summary.json     per-episode results and the success rate
    runs/demo/logs/<node>.log  each node's output
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List

import numpy as np

from .bringup import NodeProcesses
from .graph import build_graph


def annotate(frame: np.ndarray, lines: List[str], color=(255, 255, 255), scale: int = 3) -> np.ndarray:
    """Upscale a frame and write text lines on a dark band at its top."""
    import cv2

    img = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    band = 16 * len(lines) + 6
    img[:band] = (img[:band] * 0.35).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(img, text[:60], (6, 16 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return img


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default="demo", help="tasks or task sets (lapa_sim/tasks.yaml), comma separated")
    p.add_argument("--episodes-per-task", type=int, default=2)
    p.add_argument("--seed", type=int, default=1000, help="seed of each task's first episode (held out from training)")
    p.add_argument("--out", default="runs/demo", help="where the video, summary and logs go")
    p.add_argument("--driver", default="expert", choices=["expert"],
                   help="what drives the arm: the scripted expert")
    p.add_argument("--startup-timeout", type=float, default=120.0)


def main(args: argparse.Namespace) -> int:
    from lapa_models.data.video import VideoWriter
    from lapa_sim.tasks import load_catalogue

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # a demo talks to itself only
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = load_catalogue().resolve(args.tasks)
    specs = build_graph("sim_teleop", {"task": tasks[0].name})
    print(f"lapa demo: {len(tasks)} task(s) x {args.episodes_per_task} episode(s), driver: {args.driver}")
    print(f"starting nodes: {', '.join(s.name for s in specs)} (logs in {out / 'logs'})")

    import rclpy
    from .episode_runner import EpisodeRunner, init_in_process

    results = []
    with NodeProcesses(specs, log_dir=out / "logs") as graph:
        init_in_process()
        runner = EpisodeRunner().start()
        try:
            t_ready = time.monotonic()
            while True:
                graph.check_alive()
                try:
                    runner.wait_until_ready(timeout=2.0)
                    break
                except TimeoutError:
                    if time.monotonic() - t_ready > args.startup_timeout:
                        raise
            runner.arm()
            print(f"robot ready in {time.monotonic() - t_ready:.1f} s; arm controller armed\n")
            video = VideoWriter(out / "rollout.mp4", fps=20.0, width=128 * 3, height=128 * 3, codec="h264")
            n_total = len(tasks) * args.episodes_per_task
            for ti, task in enumerate(tasks):
                for k in range(args.episodes_per_task):
                    graph.check_alive()
                    seed = args.seed + k
                    instruction = task.instructions[(seed + k) % len(task.instructions)]
                    r = runner.run_episode(task.name, instruction, task.max_steps, control_period=0.05, seed=seed)
                    results.append(r)
                    n = len(results)
                    print(f"episode {n:2d}/{n_total}  {task.name:22s} seed {r.seed:5d}  "
                          f"{'SUCCESS' if r.success else 'failure'}  {r.steps:3d} steps  {r.duration:4.1f} s  "
                          f"\"{instruction}\"", flush=True)
                    verdict = ("success" if r.success else "failure", (80, 255, 80) if r.success else (255, 90, 90))
                    for i, frame in enumerate(r.frames):
                        lines = [f"{task.name} #{k + 1}: {instruction}", f"step {i}"]
                        video.write(annotate(frame, lines + ([verdict[0]] if i == len(r.frames) - 1 else []),
                                             verdict[1] if i == len(r.frames) - 1 else (255, 255, 255)))
            video.close()
        finally:
            runner.stop()
            if rclpy.ok():
                rclpy.try_shutdown()
    successes = sum(r.success for r in results)
    summary = {"driver": args.driver, "episodes": len(results), "successes": successes,
               "success_rate": successes / max(len(results), 1),
               "per_task": {t.name: sum(r.success for r in results if r.task == t.name) / args.episodes_per_task
                            for t in tasks},
               "results": [r.summary() for r in results]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nsuccess {successes}/{len(results)} ({100 * summary['success_rate']:.0f}%)")
    print(f"rollout video: {out / 'rollout.mp4'}\nsummary:       {out / 'summary.json'}")
    return 0 if results else 1
