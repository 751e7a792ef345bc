"""`lapa eval`: run N episodes with a policy on the simulated arm or a robot, and report.

    lapa eval --policy runs/policy/export --tasks demo --episodes-per-task 10 --out runs/eval/mine
    lapa eval --robot --instruction "put the cup on the plate" --episodes 10 --out runs/eval/robot
    lapa eval compare runs/eval/scratch runs/eval/lapa --out runs/eval/compare.png

Simulation: the harness starts the simulated arm, the policy and the arm controller (graph
sim_policy), arms the controller, and for each episode chooses the task, resets, sends the
instruction and takes success from the simulator. On a robot (--robot) the graph is yours (`ros2
launch lapa_ros policy.launch.py ...`): before each episode the operator resets the scene and presses
Enter; success comes from the operator (y/n in the terminal, or the eval/mark_success service).

Writes <out>/episodes.csv and episodes.json (one row per episode, with the commands that reached the
arm controller and, for a twist backend, the motion it passed on), <out>/videos/episode_NNN.mp4 (what the
camera saw, instruction and outcome drawn on it), <out>/summary.json (success rate per task, episode
lengths, the policy's latency and execution provider and both nodes' refusal counters from
/diagnostics, the episodes in which the arm never moved) and <out>/summary.png. Exit code 1 when the
arm moved in no episode (a policy that never acted is a setup failure, not a 0% result).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


def annotate(frame: np.ndarray, lines: List[str], color=(255, 255, 255), scale: int = 3) -> np.ndarray:
    """Upscale a frame and write text lines on a dark band at its top."""
    import cv2

    if frame.shape[0] < 200:
        frame = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    img = np.ascontiguousarray(frame)
    band = 16 * len(lines) + 6
    img[:band] = (img[:band] * 0.35).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(img, text[:64], (6, 16 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return img


class EvaluationLog:
    """Per-episode rows, videos, and the summary files of one evaluation run."""

    def __init__(self, out: Path, name: str = "", video_fps: float = 20.0, combined_video: Optional[str] = None):
        self.out = Path(out)
        (self.out / "videos").mkdir(parents=True, exist_ok=True)
        self.name = name or self.out.name
        self.rows: List[dict] = []
        self.fps = video_fps
        self._combined = None
        self._combined_name = combined_video

    def add(self, result, frames: List[np.ndarray], extra: Optional[dict] = None) -> dict:
        from lapa_models.data.video import VideoWriter

        k = len(self.rows) + 1
        row = {"episode": k, **result.summary(), **(extra or {})}
        verdict = ("SUCCESS", (80, 255, 80)) if result.success else ("failure", (255, 90, 90))
        annotated = [annotate(f, [f"{result.task} #{k}: {result.instruction}", f"step {i}"] +
                              ([verdict[0]] if i == len(frames) - 1 else []),
                              verdict[1] if i == len(frames) - 1 else (255, 255, 255))
                     for i, f in enumerate(frames)]
        if annotated:
            h, w = annotated[0].shape[:2]
            h, w = h - h % 2, w - w % 2
            path = self.out / "videos" / f"episode_{k:03d}.mp4"
            with VideoWriter(path, self.fps, w, h, codec="h264") as vw:
                for a in annotated:
                    vw.write(np.ascontiguousarray(a[:h, :w]))
            row["video"] = str(path.relative_to(self.out))
            if self._combined_name:
                if self._combined is None:
                    self._combined = VideoWriter(self.out / self._combined_name, self.fps, w, h, codec="h264")
                for a in annotated:
                    self._combined.write(np.ascontiguousarray(a[:h, :w]))
        self.rows.append(row)
        self._write_rows()
        return row

    def _write_rows(self) -> None:
        (self.out / "episodes.json").write_text(json.dumps(self.rows, indent=2))
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.out / "episodes.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)

    def finish(self, extra: Optional[dict] = None) -> dict:
        if self._combined is not None:
            self._combined.close()
        summary = summarize(self.rows, self.name)
        summary.update(extra or {})
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_summaries([summary], self.out / "summary.png")
        return summary


def summarize(rows: List[dict], name: str) -> dict:
    tasks: Dict[str, dict] = {}
    for r in rows:
        t = tasks.setdefault(r["task"], {"episodes": 0, "successes": 0, "steps": []})
        t["episodes"] += 1
        t["successes"] += bool(r["success"])
        t["steps"].append(r["steps"])
    per_task = {k: {"episodes": v["episodes"], "successes": v["successes"],
                    "success_rate": v["successes"] / v["episodes"], "mean_steps": float(np.mean(v["steps"]))}
                for k, v in tasks.items()}
    n = len(rows)
    s = sum(bool(r["success"]) for r in rows)
    still = [r["episode"] for r in rows if acting_problem(r)]
    return {"name": name, "episodes": n, "successes": s, "success_rate": s / n if n else 0.0, "per_task": per_task,
            "episodes_arm_not_moved": still}


def plot_summaries(summaries: List[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for s in summaries for t in s["per_task"]})
    labels = tasks + ["all"]
    width = 0.8 / max(len(summaries), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels) * max(1, len(summaries)) / 1.5), 4))
    for i, s in enumerate(summaries):
        rates = [s["per_task"].get(t, {}).get("success_rate", np.nan) for t in tasks] + [s["success_rate"]]
        x = np.arange(len(labels)) + (i - (len(summaries) - 1) / 2) * width
        bars = ax.bar(x, [100 * r for r in rates], width, label=f"{s['name']} ({s['successes']}/{s['episodes']})")
        for b, r in zip(bars, rates):
            if np.isfinite(r):
                ax.text(b.get_x() + b.get_width() / 2, 100 * r + 1, f"{100 * r:.0f}", ha="center", fontsize=8)
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylabel("success rate [%]")
    ax.set_ylim(0, 110)
    ax.legend(fontsize=8)
    ax.set_title("lapa eval")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class PolicyDiagnostics:
    """Collects the policy node's and the arm controller's /diagnostics values during an evaluation."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray

        from lapa_ros.interfaces.ros_common import COMMAND_QOS

        self.values: Dict[str, str] = {}
        self.controller: Dict[str, str] = {}
        self._controller_updates = 0
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, COMMAND_QOS)

    def _on(self, msg) -> None:
        for status in msg.status:
            if status.name == "lapa_ros: policy":
                self.values = {kv.key: kv.value for kv in status.values}
            elif status.name == "lapa_ros: arm_controller safety":
                self.controller = {"message": status.message, **{kv.key: kv.value for kv in status.values}}
                self._controller_updates += 1

    def fresh_motion_sent(self, timeout: float = 2.0) -> Optional[int]:
        """The arm controller's count of motion commands passed on to the arm, from a /diagnostics message
        published after this call (at most ``timeout`` s); None if none came or it does not report one."""
        seen = self._controller_updates
        deadline = time.monotonic() + timeout
        while self._controller_updates == seen:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        try:
            return int(self.controller["motion_sent"])
        except (KeyError, ValueError):
            return None

    def report(self) -> dict:
        keys = ("providers_in_use", "latency_ms_p50", "latency_ms_p99", "inference_ms_p50", "inference_ms_p99",
                "inference_rate_hz", "command_rate_hz")
        out = {k: self.values[k] for k in keys if k in self.values}
        # How many frames were not acted on, and why (stale, no state near the frame, busy, ...).
        out.update({k: self.values[k] for k in sorted(self.values) if k.startswith("count.")})
        return out

    def controller_report(self) -> dict:
        """The gate's state and every hold / refusal counter (why commands did not reach the arm)."""
        return {k: v for k, v in sorted(self.controller.items())
                if k in ("message", "state", "estop_latched", "last_reason") or k.startswith("count.")}


