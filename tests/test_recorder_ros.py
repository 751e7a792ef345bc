"""The recorder as a separate process: every message in the bag, two readers agree, SIGKILL, full disk."""
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from lapa_ros.recording.bags import EpisodeInfo, bag_topics, is_complete, recover_bag
from lapa_ros.bringup.graph import NodeSpec
from lapa_ros.interfaces.messages import image_msg
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from lapa_ros.interfaces.ros_common import LATCHED_QOS

pytestmark = pytest.mark.timeout(240)
TOPICS = ["camera/image_raw", "camera2/image_raw", "joint_states", "instruction"]


def recorder(out: Path, prefix=()):
    return NodeSpec(name="recorder", executable="recorder_node", module="lapa_ros.nodes.recorder",
                    config=("recorder.yaml",), prefix=tuple(prefix),
                    parameters={"topics": TOPICS, "output_dir": str(out), "operator": "tester"})


# Reliable with a deep history, so that every message reaches the recorder and a missing one can
# only be the recorder's loss (best-effort drops are DDS's; `lapa bench recorder` measures those).
# KEEP_ALL: a slow acknowledgement makes publish wait instead of overwriting an unsent sample.
CAMERA_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_ALL)


class Publishers:
    """Two 640x480 cameras at 30 Hz and joint states at 100 Hz, counted."""

    def __init__(self, ros):
        self.ros = ros
        self.cams = [ros.node.create_publisher(Image, t, CAMERA_QOS) for t in TOPICS[:2]]
        self.joints = ros.node.create_publisher(JointState, "joint_states", CAMERA_QOS)
        self.instruction = ros.node.create_publisher(String, "instruction", LATCHED_QOS)
        self.instruction.publish(String(data="put the cup on the plate"))
        rng = np.random.default_rng(0)
        self.frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        self.sent = {t: 0 for t in TOPICS[:3]}

    def run(self, seconds: float) -> None:
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < seconds:
            now = self.ros.node.get_clock().now().to_msg()
            if k % 10 in (0, 3, 7):  # 30 Hz of the 100 Hz loop
                for cam, topic in zip(self.cams, TOPICS[:2]):
                    cam.publish(image_msg(self.frame, now, "camera"))
                    self.sent[topic] += 1
            js = JointState(name=[f"j{i}" for i in range(7)], position=[0.01 * k] * 7)
            js.header.stamp = now
            self.joints.publish(js)
            self.sent["joint_states"] += 1
            k += 1
            time.sleep(max(0.0, t0 + k * 0.01 - time.monotonic()))


def _service(ros, name, srv=Trigger, **fields):
    return ros.call(ros.node.create_client(srv, f"recorder/{name}"), srv.Request(**fields), timeout=60)


def _wait_subscribed(ros, pubs, graph):
    ros.wait_for(lambda: graph.dead() or all(p.get_subscription_count() > 0 for p in pubs.cams + [pubs.joints]),
                 30, "recorder subscriptions")
    graph.check_alive()
    time.sleep(0.5)


def _wait_received(ros, diags, sent, timeout=30.0):
    def received():
        if not diags:
            return {}
        values = {kv.key: kv.value for st in diags[-1].status for kv in st.values}
        return {t: int(values.get(f"received./{t}", values.get(f"received.{t}", -1))) for t in sent}

    deadline = time.monotonic() + timeout
    while received() != sent:
        assert time.monotonic() < deadline, f"recorder received {received()}, sent {sent}"
        time.sleep(0.1)


def test_recorder_keeps_every_message_of_two_cameras_and_joint_states(ros, start_graph, tmp_path):
    diags = []
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    pubs = Publishers(ros)
    graph = start_graph([recorder(tmp_path)])
    _wait_subscribed(ros, pubs, graph)
    started = _service(ros, "start")
    assert started.success, started.message
    pubs.run(3.0)
    # Stop only once the recorder has taken in everything sent (on a loaded machine the last messages
    # can still be in flight): a message that never arrives fails here, one lost later fails below.
    _wait_received(ros, diags, pubs.sent)
    stopped = _service(ros, "stop")
    assert stopped.success, stopped.message
    assert _service(ros, "mark_success", SetBool, data=True).success
    bag = Path(started.message)
    assert is_complete(bag)
    topics = bag_topics(bag)
    counts = {t.lstrip("/"): n for t, (_, n) in topics.items()}
    for topic, n in pubs.sent.items():
        assert counts[topic] == n, f"{topic}: published {n}, recorded {counts[topic]}"
    assert counts["instruction"] == 1
    info = EpisodeInfo.load(bag)
    assert (info.instruction, info.operator, info.outcome) == ("put the cup on the plate", "tester", "success")
    # The robot's gripper mapping (recorder.yaml: the Franka Hand) travels with the bag to the converter.
    assert info.gripper == {"joint": "panda_finger_joint1", "open_position": 0.04, "closed_position": 0.0}
    assert "lapa.outcome: success" in (bag / "metadata.yaml").read_text()

    # The same bag through the independent mcap + mcap-ros2 reader.
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(next(bag.glob("*.mcap")), "rb") as f:
        decoded = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    by_topic = {}
    for _, channel, _, msg in decoded:
        by_topic.setdefault(channel.topic.lstrip("/"), []).append(msg)
    assert {t: len(v) for t, v in by_topic.items()} == counts
    img = by_topic["camera/image_raw"][0]
    assert (img.width, img.height, img.encoding) == (640, 480, "rgb8")
    assert np.array_equal(np.frombuffer(bytes(img.data), np.uint8).reshape(480, 640, 3), pubs.frame)
    # And through rosbags (what ROS users' tools are built on): same topics, types and counts.
    assert _rosbags_topics(bag) == topics
    assert _rosbags_count(bag, "/camera/image_raw") == counts["camera/image_raw"]


