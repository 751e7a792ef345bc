"""`lapa demo`: the whole stack on the simulated arm, over ROS 2, in separate processes.

Starts the simulated arm, the policy (ONNX Runtime) and the safety-gated arm controller as separate
ROS 2 processes (graph sim_policy, what `ros2 launch lapa_ros sim.launch.py` starts), runs a few
episodes over several tasks with their instructions, prints one line per episode and a summary, and
writes a rollout video:

    runs/demo/rollout.mp4      every episode, with its instruction and outcome drawn on the frames
    runs/demo/summary.json     per-episode results, success rate, the policy's latency on /diagnostics
    runs/demo/logs/<node>.log  each node's output

The policy is the small demo policy this project trains on simulated data (lapa_ros.evaluation.demo_policy):
the first run trains it (minutes on a CPU, with progress bars) unless it is already there.
`--driver expert` runs the scripted expert instead of a policy.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from lapa_ros.bringup.dds import dds_defaults


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default="demo", help="tasks or task sets (lapa_sim/tasks.yaml), comma separated")
    p.add_argument("--episodes-per-task", type=int, default=2)
    p.add_argument("--seed", type=int, default=1000, help="seed of each task's first episode (held out from training)")
    p.add_argument("--out", default="runs/demo", help="where the video, summary and logs go")
    p.add_argument("--driver", default="policy", choices=["policy", "expert"],
                   help="what drives the arm: the trained policy or the scripted expert")
    p.add_argument("--policy", default=None, help="an exported policy folder (default: the demo policy)")
    p.add_argument("--startup-timeout", type=float, default=120.0)


def main(args: argparse.Namespace) -> int:
    from lapa_ros.evaluation.evaluate import evaluate_sim, report_not_moved

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # a demo talks to itself only
    dds_defaults()
    policy = None
    if args.driver == "policy":
        if args.policy:
            policy = args.policy
        else:
            from lapa_ros.evaluation.demo_policy import ensure_demo_policy

            policy = str(ensure_demo_policy())
    print(f"lapa demo: tasks '{args.tasks}' x {args.episodes_per_task} episode(s), driver: "
          f"{'policy ' + policy if policy else 'scripted expert'}")
    t0 = time.monotonic()
    summary = evaluate_sim(policy, args.tasks, args.episodes_per_task, Path(args.out), seed=args.seed,
                           real_time=True, name="demo", combined_video="rollout.mp4",
                           startup_timeout=args.startup_timeout)
    diag = summary.get("policy_diagnostics") or {}
    print(f"\nsuccess {summary['successes']}/{summary['episodes']} ({100 * summary['success_rate']:.0f}%) "
          f"in {time.monotonic() - t0:.0f} s")
    if diag:
        print(f"policy: camera stamp -> action chunk p50 {diag.get('latency_ms_p50')} ms, "
              f"p99 {diag.get('latency_ms_p99')} ms; inference {diag.get('inference_rate_hz')} Hz on "
              f"{diag.get('providers_in_use')}")
    out = Path(args.out)
    print(f"rollout video: {out / 'rollout.mp4'}\nsummary:       {out / 'summary.json'} ({out / 'summary.png'})")
    return (report_not_moved(summary) if summary["episodes"] else 1)
