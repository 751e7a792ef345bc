"""The simulated Panda without ROS: model vs URDF kinematics, trajectory follower, servos, tasks, experts."""
import numpy as np
import pytest

# MuJoCo: in the project's environment; the small 3.10/3.12 venvs of scripts/check_python_versions.sh lack it.
pytest.importorskip("mujoco")

from lapa_ros.core.kinematics import KinematicChain
from lapa_ros.bringup.paths import urdf_file
from lapa_sim.panda import ARM_JOINTS, GRIPPER, Q_HOME, JointTrajectoryFollower, PandaWorld, TrajectoryError
from lapa_sim.tasks import check_runnable, get_task, load_catalogue, make_command_expert, task_names

PANDA_TASKS = ("panda-reach", "panda-push", "panda-lift")


@pytest.fixture(scope="module")
def chain():
    return KinematicChain(urdf_file("panda.urdf").read_text(), "panda_link0", "panda_hand_tcp")


@pytest.fixture(scope="module")
def world():
    w = PandaWorld("panda-reach", seed=0, image_size=(48, 64))
    yield w
    w.close()


# ----------------------------------------------------------------------------- model
def test_mujoco_tcp_pose_is_the_urdf_forward_kinematics(world, chain):
    import mujoco

    rng = np.random.default_rng(7)
    kin = mujoco.MjData(world.model)
    site = world.model.site("tcp").id
    for _ in range(200):
        q = rng.uniform(chain.lower, chain.upper)
        kin.qpos[world._arm_qpos] = q
        mujoco.mj_kinematics(world.model, kin)
        T = chain.forward(q)
        assert np.abs(kin.site_xpos[site] - T[:3, 3]).max() < 1e-6
        assert np.abs(kin.site_xmat[site].reshape(3, 3) - T[:3, :3]).max() < 1e-6
    # the wrist camera sits at the URDF's optical frame, looking along its z axis
    T_cam = KinematicChain(urdf_file("panda.urdf").read_text(), "panda_link0", "camera_color_optical_frame").forward(q)
    cam = world.model.camera("wrist").id
    mujoco.mj_camlight(world.model, kin)
    assert np.abs(kin.cam_xpos[cam] - T_cam[:3, 3]).max() < 1e-6
    assert np.allclose(-kin.cam_xmat[cam].reshape(3, 3)[:, 2], T_cam[:3, 2], atol=1e-6)


def test_joint_limits_rates_and_gripper_come_from_the_urdf(world, chain):
    m = world.model
    np.testing.assert_allclose([m.joint(n).range for n in ARM_JOINTS], np.stack([chain.lower, chain.upper], 1))
    np.testing.assert_allclose(world.velocity_limits, chain.velocity_limits)
    assert m.opt.timestep <= 0.002 and world.control_rate >= 100.0 and world.frame_rate == 30.0
    assert world.joint_names == ARM_JOINTS + ("panda_finger_joint1", "panda_finger_joint2")
    assert GRIPPER.joint == "panda_finger_joint1" and GRIPPER.state(0.04) == 0.0 and GRIPPER.state(0.0) == 1.0
    with pytest.raises(ValueError, match="control_rate"):
        PandaWorld("panda-reach", control_rate=50.0, render=False)
    with pytest.raises(ValueError, match="control_rate"):
        PandaWorld("panda-reach", control_rate=300.0, render=False)   # 3.33 physics steps
    with pytest.raises(ValueError, match="timestep"):
        PandaWorld("panda-reach", timestep=0.005, render=False)
    with pytest.raises(ValueError, match="runs on the sawyer"):
        PandaWorld("push", render=False)


# ----------------------------------------------------------------------------- follower
LOWER, UPPER = np.array([-1.0, -2.0]), np.array([1.0, 2.0])


def _follower(**kw):
    f = JointTrajectoryFollower(("a", "b"), LOWER, UPPER, **kw)
    f.hold([0.0, 0.0])
    return f