def acting_problem(row: dict) -> Optional[str]:
    """Why an episode's arm never moved, from its command counts (None: it moved, or nothing was watched).

    A failed episode looks the same whether the policy tried and failed or never acted at all (every frame
    refused, topics not connected) or the arm controller refused every command: this tells them apart."""
    commands, motion, forwarded = row.get("commands"), row.get("motion_commands"), row.get("forwarded_motion")
    if commands is None or motion is None or (forwarded or 0) > 0:
        return None   # not watched, or the arm was moved (even if the first commands were missed here)
    if commands == 0:
        return ("no command reached arm_controller/twist_cmd: the policy acted on no frame (see its count.* "
                "diagnostics: refused images, stale or missing state, inactive) or is not connected")
    if motion == 0:
        return f"all {commands} commands to the arm controller were holds (zero twists)"
    if forwarded == 0:
        return (f"the arm controller passed on none of the {motion} motion commands it got (disarmed, e-stop, "
                "refusals: see its diagnostics)")
    return None


# ----------------------------------------------------------------------------- simulation
def evaluate_sim(policy_dir: Optional[str], tasks: str, episodes_per_task: int, out: Path, seed: int = 1000,
                 real_time: bool = True, name: str = "", combined_video: Optional[str] = None,
                 startup_timeout: float = 120.0, env=None, log=print) -> dict:
    """Episodes on the simulated arm driven by the policy (or, with policy_dir None, the scripted expert)."""
    import rclpy

    from lapa_sim.tasks import load_catalogue

    from lapa_ros.bringup.supervisor import NodeProcesses
    from lapa_ros.evaluation.episode_runner import EpisodeRunner
    from lapa_ros.bringup.graph import build_graph

    specs_tasks = load_catalogue().resolve(tasks)
    if episodes_per_task < 1:
        raise ValueError(f"episodes per task must be at least 1, got {episodes_per_task}")
    if policy_dir is not None:
        from lapa_models.policy.runtime import load_card

        load_card(policy_dir)   # a missing or corrupt export fails here, in one line, before any node starts
    graph_args = {"task": specs_tasks[0].name, "real_time": str(real_time).lower(),
                  "lockstep": str(not real_time).lower()}
    if policy_dir is None:
        specs = build_graph("sim_teleop", graph_args)
    else:
        specs = build_graph("sim_policy", {"model": str(Path(policy_dir).resolve()), **graph_args})
    log(f"starting nodes: {', '.join(s.name for s in specs)} (logs in {Path(out) / 'logs'})")
    evlog = EvaluationLog(out, name, combined_video=combined_video)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int((env or os.environ).get("ROS_DOMAIN_ID", 0)))
    n_total = len(specs_tasks) * episodes_per_task
    with NodeProcesses(specs, env=env, log_dir=Path(out) / "logs") as graph:
        runner = EpisodeRunner(context=context)
        diagnostics = PolicyDiagnostics(runner)
        runner.start()
        try:
            t0 = time.monotonic()
            runner.wait_until_ready(timeout=startup_timeout, graph=graph)
            runner.arm()
            log(f"robot ready in {time.monotonic() - t0:.1f} s; arm controller armed\n")
            for task in specs_tasks:
                for k in range(episodes_per_task):
                    graph.check_alive()
                    instruction = task.instructions[k % len(task.instructions)]
                    r = runner.run_episode(task.name, instruction, task.max_steps, control_period=0.05,
                                           seed=seed + k)
                    row = evlog.add(r, r.frames)
                    log(f"episode {row['episode']:2d}/{n_total}  {task.name:22s} seed {r.seed:5d}  "
                        f"{'SUCCESS' if r.success else 'failure'}  {r.steps:3d} steps  {r.duration:4.1f} s  "
                        f"\"{instruction}\"")
                    problem = acting_problem(row)
                    if problem:
                        log(f"  warning: the arm did not move: {problem}")
        finally:
            runner.stop()
            rclpy.try_shutdown(context=context)
    return evlog.finish({"policy": str(policy_dir) if policy_dir else "scripted expert", "mode": "sim",
                         "real_time": real_time,
                         "policy_diagnostics": diagnostics.report(),
                         "controller_diagnostics": diagnostics.controller_report()})


