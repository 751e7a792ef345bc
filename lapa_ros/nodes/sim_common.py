"""What both simulated arms (sim_robot: the Sawyer, panda_sim: the Panda) share: the sim/* interface.

SimulatedArmNode holds the part of the node that is the same for either robot:
  * the task check at startup (an unknown task, or one of the other robot, exits with the valid tasks)
    and the `task` / `seed` parameter changes (taking effect at the next reset);
  * the simulation thread: the world is made, stepped and closed there (its OpenGL (EGL) context is
    bound to the thread that made it); the constructor waits for it;
  * the publishers (camera/image_raw + camera_info, joint_states, ee_pose, sim/success latched per
    episode, sim/task transient local, sim/privileged_state, /clock when real_time is false) and the
    sim/reset service: reset requests are queued for the simulation thread, each answered
    "task=<name> seed=<n> stamp=<s>" once the episode's first image is out;
  * the lockstep wait and close().
A subclass names itself and its parameters (NAME, ROBOT, ROBOT_LABEL, PARAMS), makes its world (_make_world), adds its command
inputs (_create_inputs), runs the loop (_run), resets its episode state (_do_reset, with _reset_world)
and says what it is at startup (_startup_message).
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Optional, Tuple

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from lapa_sim.tasks import UnknownTaskError, get_task, task_names

from lapa_ros.interfaces.messages import image_msg, pinhole_camera_info, pose_msg, stamp_to_sec
from lapa_ros.interfaces.ros_common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, Param, StartupError, declare_params

# How long a reset takes on the simulated clock (real_time false) [s]. Longer than any policy's chunk and frame age
# limits, so nothing computed before a reset (a chunk, a frame still in flight) counts in the next episode:
# without it a lockstep episode's first steps would depend on which message arrived first.
RESET_CLOCK_GAP = 1.0

# The parameters both simulated arms declare alike (each node's PARAMS places them in its order).
SEED = Param("seed", 0, "Seed of the next episode's object layout; each reset then adds 1.", range=(0, 2**31 - 1))
IMAGE_WIDTH = Param("image_width", 128, "Camera image width [px].", read_only=True, range=(16, 1920))
IMAGE_HEIGHT = Param("image_height", 128, "Camera image height [px].", read_only=True, range=(16, 1080))
CAMERA_FRAME = Param("camera_frame", "sim_camera_optical_frame", "frame_id of camera images.", read_only=True)


class SimulatedArmNode(Node):
    NAME = ""          # log prefix and loop thread name: sim_robot, panda_sim
    ROBOT = ""         # robot of the tasks in lapa_sim/tasks.yaml: sawyer, panda
    ROBOT_LABEL = ""   # in messages: Sawyer, Panda
    PARAMS: Tuple[Param, ...] = ()

    def __init__(self, **kwargs):
        super().__init__("sim_robot", **kwargs)   # either simulated arm runs as node sim_robot
        self.p = declare_params(self, self.PARAMS)
        try:
            robot = get_task(self.p.task).robot
        except UnknownTaskError as e:
            raise StartupError(f"{self.NAME}: {e}") from e
        if robot != self.ROBOT:
            raise StartupError(f"{self.NAME}: task '{self.p.task}' runs on the {robot}; {self.ROBOT_LABEL} tasks: "
                               f"{', '.join(task_names(self.ROBOT))}")
        self._lockstep = self.p.lockstep and not self.p.real_time
        self._lock = threading.Condition()   # guards the commands; notified on commands, resets and close
        self._reset_requests: "queue.Queue" = queue.Queue()
        self._pending_task: Optional[str] = None
        self._next_seed = self.p.seed + 1
        self._last_frame_stamp = 0.0         # header stamp of the latest image, as subscribers see it
        self.rejected_commands = 0
        self._setup()
        self._running = True
        self._publishers_ready = threading.Event()
        # The world lives in the loop thread: its OpenGL (EGL) context is bound to the thread that made it.
        self._ready = threading.Event()
        self._startup_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._loop, name=f"{self.NAME}_loop", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=120.0)
        if self._startup_error is not None or not self._ready.is_set():
            self._running = False
            raise StartupError(f"{self.NAME}: the simulator did not start: {self._startup_error or 'timeout'}")

        self.pub_image = self.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.pub_info = self.create_publisher(CameraInfo, "camera/camera_info", SENSOR_QOS)
        self.pub_joints = self.create_publisher(JointState, "joint_states", COMMAND_QOS)
        self.pub_pose = self.create_publisher(PoseStamped, "ee_pose", COMMAND_QOS)
        self.pub_success = self.create_publisher(Bool, "sim/success", COMMAND_QOS)
        self.pub_task = self.create_publisher(String, "sim/task", LATCHED_QOS)
        self.pub_privileged = self.create_publisher(JointState, "sim/privileged_state", COMMAND_QOS)
        self.pub_clock = None if self.p.real_time else self.create_publisher(Clock, "/clock", COMMAND_QOS)
        self._create_inputs()
        self.create_service(Trigger, "sim/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.pub_task.publish(String(data=self.world.task.name))
        self._publishers_ready.set()
        mode = "real time" if self.p.real_time else ("lockstep" if self.p.lockstep else "as fast as possible")
        self.get_logger().info(self._startup_message(mode))

    # ------------------------------------------------------------------ what a subclass provides
    def _setup(self) -> None:
        """Its own state, before the simulation thread starts."""

    def _make_world(self):
        """The world, made in the simulation thread; an exception exits the node with a StartupError."""
        raise NotImplementedError

    def _create_inputs(self) -> None:
        """Its command subscriptions."""
        raise NotImplementedError

    def _startup_message(self, mode: str) -> str:
        raise NotImplementedError

    def _run(self) -> None:
        """The simulation loop, until close(): serve resets (_serve_resets), step, publish."""
        raise NotImplementedError

    def _do_reset(self) -> dict:
        """New episode (in the simulation thread): _reset_world and the node's own episode state;
        returns {"task", "seed"} (and "stamp" if known already)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ parameters and sim/reset (executor thread)
    def _on_set_parameters(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "task":
                valid = task_names(self.ROBOT)
                if prm.value not in valid:
                    return SetParametersResult(successful=False, reason=str(UnknownTaskError(prm.value, valid)))
                self._pending_task = prm.value
            elif prm.name == "seed":
                self._next_seed = int(prm.value)
        return SetParametersResult(successful=True)

    def _on_reset(self, request, response):
        done = threading.Event()
        result = {}
        self._reset_requests.put((done, result))
        with self._lock:
            self._lock.notify_all()
        if not done.wait(timeout=30.0):
            response.success, response.message = False, "simulator did not reset within 30 s"
            return response
        response.success = "error" not in result
        # The stamp of the episode's first image: frames stamped earlier belong to the previous episode.
        response.message = result.get("error") or \
            f"task={result['task']} seed={result['seed']} stamp={result['stamp']:.9f}"
        return response

    # ------------------------------------------------------------------ simulation thread
    def _loop(self) -> None:
        try:
            self.world = self._make_world()
        except Exception as e:  # reported by the constructor as a StartupError
            self._startup_error = e
            self._ready.set()
            return
        self._ready.set()
        self._publishers_ready.wait()
        try:
            self._run()
        except Exception as e:
            if self._running:
                self.get_logger().error(f"simulation stopped: {e}")
                raise
        finally:
            self.world.close()

    def _wait_for_lockstep(self, answered: Callable[[], bool]) -> None:
        """Lockstep (call with self._lock held): wait up to lockstep_timeout for answered(), a reset or close."""
        self._lock.wait_for(lambda: answered() or not self._running or not self._reset_requests.empty(),
                            timeout=self.p.lockstep_timeout)

    def _serve_resets(self) -> list:
        """Reset for every queued request; the requests are answered after the first frame is out."""
        served = []
        while not self._reset_requests.empty():
            done, result = self._reset_requests.get()
            try:
                result.update(self._do_reset())
            except Exception as e:
                result["error"] = f"reset failed: {e}"
            served.append((done, result))
        return served

    def _reset_world(self) -> int:
        """The world's new episode with the next seed, in the pending task if one was set; returns the seed."""
        seed = self._next_seed
        if self._pending_task and self._pending_task != self.world.task.name:
            self.world.set_task(self._pending_task, seed=seed)
            self.pub_task.publish(String(data=self.world.task.name))
        else:
            self.world.reset(seed)
        self._pending_task = None
        self._next_seed = seed + 1
        return seed

    # ------------------------------------------------------------------ outputs
    def _publish_arm_state(self, stamp, effort=None) -> None:
        """joint_states (effort: optional) and ee_pose of the world now."""
        w = self.world
        js = JointState(name=list(w.joint_names), position=w.joint_positions().tolist(),
                        velocity=w.joint_velocities().tolist(), effort=[] if effort is None else effort)
        js.header.stamp = stamp
        self.pub_joints.publish(js)
        self.pub_pose.publish(pose_msg(w.ee_position, w.ee_orientation, stamp, self.p.base_frame))

    def _publish_privileged(self, names, values, stamp) -> None:
        """sim/privileged_state: the world's privileged observation as a stamped named vector."""
        ps = JointState(name=list(names), position=values.tolist())
        ps.header.stamp = stamp
        self.pub_privileged.publish(ps)

    def _publish_camera(self, rgb, stamp) -> None:
        """camera_info, then the image; _last_frame_stamp is the image's stamp (after nanosecond rounding)."""
        self.pub_info.publish(pinhole_camera_info(rgb.shape[1], rgb.shape[0], self.world.camera.fovy, stamp,
                                                  self.p.camera_frame))
        self._last_frame_stamp = stamp_to_sec(stamp)
        self.pub_image.publish(image_msg(rgb, stamp, self.p.camera_frame))

    def close(self) -> None:
        self._running = False
        self._publishers_ready.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=5.0)
