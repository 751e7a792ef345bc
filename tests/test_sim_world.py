"""The simulated world without ROS: task catalogue, determinism, commands, experts."""
import numpy as np
import pytest

from lapa_sim.tasks import UnknownTaskError, get_task, load_catalogue, parse_catalogue
from lapa_sim.world import SimWorld


def test_catalogue_covers_mt10_with_paraphrased_instructions():
    cat = load_catalogue()
    mt10 = cat.resolve("mt10")
    assert len(mt10) == 10
    for t in cat.tasks.values():
        assert len(t.instructions) >= 3, t.name
        assert len(set(t.instructions)) == len(t.instructions), t.name
        if t.robot == "sawyer":   # the Panda's tasks (lapa_sim.panda) are tested in tests/pure/test_panda_world.py
            assert t.env.endswith("-v3") and t.expert.startswith("Sawyer")


def test_unknown_task_is_refused_with_the_list_of_valid_ones():
    with pytest.raises(UnknownTaskError) as err:
        get_task("push-the-moon")
    msg = str(err.value)
    assert "push-the-moon" in msg and "drawer-open" in msg and "reach" in msg
    with pytest.raises(UnknownTaskError):
        load_catalogue().resolve("mt10,bogus")


def test_malformed_catalogue_entries_are_reported_by_task_name():
    with pytest.raises(ValueError, match="task 'x': missing"):
        parse_catalogue({"tasks": {"x": {"env": "reach-v3"}}})
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        parse_catalogue({"tasks": {}, "task_sets": {"s": ["nope"]}})


@pytest.fixture(scope="module")
def world():
    w = SimWorld("push", seed=0, image_size=(64, 64))
    yield w
    w.close()


def test_same_seed_gives_the_same_scene_and_other_seeds_differ(world):
    world.reset(5)
    a = world.render().copy()
    world.step(np.array([0.2, 0.0, 0.0]), 0.0)
    world.reset(6)
    b = world.render().copy()
    world.reset(5)
    assert np.array_equal(a, world.render())
    assert not np.array_equal(a, b)


def test_images_are_upright_uint8_rgb(world):
    world.reset(0)
    img = world.render()
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    # Upright: the floor/table (lit, textured) is in the lower half, the dark background above.
    assert img[48:].mean() > img[:8].mean()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_velocity_command_moves_the_hand_in_the_commanded_direction(world, axis):
    world.reset(1)
    p0 = world.ee_position
    v = np.zeros(3)
    v[axis] = 0.1
    for _ in range(5):
        world.step(v, 0.0)
    d = world.ee_position - p0
    assert d[axis] > 0.01, d
    assert abs(d[axis]) > 3 * np.abs(np.delete(d, axis)).max(), d


def test_non_finite_command_is_refused(world):
    with pytest.raises(ValueError, match="non-finite"):
        world.step(np.array([np.nan, 0, 0]), 0.0)


def test_episode_ends_at_the_step_limit(world):
    world.reset(2)
    while not world.done:
        world.step(np.zeros(3), 0.0)
    assert world.step_count == world.task.max_steps and not world.success


def test_progress_grades_an_episode_between_standing_still_and_success(world):
    """progress: 1 on success, else the best shaped reward's share; the expert halfway scores above an arm
    that never moved, and every episode starts again from nothing."""
    world.reset(4)
    for _ in range(10):
        world.step(np.zeros(3), 0.0)
    still = world.progress
    world.reset(4)
    assert world.progress == 0.0
    for _ in range(12):   # part of the way: the hand goes to the puck
        world.step(*world.expert_command())
    halfway = world.progress
    assert not world.success and 0.0 <= still < halfway < 1.0, (still, halfway)
    while not world.done:
        world.step(*world.expert_command())
    assert world.success and world.progress == 1.0