# ----------------------------------------------------------------------------- robot
def evaluate_robot(instruction: str, episodes: int, out: Path, timeout: float, name: str = "", log=print,
                   prompt=input) -> dict:
    """Operator-in-the-loop episodes on a running robot graph (camera + policy + arm controller)."""
    import rclpy
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    from lapa_ros.evaluation.episode_runner import EpisodeResult, EpisodeRunner

    rclpy.init()
    runner = EpisodeRunner()
    diagnostics = PolicyDiagnostics(runner)
    verdict: Dict[str, Optional[bool]] = {"value": None}
    event = threading.Event()

    def on_mark(request, response):
        verdict["value"] = bool(request.data)
        event.set()
        response.success, response.message = True, "success" if request.data else "failure"
        return response

    runner.create_service(SetBool, "eval/mark_success", on_mark)
    runner.start()
    evlog = EvaluationLog(out, name)
    try:
        runner.wait_until_ready(timeout=60.0, need_reset_service=False)
        for k in range(1, episodes + 1):
            prompt(f"[episode {k}/{episodes}] reset the scene, then press Enter to start (the policy will act) ")
            # Counters connected to every command publisher first (at most 2 s, once): an operator quicker than
            # DDS discovery must not see the policy's first episode reported as one it never acted in.
            counted = runner.match_command_publishers()
            # A controller driving joints outputs no twist to count: what it passed on is its own count, read
            # while it is disarmed (before arming, after disarming) so the difference is this episode's alone.
            sent_before = diagnostics.fresh_motion_sent()
            runner.begin_recording_frames()
            event.clear()
            verdict["value"] = None
            runner.arm()
            runner.pub_instruction.publish(String(data=instruction))
            t0 = time.monotonic()
            log("running: y = success, n = failure (or call eval/mark_success)")
            answer = _wait_operator(event, verdict, timeout)
            runner.trigger("arm_controller/disarm")
            frames = runner.end_recording_frames()
            counts = runner.take_counts(watched=counted)
            sent_after = diagnostics.fresh_motion_sent()
            if counted and counts["forwarded_motion"] is None and None not in (sent_before, sent_after) \
                    and sent_after >= sent_before:   # (smaller: the controller restarted, the count is unknown)
                counts["forwarded_motion"] = sent_after - sent_before
            result = EpisodeResult(task="robot", seed=k, instruction=instruction, success=bool(answer),
                                   steps=len(frames), duration=time.monotonic() - t0, frames=frames, **counts)
            row = evlog.add(result, frames)
            log(f"episode {row['episode']}: {'SUCCESS' if result.success else 'failure'}"
                f"{' (timeout)' if answer is None else ''}")
            problem = acting_problem(row)
            if problem:
                log(f"  warning: {problem}")
    finally:
        runner.stop()
        rclpy.try_shutdown()
    return evlog.finish({"mode": "robot", "policy_diagnostics": diagnostics.report(),
                         "controller_diagnostics": diagnostics.controller_report()})


