"""The arm controller as a separate process over DDS: arming, e-stop, watchdog, NaN, IK backends."""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lapa_ros.core.kinematics import KinematicChain
from lapa_ros.bringup.graph import arm_controller_node, sim_robot_node
from lapa_ros.interfaces.messages import sec_to_stamp, stamp_to_sec, twist_msg, twist_to_arrays
from lapa_ros.bringup.paths import urdf_file
from lapa_ros.interfaces.ros_common import COMMAND_QOS

pytestmark = pytest.mark.timeout(180)
PERIOD = 0.05  # the sim controller's control period (20 Hz)


class Commander:
    """Publishes a twist at 20 Hz from a background thread while `running`."""

    def __init__(self, ros, velocity):
        import threading

        self.ros, self.velocity, self.running = ros, np.asarray(velocity, float), True
        self.pub = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                self.pub.publish(twist_msg(self.velocity, self.ros.node.get_clock().now().to_msg(), "world"))
            except Exception:  # the test ended without stop() and its node is gone
                return
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.thread.join()


def _sim_with_controller(ros, start_graph):
    graph = start_graph([sim_robot_node("reach", real_time=True), arm_controller_node(sim=True)])
    poses, outputs = [], []
    ros.node.create_subscription(PoseStamped, "ee_pose", poses.append, COMMAND_QOS)
    ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds",
                                 lambda m: outputs.append((time.monotonic(), m)), COMMAND_QOS)
    deadline = time.monotonic() + 60
    while not (poses and outputs):
        graph.check_alive()
        assert time.monotonic() < deadline, "sim_robot + arm_controller did not come up"
        time.sleep(0.05)
    time.sleep(0.5)  # the simulated hand settles for a few steps after a reset
    return graph, poses, outputs


def _pos(poses):
    p = poses[-1].pose.position
    return np.array([p.x, p.y, p.z])


def _trigger(ros, name):
    return ros.call(ros.node.create_client(Trigger, f"arm_controller/{name}"), Trigger.Request())


def test_nothing_moves_before_arming_then_commands_move_the_arm(ros, start_graph):
    graph, poses, outputs = _sim_with_controller(ros, start_graph)
    p0 = _pos(poses)
    cmd = Commander(ros, [0.0, 0.1, 0.0])
    time.sleep(1.0)
    assert np.linalg.norm(_pos(poses) - p0) < 0.002, "the arm moved while disarmed"
    assert all(np.allclose(twist_to_arrays(m)[0], 0) for _, m in outputs[-10:])
    assert _trigger(ros, "arm").success
    time.sleep(1.0)
    cmd.stop()
    d = _pos(poses) - p0
    assert d[1] > 0.04, d


def test_estop_stops_motion_within_one_control_period_and_stays_latched(ros, start_graph):
    graph, poses, outputs = _sim_with_controller(ros, start_graph)
    assert _trigger(ros, "arm").success
    cmd = Commander(ros, [0.0, 0.1, 0.0])
    time.sleep(0.6)
    assert np.linalg.norm(twist_to_arrays(outputs[-1][1])[0]) > 0.05, "armed controller forwards commands"
    estop = ros.node.create_publisher(Bool, "arm_controller/estop", COMMAND_QOS)
    ros.wait_for(lambda: estop.get_subscription_count() > 0, 10, "e-stop subscriber")
    # A first (false) message settles the reliable channel both ways: otherwise the measured e-stop can
    # wait for DDS discovery on the controller's side (~80 ms), which is not the controller's reaction.
    estop.publish(Bool(data=False))
    time.sleep(0.5)
    t_estop, t_estop_wall = time.monotonic(), time.time()
    estop.publish(Bool(data=True))
    ros.wait_for(lambda: any(t > t_estop and np.allclose(twist_to_arrays(m)[0], 0) for t, m in outputs), 2, "hold")
    _, hold = min(((t, m) for t, m in outputs if t > t_estop and np.allclose(twist_to_arrays(m)[0], 0)),
                  key=lambda tm: tm[0])
    # The controller's reaction: when it published the hold (its header stamp, wall clock in real time),
    # not when this test process got round to receiving it.
    reaction = stamp_to_sec(hold.header.stamp) - t_estop_wall
    assert reaction < PERIOD, f"first hold {1e3 * reaction:.1f} ms after the e-stop"
    time.sleep(0.3)
    p_stop = _pos(poses)
    # Commands keep coming: the e-stop stays latched, nothing non-zero goes out, the arm does not move.
    n = len(outputs)
    time.sleep(1.0)
    assert all(np.allclose(twist_to_arrays(m)[0], 0) for _, m in outputs[n:])
    assert np.linalg.norm(_pos(poses) - p_stop) < 0.002
    refused = _trigger(ros, "arm")
    assert not refused.success and "e-stop" in refused.message
    assert _trigger(ros, "release_estop").success
    time.sleep(0.5)
    assert np.linalg.norm(_pos(poses) - p_stop) < 0.002, "release alone must not move the arm"
    # A fresh episode before moving again: the simulated arm stops stepping once an episode is over (its
    # 100 steps, 5 s, can be used up by now on a slow machine), which would look like a controller fault.
    assert ros.call(ros.node.create_client(Trigger, "sim/reset"), Trigger.Request()).success
    time.sleep(0.5)
    p_rearm = _pos(poses)
    assert np.linalg.norm(_pos(poses) - p_rearm) < 0.002, "disarmed: the arm holds in the new episode"
    assert _trigger(ros, "arm").success
    ros.wait_for(lambda: _pos(poses)[1] - p_rearm[1] > 0.02, 5, "motion again after release + arm")
    cmd.stop()


