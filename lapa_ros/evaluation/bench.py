"""ROS pipeline benchmarks; each prints one JSON object. Not part of the test suite.

    lapa bench pipeline --policy <export>     camera stamp -> command latency p50/p99, achieved rates
    lapa bench recorder                       recorder throughput and drops at 2 x 640x480 @ 30 Hz,
                                              bag -> episode conversion speed
    lapa bench soak --minutes 30              every node's memory (RSS) over a long run at camera rate,
                                              with a burst of oversized frames (flat = no leak)

Each runs the real nodes as separate processes over DDS on a private ROS domain, on this machine
only. Numbers from one run are comparable with each other; across runs the machine's load matters.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from lapa_models.timing import latency_summary, rate_hz

from lapa_ros.bringup.dds import dds_defaults




def _isolated_env() -> Dict[str, str]:
    """The DDS settings of the benchmark's node processes, applied to this process too (it publishes
    and subscribes with them: transports must match, or 640x480 frames fragment and drop)."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    dds_defaults()
    env = {k: os.environ[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_BUILTIN_TRANSPORTS",
                                      "FASTDDS_DEFAULT_PROFILES_FILE")}
    return {"ROS_DOMAIN_ID": str(random.Random(os.getpid()).randrange(120, 200)), **env}


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


# ----------------------------------------------------------------------------- pipeline
@contextlib.contextmanager
def _sim_policy(policy: str, task: str):
    """The sim_policy graph as processes on a private domain, and an EpisodeRunner (not started) on it."""
    import rclpy

    from lapa_ros.bringup.supervisor import NodeProcesses
    from lapa_ros.evaluation.episode_runner import EpisodeRunner
    from lapa_ros.bringup.graph import build_graph

    env = _isolated_env()
    specs = build_graph("sim_policy", {"model": str(Path(policy).resolve()), "task": task})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    with tempfile.TemporaryDirectory() as logs, NodeProcesses(specs, env=env, log_dir=Path(logs)) as graph:
        runner = EpisodeRunner(record_frames=False, context=context)
        try:
            yield graph, runner, env
        finally:
            runner.stop()
            rclpy.try_shutdown(context=context)


def _episodes_until(runner, task: str, t_end: float) -> int:
    """Keep the arm busy until t_end (monotonic): a new episode whenever one ends. Returns the count."""
    from lapa_sim.tasks import get_task

    spec = get_task(task)
    k = 0
    while time.monotonic() < t_end:
        runner.run_episode(task, spec.instructions[k % len(spec.instructions)], spec.max_steps, 0.05, seed=2000 + k)
        k += 1
    return k


def bench_pipeline(policy: str, seconds: float, task: str) -> dict:
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import JointTrajectory

    from lapa_ros.evaluation.evaluate import PolicyDiagnostics
    from lapa_ros.interfaces.messages import stamp_to_sec
    from lapa_ros.interfaces.ros_common import COMMAND_QOS, SENSOR_QOS

    frames, chunks, commands, outputs = [], [], [], []
    with _sim_policy(policy, task) as (graph, runner, _):
        diagnostics = PolicyDiagnostics(runner)
        lock = threading.Lock()

        def stamp_now(store, stamp_of):
            def cb(msg):
                with lock:
                    store.append((time.monotonic(), time.time(), stamp_of(msg)))
            return cb

        runner.create_subscription(Image, "camera/image_raw", stamp_now(frames, lambda m: stamp_to_sec(m.header.stamp)),
                                   SENSOR_QOS)
        runner.create_subscription(JointTrajectory, "policy/action_chunk",
                                   stamp_now(chunks, lambda m: stamp_to_sec(m.header.stamp)), COMMAND_QOS)
        runner.create_subscription(TwistStamped, "arm_controller/twist_cmd",
                                   stamp_now(commands, lambda m: stamp_to_sec(m.header.stamp)), COMMAND_QOS)
        runner.create_subscription(TwistStamped, "servo_node/delta_twist_cmds",
                                   stamp_now(outputs, lambda m: stamp_to_sec(m.header.stamp)), COMMAND_QOS)
        runner.start()
        runner.wait_until_ready(timeout=120.0, graph=graph)
        runner.arm()
        with lock:
            frames.clear(), chunks.clear(), commands.clear(), outputs.clear()
        k = _episodes_until(runner, task, time.monotonic() + seconds)
        diag = diagnostics.report()
    frame_stamps = [s for _, _, s in frames]
    # frame stamp -> its chunk received (wall clock of this process; the sim stamps on the same clock)
    chunk_latency = [1e3 * (wall - s) for _, wall, s in chunks]
    # frame stamp -> the first command published (header stamp = publish time) after its chunk arrived
    cmd_times = np.array([s for _, _, s in commands])
    command_latency = []
    for _, wall, s in chunks:
        i = np.searchsorted(cmd_times, wall - 1e-4)
        if i < len(cmd_times):
            command_latency.append(1e3 * (cmd_times[i] - s))
    return {"benchmark": "pipeline", "machine": _machine(), "policy": str(policy), "task": task,
            "episodes": k, "seconds": seconds,
            "camera_rate_hz": rate_hz([t for t, _, _ in frames]),
            "inference_rate_hz": rate_hz([t for t, _, _ in chunks]),
            "policy_command_rate_hz": rate_hz([t for t, _, _ in commands]),
            "controller_output_rate_hz": rate_hz([t for t, _, _ in outputs]),
            "frames": len(frame_stamps), "chunks": len(chunks),
            "camera_stamp_to_chunk": latency_summary(chunk_latency),
            "camera_stamp_to_command_publish": latency_summary(command_latency),
            "policy_node_diagnostics": diag}


