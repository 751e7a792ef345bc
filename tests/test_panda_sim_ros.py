"""The simulated Panda behind ros2_control topics, over real DDS with every node a separate process.

scripted expert -> arm_controller (IK on urdf/panda.urdf, joint_trajectory or forward_position backend)
-> panda_sim, closed loop; rates; refused commands; a recorded episode converted into training data."""
import time

import numpy as np
import pytest
import rclpy.duration
import yaml
from builtin_interfaces.msg import Duration
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lapa_ros.bringup.graph import build_graph, panda_sim_node
from lapa_ros.interfaces.messages import stamp_to_sec
from lapa_ros.interfaces.ros_common import COMMAND_QOS, SENSOR_QOS
from lapa_sim.panda import ARM_JOINTS, Q_HOME
from lapa_sim.tasks import get_task

pytestmark = pytest.mark.timeout(180)


class Recorder:
    """Arrival times (and the latest message) of a topic, seen by the test's node."""

    def __init__(self, ros, msg_type, topic, qos=COMMAND_QOS):
        self.times, self.stamps, self.last = [], [], None
        ros.node.create_subscription(msg_type, topic, self._on, qos)

    def _on(self, msg):
        self.times.append(time.monotonic())
        header = getattr(msg, "header", None)
        self.stamps.append(stamp_to_sec(header.stamp) if header is not None else None)
        self.last = msg

    def rate(self, t0, t1):
        n = sum(t0 <= t <= t1 for t in self.times)
        return n / (t1 - t0)


@pytest.mark.parametrize("controller,task", [("joint_trajectory", "panda-push"), ("forward_position", "panda-lift")])
def test_scripted_expert_drives_the_panda_through_the_controllers_ik_to_success(ros, start_graph, controller, task):
    from lapa_ros.evaluation.episode_runner import EpisodeRunner

    graph = start_graph(build_graph("sim_teleop", {"task": task, "robot": "panda", "controller": controller}))
    joints = Recorder(ros, JointState, "joint_states")
    images = Recorder(ros, Image, "camera/image_raw", SENSOR_QOS)
    trajectories = Recorder(ros, JointTrajectory, "joint_trajectory_controller/joint_trajectory")
    positions = Recorder(ros, Float64MultiArray, "forward_position_controller/commands")
    runner = EpisodeRunner(record_frames=False, context=ros.context).start()
    try:
        runner.wait_until_ready(timeout=60.0, graph=graph)
        runner.arm()
        spec = get_task(task)
        t0 = time.monotonic()
        result = runner.run_episode(task, spec.instruction, spec.max_steps, control_period=1 / 30, seed=100)
        t1 = time.monotonic()
    finally:
        runner.stop()
    graph.check_alive()
    assert result.success, (result, graph.log("sim_robot")[-2000:], graph.log("arm_controller")[-2000:])
    assert f"backend '{controller}'" in graph.log("arm_controller")
    # The expert's commands are counted; what a joint backend passes on is not watched (no twist goes out), so
    # the episode is not flagged as one in which the arm never moved.
    from lapa_ros.evaluation.evaluate import acting_problem
    assert result.motion_commands > 0 and result.forwarded_motion is None and acting_problem(result.summary()) is None
    # The arm moved through the chosen ros2_control topic only.
    moving, idle = (trajectories, positions) if controller == "joint_trajectory" else (positions, trajectories)
    assert sum(t0 <= t <= t1 for t in moving.times) > 50 and not idle.times
    # joint_states at the controller rate (100 Hz configured), camera at 30 Hz, stamped on the simulation's steps
    # (received rates measured here: 99-100 Hz and 30 Hz; the margins are for a busy machine, where the
    # simulation may skip a stalled quarter second).
    joint_rate, camera_rate = joints.rate(t0 + 0.5, t1), images.rate(t0 + 0.5, t1)
    print(f"{controller}: {task} in {result.steps} frames, {t1 - t0:.1f} s; joint_states {joint_rate:.1f} Hz, "
          f"camera {camera_rate:.1f} Hz")
    assert joint_rate >= 90.0, joint_rate
    assert 27.0 <= camera_rate <= 33.0, camera_rate
    stamps = np.array([s for t, s in zip(joints.times, joints.stamps) if t0 + 0.5 <= t <= t1])
    assert np.median(np.diff(stamps)) == pytest.approx(0.01, abs=1e-4)
    assert list(joints.last.name) == list(ARM_JOINTS) + ["panda_finger_joint1", "panda_finger_joint2"]


