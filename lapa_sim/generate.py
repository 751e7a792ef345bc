"""Generate episodes by running the scripted experts in simulation.

    lapa data generate --tasks mt10 --episodes-per-task 20 --out data/sim/mt10
    lapa data generate --tasks mt10 --episodes-per-task 50 --no-actions --out data/sim/mt10_video  # unlabelled
    lapa data generate --tasks reach,window-open --episodes-per-task 40 --play-steps 60 --out data/sim/play

``--play-steps N``: *play* instead of the expert: the arm reaches for random points near where it starts
(random speeds, a little noise, the gripper toggled now and then) for N steps in each task's scene, with
its actions recorded and no instruction. Labelled motion that no task chose: what an operator records by
moving the arm about for a few minutes, and what teaches a policy to read motion across tasks (see
``lapa policy finetune --play-data``).

Episode ``k`` of task ``t`` uses seed ``seed + k``, so a dataset is a deterministic function of its
arguments. Resumable: episodes already in the index are skipped. Parallel across cores (--workers).

Tasks of either simulated robot (``robot`` in the catalogue): the Meta-World Sawyer (20 Hz) or the Panda
(lapa_sim.panda, 30 Hz camera frames), one robot per dataset (their base frames, grippers and rates
differ), e.g. ``--tasks panda`` for Panda video to pretrain across embodiments.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from lapa_models.data.episodes import DatasetInfo, Episode, EpisodeWriter

from .tasks import TaskSpec, check_runnable, load_catalogue, make_world
from .world import ACTION_NAMES, GRIPPER

Job = Tuple[int, str, int]  # (episode index, task name, seed)


def rollout_expert(world, seed: int, *, render: bool = True, with_actions: bool = True,
                   steps_after_success: int = 0) -> Episode:
    """One expert episode in ``world`` (already on the right task): frames, actions, states."""
    world.reset(seed)
    rng = np.random.default_rng(seed)
    instruction = world.task.instructions[int(rng.integers(len(world.task.instructions)))]
    frames, actions, states = [], [], []
    extra = 0
    while True:
        velocity, gripper = world.expert_command()
        if render:
            frames.append(world.render())
        states.append(world.state)
        actions.append(np.concatenate([velocity, [gripper]]).astype(np.float32))
        if world.done:
            if not world.success or extra >= steps_after_success or world.step_count >= world.task.max_steps:
                break
            extra += 1
        world.step(velocity, gripper)
    n = len(states)
    return Episode(
        frames=np.stack(frames) if render else np.zeros((n, 0, 0, 3), np.uint8),
        timestamps=np.arange(n, dtype=np.float64) * world.control_period,
        actions=np.stack(actions) if with_actions else None,
        states=np.stack(states),
        instruction=instruction, task=world.task.name, success=bool(world.success),
        metadata={"seed": int(seed), "source": "sim-expert", "env": world.task.env, "robot": world.task.robot})


PLAY_RADIUS = 0.15   # [m] play reaches for points within this box around the start position


def rollout_play(world, seed: int, steps: int, *, radius: float = PLAY_RADIUS) -> Episode:
    """One play episode of ``steps`` steps in ``world``'s scene: reaching for random points in a box of
    ``radius`` around the start position (within the arm's own hand limits, where it has them), each for
    5-25 steps at a random speed, with noise; the gripper toggles with probability 0.05 per step. The
    recorded action is the command sent, so the labels say what the arm was told to do. Deterministic in
    ``seed``; no task is attempted (no instruction, not a success)."""
    if steps < 2:
        raise ValueError(f"play episodes need at least 2 steps, got {steps}")
    world.reset(seed)
    rng = np.random.default_rng(seed)
    start = world.ee_position.copy()
    low, high = start - radius, start + radius
    limits = getattr(world, "hand_limits", None)
    if limits is not None:
        low, high = np.maximum(low, limits[0]), np.minimum(high, limits[1])
    vmax = float(world.max_speed)
    frames, actions, states = [], [], []
    goal, left, speed, gripper = start, 0, vmax, float(rng.integers(2))
    for _ in range(steps):
        position = world.ee_position
        if left <= 0 or np.linalg.norm(goal - position) < 0.01:
            goal = rng.uniform(low, high)
            left, speed = int(rng.integers(5, 26)), float(rng.uniform(0.2, 1.0)) * vmax
        left -= 1
        velocity = np.clip((goal - position) * 8.0, -speed, speed) + rng.normal(0.0, 0.1 * vmax, 3)
        velocity = np.clip(velocity, -vmax, vmax)
        if rng.random() < 0.05:
            gripper = 1.0 - gripper
        frames.append(world.render())
        states.append(world.state)
        actions.append(np.concatenate([velocity, [gripper]]).astype(np.float32))
        world.step(velocity, gripper)
    return Episode(frames=np.stack(frames), timestamps=np.arange(steps, dtype=np.float64) * world.control_period,
                   actions=np.stack(actions), states=np.stack(states), instruction="", task=world.task.name,
                   success=False, metadata={"seed": int(seed), "source": "sim-play", "env": world.task.env,
                                            "robot": world.task.robot})


# ----------------------------------------------------------------------------- workers
_worker: dict = {}


def _init_worker(root: str, info: DatasetInfo, image_size: Tuple[int, int], substeps: int,
                 view: Optional[str] = None, play_steps: int = 0) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    _worker.update(writer=EpisodeWriter(root, info), image_size=image_size, substeps=substeps, world=None,
                   with_actions=info.has_actions, view=load_catalogue().view(view), play_steps=play_steps)


def _run_job(job: Job) -> dict:
    index, task, seed = job
    world = _worker["world"]
    if world is None:
        world = _worker["world"] = make_world(task, seed=seed, image_size=_worker["image_size"],
                                              substeps=_worker["substeps"], view=_worker["view"])
    elif world.task.name != task:
        world.set_task(task, seed=seed)
    if _worker["play_steps"]:
        episode = rollout_play(world, seed, _worker["play_steps"])
    else:
        episode = rollout_expert(world, seed, with_actions=_worker["with_actions"])
    return _worker["writer"].write_files(episode, index)


def plan_jobs(tasks: List[TaskSpec], episodes_per_task: int, seed: int) -> List[Job]:
    return [(ti * episodes_per_task + k, t.name, seed + k)
            for ti, t in enumerate(tasks) for k in range(episodes_per_task)]


def generate(out: str | Path, tasks: str = "mt10", episodes_per_task: int = 10, seed: int = 0,
             with_actions: bool = True, image_size: Tuple[int, int] = (128, 128), substeps: int = 4,
             workers: int = 1, codec: str = "lossless", progress: bool = True, view: Optional[str] = None,
             play_steps: int = 0) -> dict:
    """Write expert episodes to ``out``; returns a summary. Skips episodes already written.

    ``view``: a named scene variation of the catalogue (camera and lighting), for cross-environment data.
    ``play_steps`` > 0: play episodes of that many steps instead (rollout_play; actions always recorded)."""
    from tqdm import tqdm

    catalogue = load_catalogue()
    specs = catalogue.resolve(tasks)
    catalogue.view(view)   # an unknown view is an error before any work
    if play_steps < 0 or play_steps == 1:
        raise ValueError(f"--play-steps must be 0 (expert episodes) or >= 2, got {play_steps}")
    if play_steps and not with_actions:
        raise ValueError("--play-steps with --no-actions: play is for its actions; unlabelled video comes from "
                         "the experts")
    for spec in specs:
        check_runnable(spec, need_expert=not play_steps)
    robots = sorted({spec.robot for spec in specs})
    if len(robots) > 1:
        by_robot = {r: [s.name for s in specs if s.robot == r] for r in robots}
        raise ValueError("tasks of different robots cannot share a dataset (base frame, gripper and rate differ): "
                         + "; ".join(f"{r}: {', '.join(names)}" for r, names in by_robot.items())
                         + ". Generate one dataset per robot.")
    probe = make_world(specs[0], image_size=image_size, substeps=substeps, render=False)
    fps = 1.0 / probe.control_period
    state_names = list(probe.STATE_NAMES)
    gripper = getattr(probe, "GRIPPER", GRIPPER)   # the Sawyer's is lapa_sim.world.GRIPPER
    probe.close()
    timing = {"substeps": substeps} if robots[0] == "sawyer" else {}
    info = DatasetInfo(fps=fps, image_height=image_size[0], image_width=image_size[1],
                       action_names=list(ACTION_NAMES) if with_actions else None,
                       state_names=state_names, video_codec=codec, source="sim",
                       gripper=gripper.to_json(),
                       extra={"generator": "lapa_sim.generate", "robot": robots[0], **timing, "view": view or "default",
                              **({"play_steps": play_steps} if play_steps else {}),
                              "action_units": "m/s (vx, vy, vz) in the robot's base frame, gripper 0 open..1 closed"})
    writer = EpisodeWriter(out, info)
    done = writer.completed_indices()
    jobs = [j for j in plan_jobs(specs, episodes_per_task, seed) if j[0] not in done]
    bar = tqdm(total=len(jobs), desc=f"generate {Path(out).name}", unit="ep", disable=not progress,
               file=sys.stderr)
    successes = frames = 0
    initargs = (str(out), info, tuple(image_size), substeps, view, play_steps)
    if workers <= 1:
        _init_worker(*initargs)
        results = map(_run_job, jobs)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=initargs)
        results = pool.imap_unordered(_run_job, jobs)
    try:
        for entry in results:
            writer.commit(entry)
            successes += bool(entry["success"])
            frames += entry["length"]
            bar.update(1)
            if not play_steps:
                bar.set_postfix(success=f"{successes}/{bar.n}")
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
        if _worker.get("world") is not None:
            _worker["world"].close()
            _worker["world"] = None
    return {"out": str(out), "written": len(jobs), "skipped": len(done), "successes": successes,
            "frames": frames, "tasks": [t.name for t in specs]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="dataset directory (created, or resumed if it exists)")
    p.add_argument("--tasks", default="mt10", help="task names and/or sets, comma separated (mt10, held-out, panda, "
                                                   "all); one robot per dataset")
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seed of each task's first episode")
    p.add_argument("--no-actions", action="store_true", help="drop actions: unlabelled video for the latent stages")
    p.add_argument("--image-size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    p.add_argument("--substeps", type=int, default=4, help="Meta-World steps per control step (4 -> 20 Hz); the "
                                                           "Sawyer only (the Panda steps one 30 Hz camera frame)")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--codec", default="lossless", choices=["lossless", "h264"])
    p.add_argument("--view", default=None,
                   help="a scene variation from the catalogue's `views` (camera and lighting), e.g. shifted")
    p.add_argument("--play-steps", type=int, default=0, metavar="N",
                   help="record N-step play episodes (random reaching in each task's scene, actions recorded, no "
                        "instruction) instead of the expert's: labelled motion for --play-data of finetuning")


def main(args: argparse.Namespace) -> int:
    import json

    summary = generate(args.out, args.tasks, args.episodes_per_task, args.seed, not args.no_actions,
                       tuple(args.image_size), args.substeps, args.workers, args.codec, view=args.view,
                       play_steps=args.play_steps)
    print(json.dumps(summary))
    return 0
