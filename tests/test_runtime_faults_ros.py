"""Runtime faults of a deployment, against the real nodes over DDS: parameters changed while running
(rcl_interfaces/srv/SetParameters, what `ros2 param set` calls), lifecycle transitions in the wrong order,
the controller's services in the wrong state, and a simulated clock that jumps back or stops."""
import math
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lapa_ros.bringup.graph import arm_controller_node, policy_node
from lapa_ros.interfaces.messages import image_msg, sec_to_stamp, stamp_to_sec, twist_msg, twist_to_arrays
from lapa_ros.interfaces.ros_common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

pytestmark = pytest.mark.timeout(180)
RGB = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    if isinstance(v, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)
    raise TypeError(v)


def _set(ros, node, name, value):
    """SetParameters on `node` (as `ros2 param set` calls it): the SetParametersResult."""
    client = ros.node.create_client(SetParameters, f"{node}/set_parameters")
    result = ros.call(client, SetParameters.Request(parameters=[Parameter(name=name, value=_value(value))]))
    ros.node.destroy_client(client)
    return result.results[0]


def _get(ros, node, name):
    client = ros.node.create_client(GetParameters, f"{node}/get_parameters")
    v = ros.call(client, GetParameters.Request(names=[name])).values[0]
    ros.node.destroy_client(client)
    return {ParameterType.PARAMETER_BOOL: v.bool_value, ParameterType.PARAMETER_INTEGER: v.integer_value,
            ParameterType.PARAMETER_DOUBLE: v.double_value, ParameterType.PARAMETER_STRING: v.string_value}[v.type]


def _trigger(ros, name):
    client = ros.node.create_client(Trigger, f"arm_controller/{name}")
    response = ros.call(client, Trigger.Request())
    ros.node.destroy_client(client)
    return response


def _moving(twists):
    return [m for m in list(twists) if np.linalg.norm(twist_to_arrays(m)[0]) > 1e-9]


class Loop:
    """Runs ``step()`` every ``period`` seconds in a background thread until stop()."""

    def __init__(self, step, period=0.05):
        self.step, self.period, self.running = step, period, True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                self.step()
            except Exception:   # the test's node is gone
                return
            time.sleep(self.period)

    def stop(self):
        self.running = False
        self.thread.join()