def _point(q, seconds=0.5):
    return JointTrajectoryPoint(positions=[float(v) for v in q],
                                time_from_start=Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9)))


def test_bad_commands_are_refused_and_the_arm_holds_while_good_ones_move_it(ros, start_graph):
    graph = start_graph([panda_sim_node("panda-reach", real_time=True)])
    joints = Recorder(ros, JointState, "joint_states")
    infos = Recorder(ros, CameraInfo, "camera/camera_info", SENSOR_QOS)
    traj = ros.node.create_publisher(JointTrajectory, "joint_trajectory_controller/joint_trajectory", COMMAND_QOS)
    fwd = ros.node.create_publisher(Float64MultiArray, "forward_position_controller/commands", COMMAND_QOS)
    grip = ros.node.create_publisher(Float64, "gripper/command", COMMAND_QOS)
    deadline = time.monotonic() + 60
    while joints.last is None or traj.get_subscription_count() == 0 or fwd.get_subscription_count() == 0:
        graph.check_alive()
        assert time.monotonic() < deadline, "panda_sim did not come up"
        time.sleep(0.05)
    reset = ros.call(ros.node.create_client(Trigger, "sim/reset"), Trigger.Request())
    assert reset.success and reset.message.startswith("task=panda-reach seed=1 stamp=")
    time.sleep(1.0)

    def arm_now():
        return np.array(joints.last.position)

    q0 = arm_now()
    np.testing.assert_allclose(q0[:7], Q_HOME, atol=1e-3)
    far = Q_HOME + 0.5
    bad = []
    for names, q in ((list(ARM_JOINTS[:6]) + ["panda_joint99"], far), (list(ARM_JOINTS[:6]), far[:6]),
                     (list(ARM_JOINTS), np.where(np.arange(7) == 2, np.nan, far))):
        msg = JointTrajectory(joint_names=names, points=[_point(q)])
        bad.append((traj, msg))
    stale = JointTrajectory(joint_names=list(ARM_JOINTS), points=[_point(far)])
    stale.header.stamp.sec = 1000   # from before the episode (a reset) began
    late = JointTrajectory(joint_names=list(ARM_JOINTS), points=[_point(far, 0.5)])
    late.header.stamp = (ros.node.get_clock().now() - rclpy.duration.Duration(seconds=0.7)).to_msg()
    bad += [(traj, stale), (traj, late)]   # the latter ends 0.2 s before it arrives
    bad += [(fwd, Float64MultiArray(data=[float(v) for v in far[:6]])),
            (fwd, Float64MultiArray(data=[float(v) for v in np.where(np.arange(7) == 0, np.inf, Q_HOME)])),
            (fwd, Float64MultiArray(data=[float(v) for v in far])),        # a 0.5 rad jump
            (grip, Float64(data=float("nan")))]
    for _ in range(3):
        for pub, msg in bad:
            pub.publish(msg)
            time.sleep(0.015)   # one controller period: each is applied (or refused) on its own
    time.sleep(0.5)
    graph.check_alive()
    assert np.abs(arm_now() - q0).max() < 1e-3, arm_now() - q0
    log = graph.log("sim_robot")
    for text in ("unknown joint(s) 'panda_joint99'", "lacks joint(s) panda_joint7", "NaN/Inf", "before it arrived",
                 "before the current episode began",
                 "6 values for the 7 joints", "0.500 rad from the arm", "gripper command refused"):
        assert text in log, text

    # Good commands move it: joint names in any order, and a position target within reach.
    goal = Q_HOME + np.array([0.1, -0.1, 0.1, 0.1, -0.1, 0.1, -0.1])
    order = list(reversed(range(7)))
    traj.publish(JointTrajectory(joint_names=[ARM_JOINTS[i] for i in order], points=[_point(goal[order], 0.5)]))
    ros.wait_for(lambda: np.abs(arm_now()[:7] - goal).max() < 3e-3, 5, "the trajectory's goal")
    fwd.publish(Float64MultiArray(data=[float(v) for v in goal - 0.05]))
    ros.wait_for(lambda: np.abs(arm_now()[:7] - (goal - 0.05)).max() < 3e-3, 5, "the position target")
    grip.publish(Float64(data=1.0))
    ros.wait_for(lambda: arm_now()[7] < 0.002, 5, "the fingers to close")
    assert infos.last.width == 128 and infos.last.k[0] > 0

    # Tasks: a Sawyer task is refused with the Panda's list; a Panda task starts at the next reset.
    client = ros.node.create_client(SetParameters, "sim_robot/set_parameters")

    def set_task(name):
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=name)
        return ros.call(client, SetParameters.Request(parameters=[Parameter(name="task", value=value)])).results[0]

    refused = set_task("drawer-open")
    assert not refused.successful and "panda-lift" in refused.reason
    assert set_task("panda-lift").successful
    reset = ros.call(ros.node.create_client(Trigger, "sim/reset"), Trigger.Request())
    assert reset.success and "task=panda-lift seed=2" in reset.message
    time.sleep(0.2)
    np.testing.assert_allclose(arm_now()[:7], Q_HOME, atol=2e-3)


