"""The policy node as a separate process over DDS, with a tiny exported policy (real architecture)."""
import os
import shutil
import signal
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lapa_models.data.video import write_video
from lapa_ros.bringup.graph import arm_controller_node, build_graph, camera_node, policy_node
from lapa_ros.interfaces.messages import image_msg, twist_to_arrays
from lapa_ros.interfaces.ros_common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

pytestmark = pytest.mark.timeout(240)


def _diag_values(diags, name="lapa_ros: policy"):
    for d in reversed(diags):
        for s in d.status:
            if s.name == name:
                return {kv.key: kv.value for kv in s.values}
    return {}


def _wait_alive(graph, ros, condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        graph.check_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_missing_or_truncated_model_stops_the_node_with_a_clear_error(start_graph, tiny_exports, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_exports["no_state"], broken)
    policy_file = broken / "policy.onnx"
    policy_file.write_bytes(policy_file.read_bytes()[:1000])
    for model, message in [(tmp_path / "nowhere", "does not exist"), (broken, "truncated")]:
        graph = start_graph([policy_node(str(model), sim=True)])
        deadline = time.monotonic() + 60
        while not graph.dead():
            assert time.monotonic() < deadline, "node did not exit"
            time.sleep(0.05)
        assert graph.dead()["policy"] == 1
        log = graph.log("policy")
        assert message in log and str(model) in log, log
        graph.stop()


def test_camera_image_drives_policy_controller_and_the_simulated_arm(ros, start_graph, tiny_exports):
    graph = start_graph(build_graph("sim_policy", {"model": str(tiny_exports["state"]), "task": "reach"}))
    poses, chunks, diags = [], [], []
    ros.node.create_subscription(PoseStamped, "ee_pose", poses.append, COMMAND_QOS)
    ros.node.create_subscription(JointTrajectory, "policy/action_chunk", chunks.append, COMMAND_QOS)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, COMMAND_QOS)
    instruction = ros.node.create_publisher(String, "instruction", LATCHED_QOS)
    instruction.publish(String(data="reach the goal"))
    _wait_alive(graph, ros, lambda: len(chunks) > 5 and poses, 90, "action chunks from the policy")
    time.sleep(0.5)
    p0 = np.array([poses[-1].pose.position.x, poses[-1].pose.position.y, poses[-1].pose.position.z])
    time.sleep(1.0)
    p1 = np.array([poses[-1].pose.position.x, poses[-1].pose.position.y, poses[-1].pose.position.z])
    assert np.linalg.norm(p1 - p0) < 0.003, "controller disarmed: the policy's commands do not move the arm"
    arm = ros.call(ros.node.create_client(Trigger, "arm_controller/arm"), Trigger.Request())
    assert arm.success
    time.sleep(2.0)
    p2 = np.array([poses[-1].pose.position.x, poses[-1].pose.position.y, poses[-1].pose.position.z])
    assert np.linalg.norm(p2 - p1) > 0.01, "armed: the arm follows the policy"
    chunk = chunks[-1]
    assert chunk.joint_names == ["vx", "vy", "vz", "gripper"] and len(chunk.points) == 4
    values = _diag_values(diags)
    assert values["providers_in_use"] == "CPUExecutionProvider" and float(values["inference_rate_hz"]) > 5