def test_watchdog_holds_when_commands_stop_and_nan_is_refused(ros, start_graph):
    graph, poses, outputs = _sim_with_controller(ros, start_graph)
    diags = []
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, COMMAND_QOS)
    assert _trigger(ros, "arm").success
    cmd = Commander(ros, [0.1, 0.0, 0.0])
    time.sleep(0.5)
    cmd.stop()
    t_stop = time.monotonic()
    ros.wait_for(lambda: any(t > t_stop and np.allclose(twist_to_arrays(m)[0], 0) for t, m in outputs), 2, "hold")
    first_hold = min(t for t, m in outputs if t > t_stop and np.allclose(twist_to_arrays(m)[0], 0))
    assert first_hold - t_stop < 0.25 + 2 * PERIOD, "watchdog: command_timeout (0.25 s) + one period"
    time.sleep(0.3)  # the hand reaches its last setpoint
    p_hold = _pos(poses)
    nan = Commander(ros, [np.nan, 0.1, 0.0])
    time.sleep(0.8)
    nan.stop()
    assert np.linalg.norm(_pos(poses) - p_hold) < 0.003
    ros.wait_for(lambda: any(kv.key == "count.non_finite_command" for d in diags for s in d.status for kv in s.values),
                 5, "NaN counted on /diagnostics")
    state = {kv.key: kv.value for kv in diags[-1].status[0].values}
    assert state["state"] == "ARMED" and int(state["count.stale_command"]) > 0