def _rosbags_topics(bag):
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}


def _rosbags_count(bag, topic):
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return sum(1 for _ in reader.messages(connections=[c for c in reader.connections if c.topic == topic]))


def test_discard_moves_the_bag_aside(ros, start_graph, tmp_path):
    pubs = Publishers(ros)
    graph = start_graph([recorder(tmp_path)])
    _wait_subscribed(ros, pubs, graph)
    started = _service(ros, "start")
    pubs.run(0.5)
    assert _service(ros, "discard").success
    assert not Path(started.message).exists()
    moved = tmp_path / "discarded" / Path(started.message).name
    assert moved.is_dir() and EpisodeInfo.load(moved).status == "discarded"


def test_recorder_killed_mid_episode_leaves_a_recoverable_bag(ros, start_graph, tmp_path):
    pubs = Publishers(ros)
    graph = start_graph([recorder(tmp_path)])
    _wait_subscribed(ros, pubs, graph)
    started = _service(ros, "start")
    pubs.run(2.0)
    os.killpg(graph.procs["recorder"].pid, signal.SIGKILL)
    graph.procs["recorder"].wait(timeout=10)
    bag = Path(started.message)
    assert not is_complete(bag)
    counts = recover_bag(bag)
    assert is_complete(bag) and EpisodeInfo.load(bag).status == "recovered"
    n_images = counts.get("/camera/image_raw", 0)
    assert 0 < n_images <= pubs.sent["camera/image_raw"], counts
    assert _rosbags_count(bag, "/camera/image_raw") == n_images


def test_full_disk_stops_recording_with_a_clear_error_and_keeps_the_data(ros, start_graph, tmp_path):
    pubs = Publishers(ros)
    # A 6 MB file size limit stands in for a full disk: writes fail with EFBIG like ENOSPC.
    graph = start_graph([recorder(tmp_path, prefix=("prlimit", f"--fsize={6 * 2**20}", "--"))])
    _wait_subscribed(ros, pubs, graph)
    started = _service(ros, "start")
    assert started.success
    pubs.run(2.0)
    time.sleep(0.5)
    stop = _service(ros, "stop")
    assert not stop.success and "disk full" in stop.message
    graph.check_alive()  # the recorder survives and reports the problem
    assert "disk full" in graph.log("recorder")
    bag = Path(started.message)
    counts = recover_bag(bag)
    # Which camera's frames made it into the 6 MB depends on delivery order: either counts.
    images = counts.get("/camera/image_raw", 0) + counts.get("/camera2/image_raw", 0)
    assert images > 0, f"what was written before the disk filled is kept: {counts}"


@pytest.mark.parametrize("below_a_file, message", [(("bags",), "cannot create"), ((), "is not a folder")])
def test_an_output_dir_that_cannot_be_made_stops_the_recorder_with_one_line(start_graph, tmp_path, below_a_file,
                                                                            message):
    (tmp_path / "afile").write_text("x")
    out = tmp_path.joinpath("afile", *below_a_file)
    graph = start_graph([recorder(out)])
    deadline = time.monotonic() + 30
    while not graph.dead():
        assert time.monotonic() < deadline, "recorder did not exit"
        time.sleep(0.05)
    assert graph.dead()["recorder"] == 1
    log = graph.log("recorder")
    assert "parameter output_dir" in log and message in log and "Traceback" not in log, log


def test_failed_discard_and_mark_are_answered_and_the_next_episode_records(ros, start_graph, tmp_path):
    """Out-of-order calls, an episode whose topics never came, a discard that cannot move the bag and a mark
    on a broken bag: each answered with the reason; the recorder never wedges or dies."""
    out = tmp_path / "bags"
    graph = start_graph([recorder(out)])
    assert _service(ros, "stop").message == "not recording"
    assert not _service(ros, "mark_success", SetBool, data=True).success
    first = _service(ros, "start")
    assert first.success and not _service(ros, "start").success
    stop = _service(ros, "stop")
    assert stop.success and "no message on /camera/image_raw" in stop.message, stop.message
    assert is_complete(Path(first.message)), "an empty episode is still a complete bag"
    (out / "discarded").write_text("not a folder")   # discarded/ cannot be made
    second = _service(ros, "start")
    t0 = time.monotonic()
    discard = _service(ros, "discard")
    assert not discard.success and "could not be moved to discarded/" in discard.message, discard.message
    assert time.monotonic() - t0 < 10, "answered at once, not after the writer's 60 s"
    assert is_complete(Path(second.message)), "the bag is saved where it was"
    (Path(second.message) / "lapa_episode.json").write_text("{broken")
    mark = _service(ros, "mark_success", SetBool, data=False)
    assert not mark.success and "corrupt episode file" in mark.message, mark.message
    third = _service(ros, "start")
    assert third.success, third.message
    assert _service(ros, "stop").success
    graph.check_alive()
    assert "Traceback" not in graph.log("recorder")
