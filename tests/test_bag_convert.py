"""Bags -> episodes: alignment on stamps, both action sources, and damaged or inconsistent bags."""
import json
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64

from lapa_models.data import EpisodeDataset
from lapa_ros.recording.bag_convert import ConversionConfig, convert_bags
from lapa_ros.recording.bags import EpisodeBagWriter, EpisodeInfo
from lapa_ros.interfaces.messages import image_msg, sec_to_stamp, twist_msg

PERIOD = 0.05


GRIPPER = {"joint": "r_close", "open_position": 0.0, "closed_position": 0.04}   # what the recorder stores


def write_episode_bag(path: Path, n=12, t0=100.0, outcome="success", skip_topics=(), state_clock_offset=0.0,
                      encoding="rgb8", size=(24, 32), gripper=GRIPPER, joint_state=None):
    """A synthetic teleop episode: frame k shows k in its pixels; the hand moves +y at 0.1 m/s.
    joint_state(k, gripper_position) -> JointState replaces the joint_states message of frame k."""
    w = EpisodeBagWriter(path, EpisodeInfo(instruction="slide right", operator="t", outcome=outcome, task="demo",
                                           gripper=gripper))
    topics = {"/camera/image_raw": "sensor_msgs/msg/Image", "/ee_pose": "geometry_msgs/msg/PoseStamped",
              "/joint_states": "sensor_msgs/msg/JointState", "/arm_controller/twist_cmd": "geometry_msgs/msg/TwistStamped",
              "/arm_controller/gripper_cmd": "std_msgs/msg/Float64"}
    for topic, msgtype in topics.items():
        if topic not in skip_topics:
            w.add_topic(topic, msgtype)
    for k in range(n):
        t = t0 + k * PERIOD
        recv = int((t + 0.002) * 1e9)
        frame = np.full((*size, 3), (k * 10) % 256, dtype=np.uint8)
        frame[..., 1] = 7
        frame[1:, :, 2] = np.random.default_rng(k).integers(0, 256, (size[0] - 1, size[1]))  # incompressible
        if "/camera/image_raw" not in skip_topics:
            img = frame if encoding == "rgb8" else frame[..., ::-1].copy()
            w.write("/camera/image_raw", recv, serialize_message(image_msg(img, sec_to_stamp(t), "cam", encoding)))
        ts = sec_to_stamp(t + state_clock_offset + 0.004)
        if "/ee_pose" not in skip_topics:
            pose = PoseStamped()
            pose.header.stamp = ts
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.3, 0.1 * k * PERIOD, 0.2
            w.write("/ee_pose", recv, serialize_message(pose))
        if "/joint_states" not in skip_topics:
            grip = 0.04 if k >= n // 2 else 0.0
            js = JointState(name=["r_close", "l_close"], position=[grip, 0.0]) if joint_state is None \
                else joint_state(k, grip)
            js.header.stamp = ts
            w.write("/joint_states", recv, serialize_message(js))
        # The operator answers frame k 10 ms after it.
        cmd_t = t + 0.01
        w.write("/arm_controller/twist_cmd", int((cmd_t + 0.001) * 1e9),
                serialize_message(twist_msg(np.array([0.0, 0.1 + 0.01 * k, 0.0]), sec_to_stamp(cmd_t), "world")))
        w.write("/arm_controller/gripper_cmd", int((cmd_t + 0.001) * 1e9),
                serialize_message(Float64(data=1.0 if k >= n // 2 - 1 else 0.0)))
    w.close()
    return path


def test_bag_becomes_an_aligned_episode(tmp_path):
    write_episode_bag(tmp_path / "bags" / "ep_a")
    summary = convert_bags(tmp_path / "bags", tmp_path / "ds", ConversionConfig(), progress=False)
    assert summary["converted"] == 1 and not summary["failed"]
    ep = EpisodeDataset(tmp_path / "ds")[0]
    assert len(ep) == 12 and ep.instruction == "slide right" and ep.task == "demo" and ep.success
    assert [int(f[0, 0, 0]) for f in ep.frames] == [10 * k for k in range(12)]
    assert np.allclose(ep.timestamps, np.arange(12) * PERIOD)
    # action k = the command that answered frame k
    assert np.allclose(ep.actions[:, 1], 0.1 + 0.01 * np.arange(12), atol=1e-6)
    assert np.allclose(ep.actions[:, 3], [1.0 if k >= 5 else 0.0 for k in range(12)])
    assert np.allclose(ep.states[:, 1], 0.1 * np.arange(12) * PERIOD, atol=1e-6)
    assert np.allclose(ep.states[:, 3], [1.0 if k >= 6 else 0.0 for k in range(12)])
    report = summary["episodes"][0]
    assert report["gaps"] == [] and abs(report["rate_hz"] - 20) < 0.5
    assert json.loads((tmp_path / "ds" / "meta" / "conversion_report.json").read_text())["converted"] == 1


def test_actions_from_next_state_deltas(tmp_path):
    write_episode_bag(tmp_path / "bags" / "ep_a", encoding="bgr8")
    convert_bags(tmp_path / "bags", tmp_path / "ds", ConversionConfig(actions="deltas"), progress=False)
    ep = EpisodeDataset(tmp_path / "ds")[0]
    assert np.allclose(ep.actions[:, 1], 0.1, atol=1e-4)  # the hand moved at 0.1 m/s
    assert int(ep.frames[3, 0, 0, 0]) == 30  # bgr8 frames arrive as RGB


def test_failed_discarded_and_broken_bags_are_reported_and_the_others_converted(tmp_path):
    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_1_good")
    write_episode_bag(bags / "ep_2_failed", outcome="failure")
    write_episode_bag(bags / "ep_3_no_pose", skip_topics=("/ee_pose",))
    write_episode_bag(bags / "ep_4_clock", state_clock_offset=3600.0)
    corrupt = write_episode_bag(bags / "ep_5_corrupt")
    mcap = next(corrupt.glob("*.mcap"))
    mcap.write_bytes(np.random.default_rng(0).integers(0, 256, mcap.stat().st_size, dtype=np.uint8).tobytes())
    write_episode_bag(bags / "discarded" / "ep_6")
    write_episode_bag(bags / "ep_7_good")
    summary = convert_bags(bags, tmp_path / "ds", ConversionConfig(), progress=False)
    assert summary["converted"] == 2
    assert [s["bag"].split("/")[-1] for s in summary["skipped"]] == ["ep_2_failed"]
    errors = {Path(f["bag"]).name: f["error"] for f in summary["failed"]}
    assert set(errors) == {"ep_3_no_pose", "ep_4_clock", "ep_5_corrupt"}
    assert "ep_3_no_pose" in errors["ep_3_no_pose"] and "/ee_pose" in errors["ep_3_no_pose"]
    assert "/ee_pose" in errors["ep_4_clock"] and "timestamps do not match" in errors["ep_4_clock"]
    assert "ep_5_corrupt" in errors["ep_5_corrupt"]
    assert len(EpisodeDataset(tmp_path / "ds")) == 2
    # Running again converts nothing twice.
    again = convert_bags(bags, tmp_path / "ds", ConversionConfig(), progress=False)
    assert again["converted"] == 0 and len(EpisodeDataset(tmp_path / "ds")) == 2


@pytest.mark.parametrize("killed", [True, False], ids=["recorder-killed", "file-truncated-later"])
def test_truncated_bag_is_refused_untouched_and_converts_marked_recovered_once_recovered(tmp_path, killed):
    from lapa_ros.recording.bags import recover_bag

    bag = write_episode_bag(tmp_path / "bags" / "ep_cut", n=60, size=(240, 320))  # ~5 frames per 1 MiB chunk
    if killed:
        (bag / "metadata.yaml").unlink()
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: int(mcap.stat().st_size * 0.7)])
    before = {p.name: p.read_bytes() for p in bag.iterdir()}
    summary = convert_bags(tmp_path / "bags", tmp_path / "ds", ConversionConfig(), progress=False)
    assert summary["converted"] == 0
    [failed] = summary["failed"]
    assert "truncated recording: ep_cut.mcap" in failed["error"] and "lapa bags recover" in failed["error"]
    assert "/camera/image_raw" in failed["error"]
    assert {p.name: p.read_bytes() for p in bag.iterdir()} == before   # the recording is left as it was
    # Recovered on the user's request: converted, marked recovered, with a warning.
    recover_bag(bag)
    assert sorted(p.name for p in bag.iterdir()) == ["ep_cut.mcap", "ep_cut.mcap.damaged", "lapa_episode.json",
                                                     "metadata.yaml"]
    summary = convert_bags(tmp_path / "bags", tmp_path / "ds", ConversionConfig(), progress=False)
    assert summary["converted"] == 1, summary["failed"]
    [ep] = EpisodeDataset(tmp_path / "ds")
    assert 5 <= len(ep) < 60 and ep.metadata["recovered"] is True
    assert [w["bag"] for w in summary["warnings"]] == [str(bag)] and "recovered" in summary["warnings"][0]["warning"]


def test_the_gripper_mapping_comes_from_each_bag_or_from_the_user_never_from_a_guess(tmp_path):
    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_1_recorded")
    write_episode_bag(bags / "ep_2_unknown", gripper=None)                 # recorded before bags carried it
    write_episode_bag(bags / "ep_3_other_robot", gripper={"joint": "r_close", "open_position": 0.04,
                                                          "closed_position": 0.0})
    summary = convert_bags(bags, tmp_path / "ds", ConversionConfig(), progress=False)
    assert summary["converted"] == 1
    errors = {Path(f["bag"]).name: f["error"] for f in summary["failed"]}
    assert set(errors) == {"ep_2_unknown", "ep_3_other_robot"}
    assert "--gripper-joint" in errors["ep_2_unknown"]
    assert "different robots" in errors["ep_3_other_robot"]
    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.info.gripper == GRIPPER and summary["episodes"][0]["gripper"] == GRIPPER
    # The user's mapping overrides every bag's (here: the bag without one converts too).
    flags = ConversionConfig(gripper_joint="r_close", gripper_open_position=0.0, gripper_closed_position=0.04)
    summary = convert_bags(bags, tmp_path / "ds2", flags, progress=False)
    assert summary["converted"] == 3 and not summary["failed"]
    with pytest.raises(ValueError, match="or none"):
        convert_bags(bags, tmp_path / "ds3", ConversionConfig(gripper_joint="r_close"), progress=False)


def test_a_single_file_bag_carries_its_gripper_mapping_in_the_mcap_metadata(tmp_path):
    bag = write_episode_bag(tmp_path / "ep")
    mcap = next(bag.glob("*.mcap"))
    single = tmp_path / "single.mcap"
    single.write_bytes(mcap.read_bytes())
    assert EpisodeInfo.load(single).gripper == GRIPPER