@pytest.mark.parametrize("backend, topic, msg_type", [
    ("joint_trajectory", "joint_trajectory_controller/joint_trajectory", JointTrajectory),
    ("forward_position", "forward_position_controller/commands", Float64MultiArray),
])
def test_joint_space_backends_follow_the_twist_through_ik_on_the_urdf(ros, start_graph, backend, topic, msg_type):
    """Direction, step size and continuity of the IK targets (the speed at several command:controller
    rate ratios is measured in test_command_timing_ros.py)."""
    chain = KinematicChain(urdf_file("panda.urdf").read_text(), "panda_link0", "panda_hand_tcp")
    q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    rate, speed = 50.0, 0.05
    outputs = []
    ros.node.create_subscription(msg_type, topic, lambda m: outputs.append((time.monotonic(), m)), COMMAND_QOS)
    js_pub = ros.node.create_publisher(JointState, "joint_states", COMMAND_QOS)
    graph = start_graph([arm_controller_node(sim=False, backend=backend, control_rate=rate)])

    def positions(msg):
        return np.array(msg.points[0].positions if backend == "joint_trajectory" else msg.data)

    def publish_joints():
        js = JointState(name=list(chain.joint_names) + ["panda_finger_joint1"], position=list(q) + [0.04])
        js.header.stamp = ros.node.get_clock().now().to_msg()
        js_pub.publish(js)

    deadline = time.monotonic() + 60
    while not outputs:
        graph.check_alive()
        publish_joints()
        assert time.monotonic() < deadline, "no joint command (hold) from the controller"
        time.sleep(0.05)
    assert np.allclose(positions(outputs[-1][1]), q, atol=1e-9), "disarmed: holds the current joints"
    assert _trigger(ros, "arm").success
    twist_pub = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
    n = len(outputs)
    for _ in range(10):   # 25 Hz commands, half the controller's rate
        publish_joints()
        twist_pub.publish(twist_msg(np.array([0.0, speed, 0.0]), ros.node.get_clock().now().to_msg(), "panda_link0"))
        time.sleep(0.04)
    t_last_command = time.monotonic()
    ros.wait_for(lambda: len(outputs) > n + 3, 5, "IK targets")
    window = [(t, positions(m)) for t, m in outputs[n:] if t <= t_last_command]
    first = next((i for i, (_, p) in enumerate(window) if not np.allclose(p, q)), None)
    assert first is not None, "armed: IK targets differ from the current joints"
    times, targets = [t for t, _ in window[first:]], [p for _, p in window[first:]]
    # Every controller tick between commands sends a new target (the twist keeps being executed at
    # the controller's rate); none falls back to a hold while commands flow.
    assert len(targets) >= 8 and not any(np.allclose(p, q) for p in targets), \
        [float(np.max(np.abs(p - q))) for p in targets]
    # The first step starts from the measured joints and covers one control period.
    step = chain.forward(targets[0])[:3, 3] - chain.forward(q)[:3, 3]
    assert 0.8 * speed / rate < np.linalg.norm(step) < 1.2 * speed / rate, step
    d = chain.forward(targets[-1])[:3, 3] - chain.forward(q)[:3, 3]
    assert d[1] > 0 and abs(d[1]) > 5 * max(abs(d[0]), abs(d[2])), d
    # At the commanded speed, not one step per command (which would be half of it here).
    v = np.linalg.norm(chain.forward(targets[-1])[:3, 3] - chain.forward(targets[0])[:3, 3]) / (times[-1] - times[0])
    assert 0.75 * speed < v < 1.25 * speed, f"targets move at {v:.4f} m/s for {speed} m/s commanded"
    assert np.all(targets[-1] >= chain.lower) and np.all(targets[-1] <= chain.upper)


def test_controller_with_a_missing_robot_description_exits_with_a_clear_error(start_graph):
    graph = start_graph([arm_controller_node(sim=False, backend="joint_trajectory",
                                             robot_description_file="/nonexistent/robot.urdf")])
    deadline = time.monotonic() + 30
    while not graph.dead():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert graph.dead()["arm_controller"] == 1 and "robot.urdf" in graph.log("arm_controller")


def test_on_a_simulated_clock_the_controllers_own_holds_do_not_answer_a_lockstep_step(ros, start_graph):
    """A lockstep simulator steps when a twist stamped at or after its newest frame arrives. The controller's idle
    holds (no command yet, a stale one) carry the stamp of the command they replace, so they stop the arm without
    answering in the policy's place: with no command the simulator only steps on its own lockstep_timeout (1 s).
    Stamped "now", they made it step at the controller's rate, and an episode began with zero steps."""
    from rosgraph_msgs.msg import Clock

    start_graph([sim_robot_node("reach", real_time=False, lockstep=True), arm_controller_node(sim=True, real_time=False)])
    clock, holds = [], []
    ros.node.create_subscription(Clock, "/clock", lambda m: clock.append(stamp_to_sec(m.clock)), 10)
    ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", holds.append, COMMAND_QOS)
    ros.wait_for(lambda: clock, 60, "the simulated clock")
    assert _trigger(ros, "arm").success
    ros.wait_for(lambda: holds, 10, "the controller's hold")
    t0 = clock[-1]
    time.sleep(3.0)
    steps = round((clock[-1] - t0) / PERIOD)
    assert steps <= 5, f"{steps} simulated steps in 3 s with no command: the controller's holds answered them"
    assert all(np.allclose(twist_to_arrays(m)[0], 0) and stamp_to_sec(m.header.stamp) == 0.0 for m in holds)