# ---------------------------------------------------------------------------------------------- arm controller
class Arm:
    """The arm controller (backend sim, alone) with this test as the robot: publishes ee_pose (and, on a simulated
    clock, /clock) and records what the controller sends to the arm."""

    def __init__(self, ros, start_graph, sim_time=False, **params):
        self.ros = ros
        self.graph = start_graph([arm_controller_node(sim=True, real_time=not sim_time, log_throttle=1.0, **params)])
        self.outputs = []
        ros.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds",
                                     lambda m: self.outputs.append(m), COMMAND_QOS)
        self.pose = ros.node.create_publisher(PoseStamped, "ee_pose", COMMAND_QOS)
        self.twist = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
        self.estop = ros.node.create_publisher(Bool, "arm_controller/estop", COMMAND_QOS)
        self.sim_time = sim_time
        self.time = 100.0   # the simulated clock [s]
        if sim_time:
            from rosgraph_msgs.msg import Clock

            self.clock = ros.node.create_publisher(Clock, "/clock", COMMAND_QOS)
        self.wait(lambda: self.twist.get_subscription_count() > 0 and self.pose.get_subscription_count() > 0, 60,
                  "the controller's subscriptions")

    def wait(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            self.graph.check_alive()
            self.ros.check()
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
            time.sleep(0.02)

    def now(self):
        return self.time if self.sim_time else self.ros.node.get_clock().now().nanoseconds * 1e-9

    def tick(self, dt=0.05):
        """One robot step: on a simulated clock the clock advances by dt, then the state is published."""
        if self.sim_time:
            from rosgraph_msgs.msg import Clock

            self.time += dt
            self.clock.publish(Clock(clock=sec_to_stamp(self.time)))
        pose = PoseStamped()
        pose.header.stamp = sec_to_stamp(self.now())
        pose.header.frame_id = "world"
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.0, 0.6, 0.2
        self.pose.publish(pose)

    def command(self, vy=0.05):
        self.twist.publish(twist_msg(np.array([0.0, vy, 0.0]), sec_to_stamp(self.now()), "world"))

    def run(self, seconds, vy=0.05, dt=0.05, state=True):
        """Robot steps with one command each for `seconds` of wall time; the outputs they brought.
        state false: the robot's state publisher has stopped (no ee_pose)."""
        n = len(self.outputs)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.graph.check_alive()
            if state:
                self.tick(dt)
            time.sleep(0.01)
            if vy is not None:
                self.command(vy)
            time.sleep(0.04)
        time.sleep(0.2)
        return self.outputs[n:]

    def moves_within(self, seconds, vy=0.05, dt=0.05):
        """Whether commands move the arm again within `seconds` (wall)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if _moving(self.run(0.3, vy, dt)):
                return True
        return False


def test_controller_services_in_the_wrong_state_refuse_clearly_and_the_arm_holds(ros, start_graph):
    """Arm twice, disarm twice, arm while the e-stop is latched (refused, stays latched), release while commands
    keep coming (nothing moves until armed again), arm with no robot state."""
    arm = Arm(ros, start_graph)
    assert _trigger(ros, "disarm").success and _trigger(ros, "disarm").success   # idempotent
    assert not _moving(arm.run(0.5)), "moved while disarmed"
    first, second = _trigger(ros, "arm"), _trigger(ros, "arm")
    assert first.success and first.message == "armed"
    assert second.success and "already armed" in second.message
    assert _moving(arm.run(0.5)), "armed, commands did not move the arm"

    arm.estop.publish(Bool(data=True))
    arm.wait(lambda: "E-STOP latched" in arm.graph.log("arm_controller"), 10, "the e-stop")
    refused = _trigger(ros, "arm")
    assert not refused.success and "e-stop is latched" in refused.message
    n = len(arm.outputs)
    commands = Loop(lambda: (arm.tick(), arm.command()))
    try:
        time.sleep(0.5)
        assert not _moving(arm.outputs[n:]), "moved with the e-stop latched after a refused arm"
        released = _trigger(ros, "release_estop")
        assert released.success and "arm to move again" in released.message
        m = len(arm.outputs)
        time.sleep(1.0)
        assert not _moving(arm.outputs[m:]), "moved after the e-stop was released but before arming"
        assert _trigger(ros, "arm").success
        arm.wait(lambda: _moving(arm.outputs[m:]), 10, "motion after arming again")
    finally:
        commands.stop()
    assert not _trigger(ros, "release_estop").message.startswith("e-stop released")
    log = arm.graph.log("arm_controller")
    assert "release it first, then arm" in log


def test_controller_with_a_stale_robot_state_refuses_to_arm_and_holds_while_armed(ros, start_graph):
    """The robot's state publisher stops (a driver crashed, its link dropped) while commands keep coming. The
    controller kept the last ee_pose forever: it armed, and passed commands on with the workspace box checked
    against a position that no longer was the arm's."""
    arm = Arm(ros, start_graph)
    arm.run(0.5, vy=None)
    time.sleep(1.5)   # no state since
    refused = _trigger(ros, "arm")
    assert not refused.success and "robot state" in refused.message, refused.message
    assert not _moving(arm.run(0.5, state=False)), "moved with a stale robot state"
    arm.run(0.3, vy=None)
    assert _trigger(ros, "arm").success
    assert arm.moves_within(10), "armed with a fresh state, commands did not move the arm"
    arm.run(1.0, state=False)   # the state stops while armed
    assert not _moving(arm.run(1.0, state=False)), "commands moved the arm a second after its state stopped"
    assert arm.moves_within(10), "the state flows again: commands did not move the arm"
    log = arm.graph.log("arm_controller")
    assert "robot state" in log and log.count("not armed") == 1


def test_controller_parameters_are_read_only_and_a_refused_change_leaves_the_limits_and_the_arm_alone(
        ros, start_graph):
    """Every limit of the controller is fixed at start (read-only): `ros2 param set` is refused with the reason,
    the speed limit still clamps, and nothing moves because of the attempt. use_sim_time (rclpy's, writable)
    switched on a real-time controller leaves it with no clock: it holds, and moves again when switched back."""
    arm = Arm(ros, start_graph)
    for name, value in [("max_linear_speed", 5.0), ("max_linear_speed", math.nan), ("max_linear_speed", "fast"),
                        ("command_timeout", math.inf), ("backend", ""), ("base_frame", ""),
                        ("state_timeout", -1.0), ("workspace_min", 0.0)]:
        result = _set(ros, "arm_controller", name, value)
        assert not result.successful and "read-only" in result.reason, (name, value, result.reason)
    assert not _set(ros, "arm_controller", "use_sim_time", "yes").successful
    assert not _moving(arm.run(0.5, vy=5.0)), "moved, disarmed, after refused parameter changes"
    assert _trigger(ros, "arm").success
    assert arm.moves_within(10, vy=5.0)
    fastest = max(np.linalg.norm(twist_to_arrays(m)[0]) for m in arm.outputs)
    assert fastest == pytest.approx(1.0), "max_linear_speed (1 m/s in the sim's settings) no longer clamps"
    assert _set(ros, "arm_controller", "use_sim_time", True).successful
    time.sleep(0.3)
    assert not _moving(arm.run(1.0)), "moved on a simulated clock that has no /clock"
    assert _set(ros, "arm_controller", "use_sim_time", False).successful
    assert arm.moves_within(10), "use_sim_time switched back: commands did not move the arm"
    arm.graph.check_alive()


def test_simulator_parameters_bad_values_are_refused_and_a_new_lockstep_timeout_takes_effect(ros, start_graph):
    """sim_robot's writable parameters: bad values are refused with the reason; lockstep_timeout (how long a
    lockstep step waits for a command) changed at run time was accepted and ignored before."""
    from rosgraph_msgs.msg import Clock

    from lapa_ros.bringup.graph import sim_robot_node

    graph = start_graph([sim_robot_node("reach", real_time=False, lockstep=True)])
    clock = []
    ros.node.create_subscription(Clock, "/clock", lambda m: clock.append((time.monotonic(), stamp_to_sec(m.clock))),
                                 COMMAND_QOS)
    ros.wait_for(lambda: clock, 60, "the simulated clock")
    for name, value, why in [("task", "", "unknown task"), ("task", 3, "Wrong parameter type"),
                             ("seed", -1, "out of range"), ("lockstep_timeout", math.nan, "out of range"),
                             ("lockstep_timeout", 0.0, "out of range"), ("command_timeout", "0.1", "Wrong parameter"),
                             ("real_time", True, "read-only"), ("image_width", 64, "read-only")]:
        result = _set(ros, "sim_robot", name, value)
        assert not result.successful and why.lower() in result.reason.lower(), (name, value, result.reason)

    def steps_per_second(seconds):
        start = len(clock)
        time.sleep(seconds)
        graph.check_alive()
        return (len(clock) - start) / seconds

    assert steps_per_second(2.0) <= 3, "no command: a lockstep step should wait lockstep_timeout (1 s)"
    assert _set(ros, "sim_robot", "lockstep_timeout", 0.05).successful
    time.sleep(1.2)   # the step waiting now ends on the old timeout
    assert steps_per_second(2.0) >= 5, "lockstep_timeout 0.05 s was accepted but steps still wait 1 s"


def test_teleop_speed_changed_at_run_time_scales_the_next_commands_and_bad_values_are_refused(ros, start_graph):
    """An operator slows the gamepad down with `ros2 param set`: accepted, and before ignored (the stick mapping
    was made with the start value)."""
    from sensor_msgs.msg import Joy

    from lapa_ros.bringup.graph import NodeSpec

    twists = []
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd", twists.append, COMMAND_QOS)
    joy = ros.node.create_publisher(Joy, "joy", COMMAND_QOS)
    graph = start_graph([NodeSpec(name="gamepad_teleop", executable="gamepad_teleop_node",
                                  module="lapa_ros.teleop.joy_teleop", config=("gamepad_teleop.yaml",))])
    ros.wait_for(lambda: graph.dead() or joy.get_subscription_count() > 0, 30, "teleop node")
    graph.check_alive()
    stick = Loop(lambda: joy.publish(Joy(axes=[0.0, -1.0, 0.0, 0.0, 0.0, 0.0], buttons=[0] * 8)))
    try:
        ros.wait_for(lambda: len(twists) > 3, 10, "commands")
        for value, why in [(math.nan, "out of range"), (3.0, "out of range"), (-0.1, "out of range"),
                           ("slow", "Wrong parameter type")]:
            result = _set(ros, "gamepad_teleop", "max_linear_speed", value)
            assert not result.successful and why in result.reason, (value, result.reason)
        assert not _set(ros, "gamepad_teleop", "rate", 100.0).successful
        n = len(twists)
        ros.wait_for(lambda: len(twists) > n + 3, 10, "commands after refused changes")
        assert np.linalg.norm(twist_to_arrays(twists[-1])[0]) == pytest.approx(0.1)
        assert _set(ros, "gamepad_teleop", "max_linear_speed", 0.02).successful
        time.sleep(0.3)
        n = len(twists)
        ros.wait_for(lambda: len(twists) > n + 3, 10, "commands after the change")
        assert np.linalg.norm(twist_to_arrays(twists[-1])[0]) == pytest.approx(0.02), "the new speed is ignored"
    finally:
        stick.stop()
    graph.check_alive()


# ---------------------------------------------------------------------------------------------- policy
def _policy(ros, start_graph, tiny_exports, **overrides):
    graph = start_graph([policy_node(str(tiny_exports["no_state"]), sim=False, log_throttle=1.0, **overrides)])
    chunks, twists = [], []
    ros.node.create_subscription(JointTrajectory, "policy/action_chunk", chunks.append, COMMAND_QOS)
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd", twists.append, COMMAND_QOS)
    images = ros.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    ros.node.create_publisher(String, "instruction", LATCHED_QOS).publish(String(data="push the block"))
    deadline = time.monotonic() + 60
    while images.get_subscription_count() == 0 and overrides.get("autostart", True):   # else: no subscription
        graph.check_alive()
        assert time.monotonic() < deadline, "the policy node did not come up"
        time.sleep(0.05)
    return graph, chunks, twists, images


def _frames(ros, images, offset=0.0):
    return Loop(lambda: images.publish(image_msg(RGB, sec_to_stamp(ros.node.get_clock().now().nanoseconds * 1e-9
                                                                   + offset), "cam")))


def test_policy_parameters_bad_values_are_refused_and_a_valid_change_takes_effect(ros, start_graph, tiny_exports):
    graph, chunks, twists, images = _policy(ros, start_graph, tiny_exports)
    frames = _frames(ros, images, offset=-0.1)   # 0.1 s old: acted on under max_input_age 0.2 s
    try:
        ros.wait_for(lambda: len(chunks) >= 3, 60, "chunks")
        for name, value, why in [("max_input_age", "0.5", "Wrong parameter type"),
                                 ("max_input_age", 1, "Wrong parameter type"),
                                 ("max_input_age", -1.0, "out of range"),
                                 ("max_input_age", math.nan, "out of range"),
                                 ("max_input_age", math.inf, "out of range"),
                                 ("future_tolerance", -math.inf, "out of range"),
                                 ("blend", "", "must be one of"),
                                 ("blend", "fastest", "must be one of"),
                                 ("model_dir", "", "read-only"),
                                 ("control_rate", 5.0, "read-only")]:
            result = _set(ros, "policy", name, value)
            assert not result.successful and why in result.reason, (name, value, result.reason)
        assert _get(ros, "policy", "max_input_age") == pytest.approx(0.2)
        n = len(chunks)
        ros.wait_for(lambda: len(chunks) >= n + 3, 20, "chunks after the refused changes")
        graph.check_alive()
        # A valid change takes effect: frames are now all older than max_input_age, so none is acted on.
        assert _set(ros, "policy", "max_input_age", 0.05).successful
        time.sleep(0.5)
        n = len(chunks)
        time.sleep(1.5)
        assert len(chunks) == n, "max_input_age 0.05 s was accepted but frames 0.1 s old are still acted on"
        assert _set(ros, "policy", "max_input_age", 0.2).successful
        ros.wait_for(lambda: len(chunks) >= n + 3, 20, "chunks after max_input_age is back to 0.2 s")
    finally:
        frames.stop()


def test_policy_lifecycle_transitions_in_the_wrong_order_are_refused_without_a_crash(ros, start_graph,
                                                                                   tiny_exports):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    graph, chunks, twists, images = _policy(ros, start_graph, tiny_exports, autostart=False)
    change = ros.node.create_client(ChangeState, "policy/change_state")
    get_state = ros.node.create_client(GetState, "policy/get_state")

    def go(transition):
        return ros.call(change, ChangeState.Request(transition=Transition(id=transition))).success

    def state():
        return ros.call(get_state, GetState.Request()).current_state.label

    frames = _frames(ros, images)
    try:
        assert state() == "unconfigured"
        assert not go(Transition.TRANSITION_ACTIVATE) and state() == "unconfigured"
        assert not go(Transition.TRANSITION_DEACTIVATE) and not go(Transition.TRANSITION_CLEANUP)
        time.sleep(1.0)
        assert not twists and not chunks
        assert go(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        assert not go(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        assert not go(Transition.TRANSITION_DEACTIVATE)
        time.sleep(1.0)
        assert not twists and not chunks, "an inactive policy published"
        assert go(Transition.TRANSITION_ACTIVATE) and state() == "active"
        assert not go(Transition.TRANSITION_ACTIVATE) and not go(Transition.TRANSITION_CONFIGURE)
        ros.wait_for(lambda: len(chunks) >= 3, 60, "chunks while active")
        assert go(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"   # while inference runs
        time.sleep(0.3)
        n, m = len(twists), len(chunks)
        time.sleep(1.0)
        assert len(twists) == n and len(chunks) <= m + 1, "commands while inactive"
        assert go(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
        assert not go(Transition.TRANSITION_ACTIVATE) and state() == "unconfigured"
        assert go(Transition.TRANSITION_CONFIGURE) and go(Transition.TRANSITION_ACTIVATE)
        k = len(chunks)
        ros.wait_for(lambda: len(chunks) >= k + 3, 60, "chunks after cleanup, configure, activate")
        assert go(Transition.TRANSITION_ACTIVE_SHUTDOWN) and state() == "finalized"
        time.sleep(0.3)
        n = len(twists)
        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE, Transition.TRANSITION_CLEANUP,
                  Transition.TRANSITION_UNCONFIGURED_SHUTDOWN):
            assert not go(t)
        time.sleep(1.0)
        assert len(twists) == n, "a finalized policy published"
        assert state() == "finalized"
        graph.check_alive()
        log = graph.log("policy")
        assert "Traceback" not in log and "Unable to start transition" in log   # rclpy's line per refusal
    finally:
        frames.stop()


# ---------------------------------------------------------------------------------------------- time
def test_controller_on_a_simulated_clock_that_jumps_back_holds_then_moves_again_once_armed(ros, start_graph):
    """A simulator restarted: /clock starts again from a smaller time. The controller must not act on what was
    stamped in the old time, must not crash, and once armed again commands in the new time move the arm."""
    arm = Arm(ros, start_graph, sim_time=True)
    arm.run(0.5, vy=None)
    assert _trigger(ros, "arm").success
    assert arm.moves_within(10), "armed on a simulated clock, commands did not move the arm"
    # The clock stops: the last command goes stale, nothing moves.
    n = len(arm.outputs)
    time.sleep(1.0)
    assert not _moving(arm.outputs[n:])
    # The simulator restarts: its clock begins again at 1 s.
    arm.time = 1.0
    assert not _moving(arm.run(1.0, vy=None)), "moved after the clock jumped back, with no command"
    assert not _moving(arm.run(1.0)), "commands of the new time moved the arm before it was armed again"
    assert _trigger(ros, "arm").success
    assert arm.moves_within(10), "after the clock jumped back and arming again, commands never moved the arm"
    arm.graph.check_alive()
    assert arm.graph.log("arm_controller").count("the clock jumped back") == 1


def test_policy_on_a_simulated_clock_that_jumps_back_acts_again_on_frames_of_the_new_time(ros, start_graph,
                                                                                       tiny_exports):
    """The simulator restarts: /clock and the frames' stamps begin again from a smaller time. Before, the
    activation time and the blender's latest query stayed in the old time: every new frame counted as "taken
    before activation" and the policy held until the clock caught up with the old time."""
    from rosgraph_msgs.msg import Clock

    graph, chunks, twists, images = _policy(ros, start_graph, tiny_exports, real_time=False)
    clock = ros.node.create_publisher(Clock, "/clock", COMMAND_QOS)
    sim = {"t": 100.0}

    def step():
        sim["t"] += 0.05
        clock.publish(Clock(clock=sec_to_stamp(sim["t"])))
        time.sleep(0.01)
        images.publish(image_msg(RGB, sec_to_stamp(sim["t"]), "cam"))

    frames = Loop(step)
    try:
        ros.wait_for(lambda: len(chunks) >= 3, 60, "chunks on the simulated clock")
        sim["t"] = 1.0   # restarted
        ros.wait_for(lambda: any(stamp_to_sec(c.header.stamp) < 50 for c in list(chunks)), 30,
                     "chunks of frames stamped after the clock jumped back")
        ros.wait_for(lambda: any(stamp_to_sec(t.header.stamp) < 50 for t in list(twists)), 10,
                     "commands stamped in the new time")
        first = next(i for i, t in enumerate(list(twists)) if stamp_to_sec(t.header.stamp) < 50)
        time.sleep(0.5)
        assert all(stamp_to_sec(t.header.stamp) < 50 for t in list(twists)[first:]), "a command of the old time"
    finally:
        frames.stop()
    graph.check_alive()
    assert graph.log("policy").count("the clock jumped back") == 1
