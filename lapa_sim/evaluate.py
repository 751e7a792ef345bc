"""Closed-loop success of an exported policy on a simulated arm (the Sawyer's tasks or the Panda's),
through ``PolicyRuntime`` (no ROS).

    lapa policy evaluate --export artifacts/policy --tasks reach,drawer-close,button-press-topdown \\
        --episodes 20 --seed 1000

Every control step: render the camera, read the state (ee position + gripper), run the per-frame graph
and command the arm. The chunk of H actions becomes one command through the same ChunkBlender as the
ROS policy node (lapa_models.policy.chunking.ChunkExecutor), on the simulator's step clock, with the node's
defaults (``--execution`` / ``--ensemble-decay``, the node's `blend` / `ensemble_decay`):

    ensemble   (default) temporal ensembling of every chunk that covers this step, weights
               exp(-m i) with i = 0 for the oldest chunk (ACT; m = 0.01); the policy runs every frame
    average    uniform mean of the covering chunks; the policy runs every frame
    latest     the newest chunk's action for this step (receding horizon); "first" is the same
    open-loop:N   N actions of a chunk in a row before the next prediction

Seeds default to 1000+ (the generator's training episodes use 0..N-1), so layouts are unseen.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, Optional

import numpy as np

from lapa_models.policy.chunking import ChunkExecutor


def run_episode(world, runtime, instruction: str, executor: ChunkExecutor, max_speed: float,
                frames: Optional[list] = None) -> Dict:
    executor.reset()
    latencies = []
    start = previous = np.array(world.ee_position)
    path = 0.0
    while not world.done:
        image = world.render()
        if frames is not None:
            frames.append(image)
        if executor.needs_prediction():
            t = time.perf_counter()
            chunk = runtime.act(image, instruction, world.state if runtime.takes_state else None)
            latencies.append(time.perf_counter() - t)
            executor.push(chunk)
        action = executor.next_action()
        velocity = np.clip(action[:3], -max_speed, max_speed)
        gripper = float(np.clip(action[3], 0.0, 1.0)) if len(action) > 3 else 0.0
        world.step(velocity, gripper)
        now = np.array(world.ee_position)
        path += float(np.linalg.norm(now - previous))
        previous = now
    # How far the hand went (path) and ended up (net): a policy that never moves the arm shows here.
    progress = world.progress   # graded: 1 on success, else the best shaped reward's share (None: no reward)
    return {"success": bool(world.success), "steps": int(world.step_count),
            "progress": None if progress is None else round(progress, 4),
            "ee_path_m": round(path, 4), "ee_net_m": round(float(np.linalg.norm(previous - start)), 4),
            "policy_ms_p50": round(float(np.median(latencies)) * 1e3, 2) if latencies else None}


def evaluate(export_dir: str, tasks: str, episodes: int, seed: int = 1000, image_size=(128, 128),
             execution: str = "ensemble", precision: str = "fp32", threads: Optional[int] = None,
             ensemble_decay: float = 0.01,
             video: Optional[str] = None, progress: bool = True) -> Dict:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from lapa_models.policy.runtime import PolicyRuntime

    from .tasks import load_catalogue, make_world

    runtime = PolicyRuntime(export_dir, precision=precision, intra_op_threads=threads)
    executor = ChunkExecutor(execution, ensemble_decay, period=1.0 / (runtime.control_rate_hz or 20.0))
    specs = load_catalogue().resolve(tasks)
    results: Dict = {"export": str(export_dir), "execution": execution, "ensemble_decay": ensemble_decay,
                     "precision": precision,
                     "seed": seed, "episodes_per_task": episodes, "tasks": {}}
    frames: Optional[list] = [] if video else None
    world = None
    for spec in specs:
        outcomes = []
        for k in range(episodes):
            s = seed + k
            if world is None or world.task.robot != spec.robot:   # the Sawyer's or the Panda's world
                if world is not None:
                    world.close()
                world = make_world(spec, seed=s, image_size=tuple(image_size))
            elif world.task.name != spec.name:
                world.set_task(spec, seed=s)
            else:
                world.reset(s)
            rng = np.random.default_rng(s)
            instruction = spec.instructions[int(rng.integers(len(spec.instructions)))]
            outcome = run_episode(world, runtime, instruction, executor, world.max_speed, frames)
            outcomes.append({"seed": s, "instruction": instruction, **outcome})
            if progress:
                print(f"{spec.name} seed {s}: {'success' if outcome['success'] else 'fail'} "
                      f"in {outcome['steps']} steps", file=sys.stderr)
        results["tasks"][spec.name] = {
            "success_rate": float(np.mean([o["success"] for o in outcomes])),
            "mean_steps": float(np.mean([o["steps"] for o in outcomes])), "episodes": outcomes}
    if world is not None:
        world.close()
    results["success_rate"] = float(np.mean([t["success_rate"] for t in results["tasks"].values()]))
    if video and frames:
        from lapa_models.data.video import VideoWriter

        h, w = frames[0].shape[:2]
        with VideoWriter(video, 20.0, w, h, "h264") as vw:
            for f in frames:
                vw.write(f)
        results["video"] = video
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export", required=True, help="export folder (model_card.json)")
    p.add_argument("--tasks", default="demo", help="tasks or task sets, comma separated")
    p.add_argument("--episodes", type=int, default=10, help="per task")
    p.add_argument("--seed", type=int, default=1000, help="first seed (training data uses 0..N-1)")
    p.add_argument("--image-size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"),
                   help="camera size (as in the training data)")
    p.add_argument("--execution", default="ensemble", help="ensemble, average, latest (first) or open-loop:N")
    p.add_argument("--ensemble-decay", type=float, default=0.01,
                   help="m of the ensemble weights exp(-m i), i = 0 for the oldest chunk (the policy node's default)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--video", default=None, help="write every episode's frames to this mp4")
    p.add_argument("--out", default=None, help="also write the JSON here")


def main(args: argparse.Namespace) -> int:
    results = evaluate(args.export, args.tasks, args.episodes, args.seed, tuple(args.image_size), args.execution,
                       args.precision, args.threads, ensemble_decay=args.ensemble_decay, video=args.video)
    text = json.dumps(results, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    summary = {k: v for k, v in results.items() if k != "tasks"}
    summary["tasks"] = {k: {"success_rate": v["success_rate"], "mean_steps": v["mean_steps"]}
                        for k, v in results["tasks"].items()}
    print(json.dumps(summary, indent=2))
    return 0