def test_when_the_camera_stops_the_controller_holds_within_the_watchdog_timeout(ros, start_graph, tiny_exports,
                                                                                tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (30, 48, 64, 3), dtype=np.uint8)
    write_video(tmp_path / "cam.mp4", frames, fps=30)
    pose_pub = ros.node.create_publisher(PoseStamped, "ee_pose", COMMAND_QOS)
    outputs = []
    ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds",
                                 lambda m: outputs.append((time.monotonic(), m)), COMMAND_QOS)
    ros.node.create_publisher(String, "instruction", LATCHED_QOS).publish(String(data="push the block"))
    graph = start_graph([camera_node("video", video_path=str(tmp_path / "cam.mp4")),
                         policy_node(str(tiny_exports["no_state"]), sim=False),
                         arm_controller_node(sim=False, control_rate=50.0, max_linear_speed=1.0)])

    def publish_pose():
        pose = PoseStamped()
        pose.header.stamp = ros.node.get_clock().now().to_msg()
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.45, 0.0, 0.3
        pose_pub.publish(pose)

    deadline = time.monotonic() + 90
    armed = False
    while True:
        graph.check_alive()
        publish_pose()
        if not armed and ros.node.count_subscribers("ee_pose") and graph.procs:
            client = ros.node.create_client(Trigger, "arm_controller/arm")
            if client.wait_for_service(timeout_sec=0.1):
                armed = ros.call(client, Trigger.Request()).success
        moving = [m for _, m in outputs[-5:] if np.linalg.norm(twist_to_arrays(m)[0]) > 1e-6]
        if armed and len(moving) == 5:
            break
        assert time.monotonic() < deadline, "the policy never moved the arm through the controller"
        time.sleep(0.02)
    os.killpg(graph.procs["camera"].pid, signal.SIGKILL)
    t_stop = time.monotonic()
    while time.monotonic() - t_stop < 2.0:
        publish_pose()
        time.sleep(0.02)
    held = [t for t, m in outputs if t > t_stop and np.allclose(twist_to_arrays(m)[0], 0)]
    assert held, "the arm never held after the camera stopped"
    # The last chunk runs out ((H - 1) x 50 ms for the tiny policy), then the controller's watchdog
    # (command_timeout 0.25 s) holds on its next cycle.
    assert held[0] - t_stop < 3 * 0.05 + 0.25 + 0.1, f"held {held[0] - t_stop:.2f} s after the camera stopped"
    assert all(np.allclose(twist_to_arrays(m)[0], 0) for t, m in outputs if t > held[0] + 0.05)


def test_bad_images_and_instructions_are_skipped_without_a_crash(ros, start_graph, tiny_exports):
    graph = start_graph([policy_node(str(tiny_exports["no_state"]), sim=False)])
    chunks, diags = [], []
    ros.node.create_subscription(JointTrajectory, "policy/action_chunk", chunks.append, COMMAND_QOS)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, COMMAND_QOS)
    images = ros.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    instruction = ros.node.create_publisher(String, "instruction", LATCHED_QOS)
    _wait_alive(graph, ros, lambda: images.get_subscription_count() > 0, 60, "policy subscription")
    time.sleep(1.0)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)

    def send(msg, times=3):
        for _ in range(times):
            msg.header.stamp = ros.node.get_clock().now().to_msg()
            images.publish(msg)
            time.sleep(0.08)

    def count_after(fn):
        n = len(chunks)
        fn()
        time.sleep(0.5)
        return len(chunks) - n

    def acted_on(msg, timeout=10.0):
        # Sensor-data QoS is best effort: a frame may be dropped on a loaded machine, so resend until
        # the policy answers (a skipped frame never gets an answer, however often it is sent).
        n, deadline = len(chunks), time.monotonic() + timeout
        while time.monotonic() < deadline:
            send(msg, times=1)
            if len(chunks) > n:
                return True
        return False

    # No instruction yet: frames are not acted on.
    assert count_after(lambda: send(image_msg(rgb, ros.node.get_clock().now().to_msg(), "cam"))) == 0
    for bad in ["", " " * 5, "pick " * 200]:
        instruction.publish(String(data=bad))
        time.sleep(0.3)
        assert count_after(lambda: send(image_msg(rgb, ros.node.get_clock().now().to_msg(), "cam"))) == 0
    instruction.publish(String(data="stack the blocks"))
    time.sleep(0.5)
    # Every colour encoding and size a camera driver produces works.
    stamp = ros.node.get_clock().now().to_msg()
    good = [image_msg(rgb[..., ::-1].copy(), stamp, "cam", "bgr8"),
            image_msg(np.dstack([rgb, np.full((48, 64), 255, np.uint8)]), stamp, "cam", "rgba8"),
            image_msg(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), stamp, "cam")]
    padded = image_msg(rgb, stamp, "cam")
    row = padded.width * 3
    padded.data = b"".join(bytes(padded.data[r * row:(r + 1) * row]) + b"\0" * 16 for r in range(padded.height))
    padded.step = row + 16
    good.append(padded)
    for msg in good:
        assert acted_on(msg), (msg.encoding, msg.width, msg.step)
    empty = image_msg(rgb, stamp, "cam")
    empty.data = b""
    depth = image_msg(rng.random((48, 64)).astype(np.float32), stamp, "cam", "32FC1")
    # Grey and infrared streams (one channel) are not what a colour policy was trained on: refused unless
    # accept_mono (the wrong topic, e.g. a RealSense infra1 stream, would otherwise drive the arm).
    grey = image_msg(rgb[..., 0].copy(), stamp, "cam", "mono8")
    infrared = image_msg(rng.integers(0, 65536, (48, 64), dtype=np.uint16), stamp, "cam", "mono16")
    for msg in (empty, depth, grey, infrared):
        assert count_after(lambda msg=msg: send(msg)) == 0, msg.encoding
    graph.check_alive()
    assert "encoding 'mono8' has one channel" in graph.log("policy")
    assert acted_on(image_msg(rgb, ros.node.get_clock().now().to_msg(), "cam"))
    ros.wait_for(lambda: int(_diag_values(diags).get("count.bad_image", 0)) >= 6, 5, "bad images counted")
    values = _diag_values(diags)
    assert int(values["count.instruction_rejected"]) == 3
    # 4:3 frames to a policy trained on square ones are acted on (the graph resizes them to its input)
    # but reported: counted, and a warning in the diagnostics naming both sizes.
    assert int(values["count.frames_other_aspect"]) > 0
    status = next(s for d in reversed(diags) for s in d.status if s.name == "lapa_ros: policy")
    assert status.level == DiagnosticStatus.WARN and "48x64" in status.message and "distorted" in status.message, status.message