# ----------------------------------------------------------------------------- soak
def _rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _memory_summary(samples: List[Tuple[float, float]], warmup: float) -> dict:
    """RSS after warm-up: first, last, max, and the slope of a line fitted to the second half [MB/h]."""
    kept = [(t, m) for t, m in samples if t >= warmup] or samples
    t, m = np.array(kept).T
    half = t >= t[0] + (t[-1] - t[0]) / 2
    slope = float(np.polyfit(t[half], m[half], 1)[0]) * 3600 if half.sum() >= 3 and np.ptp(t[half]) > 0 else 0.0
    return {"rss_mb_after_warmup": round(float(m[0]), 1), "rss_mb_end": round(float(m[-1]), 1),
            "rss_mb_max": round(float(m.max()), 1), "growth_mb": round(float(m[-1] - m[0]), 1),
            "second_half_slope_mb_per_h": round(slope, 1), "samples": int(len(m))}


def bench_soak(policy: str, seconds: float, task: str, every: float, hostile: bool) -> dict:
    """The sim graph run by the policy for ``seconds`` at camera rate; every node's RSS sampled.

    With ``hostile``, a third of the way in, 4096x4096 frames (refused by the policy's
    max_image_pixels before conversion) are published on the camera topic for 10 s: RSS must come back."""
    from sensor_msgs.msg import Image

    from lapa_ros.interfaces.messages import image_msg
    from lapa_ros.interfaces.ros_common import SENSOR_QOS

    samples: Dict[str, List[Tuple[float, float]]] = {}
    stop = threading.Event()
    burst: Dict[str, float] = {}
    with _sim_policy(policy, task) as (graph, runner, _):
        runner.start()
        runner.wait_until_ready(timeout=120.0, graph=graph)
        runner.arm()
        t0 = time.monotonic()

        def sample():
            while not stop.wait(every):
                for name, proc in graph.procs.items():
                    rss = _rss_mb(proc.pid)
                    if rss is not None:
                        samples.setdefault(name, []).append((time.monotonic() - t0, rss))

        def flood():
            if stop.wait(seconds / 3):
                return
            pub = runner.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
            big = np.zeros((4096, 4096, 3), np.uint8)
            burst["start_s"] = time.monotonic() - t0
            n = 0
            while time.monotonic() - t0 < burst["start_s"] + 10.0 and not stop.is_set():
                pub.publish(image_msg(big, runner.get_clock().now().to_msg(), "camera"))
                n += 1
                time.sleep(0.2)
            burst.update(end_s=time.monotonic() - t0, frames=n)

        threads = [threading.Thread(target=sample, daemon=True)] + \
            ([threading.Thread(target=flood, daemon=True)] if hostile else [])
        for t in threads:
            t.start()
        try:
            episodes = _episodes_until(runner, task, t0 + seconds)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        graph.check_alive()
    warmup = min(60.0, seconds / 10)
    return {"benchmark": "soak", "machine": _machine(), "policy": str(policy), "task": task,
            "seconds": round(seconds, 1), "episodes": episodes, "warmup_s": warmup,
            "oversized_frame_burst": burst or None,
            "nodes": {name: _memory_summary(s, warmup) for name, s in sorted(samples.items())}}


