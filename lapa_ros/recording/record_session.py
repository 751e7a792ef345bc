"""`lapa record sim`: record demonstrations in simulation through ROS, as an operator would on a robot.

    lapa record sim --tasks demo --episodes-per-task 10 --out bags/sim_demo

Starts the simulated arm, the arm controller, the scripted expert (the operator) and the recorder as
separate processes; for each episode: choose the task, reset, send the instruction, start recording,
wait for success or the step limit, save the bag and mark its outcome. The bags are exactly what a
teleop session on a robot produces: `lapa bags convert` turns them into training episodes.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default="demo", help="tasks or task sets (lapa_sim/tasks.yaml)")
    p.add_argument("--episodes-per-task", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of each task's first episode")
    p.add_argument("--out", default="bags/sim", help="folder for the episode bags")
    p.add_argument("--real-time", action="store_true", help="run on the wall clock (default: lockstep, fast)")
    p.add_argument("--startup-timeout", type=float, default=120.0)


def record(tasks: str, episodes_per_task: int, out: Path, seed: int = 0, real_time: bool = False,
           startup_timeout: float = 120.0, env=None, log=print) -> dict:
    import rclpy

    from lapa_sim.tasks import load_catalogue

    from lapa_ros.bringup.supervisor import NodeProcesses
    from lapa_ros.evaluation.episode_runner import EpisodeRunner
    from lapa_ros.bringup.graph import build_graph

    specs_tasks = load_catalogue().resolve(tasks)
    out = Path(out).resolve()
    specs = build_graph("sim_record", {"task": specs_tasks[0].name, "real_time": str(real_time).lower(),
                                       "lockstep": str(not real_time).lower(), "output_dir": str(out)})
    results = []
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int((env or os.environ).get("ROS_DOMAIN_ID", 0)))
    with NodeProcesses(specs, env=env, log_dir=out / "logs") as graph:
        runner = EpisodeRunner(record_frames=False, context=context).start()
        try:
            runner.wait_until_ready(timeout=startup_timeout, graph=graph)
            runner.arm()
            for task in specs_tasks:
                for k in range(episodes_per_task):
                    graph.check_alive()
                    instruction = task.instructions[k % len(task.instructions)]
                    bag = {}
                    r = runner.run_episode(task.name, instruction, task.max_steps, control_period=0.05,
                                           seed=seed + k, frames_after_success=2,
                                           on_start=lambda bag=bag: bag.update(path=runner.trigger("recorder/start")))
                    runner.trigger("recorder/stop")
                    runner.set_bool("recorder/mark_success", r.success)
                    results.append({"task": task.name, "seed": r.seed, "instruction": instruction,
                                    "success": r.success, "steps": r.steps, "bag": bag.get("path")})
                    log(f"{Path(bag.get('path', '?')).name}: {task.name} seed {r.seed} "
                        f"{'success' if r.success else 'failure'} in {r.steps} steps")
        finally:
            runner.stop()
            rclpy.try_shutdown(context=context)
    return {"out": str(out), "episodes": len(results), "successes": sum(r["success"] for r in results),
            "results": results}


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    summary = record(args.tasks, args.episodes_per_task, Path(args.out), args.seed, args.real_time,
                     args.startup_timeout)
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
    return 0 if summary["episodes"] else 1