def _wait_operator(event: threading.Event, verdict: dict, timeout: float) -> Optional[bool]:
    """y/n from the terminal or the service, whichever comes first; None on timeout."""
    import select

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event.wait(0.1):
            return verdict["value"]
        if sys.stdin.isatty() and select.select([sys.stdin], [], [], 0)[0]:
            line = sys.stdin.readline().strip().lower()
            if line in ("y", "n"):
                return line == "y"
    return None


# ----------------------------------------------------------------------------- commands
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", help="exported policy folder (simulation)")
    p.add_argument("--tasks", default="demo", help="simulated tasks or task sets")
    p.add_argument("--episodes-per-task", type=int, default=5)
    p.add_argument("--seed", type=int, default=1000, help="seed of each task's first episode")
    p.add_argument("--out", required=True, help="where episodes.csv/json, videos and the summary go")
    p.add_argument("--name", default="", help="label of this run in plots (default: the out folder name)")
    p.add_argument("--lockstep", action="store_true", help="simulation: sim time, each step waits for the policy")
    p.add_argument("--robot", action="store_true", help="evaluate on a running robot graph with an operator")
    p.add_argument("--instruction", default="", help="robot: the instruction to give")
    p.add_argument("--episodes", type=int, default=10, help="robot: number of episodes")
    p.add_argument("--timeout", type=float, default=60.0, help="robot: seconds before an episode counts as failed")


