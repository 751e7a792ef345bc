"""Command timing on the real-robot backends, over DDS with the arm controller as a separate process.

This test process plays the robot: for servo, a MoveIt-Servo-like plant that integrates the latest
twist for at most Servo's command timeout (0.1 s) and publishes ee_pose; for the joint backends, a
position-controlled arm that reaches each joint target and publishes joint_states. The commander
sends a constant twist at 1x, 1/5 and 1/25 of the controller's rate: the arm must move at the
commanded speed (within 10%) in every case, and driven straight at a face of the workspace box it
must stop within 2 mm of it."""
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lapa_ros.core.kinematics import KinematicChain
from lapa_ros.bringup.graph import arm_controller_node
from lapa_ros.interfaces.messages import twist_msg, twist_to_arrays
from lapa_ros.bringup.paths import urdf_file
from lapa_ros.interfaces.ros_common import COMMAND_QOS

pytestmark = pytest.mark.timeout(300)
CONTROL_RATE = 100.0
Q_HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
SERVO_TIMEOUT = 0.1   # MoveIt Servo's incoming_command_timeout default


class Plant:
    """The robot side: integrates commands and publishes its state at 200 Hz; records ee positions."""

    def __init__(self, ros, backend, chain, ee0=None):
        self.ros, self.backend, self.chain = ros, backend, chain
        self.lock = threading.Lock()
        self.q = Q_HOME.copy()
        self.ee = np.array(ee0 if ee0 is not None else chain.forward(Q_HOME)[:3, 3], float)
        self.twist, self.twist_time = np.zeros(3), -1.0
        self.trace = []   # (monotonic time, ee position)
        if backend == "servo":
            ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", self._on_twist, COMMAND_QOS)
            self.pub = ros.node.create_publisher(PoseStamped, "ee_pose", COMMAND_QOS)
        elif backend == "joint_trajectory":
            ros.node.create_subscription(JointTrajectory, "joint_trajectory_controller/joint_trajectory",
                                         lambda m: self._on_target(m.points[-1].positions), COMMAND_QOS)
            self.pub = ros.node.create_publisher(JointState, "joint_states", COMMAND_QOS)
        else:
            ros.node.create_subscription(Float64MultiArray, "forward_position_controller/commands",
                                         lambda m: self._on_target(m.data), COMMAND_QOS)
            self.pub = ros.node.create_publisher(JointState, "joint_states", COMMAND_QOS)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_twist(self, msg):
        with self.lock:
            self.twist, self.twist_time = twist_to_arrays(msg)[0], time.monotonic()

    def _on_target(self, positions):
        with self.lock:
            self.q = np.array(positions, float)

    def _run(self):
        last = time.monotonic()
        while self.running:
            time.sleep(0.005)
            now = time.monotonic()
            with self.lock:
                if self.backend == "servo":
                    if now - self.twist_time < SERVO_TIMEOUT:
                        self.ee = self.ee + self.twist * (now - last)
                    ee = self.ee.copy()
                else:
                    ee = self.chain.forward(self.q)[:3, 3]
                q = self.q.copy()
            last = now
            self.trace.append((now, ee))
            stamp = self.ros.node.get_clock().now().to_msg()
            try:
                if self.backend == "servo":
                    msg = PoseStamped()
                    msg.header.stamp = stamp
                    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in ee)
                    msg.pose.orientation.w = 1.0
                else:
                    msg = JointState(name=list(self.chain.joint_names), position=[float(v) for v in q])
                    msg.header.stamp = stamp
                self.pub.publish(msg)
            except Exception:
                return

    def position_at(self, t):
        times = np.array([s for s, _ in self.trace])
        return self.trace[int(np.searchsorted(times, t))][1]

    def stop(self):
        self.running = False
        self.thread.join()


def _command(ros, velocity, rate, seconds):
    """Publish a constant twist at `rate` Hz for `seconds`; returns (start, end) monotonic times."""
    pub = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        pub.publish(twist_msg(np.asarray(velocity, float), ros.node.get_clock().now().to_msg(), "panda_link0"))
        k += 1
        time.sleep(max(0.0, start + k / rate - time.monotonic()))
    return start, time.monotonic()


def _start(ros, start_graph, backend, ee0=None):
    chain = KinematicChain(urdf_file("panda.urdf").read_text(), "panda_link0", "panda_hand_tcp")
    plant = Plant(ros, backend, chain, ee0)
    graph = start_graph([arm_controller_node(sim=False, backend=backend, control_rate=CONTROL_RATE,
                                             command_timeout=0.5, max_linear_speed=0.1)])
    client = ros.node.create_client(Trigger, "arm_controller/arm")
    deadline = time.monotonic() + 60
    while not client.wait_for_service(timeout_sec=0.5):
        graph.check_alive()
        assert time.monotonic() < deadline, "arm controller did not come up"
    time.sleep(1.0)   # the controller has the robot's state
    assert ros.call(client, Trigger.Request()).success
    return plant, graph


@pytest.mark.parametrize("backend", ["servo", "joint_trajectory", "forward_position"])
def test_the_arm_moves_at_the_commanded_speed_whatever_the_command_rate(ros, start_graph, backend):
    plant, graph = _start(ros, start_graph, backend, ee0=[0.45, -0.25, 0.35])
    speed = 0.05
    try:
        ratios = {}
        for divisor, sign in ((1, 1), (5, -1), (25, 1)):
            start, end = _command(ros, [0.0, sign * speed, 0.0], CONTROL_RATE / divisor, 1.6)
            time.sleep(0.6)   # past the watchdog: the arm holds again before the next case
            # Steady state: from 0.4 s after the first command to its last one.
            a, b = start + 0.4, end - 0.05
            moved = sign * (plant.position_at(b)[1] - plant.position_at(a)[1])
            ratios[f"1:{divisor}"] = moved / (speed * (b - a))
        graph.check_alive()
    finally:
        plant.stop()
    print(f"\n[timing] {backend}: achieved/commanded speed " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    for ratio, achieved in ratios.items():
        assert 0.9 <= achieved <= 1.1, f"{backend}: achieved/commanded speed {achieved:.2f} at rate ratio {ratio} " \
                                      f"(all: { {k: round(v, 2) for k, v in ratios.items()} })"


@pytest.mark.parametrize("backend", ["servo", "joint_trajectory", "forward_position"])
def test_driven_at_a_face_of_the_workspace_box_the_arm_stops_within_2_mm(ros, start_graph, backend):
    z_max = 0.70   # workspace_max z of config/arm_controller.yaml
    plant, graph = _start(ros, start_graph, backend, ee0=[0.45, 0.0, 0.62])
    try:
        # Approach at a policy's rate (1:5), then push on the face at 1:25 and 1:1.
        for rate, seconds in ((CONTROL_RATE / 5, 2.5), (CONTROL_RATE / 25, 1.0), (CONTROL_RATE, 1.0)):
            _command(ros, [0.0, 0.0, 0.1], rate, seconds)
            time.sleep(0.6)
        graph.check_alive()
    finally:
        plant.stop()
    top = max(ee[2] for _, ee in plant.trace)
    print(f"\n[timing] {backend}: box overshoot {1e3 * (top - z_max):+.2f} mm")
    assert top > z_max - 0.01, f"{backend}: never got near the face (top {top:.4f})"
    assert top <= z_max + 0.002, f"{backend}: overshoot {1e3 * (top - z_max):.1f} mm past the box face"