def test_operator_evaluation_on_a_running_graph_records_verdicts_and_what_drove_the_arm(ros, start_graph, ros_env,
                                                                                        tmp_path, monkeypatch):
    """`lapa eval --robot`: episodes on a graph already running (here the simulated Panda driven by the scripted
    expert through the joint-trajectory backend), each started by the operator and judged by the
    eval/mark_success service or ended by the timeout; the counts of what drove the arm are recorded."""
    import json
    import threading

    from std_srvs.srv import SetBool

    from lapa_ros.evaluation.evaluate import evaluate_robot, report_not_moved

    start_graph(build_graph("sim_teleop", {"task": "panda-reach", "robot": "panda"}))
    for key, value in ros_env.items():   # evaluate_robot joins the graph's domain as `lapa eval --robot` would
        monkeypatch.setenv(key, value)
    mark = ros.node.create_client(SetBool, "eval/mark_success")
    prompts, lines = [], []

    def log(line):
        lines.append(line)
        if line.startswith("running") and len(prompts) == 1:   # episode 1 is judged a success through the service
            threading.Timer(1.0, lambda: ros.call(mark, SetBool.Request(data=True))).start()

    summary = evaluate_robot("reach the goal", 2, tmp_path / "eval", timeout=4.0, log=log, prompt=prompts.append)
    rows = json.loads((tmp_path / "eval" / "episodes.json").read_text())
    assert [r["success"] for r in rows] == [True, False] and summary["successes"] == 1, lines
    assert len(prompts) == 2 and "[episode 2/2]" in prompts[1]
    assert sum("(timeout)" in line for line in lines) == 1, lines
    for row in rows:   # the expert's twists reached the controller, which passed motion on (its own count)
        assert row["commands"] > 0 and row["motion_commands"] > 0 and row["forwarded_motion"] > 0, row
        assert row["steps"] > 0
    assert summary["mode"] == "robot" and summary["episodes_arm_not_moved"] == []
    assert summary["controller_diagnostics"].get("state"), summary["controller_diagnostics"]
    assert report_not_moved(summary) == 0


def test_operator_evaluation_reports_a_joint_controller_that_passed_nothing_on(start_graph, ros_env, tmp_path,
                                                                                 monkeypatch):
    """The same on a controller that refuses every command (twists in another frame than its base frame): the
    joint backend outputs no twist, so what it passed on is its own motion_sent count, 0 here, and the run is
    reported as one in which the arm never moved, not as a policy's failure."""
    import dataclasses
    import io
    import json

    from lapa_ros.evaluation.evaluate import evaluate_robot, report_not_moved

    specs = [dataclasses.replace(s, parameters={**s.parameters, "base_frame": "camera_link"})
             if s.name == "scripted_expert" else s
             for s in build_graph("sim_teleop", {"task": "panda-reach", "robot": "panda"})]
    start_graph(specs)
    for key, value in ros_env.items():
        monkeypatch.setenv(key, value)
    lines = []
    summary = evaluate_robot("reach the goal", 1, tmp_path / "eval", timeout=3.0, log=lines.append,
                             prompt=lambda message: None)
    row = json.loads((tmp_path / "eval" / "episodes.json").read_text())[0]
    assert row["motion_commands"] > 0 and row["forwarded_motion"] == 0, row
    assert any("passed on none of the" in line for line in lines), lines
    assert summary["episodes_arm_not_moved"] == [1]
    err = io.StringIO()
    assert report_not_moved(summary, out=err) == 1 and "did not move in any of the 1 episodes" in err.getvalue()