def test_lifecycle_deactivate_holds_and_silences_commands_until_activated_again(ros, start_graph, tiny_exports):
    """Deactivate (lifecycle service, as `lapa eval` does around resets): one hold, then no command at all
    while frames keep coming; diagnostics go on and say inactive; activate: commands resume."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    graph = start_graph([policy_node(str(tiny_exports["no_state"]), sim=False)])
    twists, chunks, diags = [], [], []
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd",
                                 lambda m: twists.append((time.monotonic(), m)), COMMAND_QOS)
    ros.node.create_subscription(JointTrajectory, "policy/action_chunk", chunks.append, COMMAND_QOS)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, COMMAND_QOS)
    images = ros.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    ros.node.create_publisher(String, "instruction", LATCHED_QOS).publish(String(data="push the block"))
    rgb = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    change = ros.node.create_client(ChangeState, "policy/change_state")
    get_state = ros.node.create_client(GetState, "policy/get_state")

    def stream(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            graph.check_alive()
            images.publish(image_msg(rgb, ros.node.get_clock().now().to_msg(), "cam"))
            time.sleep(0.05)

    deadline = time.monotonic() + 90
    while len(chunks) < 5:
        assert time.monotonic() < deadline, "the active policy never acted"
        stream(0.2)
    assert ros.call(get_state, GetState.Request()).current_state.label == "active"
    assert ros.call(change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE))).success
    t_off, n_chunks = time.monotonic(), len(chunks)
    stream(1.5)
    after = [m for t, m in twists if t > t_off + 0.1]
    assert after == [], f"{len(after)} commands published while inactive"
    holds = [m for t, m in twists if t > t_off - 0.5]
    assert holds and np.allclose(twist_to_arrays(holds[-1])[0], 0), "deactivation did not end on a hold"
    assert len(chunks) - n_chunks <= 1, "chunks published while inactive"
    ros.wait_for(lambda: _diag_values(diags).get("lifecycle_state") == "inactive", 5, "diagnostics while inactive")
    assert ros.call(change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE))).success
    t_on = time.monotonic()
    deadline = t_on + 30
    while not [m for t, m in twists if t > t_on]:
        assert time.monotonic() < deadline, "commands did not resume after activation"
        stream(0.2)


def test_the_nodes_commands_are_the_shared_chunk_blender_applied_to_its_chunks(ros, start_graph, tiny_exports):
    """What the policy node publishes at its control rate is lapa_models.policy.chunking.ChunkBlender (the
    in-process evaluator's blender, through ChunkExecutor) applied to the chunks it published: each command
    equals the blend, at the command's time, of the chunks received before it (or, the two topics' delivery
    order being free, including the next one)."""
    from lapa_models.policy.chunking import ChunkBlender
    from lapa_ros.interfaces.messages import stamp_to_sec

    graph = start_graph([policy_node(str(tiny_exports["no_state"]), sim=False)])
    events = []   # (kind, message) in the order received
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd", lambda m: events.append(("cmd", m)),
                                 COMMAND_QOS)
    ros.node.create_subscription(JointTrajectory, "policy/action_chunk", lambda m: events.append(("chunk", m)),
                                 COMMAND_QOS)
    images = ros.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    ros.node.create_publisher(String, "instruction", LATCHED_QOS).publish(String(data="push the block"))
    rng = np.random.default_rng(3)
    deadline = time.monotonic() + 90
    while sum(k == "cmd" for k, _ in events) < 60:
        graph.check_alive()
        assert time.monotonic() < deadline, "too few commands from the policy"
        rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)   # a new frame: new chunks that differ
        images.publish(image_msg(rgb, ros.node.get_clock().now().to_msg(), "cam"))
        time.sleep(0.12)
    period, max_age = 0.05, 1.0   # policy.yaml: control_rate 20 Hz, max_chunk_age 1 s; blend ensemble, m = 0.01

    def blend(chunks, t):
        b = ChunkBlender(4, period, max_age, "ensemble", 0.01)
        for c in chunks:
            b.add(stamp_to_sec(c.header.stamp), np.array([p.positions for p in c.points]))
        return b.action_at(t)

    chunks, checked, mismatched = [], 0, []
    for i, (kind, msg) in enumerate(list(events)):
        if kind == "chunk":
            chunks.append(msg)
            continue
        t = stamp_to_sec(msg.header.stamp)
        got = twist_to_arrays(msg)[0]
        nxt = next((m for k, m in events[i + 1:] if k == "chunk"), None)
        candidates = [blend(chunks, t)] + ([blend(chunks + [nxt], t)] if nxt is not None else [])
        if not chunks:
            continue
        checked += 1
        if not any(c is not None and np.allclose(c[:3], got, atol=1e-5) for c in candidates):
            mismatched.append((t, got.tolist(), [None if c is None else c[:3].tolist() for c in candidates]))
    assert checked >= 50 and not mismatched, mismatched[:3]
    assert len({round(float(twist_to_arrays(m)[0][0]), 6) for k, m in events if k == "cmd"}) > 5  # not constant


def test_each_new_chunk_is_acted_on_at_once_not_at_the_next_control_tick(ros, start_graph, tiny_exports):
    """With a control timer far slower than the camera (1 Hz here), every chunk's first action still goes out as
    the chunk arrives: a timer alone, ticking at a phase fixed at start-up, would send it up to a period late."""
    from lapa_models.policy.chunking import ChunkBlender
    from lapa_ros.interfaces.messages import stamp_to_sec

    start_graph([policy_node(str(tiny_exports["no_state"]), sim=False, control_rate=1.0)])
    events = []   # (kind, receive time, message)
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd",
                                 lambda m: events.append(("cmd", time.monotonic(), m)), COMMAND_QOS)
    ros.node.create_subscription(JointTrajectory, "policy/action_chunk",
                                 lambda m: events.append(("chunk", time.monotonic(), m)), COMMAND_QOS)
    images = ros.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    ros.node.create_publisher(String, "instruction", LATCHED_QOS).publish(String(data="push the block"))
    rng = np.random.default_rng(5)

    def frame():
        images.publish(image_msg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                                 ros.node.get_clock().now().to_msg(), "cam"))
        time.sleep(0.2)

    deadline = time.monotonic() + 90
    while sum(k == "chunk" for k, _, _ in events) < 3:   # the node is up and acting
        assert time.monotonic() < deadline, "the policy never acted"
        frame()
    n = len(events)
    for _ in range(10):   # 10 frames in 2 s: two ticks of the 1 Hz timer
        frame()
    time.sleep(0.3)
    window = events[n:]
    chunks = [(t, m) for k, t, m in window if k == "chunk"]
    commands = [(t, m) for k, t, m in window if k == "cmd"]
    assert len(chunks) >= 6, f"only {len(chunks)} chunks for 10 frames"
    received = [m for k, _, m in events[:n] if k == "chunk"]
    for t_chunk, chunk in chunks:
        received.append(chunk)
        stamp = stamp_to_sec(chunk.header.stamp)
        # its command: stamped within a period of the chunk's frame, received within 0.15 s of the chunk
        sent = [m for t, m in commands if abs(t - t_chunk) < 0.15 and 0.0 <= stamp_to_sec(m.header.stamp) - stamp < 0.05]
        assert sent, f"no command went out with the chunk stamped {stamp:.3f} (commands: {len(commands)})"
        blender = ChunkBlender(4, 0.05, 1.0, "ensemble", 0.01)   # the node's settings (policy.yaml, the card's rate)
        for c in received:
            blender.add(stamp_to_sec(c.header.stamp), np.array([p.positions for p in c.points]))
        expected = blender.action_at(stamp_to_sec(sent[0].header.stamp))
        np.testing.assert_allclose(twist_to_arrays(sent[0])[0], expected[:3], atol=1e-5)
