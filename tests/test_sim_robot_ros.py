"""The simulated arm as a separate process over real DDS, each test on its own ROS domain."""
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float64
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from lapa_ros.bringup.graph import build_graph, sim_robot_node
from lapa_ros.interfaces.messages import stamp_to_sec, twist_msg
from lapa_ros.interfaces.ros_common import COMMAND_QOS, SENSOR_QOS

pytestmark = pytest.mark.timeout(180)


def _wait_ready(ros, graph, timeout=60.0):
    images = []
    sub = ros.node.create_subscription(Image, "camera/image_raw", images.append, SENSOR_QOS)
    deadline = time.monotonic() + timeout
    while not images:
        graph.check_alive()
        assert time.monotonic() < deadline, "sim_robot published no image"
        time.sleep(0.05)
    ros.node.destroy_subscription(sub)


def test_images_and_camera_info_arrive_at_the_control_rate(ros, start_graph):
    graph = start_graph([sim_robot_node("reach", real_time=True)])
    _wait_ready(ros, graph)
    images, infos = [], []
    ros.node.create_subscription(Image, "camera/image_raw", lambda m: images.append((time.monotonic(), m)), SENSOR_QOS)
    ros.node.create_subscription(CameraInfo, "camera/camera_info", infos.append, SENSOR_QOS)
    time.sleep(3.0)
    n = len(images)
    rate = (n - 1) / (images[-1][0] - images[0][0])
    assert 17.0 < rate < 23.0, f"{n} images, {rate:.1f} Hz (configured 20 Hz)"
    stamps = np.array([stamp_to_sec(m.header.stamp) for _, m in images])
    assert np.all(np.diff(stamps) > 0) and abs(np.median(np.diff(stamps)) - 0.05) < 0.01
    msg = images[-1][1]
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 128, 128, 384)
    assert infos and infos[-1].width == 128 and infos[-1].k[0] > 0


def _ee(ros):
    poses = []
    ros.node.create_subscription(PoseStamped, "ee_pose", poses.append, COMMAND_QOS)
    return poses


def _publish_for(ros, pub, make_msg, seconds, rate=20.0):
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        pub.publish(make_msg())
        time.sleep(1.0 / rate)


def _position(pose):
    p = pose.pose.position
    return np.array([p.x, p.y, p.z])


def test_twist_moves_the_end_effector_in_the_commanded_direction_and_nan_holds(ros, start_graph):
    graph = start_graph([sim_robot_node("reach", real_time=True)])
    _wait_ready(ros, graph)
    poses = _ee(ros)
    pub = ros.node.create_publisher(TwistStamped, "servo_node/delta_twist_cmds", COMMAND_QOS)
    ros.wait_for(lambda: len(poses) > 2, 5, "ee_pose")
    p0 = _position(poses[-1])
    _publish_for(ros, pub, lambda: twist_msg(np.array([0.0, 0.1, 0.0]), ros.node.get_clock().now().to_msg(), "world"), 1.0)
    time.sleep(0.4)
    p1 = _position(poses[-1])
    d = p1 - p0
    assert d[1] > 0.05 and abs(d[0]) < 0.02 and abs(d[2]) < 0.02, d

    # NaN commands are ignored: the arm holds still (and keeps publishing).
    nan = lambda: twist_msg(np.array([np.nan, 0.1, np.inf]), ros.node.get_clock().now().to_msg(), "world")
    _publish_for(ros, pub, nan, 1.0)
    p2 = _position(poses[-1])
    assert np.linalg.norm(p2 - p1) < 0.005, p2 - p1
    graph.check_alive()
    assert "NaN" in graph.log("sim_robot")

    # A twist in an unknown frame is refused too.
    _publish_for(ros, pub, lambda: twist_msg(np.array([0.0, -0.1, 0.0]), ros.node.get_clock().now().to_msg(),
                                             "camera_link"), 0.5)
    assert np.linalg.norm(_position(poses[-1]) - p2) < 0.005
    assert "camera_link" in graph.log("sim_robot")


def test_a_reset_opens_the_gripper_and_forgets_the_last_episodes_gripper_command(ros, start_graph):
    """In-process episodes start with the gripper open until the policy's first command; so must ROS ones."""
    graph = start_graph([sim_robot_node("reach", real_time=True)])
    _wait_ready(ros, graph)
    joints = []
    ros.node.create_subscription(JointState, "joint_states", joints.append, COMMAND_QOS)
    ros.wait_for(lambda: len(joints) > 2, 5, "joint_states")

    def finger() -> float:
        msg = joints[-1]
        return float(msg.position[list(msg.name).index("r_close")])

    open_position = finger()
    pub = ros.node.create_publisher(Float64, "gripper/command", COMMAND_QOS)
    _publish_for(ros, pub, lambda: Float64(data=1.0), 1.0)
    closed_position = finger()
    assert closed_position > open_position + 0.01, (open_position, closed_position)
    reset = ros.call(ros.node.create_client(Trigger, "sim/reset"), Trigger.Request())
    assert reset.success
    time.sleep(1.0)   # twenty steps with no command: the gripper stays as the reset left it
    assert abs(finger() - open_position) < 0.005, (open_position, closed_position, finger())
    graph.check_alive()