def test_a_commands_gripper_value_goes_out_before_its_twist(ros, start_graph):
    """The policy sends each command's gripper value, then its twist. The controller must forward them in that
    order even when both wait for it at once, or a simulator (lockstep: it steps as the twist arrives) moves with
    the twist of one command and the gripper of the one before. Checked on the DDS source timestamps of what
    the controller publishes, pair by pair."""
    from std_msgs.msg import Float64

    graph, poses, _ = _sim_with_controller(ros, start_graph)
    out_gripper, out_twist = {}, {}
    ros.node.create_subscription(Float64, "gripper/command",
                                 lambda m, info: out_gripper.setdefault(round(m.data, 4), info["source_timestamp"]),
                                 COMMAND_QOS)
    ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds",
                                 lambda m, info: out_twist.setdefault(round(m.twist.linear.y, 4),
                                                                      info["source_timestamp"]), COMMAND_QOS)
    assert _trigger(ros, "arm").success
    gripper_pub = ros.node.create_publisher(Float64, "arm_controller/gripper_cmd", COMMAND_QOS)
    twist_pub = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
    time.sleep(0.5)   # both publishers matched
    pairs = [(round(0.2 + 0.02 * k, 4), round(0.01 + 0.001 * k, 4)) for k in range(40)]
    for gripper, vy in pairs:
        gripper_pub.publish(Float64(data=gripper))
        twist_pub.publish(twist_msg(np.array([0.0, vy, 0.0]), ros.node.get_clock().now().to_msg(), "world"))
        time.sleep(0.03)
    ros.wait_for(lambda: all(g in out_gripper and v in out_twist for g, v in pairs), 10, "every forwarded pair")
    late = [(g, v) for g, v in pairs if out_gripper[g] > out_twist[v]]
    assert not late, f"{len(late)} of {len(pairs)} gripper values went out after their twist: {late[:5]}"
    graph.check_alive()


def test_a_twist_in_the_wrong_frame_holds_the_arm_at_once_not_at_the_watchdog(ros, start_graph):
    """A refused command replaces the last good one (as a NaN does): the controller sends a hold as it refuses
    it, instead of letting the simulated arm run on the previous command until the watchdog."""
    graph, poses, outputs = _sim_with_controller(ros, start_graph)
    assert _trigger(ros, "arm").success
    cmd = Commander(ros, [0.0, 0.05, 0.0])
    ros.wait_for(lambda: any(np.linalg.norm(twist_to_arrays(m)[0]) > 0 for _, m in outputs[-3:]), 10, "motion")
    cmd.stop()
    pub = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
    ros.wait_for(lambda: pub.get_subscription_count() > 0, 10, "controller subscription")
    sent = time.monotonic()
    pub.publish(twist_msg(np.array([0.0, 0.05, 0.0]), ros.node.get_clock().now().to_msg(), "camera_link"))
    time.sleep(0.5)
    holds = [t - sent for t, m in outputs if t > sent and np.allclose(twist_to_arrays(m)[0], 0)]
    assert holds and holds[0] < 0.12, f"first hold {holds[:1]} s after the refused command (watchdog: 0.25 s)"
    assert "twist in frame 'camera_link' refused" in graph.log("arm_controller")


def test_on_a_simulated_clock_a_command_stamped_with_the_newest_robot_state_is_not_from_the_future(ros, start_graph):
    """A simulator stamps states, frames and /clock with one time; /clock travels on its own topic and can
    reach the controller after a command that answers the newest frame (the first episode after start-up
    lost steps to it). The controller's clock reads at least the newest robot state's stamp. Here /clock
    never comes: the states alone carry the time."""
    start_graph([arm_controller_node(sim=True, real_time=False)])
    outputs = []
    ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", outputs.append, COMMAND_QOS)
    poses = ros.node.create_publisher(PoseStamped, "ee_pose", COMMAND_QOS)
    twists = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
    ros.wait_for(lambda: poses.get_subscription_count() and twists.get_subscription_count(), 20, "the controller")

    def pose(t):
        msg = PoseStamped()
        msg.header.stamp = sec_to_stamp(t)
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = 0.0, 0.6, 0.2
        poses.publish(msg)

    pose(100.0)
    time.sleep(0.3)
    assert _trigger(ros, "arm").success
    pose(101.0)
    time.sleep(0.3)
    twists.publish(twist_msg(np.array([0.0, 0.05, 0.0]), sec_to_stamp(101.0), "world"))
    ros.wait_for(lambda: any(twist_to_arrays(m)[0][1] > 0 for m in outputs), 5, "the command forwarded")
    moving = next(m for m in outputs if twist_to_arrays(m)[0][1] > 0)
    assert stamp_to_sec(moving.header.stamp) == 101.0
