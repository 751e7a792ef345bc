"""recorder: writes teleoperated episodes to rosbag2 MCAP bags, one bag per episode.

Subscribes to every topic in `topics` as soon as it appears (raw CDR, no deserialization; QoS
matched to the publisher: best effort for cameras, transient local for the instruction) and, while
recording, hands the bytes to a writer thread (lapa_ros.recording.bags, zstd chunks).
Services:
  recorder/start          std_srvs/Trigger: open a new episode bag in `output_dir`
  recorder/stop           std_srvs/Trigger: close it (kept)
  recorder/discard        std_srvs/Trigger: close it and move it to <output_dir>/discarded/
  recorder/mark_success   std_srvs/SetBool: outcome of the current (or last) episode, true = success
Publishes /diagnostics: state, bag, per-topic counts, drops, queue depth.
The instruction (from the `instruction` topic), `operator`, the outcome and the gripper mapping
(`gripper_*`: which joint_states joint gives the gripper state, for the converter) go in the bag's metadata.
A full disk stops the episode with a clear error and keeps what was written; a recorder killed
mid-episode leaves a bag that the converter refuses and `lapa bags recover` completes (marked recovered).
An `output_dir` that cannot be made or written stops the node at start. Any failure to write, close, move
aside or mark a bag is the answer of that service call (and an error on /diagnostics); the recorder is
ready for the next episode. A stop names the recorded topics that had no message during the episode.
"""
from __future__ import annotations

import collections
import importlib
import queue
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from lapa_ros.recording.bags import (BagError, EpisodeBagWriter, EpisodeInfo, discard_bag, output_dir_problem,
                                     set_outcome)
from lapa_models.data.robot_state import GripperMapping

from lapa_ros.interfaces.ros_common import (COMMAND_QOS, Param, StartupError, declare_params, diagnostics_message,
                                           log_at, run_node)

try:  # rclpy >= Iron passes receive timestamps to two-argument callbacks
    from rclpy.subscription import MessageInfo  # noqa: F401
    _MESSAGE_INFO = True
except ImportError:
    _MESSAGE_INFO = False

DEFAULT_TOPICS = ["camera/image_raw", "camera/camera_info", "joint_states", "ee_pose", "arm_controller/twist_cmd",
                  "arm_controller/gripper_cmd", "instruction", "sim/success"]