def main(args: argparse.Namespace) -> int:
    from lapa_ros.bringup.dds import dds_defaults

    dds_defaults()
    if args.robot:
        if not args.instruction.strip():
            print("lapa eval --robot needs --instruction", file=sys.stderr)
            return 2
        summary = evaluate_robot(args.instruction, args.episodes, Path(args.out), args.timeout, args.name)
    else:
        if not args.policy:
            print("lapa eval needs --policy (an exported policy folder) or --robot", file=sys.stderr)
            return 2
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        summary = evaluate_sim(args.policy, args.tasks, args.episodes_per_task, Path(args.out), args.seed,
                               real_time=not args.lockstep, name=args.name)
    print(f"\nsuccess {summary['successes']}/{summary['episodes']} ({100 * summary['success_rate']:.0f}%)  "
          f"-> {Path(args.out) / 'summary.json'}, {Path(args.out) / 'summary.png'}")
    return report_not_moved(summary)


def report_not_moved(summary: dict, out=None) -> int:
    """Exit status of an evaluation: 1 (with why) when the arm moved in none of its episodes, so a policy that
    never acted is not mistaken for one that failed; 0 otherwise (episodes where it did not move are listed)."""
    out = out or sys.stderr
    still = summary.get("episodes_arm_not_moved") or []
    if not still:
        return 0
    why = {"policy": summary.get("policy_diagnostics", {}), "arm controller": summary.get("controller_diagnostics", {})}
    detail = "; ".join(f"{who}: " + ", ".join(f"{k}={v}" for k, v in d.items() if k.startswith("count.") or
                                            k in ("message", "state"))
                       for who, d in why.items() if d)
    if len(still) == summary["episodes"]:
        print(f"error: the arm did not move in any of the {len(still)} episodes: the result measures the setup, "
              f"not the policy (episodes.csv: commands, motion_commands, forwarded_motion){'; ' + detail if detail else ''}",
              file=out)
        return 1
    print(f"warning: the arm did not move in episodes {still} (episodes.csv says why)", file=out)
    return 0


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="evaluation folders (each with summary.json)")
    p.add_argument("--out", default="comparison.png")


def compare_main(args: argparse.Namespace) -> int:
    summaries = []
    for run in args.runs:
        path = Path(run) / "summary.json"
        if not path.is_file():
            print(f"lapa eval compare: {path} not found", file=sys.stderr)
            return 1
        summaries.append(json.loads(path.read_text()))
    plot_summaries(summaries, Path(args.out))
    tasks = sorted({t for s in summaries for t in s["per_task"]})
    print(f"{'task':24s}" + "".join(f"{s['name'][:16]:>18s}" for s in summaries))
    for t in tasks + ["all"]:
        cells = []
        for s in summaries:
            d = s["per_task"].get(t) if t != "all" else s
            cells.append(f"{100 * d['success_rate']:5.0f}% ({d['successes']}/{d['episodes']})" if d else "-")
        print(f"{t:24s}" + "".join(f"{c:>18s}" for c in cells))
    print(f"plot: {args.out}")
    return 0