# ----------------------------------------------------------------------------- recorder
def bench_recorder(seconds: float, reliable: bool) -> dict:
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import Trigger

    from lapa_ros.recording.bag_convert import ConversionConfig, convert_bags
    from geometry_msgs.msg import PoseStamped, TwistStamped

    from lapa_ros.recording.bags import bag_topics, set_outcome
    from lapa_ros.bringup.supervisor import NodeProcesses
    from lapa_ros.bringup.graph import NodeSpec
    from lapa_ros.interfaces.messages import image_msg, twist_msg
    from lapa_ros.interfaces.ros_common import COMMAND_QOS, SENSOR_QOS

    env = _isolated_env()
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST) \
        if reliable else SENSOR_QOS
    topics = ["camera/image_raw", "camera2/image_raw", "joint_states", "ee_pose", "arm_controller/twist_cmd"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = NodeSpec(name="recorder", executable="recorder_node", module="lapa_ros.nodes.recorder",
                        config=("recorder.yaml",), parameters={"topics": topics, "output_dir": str(tmp / "bags")})
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
        node = rclpy.create_node("bench_recorder", context=context)
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        cams = [node.create_publisher(Image, t, qos) for t in topics[:2]]
        joints = node.create_publisher(JointState, "joint_states", COMMAND_QOS)
        poses = node.create_publisher(PoseStamped, "ee_pose", COMMAND_QOS)
        twists = node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
        client = {n: node.create_client(Trigger, f"recorder/{n}") for n in ("start", "stop")}
        frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        sent = {"camera/image_raw": 0, "camera2/image_raw": 0, "joint_states": 0}
        with NodeProcesses([spec], env=env, log_dir=tmp / "logs") as graph:
            deadline = time.monotonic() + 60
            while not all(p.get_subscription_count() for p in cams + [joints]):
                graph.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("recorder did not subscribe")
                time.sleep(0.05)
            time.sleep(0.5)
            client["start"].wait_for_service(timeout_sec=10)
            f = client["start"].call_async(Trigger.Request())
            while not f.done():
                time.sleep(0.01)
            bag = Path(f.result().message)
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < seconds:
                now = node.get_clock().now().to_msg()
                if k % 10 in (0, 3, 7):
                    for cam, topic in zip(cams, topics[:2]):
                        cam.publish(image_msg(frame, now, "camera"))
                        sent[topic] += 1
                    twists.publish(twist_msg(np.array([0.0, 0.05, 0.0]), now, "world"))
                js = JointState(name=[f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"],
                                position=[0.0] * 7 + [0.04])   # the recorder.yaml gripper mapping: Franka Hand
                js.header.stamp = now
                joints.publish(js)
                pose = PoseStamped()
                pose.header.stamp = now
                poses.publish(pose)
                sent["joint_states"] += 1
                k += 1
                time.sleep(max(0.0, t0 + k * 0.01 - time.monotonic()))
            elapsed = time.monotonic() - t0
            time.sleep(1.0)
            f = client["stop"].call_async(Trigger.Request())
            t_stop = time.monotonic()
            while not f.done():
                time.sleep(0.01)
            close_s = time.monotonic() - t_stop
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        recorded = {t.lstrip("/"): n for t, (_, n) in bag_topics(bag).items()}
        size = sum(p.stat().st_size for p in bag.glob("*.mcap"))
        set_outcome(bag, "success")
        t1 = time.monotonic()
        conversion = convert_bags(bag, tmp / "episodes", ConversionConfig(image_size=(128, 128)), progress=False)
        convert_s = time.monotonic() - t1
        converted_frames = sum(r["frames"] for r in conversion["episodes"])
    drops = {t: sent[t] - recorded.get(t, 0) for t in sent}
    raw_mb = (sent["camera/image_raw"] + sent["camera2/image_raw"]) * frame.nbytes / 2**20
    return {"benchmark": "recorder", "machine": _machine(), "qos": "reliable" if reliable else "sensor_data (best effort)",
            "seconds": round(elapsed, 2), "published": sent, "recorded": recorded, "drops": drops,
            "raw_image_MB_per_s": round(raw_mb / elapsed, 1), "bag_MB": round(size / 2**20, 1),
            "stop_to_bag_closed_s": round(close_s, 2),
            "conversion": {"frames": converted_frames, "seconds": round(convert_s, 2),
                           "frames_per_s": round(converted_frames / convert_s, 1), "failed": conversion["failed"]}}


# ----------------------------------------------------------------------------- commands
def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None, help="exported policy (default: the demo policy)")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--task", default="drawer-close")


def pipeline_main(args: argparse.Namespace) -> int:
    policy = args.policy
    if policy is None:
        from lapa_ros.evaluation.demo_policy import ensure_demo_policy

        policy = str(ensure_demo_policy())
    print(json.dumps(bench_pipeline(policy, args.seconds, args.task), indent=2))
    return 0


def add_soak_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None, help="exported policy (default: the demo policy)")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--task", default="drawer-close")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--no-hostile", action="store_true", help="skip the burst of 4096x4096 frames")


def soak_main(args: argparse.Namespace) -> int:
    policy = args.policy
    if policy is None:
        from lapa_ros.evaluation.demo_policy import ensure_demo_policy

        policy = str(ensure_demo_policy())
    print(json.dumps(bench_soak(policy, 60.0 * args.minutes, args.task, args.sample_every, not args.no_hostile),
                     indent=2))
    return 0


def add_recorder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--qos", choices=["sensor", "reliable", "both"], default="both")


def recorder_main(args: argparse.Namespace) -> int:
    modes = {"sensor": [False], "reliable": [True], "both": [False, True]}[args.qos]
    print(json.dumps([bench_recorder(args.seconds, m) for m in modes], indent=2))
    return 0