def test_trajectory_interpolates_linearly_from_the_state_on_arrival_and_then_holds():
    f = _follower()
    f.set_trajectory(["a", "b"], [([0.4, -0.2], None, 1.0), ([0.8, 0.2], [], 3.0)], now=10.0,
                     current_positions=[0.2, 0.0])
    q, v = f.sample(10.0)
    np.testing.assert_allclose(q, [0.2, 0.0])
    q, v = f.sample(10.5)                               # half way to the first point, from the state on arrival
    np.testing.assert_allclose(q, [0.3, -0.1])
    np.testing.assert_allclose(v, [0.2, -0.2])
    np.testing.assert_allclose(f.sample(12.0)[0], [0.6, 0.0])   # half way between the points
    np.testing.assert_allclose(f.sample(99.0)[0], [0.8, 0.2])    # after the end: hold the last point
    np.testing.assert_allclose(f.sample(99.0)[1], [0.0, 0.0])


def test_header_stamp_starts_the_trajectory_and_zero_means_on_arrival():
    f = _follower()
    f.set_trajectory(["a", "b"], [([0.5, 0.5], None, 1.0)], now=5.0, current_positions=[0, 0], start_time=7.0)
    np.testing.assert_allclose(f.sample(8.0)[0], [0.5, 0.5])      # reached at stamp + time_from_start
    np.testing.assert_allclose(f.sample(6.5)[0], [0.25, 0.25])    # moving from the arrival state meanwhile
    f.set_trajectory(["a", "b"], [([0.5, 0.5], None, 1.0)], now=5.0, current_positions=[0, 0], start_time=0.0)
    np.testing.assert_allclose(f.sample(6.0)[0], [0.5, 0.5])


def test_velocities_give_a_cubic_that_meets_them():
    f = _follower()
    f.set_trajectory(["a", "b"], [([0.5, 0.0], [0.5, 0.0], 1.0), ([1.0, 0.0], [0.0, 0.0], 2.0)], now=0.0,
                     current_positions=[0, 0], current_velocities=[0, 0])
    np.testing.assert_allclose(f.sample(1e-9)[1], [0.0, 0.0], atol=1e-6)   # starts from the state's velocity
    np.testing.assert_allclose(f.sample(1.0)[1], [0.5, 0.0], atol=1e-6)    # meets the point's velocity
    np.testing.assert_allclose(f.sample(1.0)[0], [0.5, 0.0], atol=1e-9)
    assert abs(f.sample(0.5)[0][0] - 0.25) > 0.01                        # not the linear path


def test_joint_names_in_any_order_and_a_new_trajectory_replaces_the_old():
    f = _follower()
    f.set_trajectory(["b", "a"], [([0.3, -0.6], None, 1.0)], now=0.0, current_positions=[0, 0])
    np.testing.assert_allclose(f.sample(1.0)[0], [-0.6, 0.3])
    f.set_trajectory(["a", "b"], [([0.0, 1.0], None, 1.0)], now=0.5, current_positions=f.sample(0.5)[0])
    np.testing.assert_allclose(f.sample(1.5)[0], [0.0, 1.0])
    np.testing.assert_allclose(f.sample(5.0)[0], [0.0, 1.0])


@pytest.mark.parametrize("names,points,start,kind", [
    (["a", "c"], [([0.1, 0.1], None, 1.0)], None, "unknown_joints"),
    (["a"], [([0.1], None, 1.0)], None, "missing_joints"),
    (["a", "a"], [([0.1, 0.1], None, 1.0)], None, "duplicate_joints"),
    (["a", "b"], [([0.1, np.nan], None, 1.0)], None, "nan"),
    (["a", "b"], [([0.1, 0.1], [np.inf, 0.0], 1.0)], None, "nan"),
    (["a", "b"], [([0.1], None, 1.0)], None, "length"),
    (["a", "b"], [([0.1, 0.1], [0.0], 1.0)], None, "length"),
    (["a", "b"], [([0.1, 0.1], None, 1.0), ([0.2, 0.2], None, 1.0)], None, "time"),
    (["a", "b"], [([0.1, 0.1], None, np.nan)], None, "time"),
    (["a", "b"], [([0.1, 0.1], None, 1.0)], 2.0, "past"),                   # ends before it arrived
])
def test_bad_trajectories_are_refused_and_the_motion_is_kept(names, points, start, kind):
    f = _follower()
    f.set_trajectory(["a", "b"], [([0.5, 0.5], None, 1.0)], now=10.0, current_positions=[0, 0])
    before = [f.sample(t)[0] for t in (10.5, 11.0, 12.0)]
    with pytest.raises(TrajectoryError) as err:
        f.set_trajectory(names, points, now=10.2, current_positions=f.sample(10.2)[0], start_time=start)
    assert err.value.kind == kind, err.value
    for t, q in zip((10.5, 11.0, 12.0), before):
        np.testing.assert_allclose(f.sample(t)[0], q)


