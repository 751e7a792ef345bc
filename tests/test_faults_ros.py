"""Faults at the DDS level, nodes as separate processes: clocks running ahead, hostile instruction
text, oversized frames, refusals that must be visible in the log, and supervision (SIGTERM, a dying
node, respawn) with the arm controller holding on every exit."""
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lapa_ros.bringup.supervisor import NodeProcesses
from lapa_ros.bringup.graph import arm_controller_node, build_graph, camera_node, policy_node, sim_robot_node
from lapa_ros.interfaces.messages import image_msg, sec_to_stamp, twist_msg, twist_to_arrays
from lapa_ros.interfaces.ros_common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

pytestmark = pytest.mark.timeout(240)
RGB = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _wait(graph, condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        graph.check_alive()
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def _diag(diags, name):
    for d in reversed(diags):
        for s in d.status:
            if s.name == name:
                return {kv.key: kv.value for kv in s.values}, s.message
    return {}, ""


class Streamer:
    """Publishes camera frames, ee_pose and joint_states at 20 Hz, stamped now + ``offset`` seconds."""

    def __init__(self, ros, offset=0.0, make_frame=None, gripper_joint="r_close", positions=(0.0,)):
        self.ros, self.offset, self.running = ros, offset, True
        self.joints_name = gripper_joint   # conftest's export's
        self.positions = list(positions)
        self.make_frame = make_frame or (lambda stamp: image_msg(RGB, stamp, "cam"))
        self.images = ros.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.pose = ros.node.create_publisher(PoseStamped, "ee_pose", COMMAND_QOS)
        self.joints = ros.node.create_publisher(JointState, "joint_states", COMMAND_QOS)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            stamp = sec_to_stamp(self.ros.node.get_clock().now().nanoseconds * 1e-9 + self.offset)
            pose = PoseStamped()
            pose.header.stamp = stamp
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.0, 0.6, 0.2
            joints = JointState(name=[self.joints_name], position=self.positions)
            joints.header.stamp = stamp
            try:
                self.pose.publish(pose)
                self.joints.publish(joints)
                self.images.publish(self.make_frame(stamp))
            except Exception:
                return
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.thread.join()


def _policy(ros, start_graph, tiny_exports, state=True):
    graph = start_graph([policy_node(str(tiny_exports["state" if state else "no_state"]), sim=False,
                                     log_throttle=1.0)])
    chunks, twists, diags = [], [], []
    ros.node.create_subscription(JointTrajectory, "policy/action_chunk", chunks.append, COMMAND_QOS)
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd", twists.append, COMMAND_QOS)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, COMMAND_QOS)
    instruction = ros.node.create_publisher(String, "instruction", LATCHED_QOS)
    probe = ros.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    _wait(graph, lambda: probe.get_subscription_count() > 0, 60, "policy subscriptions")
    time.sleep(0.5)
    return graph, chunks, twists, diags, instruction


def _moving(twists, since=0):
    return [m for m in twists[since:] if np.linalg.norm(twist_to_arrays(m)[0]) > 1e-9]


def test_frames_and_states_stamped_in_the_future_are_refused_never_queued(ros, start_graph, tiny_exports):
    graph, chunks, twists, diags, instruction = _policy(ros, start_graph, tiny_exports)
    instruction.publish(String(data="open the drawer"))
    ahead = Streamer(ros, offset=3.0)
    time.sleep(2.0)
    ahead.stop()
    # Wait past the moment the clock catches up with the last frame: nothing may have been queued.
    time.sleep(2.0)
    assert not chunks and not _moving(twists), "frames stamped 3 s ahead were acted on"
    _wait(graph, lambda: _diag(diags, "lapa_ros: policy")[0].get("clock.camera.state") == "ahead", 5,
          "clock offset on /diagnostics")
    values, message = _diag(diags, "lapa_ros: policy")
    assert float(values["clock.camera.min_delay_s"]) < -2.5 and "ahead" in message
    assert int(values["count.from_future_frame"]) > 0 and int(values["count.from_future_state"]) > 0
    log = graph.log("policy")
    assert "camera clock is at least" in log and "frame refused: stamped +" in log
    # Frames stamped now are used again.
    good = Streamer(ros, offset=0.0)
    try:
        _wait(graph, lambda: chunks, 20, "chunks from frames stamped now")
    finally:
        good.stop()


def test_instruction_of_control_characters_is_refused_and_never_reaches_the_terminal(ros, start_graph,
                                                                                     tiny_exports):
    graph, chunks, twists, diags, instruction = _policy(ros, start_graph, tiny_exports, state=False)
    stream = Streamer(ros)
    try:
        for hostile in ["\x1b[2J\x07\r", "\x1b]0;title\x07\x1b[1;31m", "\x00\x1b\x9b\u202e", "\t\n  \r\n", "?!...--"]:
            instruction.publish(String(data=hostile))
            time.sleep(0.8)
            n = len(chunks)
            time.sleep(0.8)
            assert len(chunks) == n, f"acted on the instruction {hostile!r}"
        instruction.publish(String(data="\x1b[31mopen\x07 the\r\ndrawer\x1b[0m"))
        _wait(graph, lambda: chunks, 20, "chunks for an instruction with words among control characters")
    finally:
        stream.stop()
    log = graph.log("policy")
    assert not any(c in log for c in "\x1b\x07\x00\x9b\u202e"), "raw control characters written to the log"
    assert "without a word" in log
    assert 'instruction: "open the drawer"' in log   # cleaned: escape sequences and control bytes dropped


def test_oversized_and_overlong_frames_are_refused_before_conversion(ros, start_graph, tiny_exports):
    graph, chunks, twists, diags, instruction = _policy(ros, start_graph, tiny_exports, state=False)
    instruction.publish(String(data="open the drawer"))
    huge = np.zeros((4096, 4096, 3), np.uint8)
    images = ros.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    for _ in range(3):
        images.publish(image_msg(huge, ros.node.get_clock().now().to_msg(), "cam"))
        time.sleep(0.3)
    long = image_msg(RGB, ros.node.get_clock().now().to_msg(), "cam")
    long.data = bytes(long.data) + b"\0" * 100
    for _ in range(3):
        long.header.stamp = ros.node.get_clock().now().to_msg()
        images.publish(long)
        time.sleep(0.1)
    time.sleep(1.0)
    assert not chunks
    log = graph.log("policy")
    assert "max_image_pixels" in log and "needs exactly" in log
    graph.check_alive()


def _controller(ros, start_graph, **params):
    graph = start_graph([sim_robot_node("reach", real_time=True), arm_controller_node(sim=True, log_throttle=1.0,
                                                                                       **params)])
    outputs, poses = [], []
    ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", outputs.append, COMMAND_QOS)
    ros.node.create_subscription(PoseStamped, "ee_pose", poses.append, COMMAND_QOS)
    _wait(graph, lambda: outputs and poses, 60, "controller output and the arm's pose")
    time.sleep(0.5)
    return graph, outputs


def _trigger(ros, name):
    return ros.call(ros.node.create_client(Trigger, f"arm_controller/{name}"), Trigger.Request())


def test_every_refusal_of_the_controller_is_in_its_log(ros, start_graph):
    graph, outputs = _controller(ros, start_graph)
    pub = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
    _wait(graph, lambda: pub.get_subscription_count() > 0, 20, "controller subscription")

    def send(velocity, offset=0.0, frame="world", n=5):
        for _ in range(n):
            now = ros.node.get_clock().now().nanoseconds * 1e-9
            pub.publish(twist_msg(np.asarray(velocity, float), sec_to_stamp(now + offset), frame))
            time.sleep(0.05)

    send([0.0, 0.05, 0.0])                      # disarmed
    assert _trigger(ros, "arm").success
    send([0.0, 0.05, 0.0], offset=3.0)          # from the future
    send([np.nan, 0.0, 0.0])                    # NaN
    send([0.0, 5.0, 0.0])                       # too fast: clamped
    send([0.0, 0.05, 0.0], frame="\x1b[2Jcam")  # wrong frame, hostile name
    time.sleep(0.6)                             # the watchdog holds
    n = len(outputs)
    send([0.0, 0.05, 0.0], offset=3.0, n=10)
    assert not _moving(outputs, n), "a command stamped 3 s ahead moved the arm"
    time.sleep(0.5)
    log = graph.log("arm_controller")
    for line in ("command while DISARMED", "command stamped in the future", "command with NaN/Inf",
                 "linear speed above max_linear_speed", "twist in frame '\\x1b[2Jcam' refused", "watchdog"):
        assert line in log, f"no log line '{line}' in:\n{log}"
    assert "\x1b" not in log
    assert "command sender clock is at least" in log


def _edited_copy(export, tmp_path, edit):
    """A copy of an export whose model card ``edit(card)`` changed."""
    import json
    import shutil

    out = tmp_path / "edited"
    shutil.copytree(export, out)
    card = json.loads((out / "model_card.json").read_text())
    edit(card)
    (out / "model_card.json").write_text(json.dumps(card))
    return out


def _configure_fails(start_graph, model):
    """Start the policy node on ``model``; it must exit 1 (configure failed). Returns its log."""
    graph = start_graph([policy_node(str(model), sim=False)])
    deadline = time.monotonic() + 60
    while not graph.dead():
        assert time.monotonic() < deadline, "the policy node configured and kept running"
        time.sleep(0.2)
    assert graph.dead()["policy"] == 1
    return graph.log("policy")


def test_an_edited_model_card_fails_configure_with_one_line(start_graph, tiny_exports, tmp_path):
    edited = _edited_copy(tiny_exports["no_state"], tmp_path, lambda card: card["action"].update(
        chunk_size=card["action"]["chunk_size"] + 3))
    log = _configure_fails(start_graph, edited)
    assert "chunk_size" in log and "re-export" in log


def test_a_state_policy_without_a_gripper_mapping_fails_configure_and_a_missing_joint_is_named(ros, start_graph,
                                                                                             tiny_exports, tmp_path):
    # Exported before cards carried the mapping:
    old = _edited_copy(tiny_exports["state"], tmp_path, lambda card: card["state"].update(gripper=None))
    assert "does not say which joint" in _configure_fails(start_graph, old)
    # With the mapping in the card, a robot whose joint_states lack that joint is named in the log.
    graph, chunks, twists, diags, instruction = _policy(ros, start_graph, tiny_exports)
    instruction.publish(String(data="open the drawer"))
    stream = Streamer(ros, gripper_joint="panda_finger_joint1")
    time.sleep(2.5)
    stream.stop()
    assert not chunks
    assert "joint_states has no joint 'r_close'" in graph.log("policy")


def test_a_gripper_joint_without_a_position_or_with_inf_holds_and_the_node_lives_on(ros, start_graph, tiny_exports):
    """joint_states may list a joint with its effort only (fewer positions than names), and a driver may send
    inf: the state is refused (logged, the arm holds), the node does not crash, and good states work after."""
    graph, chunks, twists, diags, instruction = _policy(ros, start_graph, tiny_exports)
    instruction.publish(String(data="open the drawer"))
    for positions, line in (((), "without a position"), ((float("inf"),), "position inf")):
        stream = Streamer(ros, positions=positions)
        time.sleep(2.0)
        stream.stop()
        graph.check_alive()
        assert not chunks and not _moving(twists), positions
        assert line in graph.log("policy"), graph.log("policy")
    stream = Streamer(ros)
    try:
        _wait(graph, lambda: chunks, 20, "a chunk once the joint state is usable")
    finally:
        stream.stop()


def _own_nodes(domain):
    """pids of lapa node processes on this test's ROS domain (from /proc)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"-m" in cmd and any(c.startswith(b"lapa_ros.") and c != b"lapa_ros.cli" for c in cmd) \
                and f"ROS_DOMAIN_ID={domain}".encode() in env:
            pids.append(int(pid))
    return pids


def _bringup(ros_env, tmp_path, *arguments):
    env = {**os.environ, **ros_env}
    return subprocess.Popen([sys.executable, "-m", "lapa_ros.cli", "bringup", "sim_teleop", "task:=reach",
                             *arguments, "--log-dir", str(tmp_path / "logs")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _armed_and_moving(ros, outputs, proc):
    deadline = time.monotonic() + 90
    while not _moving(outputs):
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        assert time.monotonic() < deadline, "the expert never moved the arm"
        try:
            client = ros.node.create_client(Trigger, "arm_controller/arm")
            if client.wait_for_service(timeout_sec=0.5):
                ros.call(client, Trigger.Request())
        except AssertionError:
            pass
        time.sleep(0.3)


@pytest.mark.parametrize("how", ["sigterm", "node_dies"])
def test_bringup_stops_in_order_and_the_controller_holds_last(ros, ros_env, ros_domain, tmp_path, how):
    outputs = []
    ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", outputs.append, COMMAND_QOS)
    proc = _bringup(ros_env, tmp_path)
    try:
        _armed_and_moving(ros, outputs, proc)
        nodes = _own_nodes(ros_domain)
        assert len(nodes) == 3, nodes
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            expert = next(p for p in nodes if b"scripted_expert" in open(f"/proc/{p}/cmdline", "rb").read())
            os.kill(expert, signal.SIGKILL)
        code = proc.wait(timeout=40)
        out = proc.stdout.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == (0 if how == "sigterm" else 1), out
    time.sleep(0.5)
    assert _own_nodes(ros_domain) == [], "nodes left running after bringup exited"
    assert outputs and np.allclose(twist_to_arrays(outputs[-1])[0], 0), "the last command to the arm was a motion"
    assert "exiting: hold commanded" in (tmp_path / "logs" / "arm_controller.log").read_text()
    if how == "node_dies":
        assert "node 'scripted_expert' killed by SIGKILL" in out and "arm controller last" in out


def _sigint_while_importing(command, env):
    """Start a node process, send SIGINT as soon as numpy is loaded (halfway through the node's imports,
    long before rclpy is initialised), return (exit code, output)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"_multiarray_umath" not in open(f"/proc/{proc.pid}/maps", "rb").read():
            assert proc.poll() is None and time.monotonic() < deadline, "the node never loaded numpy"
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out.decode(errors="replace")


def test_ctrl_c_while_a_node_is_still_importing_ends_it_quietly(ros_env):
    """Ctrl-C right after `ros2 launch` / `lapa bringup`: a node still importing exits 0 with no traceback
    (it printed a KeyboardInterrupt traceback and died of the signal), through the console script that
    `ros2 run` / `ros2 launch` start and through `python -m` as `lapa bringup` starts it."""
    env = {**os.environ, **ros_env}
    script = os.path.join(os.path.dirname(sys.executable), "arm_controller_node")
    for command in ([script], [sys.executable, "-m", "lapa_ros.interfaces.entry", "arm_controller_node"]):
        code, out = _sigint_while_importing(command, env)
        assert code == 0 and "Traceback" not in out and "KeyboardInterrupt" not in out, (command, code, out)
        assert "[arm_controller]" not in out, f"the node had started: the signal missed the imports\n{out}"
    result = subprocess.run([sys.executable, "-m", "lapa_ros.interfaces.entry", "no_such_node"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown node executable 'no_such_node'" in result.stderr


def test_a_respawning_node_is_restarted_and_others_bring_the_graph_down(ros_env, tmp_path):
    specs = build_graph("sim_teleop", {"task": "reach"})
    specs = [dataclasses.replace(s, respawn=True, respawn_delay=0.5) if s.name == "scripted_expert" else s
             for s in specs]
    messages = []
    with NodeProcesses(specs, env=ros_env, log_dir=tmp_path / "logs") as graph:
        time.sleep(3.0)
        first = graph.procs["scripted_expert"].pid
        os.killpg(first, signal.SIGKILL)
        stop = threading.Event()
        result = []
        watcher = threading.Thread(target=lambda: result.append(graph.supervise(stop, say=messages.append)))
        watcher.start()
        deadline = time.monotonic() + 20
        while graph.procs["scripted_expert"].pid == first or graph.procs["scripted_expert"].poll() is not None:
            assert time.monotonic() < deadline, "the expert was not respawned"
            time.sleep(0.1)
        assert graph.respawns == {"scripted_expert": 1}
        assert any("'scripted_expert' killed by SIGKILL; respawning in 0.5 s" in m for m in messages)
        os.killpg(graph.procs["sim_robot"].pid, signal.SIGKILL)   # not respawned: supervision ends
        watcher.join(timeout=20)
        assert result and "node 'sim_robot' killed by SIGKILL" in result[0]


def test_a_respawning_node_that_keeps_failing_to_start_backs_off_and_is_given_up(ros_env, tmp_path):
    """A camera whose video file is missing exits at every start: restarts wait longer each time, and after
    a few failed starts in a row supervision gives up with its reason (no restart loop forever)."""
    spec = dataclasses.replace(camera_node("video", video_path=str(tmp_path / "missing.mp4")), respawn_delay=0.2)
    messages, result = [], []
    with NodeProcesses([spec], env=ros_env, log_dir=tmp_path / "logs") as graph:
        stop = threading.Event()
        watcher = threading.Thread(target=lambda: result.append(graph.supervise(stop, say=messages.append,
                                                                                max_failed_starts=3)))
        watcher.start()
        watcher.join(timeout=60)
        stop.set()
        watcher.join()
    assert result[0] is not None, f"still respawning after 60 s: {messages}"
    assert "node 'camera' failed to start 3 times in a row" in result[0] and "video file not found" in result[0]
    assert graph.respawns == {"camera": 2}
    assert [m.split("respawning in ")[1].split(" s")[0] for m in messages] == ["0.2", "0.4"], messages


def test_lapa_instruct_sends_the_cleaned_text_refuses_a_bad_one_and_stops_on_sigterm_in_one_line(ros, ros_env):
    got = []
    ros.node.create_subscription(String, "instruction", got.append, LATCHED_QOS)
    env = {**os.environ, **ros_env}
    command = [sys.executable, "-m", "lapa_ros.cli", "instruct"]
    sent = subprocess.run(command + [" close \x1b[31mthe drawer ", "--wait", "30"], env=env, capture_output=True,
                          timeout=90)
    assert sent.returncode == 0, sent.stderr.decode(errors="replace")
    ros.wait_for(lambda: got, 10, "the instruction")
    assert [m.data for m in got] == ["close the drawer"] and b"\x1b" not in sent.stdout
    refused = subprocess.run(command + ["a" * 5000, "--wait", "30"], env=env, capture_output=True, timeout=90)
    assert refused.returncode == 2 and b"5000 characters" in refused.stderr
    assert len(got) == 1, "a refused instruction was published"
    waiting = subprocess.Popen(command + ["hi", "--topic", "nobody_listens", "--wait", "120"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ros.wait_for(lambda: ros.node.count_publishers("/nobody_listens") > 0, 60, "lapa instruct's publisher")
        waiting.send_signal(signal.SIGTERM)
        _, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 1 and b"Traceback" not in err, err.decode(errors="replace")
    assert b"stopped before any subscriber received the instruction" in err