PARAMS = (
    Param("topics", DEFAULT_TOPICS, "Topics to record (relative names resolve in the node's namespace).",
          read_only=True),
    Param("output_dir", "bags", "Folder for episode bags.", read_only=True),
    Param("operator", "", "Who teleoperates (stored in each bag)."),
    Param("task", "", "Task label stored in each bag (optional)."),
    Param("compress", True, "zstd-compress MCAP chunks.", read_only=True),
    Param("queue_size", 4000, "Messages buffered for the writer thread before dropping.", read_only=True,
          range=(10, 1000000)),
    Param("diagnostics_rate", 1.0, "Rate [Hz] of /diagnostics.", read_only=True, range=(0.1, 50.0)),
    Param("gripper_joint", "panda_finger_joint1", "Finger joint of joint_states that gives the gripper state, "
                                                  "stored in each bag for the converter (empty: none).",
          read_only=True),
    Param("gripper_open_position", 0.04, "That joint's position when open [m or rad].", read_only=True),
    Param("gripper_closed_position", 0.0, "That joint's position when closed [m or rad].", read_only=True),
)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class RecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        self.p = declare_params(self, PARAMS)
        self.gripper = None
        if self.p.gripper_joint:
            try:
                self.gripper = GripperMapping(self.p.gripper_joint, self.p.gripper_open_position,
                                              self.p.gripper_closed_position).to_json()
            except ValueError as e:
                raise StartupError(f"recorder: gripper_* parameters: {e}") from e
        self.output_dir = Path(self.p.output_dir).expanduser()
        problem = output_dir_problem(self.output_dir)
        if problem:
            raise StartupError(f"recorder: parameter output_dir: {problem}")
        self.topics = [self.resolve_topic_name(t) for t in self.p.topics]
        self._types: Dict[str, str] = {}
        self._subs = {}
        self._queue: "queue.Queue" = queue.Queue(maxsize=self.p.queue_size)
        self._writer: Optional[EpisodeBagWriter] = None
        self._lock = threading.Lock()
        self.recording = False
        self.last_bag: Optional[Path] = None
        self.last_error = ""
        self.received = collections.Counter()
        self.dropped = collections.Counter()
        self._instruction = ""
        self._latched: Dict[str, bytes] = {}   # last message of latched topics, written at each start
        self._episode_index = 0
        self._last_counts: Dict[str, int] = {}   # messages written per topic in the last closed episode
        self._started_ns = 0
        self._running = True
        self._thread = threading.Thread(target=self._write_loop, name="bag_writer", daemon=True)
        self._thread.start()
        self.create_service(Trigger, "recorder/start", self._on_start)
        self.create_service(Trigger, "recorder/stop", self._on_stop)
        self.create_service(Trigger, "recorder/discard", self._on_discard)
        self.create_service(SetBool, "recorder/mark_success", self._on_mark)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.create_timer(0.25, self._discover)
        self.create_timer(1.0 / self.p.diagnostics_rate, self._publish_diagnostics)
        self._discover()
        self.get_logger().info(f"recording {len(self.topics)} topics to {self.output_dir} "
                               "(services recorder/start, stop, discard, mark_success)")

    # ------------------------------------------------------------------ subscriptions
    def _qos_for(self, topic: str) -> QoSProfile:
        infos = self.get_publishers_info_by_topic(topic)
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
        latched = infos and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        # A deep reader history: at 100 Hz a 100-deep one overflowed (and lost joint states) whenever
        # this node's executor fell ~1 s behind while the writer thread wrote 55 MB/s of images.
        return QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _discover(self) -> None:
        available = dict(self.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self._subs or topic not in available or not self.get_publishers_info_by_topic(topic):
                continue
            msgtype = available[topic][0]
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError) as e:
                self.get_logger().error(f"cannot record {topic} ({msgtype}): {e}")
                self._subs[topic] = None
                continue
            self._types[topic] = msgtype
            qos = self._qos_for(topic)
            self._subs[topic] = self.create_subscription(cls, topic, self._callback(topic, latched=(
                qos.durability == DurabilityPolicy.TRANSIENT_LOCAL)), qos, raw=True)
            self.get_logger().info(f"subscribed {topic} [{msgtype}]")
            with self._lock:
                if self._writer is not None:
                    self._queue_put(("topic", topic, msgtype))

    def _callback(self, topic: str, latched: bool):
        is_instruction = topic.rsplit("/", 1)[-1] == "instruction"

        def on_message(data: bytes, info=None) -> None:
            # The bag time is when DDS received the message (rclpy >= Iron tells us); a message received
            # before `start` but handled after it belongs to no episode.
            now = info["received_timestamp"] if info else time.time_ns()
            self.received[topic] += 1
            if latched:
                self._latched[topic] = data
            if is_instruction:
                self._instruction = deserialize_message(data, String).data
                writer = self._writer
                if writer is not None:  # a new instruction during an episode is that episode's instruction
                    writer.info.instruction = self._instruction
            if self.recording and now >= self._started_ns:
                self._queue_put(("msg", topic, now, data))
        if _MESSAGE_INFO:
            return on_message
        return lambda data: on_message(data)

    def _queue_put(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped[item[1]] += 1

    # ------------------------------------------------------------------ services
    def _on_start(self, request, response):
        with self._lock:
            if self._writer is not None:
                response.success, response.message = False, f"already recording {self._writer.path}"
                return response
            self._episode_index += 1
            name = datetime.now().strftime("episode_%Y%m%d_%H%M%S") + f"_{self._episode_index:03d}"
            info = EpisodeInfo(instruction=self._instruction, operator=self.p.operator, task=self.p.task,
                               started=time.time(), gripper=self.gripper)
            try:
                self._writer = EpisodeBagWriter(self.output_dir / name, info, compress=self.p.compress)
                for topic, msgtype in self._types.items():
                    self._writer.add_topic(topic, msgtype)
            except BagError as e:
                self._writer = None
                self.last_error = str(e)
                response.success, response.message = False, str(e)
                self.get_logger().error(str(e))
                return response
            # Latched topics (the instruction) were sent before the episode: their last message opens the bag.
            for topic, data in self._latched.items():
                self._queue_put(("msg", topic, time.time_ns(), data))
            self._started_ns = time.time_ns()
            self.recording = True
            self.last_error = ""
        response.success, response.message = True, str(self.output_dir / name)
        self.get_logger().info(f"recording {name}: \"{self._instruction}\"")
        return response

    def _finish(self, discard: bool) -> str:
        with self._lock:
            if self._writer is None:
                raise BagError(f"recording had already stopped: {self.last_error}" if self.last_error
                               else "not recording")
            self.recording = False
            self.last_error = ""
            done = threading.Event()
            self._queue.put(("close", discard, done))  # after every message already queued
        if not done.wait(timeout=60.0):
            raise BagError("the writer did not finish within 60 s")
        return self.last_error

    def _on_stop(self, request, response):
        try:
            error = self._finish(discard=False)
            response.success = not error
            response.message = error or f"saved {self.last_bag}"
            missing = [t for t in self.topics if not self._last_counts.get(t)]
            if not error and missing:
                response.message += (f"; no message on {', '.join(missing)} during the episode (not published, or "
                                     "published with incompatible QoS?)")
        except BagError as e:
            response.success, response.message = False, str(e)
        log_at(self.get_logger(), "info" if response.success and "no message on" not in response.message
               else "warning", response.message)
        return response

    def _on_discard(self, request, response):
        try:
            error = self._finish(discard=True)
            response.success = not error
            response.message = error or f"discarded: moved to {self.last_bag}"
        except BagError as e:
            response.success, response.message = False, str(e)
        self.get_logger().info(response.message)
        return response

    def _on_mark(self, request, response):
        outcome = "success" if request.data else "failure"
        try:
            with self._lock:
                writer = self._writer
                if writer is not None:
                    writer.info.outcome = outcome
                    writer.info.save(writer.path)
            if writer is None:
                if self.last_bag is None or not self.last_bag.exists():
                    response.success, response.message = False, "no episode to mark"
                    return response
                set_outcome(self.last_bag, outcome)
        except (BagError, OSError, ValueError, KeyError, TypeError) as e:   # a broken or vanished bag
            bag = writer.path if writer is not None else self.last_bag
            response.success, response.message = False, f"could not mark {bag} a {outcome}: {e}"
            self.get_logger().error(response.message)
            return response
        response.success, response.message = True, f"{outcome}: {(writer.path if writer else self.last_bag).name}"
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ writer thread
    def _write_loop(self) -> None:
        while self._running or not self._queue.empty():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            writer = self._writer
            kind = item[0]
            if kind == "close":
                self._close(writer, *item[1:])
                continue
            try:
                if kind == "msg" and writer is not None:
                    _, topic, stamp, data = item
                    if topic not in writer.counts:
                        writer.add_topic(topic, self._types[topic])
                    writer.write(topic, stamp, data)
                elif kind == "topic" and writer is not None:
                    writer.add_topic(item[1], item[2])
            except BagError as e:   # a full disk among them
                self._fail(writer, str(e))
            except Exception as e:  # noqa: BLE001 - any other failure ends the episode, never the writer thread
                self._fail(writer, f"{writer.path if writer else 'bag'}: write failed ({type(e).__name__}: {e})")

    def _close(self, writer: Optional[EpisodeBagWriter], discard: bool, done: threading.Event) -> None:
        """Close (and for discard move aside) the episode's bag; a failure is the answer to stop, and the
        recorder is ready for the next episode either way."""
        closed = False
        try:
            if writer is not None:
                self._last_counts = dict(writer.counts)
                self.last_bag = writer.close()
                closed = True
                if discard:
                    try:
                        self.last_bag = discard_bag(self.last_bag)
                    except (BagError, OSError) as e:
                        raise BagError(f"{self.last_bag}: saved, but could not be moved to discarded/: {e}") from e
        except Exception as e:  # noqa: BLE001 - reported to the caller of stop/discard
            message = str(e) if isinstance(e, BagError) else f"{writer.path}: close failed ({type(e).__name__}: {e})"
            if not closed:   # left incomplete (as a killed recorder leaves it): refused until `lapa bags recover`
                writer.abort()
                self.last_bag = writer.path
            with self._lock:
                self.last_error = message
            self.get_logger().error(message)
        finally:
            with self._lock:
                self._writer = None
            done.set()

    def _fail(self, writer: Optional[EpisodeBagWriter], message: str) -> None:
        with self._lock:
            self.recording = False
            self.last_error = message
            if writer is not None:
                writer.abort()
                self.last_bag = writer.path
            self._writer = None
        # Drain what was queued for the failed bag; answer a pending stop.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] == "close":
                item[2].set()
        self.get_logger().error(message)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        writer = self._writer
        level = 2 if self.last_error else 0
        values = {"recording": str(self.recording), "bag": str(writer.path if writer else self.last_bag or ""),
                  "queue": str(self._queue.qsize()), "instruction": self._instruction}
        values.update({f"received.{t}": str(n) for t, n in sorted(self.received.items())})
        values.update({f"dropped.{t}": str(n) for t, n in sorted(self.dropped.items())})
        if writer is not None:
            values.update({f"written.{t}": str(n) for t, n in sorted(writer.counts.items())})
        message = self.last_error or ("recording" if self.recording else "idle")
        self.pub_diagnostics.publish(diagnostics_message(self, "lapa_ros: recorder", level, message, values))

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._finish(discard=False)
            except BagError:
                pass
        self._running = False
        self._thread.join(timeout=10.0)


def main(args=None) -> int:
    # Single-threaded: the work has its own thread; see lapa_ros.interfaces.ros_common.run_node.
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