def test_late_application_uses_the_arrival_time_and_empty_trajectories_stop():
    f = _follower()
    # Arrived at 1.00, applied at the controller's next update (1.01), ending at 1.005: accepted, reached at once.
    f.set_trajectory(["a", "b"], [([0.2, 0.2], None, 0.01)], now=1.01, current_positions=[0, 0], start_time=0.995,
                     received=1.0)
    np.testing.assert_allclose(f.sample(1.011)[0], [0.2, 0.2])
    with pytest.raises(TrajectoryError, match="before it arrived"):
        f.set_trajectory(["a", "b"], [([0.2, 0.2], None, 0.01)], now=1.03, current_positions=[0, 0],
                         start_time=0.995, received=1.02)
    f.set_trajectory(["a", "b"], [([0.9, 0.9], None, 5.0)], now=2.0, current_positions=[0.2, 0.2])
    f.set_trajectory([], [], now=3.0, current_positions=[0.3, 0.35])
    np.testing.assert_allclose(f.sample(4.0)[0], [0.3, 0.35])
    with pytest.raises(TrajectoryError, match="unknown joint"):
        f.set_trajectory(["z"], [], now=3.0, current_positions=[0.3, 0.35])


def test_references_are_clipped_into_the_joint_limits():
    f = _follower()
    f.set_position_target([5.0, -5.0])
    np.testing.assert_allclose(f.sample(0.0)[0], [1.0, -2.0])
    with pytest.raises(TrajectoryError):
        f.set_position_target([0.0, np.nan])


# ----------------------------------------------------------------------------- world
def test_the_arm_tracks_trajectories_and_position_targets_and_holds_against_gravity(world):
    world.reset(0)
    world.advance(1000)   # 2 s of holding
    assert np.abs(world.arm_positions - Q_HOME).max() < 1e-4
    goal = Q_HOME + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.3, 0.4])
    names = list(reversed(ARM_JOINTS))
    world.follow_trajectory(names, [(goal[::-1], None, 1.0)])
    t0 = world.time
    world.advance(250)
    half = world.arm_positions
    np.testing.assert_allclose(half, Q_HOME + 0.5 * (goal - Q_HOME), atol=0.01)   # on the linear path
    world.advance(500)
    assert world.time - t0 == pytest.approx(1.5)
    assert np.abs(world.arm_positions - goal).max() < 2e-3
    world.set_joint_targets(Q_HOME)
    world.advance(1000)
    assert np.abs(world.arm_positions - Q_HOME).max() < 2e-3
    with pytest.raises(TrajectoryError):
        world.follow_trajectory(ARM_JOINTS[:6], [(Q_HOME[:6], None, 1.0)])
    world.set_joint_targets(Q_HOME + [0, 0, 0, 5.0, 0, 0, 0])   # far beyond joint 4's upper limit
    world.advance(500)
    assert world.arm_positions[3] <= world.upper[3] + 0.01


def test_gripper_closes_and_opens_at_finger_speed(world):
    world.reset(0)
    world.set_gripper(1.0)
    world.advance(50)   # 0.1 s at 0.2 m/s: about half way
    assert 0.2 < world.gripper_state < 0.8
    world.advance(200)
    assert world.gripper_state > 0.97
    world.set_gripper(0.0)
    world.advance(250)
    assert world.gripper_state < 0.03
    with pytest.raises(ValueError):
        world.set_gripper(float("nan"))