def test_panda_sim_started_with_a_sawyer_task_exits_with_the_panda_tasks(start_graph):
    graph = start_graph([panda_sim_node("push", real_time=True)])
    deadline = time.monotonic() + 60
    while not graph.dead():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert graph.dead()["sim_robot"] == 1
    log = graph.log("sim_robot")
    assert "task 'push' runs on the sawyer" in log and "panda-reach" in log


def test_a_recorded_panda_episode_converts_into_a_training_episode(ros, start_graph, tmp_path):
    from lapa_models.data.episodes import EpisodeDataset
    from lapa_ros.recording.bag_convert import ConversionConfig, convert_bags
    from lapa_ros.evaluation.episode_runner import EpisodeRunner

    bags = tmp_path / "bags"
    graph = start_graph(build_graph("sim_record", {"task": "panda-reach", "robot": "panda", "output_dir": str(bags)}))
    runner = EpisodeRunner(record_frames=False, context=ros.context).start()
    try:
        runner.wait_until_ready(timeout=60.0, graph=graph)
        runner.arm()
        spec = get_task("panda-reach")
        r = runner.run_episode(spec.name, spec.instruction, spec.max_steps, control_period=1 / 30, seed=7,
                               frames_after_success=5, on_start=lambda: runner.trigger("recorder/start"))
        runner.trigger("recorder/stop")
        runner.set_bool("recorder/mark_success", r.success)
    finally:
        runner.stop()
    assert r.success
    # No gripper flags: the recorder of the Panda graph stored the Panda's mapping in the bag.
    summary = convert_bags(bags, tmp_path / "ds", ConversionConfig(), progress=False)
    assert summary["converted"] == 1, summary
    ds = EpisodeDataset(tmp_path / "ds")
    ep = ds[0]
    frames, states, actions = ep.frames, ep.states, ep.actions
    assert ep.instruction == spec.instruction and ep.success
    assert len(frames) >= r.steps - 2 and frames.shape[1:] == (128, 128, 3)
    assert ds.info.fps == pytest.approx(30.0, abs=1.5)
    assert ds.info.gripper == {"joint": "panda_finger_joint1", "open_position": 0.04, "closed_position": 0.0}
    # The states are the TCP in panda_link0 (from near the home pose) and an open gripper; the actions are the
    # expert's twists in the same frame: integrated, they point where the TCP went (the target is >= 15 cm away;
    # a loaded machine can make the simulation skip time, so the lengths only roughly agree).
    assert np.linalg.norm(states[0, :3] - [0.307, 0.0, 0.487]) < 0.08
    assert np.all(states[:, 3] < 0.05)
    moved = states[-1, :3] - states[0, :3]
    commanded = (actions[:-1, :3] * np.diff(ep.timestamps)[:, None]).sum(0)
    cosine = moved @ commanded / (np.linalg.norm(moved) * np.linalg.norm(commanded))
    ratio = np.linalg.norm(moved) / np.linalg.norm(commanded)
    assert np.linalg.norm(moved) > 0.08 and cosine > 0.95 and 0.6 < ratio < 1.2, (moved, commanded)


def test_panda_graph_parameter_files_match_the_nodes():
    import importlib

    from lapa_ros.nodes import panda_sim

    for graph in ("sim_policy", "sim_teleop", "sim_record"):
        for spec in build_graph(graph, {"task": "panda-reach", "controller": "forward_position"}):
            declared = {p.name: p for p in importlib.import_module(spec.module).PARAMS}
            for i, path in enumerate(spec.config_paths()):
                doc = yaml.safe_load(path.read_text())
                assert list(doc) == [f"/**/{spec.name}"], path
                params = doc[f"/**/{spec.name}"]["ros__parameters"]
                if i == 0:
                    assert set(params) == set(declared), path
                for key, value in params.items():
                    assert key in declared and type(value) is type(declared[key].default), (path, key)
                    if i == 0:
                        assert value == declared[key].default, (path, key)
            for key in spec.parameters:
                assert key in declared or key == "use_sim_time", (graph, spec.name, key)
    names = [s.executable for s in build_graph("sim_teleop", {"task": "panda-push"})]
    assert names == ["panda_sim_node", "arm_controller_node", "scripted_expert_node"]
    assert panda_sim.PARAMS
    with pytest.raises(ValueError, match="runs on the sawyer"):
        build_graph("sim_teleop", {"task": "push", "robot": "panda"})
    with pytest.raises(ValueError, match="controller must be"):
        build_graph("sim_teleop", {"task": "panda-push", "controller": "servo"})