def test_unknown_task_is_refused_with_the_list_of_valid_tasks(ros, start_graph):
    graph = start_graph([sim_robot_node("reach", real_time=True)])
    _wait_ready(ros, graph)
    client = ros.node.create_client(SetParameters, "sim_robot/set_parameters")
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="juggle")
    res = ros.call(client, SetParameters.Request(parameters=[Parameter(name="task", value=value)])).results[0]
    assert not res.successful and "juggle" in res.reason and "drawer-open" in res.reason
    # The arm keeps running its current task.
    reset = ros.call(ros.node.create_client(Trigger, "sim/reset"), Trigger.Request())
    assert reset.success and "task=reach" in reset.message


def test_node_started_with_an_unknown_task_exits_with_a_clear_error(start_graph):
    graph = start_graph([sim_robot_node("juggle", real_time=True)])
    deadline = time.monotonic() + 60
    while not graph.dead():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert graph.dead()["sim_robot"] == 1
    assert "unknown task 'juggle'" in graph.log("sim_robot") and "window-open" in graph.log("sim_robot")


def test_scripted_expert_solves_mt10_through_the_controller_over_ros(ros, start_graph):
    from lapa_ros.evaluation.episode_runner import EpisodeRunner
    from lapa_sim.tasks import load_catalogue

    graph = start_graph(build_graph("sim_teleop", {"task": "reach", "real_time": "false", "lockstep": "true"}))
    runner = EpisodeRunner(record_frames=False, context=ros.context).start()
    try:
        runner.wait_until_ready(timeout=60.0, graph=graph)
        runner.arm()
        deadline = time.monotonic() + 30.0
        while runner.count_publishers("arm_controller/twist_cmd") == 0:   # the expert's process is up
            assert time.monotonic() < deadline, "the scripted expert never came up"
            time.sleep(0.05)
        results = []
        for task in load_catalogue().resolve("mt10"):
            r = runner.run_episode(task.name, task.instruction, task.max_steps, control_period=0.05, seed=100)
            results.append((task.name, r.success, r.steps))
            # What drove the arm is counted per episode: the expert's twists, and the controller passing them on.
            assert r.commands > 0 and 0 < r.motion_commands <= r.commands and r.forwarded_motion > 0, r
        # Lockstep episodes repeat exactly, and so does the step a success is counted at (it was the step at which
        # the evaluator's polling noticed the success: one or more late, varying from run to run).
        again = [(task.name, r.success, r.steps) for task in load_catalogue().resolve("mt10")[:4]
                 for r in [runner.run_episode(task.name, task.instruction, task.max_steps, 0.05, seed=100)]]
        assert again == results[:4]
    finally:
        runner.stop()
    solved = sum(ok for _, ok, _ in results)
    assert solved >= 8, results


def test_episodes_in_which_nothing_drives_the_arm_are_told_apart(ros, start_graph):
    """The arm did not move because no command came (a policy that acts on no frame), or because the arm
    controller refused every one (here: twists in another frame): each episode's counts say which."""
    from lapa_ros.evaluation.episode_runner import EpisodeRunner
    from lapa_ros.evaluation.evaluate import acting_problem

    specs = [s for s in build_graph("sim_teleop", {"task": "reach"}) if s.name in ("sim_robot", "arm_controller")]
    assert len(specs) == 2
    graph = start_graph(specs)
    runner = EpisodeRunner(record_frames=False, context=ros.context).start()
    try:
        runner.wait_until_ready(timeout=60.0, graph=graph)
        runner.arm()
        silent = runner.run_episode("reach", "reach the goal", max_steps=10, control_period=0.05, seed=100)
        assert (silent.commands, silent.motion_commands, silent.forwarded_motion) == (0, 0, 0)
        assert "acted on no frame" in acting_problem(silent.summary())

        pub = ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
        sending = {"on": True}

        def drive():
            while sending["on"]:
                pub.publish(twist_msg(np.array([0.1, 0.0, 0.0]), ros.node.get_clock().now().to_msg(), "elsewhere"))
                time.sleep(0.02)

        import threading
        t = threading.Thread(target=drive, daemon=True)
        t.start()
        try:
            refused = runner.run_episode("reach", "reach the goal", max_steps=10, control_period=0.05, seed=101)
        finally:
            sending["on"] = False
            t.join()
        assert refused.motion_commands > 0 and refused.forwarded_motion == 0, refused
        assert "passed on none" in acting_problem(refused.summary())

        # A command publisher the counters cannot match (best effort against their reliable QoS): waited for once,
        # then its episodes carry no counts and no verdict, rather than a false "the arm never moved".
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        ros.node.create_publisher(TwistStamped, "arm_controller/twist_cmd",
                                  QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        deadline = time.monotonic() + 10.0
        while runner.count_publishers("arm_controller/twist_cmd") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert runner.match_command_publishers(timeout=0.5) is False
        t0 = time.monotonic()
        unknown = runner.run_episode("reach", "reach the goal", max_steps=5, control_period=0.05, seed=102)
        assert time.monotonic() - t0 < 5.0   # no second wait
        assert unknown.commands is None and acting_problem(unknown.summary()) is None
    finally:
        runner.stop()