def test_ee_velocity_servo_moves_the_tcp_at_the_commanded_speed(world):
    world.reset(0)
    p0, t0, R0 = world.ee_position, world.time, world.ee_rotation
    for _ in range(30):
        world.step(np.array([0.0, 0.15, -0.05]), 0.0)
    velocity = (world.ee_position - p0) / (world.time - t0)
    np.testing.assert_allclose(velocity, [0.0, 0.15, -0.05], atol=0.01)
    assert np.abs(world.ee_rotation - R0).max() < 0.01   # orientation held
    assert world.step_count == 30 and world.time == pytest.approx(1.0, abs=0.002)


def test_layout_is_a_function_of_the_seed_and_images_show_it(world):
    world.set_task("panda-push", seed=3)
    a, img_a = world.privileged_observation, world.render()
    world.reset(4)
    b = world.privileged_observation
    world.reset(3)
    np.testing.assert_array_equal(world.privileged_observation, a)
    assert not np.allclose(a, b)
    assert img_a.shape == (48, 64, 3) and img_a.dtype == np.uint8 and img_a.std() > 5
    world.reset(4)
    assert np.abs(world.render().astype(int) - img_a).mean() > 0.5
    assert world.privileged_names == ("tcp_x", "tcp_y", "tcp_z", "gripper", "cube_x", "cube_y", "cube_z",
                                      "goal_x", "goal_y", "goal_z")


@pytest.mark.parametrize("task", PANDA_TASKS)
def test_each_expert_succeeds_and_doing_nothing_does_not(task):
    w = PandaWorld(task, seed=0, render=False)
    expert = make_command_expert(task)
    try:
        for seed in (11, 12, 13):
            w.reset(seed)
            while not w.done:
                v, g = expert(w.privileged_names, w.privileged_observation)
                assert np.linalg.norm(v) <= 0.2 + 1e-9 and 0.0 <= g <= 1.0
                w.step(v, g)
            assert w.success, (task, seed, w.privileged_dict())
            w.reset(seed)
            while not w.done:
                w.step(np.zeros(3), 0.0)
            assert not w.success, (task, seed)
    finally:
        w.close()


# ----------------------------------------------------------------------------- catalogue
def test_catalogue_registers_the_panda_tasks_without_touching_the_sawyer_sets():
    cat = load_catalogue()
    assert task_names("panda") == list(PANDA_TASKS)
    assert [t.name for t in cat.resolve("panda")] == list(PANDA_TASKS)
    for name in PANDA_TASKS:
        spec = get_task(name)
        assert spec.robot == "panda" and len(set(spec.instructions)) >= 3
        check_runnable(spec)
    for preset_set in ("mt10", "held-out", "demo"):
        assert all(t.robot == "sawyer" for t in cat.resolve(preset_set))
    assert "panda-reach" not in task_names("sawyer")
    from lapa_sim.benchmark.config import PRESETS

    for preset in PRESETS.values():
        for field in ("targets", "video_only", "extra_video", "held_out"):
            assert all(get_task(t).robot == "sawyer" for t in preset[field])


def test_generate_writes_panda_episodes_and_refuses_mixing_robots(tmp_path):
    from lapa_models.data.episodes import EpisodeDataset
    from lapa_sim.generate import generate

    with pytest.raises(ValueError, match="different robots"):
        generate(tmp_path / "mixed", tasks="reach,panda-reach", episodes_per_task=1, progress=False)
    summary = generate(tmp_path / "ds", tasks="panda-reach,panda-lift", episodes_per_task=1, image_size=(32, 32),
                       workers=1, progress=False)
    assert summary["written"] == 2 and summary["successes"] == 2
    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.info.fps == pytest.approx(30.0) and ds.info.gripper == GRIPPER.to_json()
    assert ds.info.extra["robot"] == "panda"
    assert len(ds) == 2