def test_recorded_gripper_state_matches_what_the_policy_node_computes_live(world, tmp_path):
    """Training data (SimWorld.state) and deployment (the policy node applying the dataset's gripper
    mapping, carried into the model card, to the simulated arm's joint_states) agree."""
    from lapa_models.data.episodes import EpisodeDataset
    from lapa_models.data.robot_state import GripperMapping
    from lapa_sim.generate import generate

    generate(tmp_path / "d", tasks="reach", episodes_per_task=1, image_size=(32, 32), workers=1, progress=False)
    mapping = GripperMapping.from_json(EpisodeDataset(tmp_path / "d").info.gripper)
    world.reset(3)
    for gripper in (0.0, 1.0, 0.3):
        for _ in range(5):
            world.step(np.zeros(3), gripper)
        q = dict(zip(world.joint_names, world.joint_positions()))[mapping.joint]
        assert world.state[3] == pytest.approx(mapping.state(q), abs=1e-6)


def test_views_change_camera_and_light_and_unknown_ones_are_named(tmp_path):
    cat = load_catalogue()
    shifted = cat.view("shifted")
    assert cat.view("default") is None and cat.view(None) is None
    with pytest.raises(ValueError, match="unknown view 'noon'"):
        cat.view("noon")
    plain = SimWorld("push", seed=0, image_size=(64, 64))
    other = SimWorld("push", seed=0, image_size=(64, 64), view=shifted)
    try:
        assert other.camera.azimuth != plain.camera.azimuth
        a, b = plain.render().astype(float), other.render().astype(float)
        assert np.abs(a - b).mean() > 10
        np.testing.assert_allclose(plain.state, other.state)   # same scene, only seen differently
    finally:
        plain.close()
        other.close()
    with pytest.raises(ValueError, match="view 'v': unknown light keys"):
        parse_catalogue({"tasks": {}, "views": {"v": {"light": {"colour": 1}}}})
    with pytest.raises(ValueError, match="camera: unknown keys"):
        parse_catalogue({"tasks": {}, "views": {"v": {"camera": {"zoom": 2}}}})


def test_a_task_without_expert_is_catalogued_but_cannot_make_episodes(tmp_path, monkeypatch):
    from lapa_sim.generate import generate
    from lapa_sim.tasks import check_runnable

    path = tmp_path / "tasks.yaml"
    path.write_text("tasks:\n  lonely-door:\n    env: door-open-v3\n    instructions: [open the lonely door]\n"
                    "  bad-env:\n    env: teleport-v3\n    expert: SawyerReachV3Policy\n    instructions: [go]\n")
    monkeypatch.setenv("LAPA_TASKS_FILE", str(path))
    cat = load_catalogue()
    assert cat.get("lonely-door").expert is None
    with pytest.raises(ValueError, match="'lonely-door' has no scripted expert"):
        generate(tmp_path / "data", tasks="lonely-door", episodes_per_task=1, progress=False)
    # play needs the scene only
    played = generate(tmp_path / "play", tasks="lonely-door", episodes_per_task=1, image_size=(32, 32),
                      play_steps=4, progress=False)
    assert played["written"] == 1 and played["frames"] == 4
    with pytest.raises(ValueError, match="no environment 'teleport-v3'"):
        check_runnable(cat.get("bad-env"))
    assert not (tmp_path / "data").exists()


def test_in_process_evaluation_runs_the_panda_and_the_sawyer_in_one_call(tiny_exports):
    """lapa policy evaluate picks each task's robot (the Panda's world, then the Sawyer's), and the
    policy's actions move the hand in both."""
    from lapa_sim.evaluate import evaluate

    result = evaluate(str(tiny_exports["state"]), "panda-reach,reach", episodes=1, image_size=(64, 64), threads=1,
                      progress=False)
    for task in ("panda-reach", "reach"):
        episode = result["tasks"][task]["episodes"][0]
        assert episode["steps"] > 0 and episode["ee_net_m"] > 0.02, (task, episode)
