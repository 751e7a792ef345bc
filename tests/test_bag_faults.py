"""Per-bag failure in the offline bag tools, single-file bags, and datasets with missing or short videos.

Real MCAP bags written with EpisodeBagWriter (test_bag_convert.write_episode_bag); the commands run
through the `lapa` command line in this process. No ROS nodes.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lapa_models.data import EpisodeDataset, EpisodeFormatError
from lapa_models.data.frames import FrameStore
from lapa_models.data.video import write_video
from test_bag_convert import write_episode_bag


def _lines(text: str, start: str):
    return [line for line in text.splitlines() if line.startswith(start)]


def _garbage(path: Path, size: int = 4096) -> Path:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def _truncate(bag: Path, keep: float = 0.3) -> None:
    """Cut the bag's MCAP file inside its first chunk: nothing is left to recover."""
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: int(mcap.stat().st_size * keep)])


def _dataset_files(root: Path):
    return {f"{sub}/{p.name}": p.read_bytes() for sub in ("data", "videos") for p in (root / sub).iterdir()}


def test_folder_with_broken_bags_converts_the_good_ones_and_names_each_failure(tmp_path, lapa):
    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_1_good")
    _garbage(bags / "ep_2_garbage.mcap")
    _truncate(write_episode_bag(bags / "ep_3_truncated"))
    write_episode_bag(bags / "ep_4_good")
    (bags / "notes.txt").write_text("operator notes")
    code, out, err = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 2
    failed = _lines(out, "FAILED")
    assert len(failed) == 2, out
    assert failed[0].startswith("FAILED ep_2_garbage.mcap: ") and "not an MCAP file" in failed[0]
    assert failed[1].startswith("FAILED ep_3_truncated: ") and "truncated" in failed[1]
    assert _lines(out, "ignored notes.txt: not a bag")
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["converted"], summary["failed"]) == (2, 2)
    ds = EpisodeDataset(tmp_path / "ds")
    assert [e["bag"] for e in ds.entries] == ["ep_1_good", "ep_4_good"]
    # The good episodes are byte for byte what converting the good bags alone gives; nothing else is there.
    # (copies with their modification times: each episode records its bag's size, mtime and sha256)
    for name in ("ep_1_good", "ep_4_good"):
        shutil.copytree(bags / name, tmp_path / "good" / name)
    assert lapa("bags", "convert", tmp_path / "good", tmp_path / "ref")[0] == 0
    assert _dataset_files(tmp_path / "ds") == _dataset_files(tmp_path / "ref")
    assert all(len(ep) == 12 for ep in ds)


def test_a_bare_mcap_file_is_a_bag_for_info_and_convert(tmp_path, lapa):
    mcap = write_episode_bag(tmp_path / "bags" / "ep_a") / "ep_a.mcap"
    code, out, _ = lapa("bags", "info", mcap)
    assert code == 0
    [info] = json.loads(out)
    assert info["complete"] and info["outcome"] == "success" and info["instruction"] == "slide right"
    assert info["topics"]["/camera/image_raw"]["messages"] == 12
    code, out, _ = lapa("bags", "convert", mcap, tmp_path / "ds")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["converted"] == 1
    [episode] = EpisodeDataset(tmp_path / "ds")
    assert len(episode) == 12 and episode.metadata["bag"] == "ep_a"
    # The same episode given as its folder is not converted twice.
    code, out, _ = lapa("bags", "convert", tmp_path / "bags", tmp_path / "ds")
    assert code == 0 and len(EpisodeDataset(tmp_path / "ds")) == 1


def test_loose_mcap_files_beside_bag_folders_are_bags_of_their_own(tmp_path, lapa):
    bags = tmp_path / "bags"
    write_episode_bag(tmp_path / "recorded" / "ep_b")
    write_episode_bag(bags / "ep_a")
    shutil.copy(tmp_path / "recorded" / "ep_b" / "ep_b.mcap", bags / "ep_b.mcap")  # its facts are inside it
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 0, out
    ds = EpisodeDataset(tmp_path / "ds")
    assert [e["bag"] for e in ds.entries] == ["ep_a", "ep_b"]
    assert ds[1].instruction == "slide right" and len(ds[1]) == 12


def test_empty_folders_give_a_clear_error(tmp_path, lapa):
    (tmp_path / "empty").mkdir()
    for command in (("bags", "convert", tmp_path / "empty", tmp_path / "ds"), ("bags", "info", tmp_path / "empty")):
        code, _, err = lapa(*command)
        assert code == 1 and "empty: empty folder" in err, err
    assert not (tmp_path / "ds").exists()
    write_episode_bag(tmp_path / "bags" / "ep_a")
    (tmp_path / "bags" / "ep_b").mkdir()
    code, out, _ = lapa("bags", "convert", tmp_path / "bags", tmp_path / "ds")
    assert code == 2 and _lines(out, "FAILED ep_b: empty folder, no .mcap file")
    assert len(EpisodeDataset(tmp_path / "ds")) == 1


def test_bags_info_reports_each_unreadable_bag_and_the_others(tmp_path, lapa):
    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_1_good")
    (write_episode_bag(bags / "ep_2_yaml") / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    (write_episode_bag(bags / "ep_3_facts") / "lapa_episode.json").write_bytes(b"\x00\xff{")
    _garbage(bags / "bad\x1b[31mname.mcap")
    code, out, err = lapa("bags", "info", bags)
    assert code == 2
    entries = {Path(e["bag"]).name: e for e in json.loads(out)}
    assert entries["ep_1_good"]["topics"]["/ee_pose"]["messages"] == 12 and "error" not in entries["ep_1_good"]
    failed = _lines(err, "FAILED")
    assert [line.split(":")[0] for line in failed] == [
        "FAILED bad\\x1b[31mname.mcap", "FAILED ep_2_yaml", "FAILED ep_3_facts"]  # escaped, one line each
    assert "\x1b" not in err and "3 failed" in err


def test_finetune_bags_stops_before_training_when_a_bag_fails(tmp_path, lapa):
    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_a")
    _garbage(bags / "stray.mcap")
    code, _, err = lapa("finetune-bags", "--bags", bags, "--init", "scratch", "--out", tmp_path / "run",
                        "--image-size", 24, 32, "--steps", 1)
    assert code == 2
    assert len(_lines(err, "  FAILED stray.mcap: not an MCAP file")) == 1
    assert "1 bag(s) converted, 1 failed" in err and "discarded" in err
    assert len(EpisodeDataset(tmp_path / "run" / "episodes")) == 1 and not (tmp_path / "run" / "finetune").exists()


@pytest.fixture
def converted(tmp_path):
    """An episode dataset of 4 episodes of 12 frames, converted from bags."""
    from lapa_ros.recording.bag_convert import ConversionConfig, convert_bags

    for k in range(4):
        write_episode_bag(tmp_path / "bags" / f"ep_{k}")
    convert_bags(tmp_path / "bags", tmp_path / "ds", ConversionConfig(), progress=False)
    return tmp_path / "ds"


def test_dataset_with_missing_and_short_videos_is_refused_naming_each_episode(converted):
    videos = converted / "videos"
    (videos / "episode_000001.mp4").unlink()
    ds = EpisodeDataset(converted)
    write_video(videos / "episode_000002.mp4", ds.load(2).frames[:5], fps=20)  # 5 of 12 frames
    cut = videos / "episode_000003.mp4"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])
    with pytest.raises(EpisodeFormatError) as refused:
        FrameStore(converted, progress=False)
    message = str(refused.value)
    assert "3 of 4 episodes cannot be read" in message and "episodes.jsonl" in message
    assert "episode 1: " in message and "episode_000001.mp4: video file not found" in message
    assert "episode 2: " in message and "episode_000002.mp4 has 5 frames, index says 12" in message
    assert "episode 3: " in message and "episode_000003.mp4" in message
    assert "episode 0" not in message and "\n" not in message
    with pytest.raises(EpisodeFormatError, match=r"episode 2: .*episode_000002.mp4 has 5 frames, index says 12"):
        ds.load(2)
    with pytest.raises(EpisodeFormatError, match=r"episode 2: .*has 5 frames"):
        list(ds.iter_frames(2))
    assert len(ds.load(0)) == 12


def test_training_command_refuses_the_dataset_in_one_line(converted, lapa):
    (converted / "videos" / "episode_000002.mp4").unlink()
    code, _, err = lapa("policy", "finetune", "--data", converted, "--init", "scratch", "--out",
                        converted.parent / "run", "--steps", 1, "--no-progress")
    assert code == 2
    [line] = _lines(err, "error:")
    assert "1 of 4 episodes cannot be read" in line and "episode 2: " in line


# ---------------------------------------------------------------------------- bad input found by the audit
def _short_joint_states(every: int):
    """joint_state for write_episode_bag: every ``every``-th message names the joints but gives efforts only
    (position shorter than name: legal in ROS), the others are whole."""
    from sensor_msgs.msg import JointState

    def make(k, grip):
        if k % every == every - 1:
            return JointState(name=["j0", "r_close", "l_close"], position=[0.1], effort=[0.0, 0.0, 0.0])
        return JointState(name=["j0", "r_close", "l_close"], position=[0.1, grip, 0.0])
    return make


def test_joint_states_without_the_gripper_position_are_skipped_not_called_corrupt(tmp_path, lapa):
    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_1_some_short", joint_state=_short_joint_states(every=4))
    write_episode_bag(bags / "ep_2_all_short", joint_state=_short_joint_states(every=1))
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 2, out
    assert "corrupt" not in out and "IndexError" not in out
    [warning] = _lines(out, "WARNING ep_1_some_short: ")
    assert "3 /joint_states message(s) without a position for the gripper joint 'r_close'" in warning
    [failed] = _lines(out, "FAILED ep_2_all_short: ")
    assert "topic /joint_states" in failed and "'r_close'" in failed and "3 names, 1 positions" in failed
    [ep] = EpisodeDataset(tmp_path / "ds")
    # frames whose joint_states lacked the position take the nearest whole one (within the tolerance)
    assert len(ep) == 12 and np.allclose(ep.states[:, 3], [1.0 if k >= 6 else 0.0 for k in range(12)])
    assert not (bags / "ep_2_all_short" / "ep_2_all_short.mcap.damaged").exists()   # the bag was not touched


def test_truncated_bag_is_refused_naming_what_is_missing_and_left_as_it_was(tmp_path, lapa):
    bags = tmp_path / "bags"
    bag = write_episode_bag(bags / "ep_cut", n=60, size=(240, 320))  # ~5 frames per 1 MiB chunk
    write_episode_bag(bags / "ep_good")
    mcap = bag / "ep_cut.mcap"
    mcap.write_bytes(mcap.read_bytes()[: int(mcap.stat().st_size * 0.5)])
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in bag.iterdir()}
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 2
    [failed] = _lines(out, "FAILED ep_cut: ")
    assert "truncated recording: ep_cut.mcap (" in failed and "ends without the MCAP summary and footer" in failed
    assert "/camera/image_raw " in failed and " of 60" in failed       # readable vs recorded (metadata.yaml)
    assert f"lapa bags recover {bag}" in failed
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in bag.iterdir()} == before
    assert [e["bag"] for e in EpisodeDataset(tmp_path / "ds").entries] == ["ep_good"]


def test_recovered_bag_keeps_its_name_and_converts_marked_recovered_with_a_warning(tmp_path, lapa):
    import yaml

    bags = tmp_path / "bags"
    bag = write_episode_bag(bags / "ep_cut", n=60, size=(240, 320))
    _truncate(bag, keep=0.6)
    code, out, _ = lapa("bags", "recover", bags)
    assert code == 0, out
    assert sorted(p.name for p in bag.iterdir()) == ["ep_cut.mcap", "ep_cut.mcap.damaged", "lapa_episode.json",
                                                     "metadata.yaml"]
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["relative_file_paths"] == ["ep_cut.mcap"]
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 0, out
    [warning] = _lines(out, "WARNING ep_cut: ")
    assert "recovered from a cut-off recording" in warning and "success=True" in warning
    [entry] = EpisodeDataset(tmp_path / "ds").entries
    assert entry["recovered"] is True and entry["success"] is True and 5 <= entry["length"] < 60


def test_a_cut_single_file_bag_is_never_a_success_its_outcome_was_in_the_lost_summary(tmp_path, lapa):
    bags = tmp_path / "bags"
    src = write_episode_bag(tmp_path / "rec" / "ep_cut", n=60, size=(240, 320)) / "ep_cut.mcap"
    bags.mkdir()
    single = bags / "ep_cut.mcap"
    single.write_bytes(src.read_bytes()[: int(src.stat().st_size * 0.6)])
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 0 and not (tmp_path / "ds").exists()
    [skipped] = _lines(out, "skipped ep_cut.mcap: ")
    assert "outcome unknown" in skipped and "truncated recording" in skipped
    assert lapa("bags", "recover", bags)[0] == 0
    assert sorted(p.name for p in bags.iterdir()) == ["ep_cut.mcap", "ep_cut.mcap.damaged"]
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds", "--include-failures",   # mapping lost too
                        "--gripper-joint", "r_close", "--gripper-open", 0.0, "--gripper-closed", 0.04)
    assert code == 0, out
    [entry] = EpisodeDataset(tmp_path / "ds").entries
    assert entry["recovered"] is True and entry["success"] is False and entry["outcome"] == "unknown"


def test_reconverting_a_bag_that_changed_is_refused_an_identical_copy_is_skipped(tmp_path, lapa):
    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_a", n=12)
    write_episode_bag(bags / "ep_b", n=12)
    assert lapa("bags", "convert", bags, tmp_path / "ds")[0] == 0
    # ep_a replaced by another recording of the same name, ep_b by a byte-identical copy (new mtime).
    shutil.rmtree(bags / "ep_a")
    write_episode_bag(bags / "ep_a", n=20)
    copy = tmp_path / "copy.mcap"
    shutil.copyfile(bags / "ep_b" / "ep_b.mcap", copy)
    (bags / "ep_b" / "ep_b.mcap").unlink()
    shutil.copyfile(copy, bags / "ep_b" / "ep_b.mcap")
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 2, out
    [failed] = _lines(out, "FAILED ep_a: ")
    assert "changed since it was converted as episode 0" in failed and "convert the bags into a new dataset" in failed
    assert _lines(out, "skipped ep_b: already converted (episode 1 of ") and "unchanged" in out
    assert [len(ep) for ep in EpisodeDataset(tmp_path / "ds")] == [12, 12]  # nothing replaced silently
    assert lapa("bags", "convert", bags, tmp_path / "ds2")[0] == 0
    assert [len(ep) for ep in EpisodeDataset(tmp_path / "ds2")] == [20, 12]


def test_a_recovered_episode_replaced_by_a_good_copy_is_not_kept_stale(tmp_path, lapa):
    bags = tmp_path / "bags"
    _truncate(write_episode_bag(bags / "ep_a", n=60, size=(240, 320)), keep=0.6)
    assert lapa("bags", "recover", bags)[0] == 0
    assert lapa("bags", "convert", bags, tmp_path / "ds")[0] == 0
    shutil.rmtree(bags / "ep_a")
    write_episode_bag(bags / "ep_a", n=60, size=(240, 320))  # the good copy
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 2 and _lines(out, "FAILED ep_a: ") and "changed since it was converted" in out


def test_every_skipped_bag_is_printed_with_its_reason(tmp_path, lapa):
    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_1_failed", outcome="failure")
    write_episode_bag(bags / "ep_2_unmarked", outcome="unknown")
    (write_episode_bag(bags / "ep_3_no_facts", outcome="unknown") / "lapa_episode.json").unlink()
    (write_episode_bag(bags / "ep_4_metadata_only") / "lapa_episode.json").unlink()  # outcome in metadata.yaml
    code, out, _ = lapa("bags", "convert", bags, tmp_path / "ds")
    assert code == 0, out
    assert _lines(out, "skipped ep_1_failed: outcome failure; only successes are converted")
    assert _lines(out, "skipped ep_2_unmarked: outcome unknown (never marked a success)")
    assert _lines(out, "skipped ep_3_no_facts: outcome unknown (no lapa_episode.json")
    assert json.loads(out.strip().splitlines()[-1])["skipped"] == 3
    assert [e["bag"] for e in EpisodeDataset(tmp_path / "ds").entries] == ["ep_4_metadata_only"]
    shutil.rmtree(bags / "ep_4_metadata_only")
    code, _, err = lapa("finetune-bags", "--bags", bags, "--init", "scratch", "--out", tmp_path / "run",
                        "--image-size", 24, 32, "--steps", 1)
    assert code == 1
    assert len(_lines(err, "  skipped ")) == 3 and "  skipped ep_1_failed: outcome failure" in err
    assert "no successful episode to train on" in err


def test_finetune_bags_checks_init_before_converting(tmp_path, lapa):
    from lapa_models.policy.configuration import get_config

    bags = tmp_path / "bags"
    write_episode_bag(bags / "ep_a")
    broken = tmp_path / "broken_ckpt"
    broken.mkdir()
    get_config("tiny").save(broken / "config.json")
    _garbage(broken / "model.safetensors", 100)
    for init, reason in ((tmp_path / "missing", "does not exist"), (bags / "ep_a" / "ep_a.mcap", "not a folder"),
                         (bags, "config.json: policy config is missing"), (broken, "corrupt or truncated")):
        code, out, err = lapa("finetune-bags", "--bags", bags, "--init", init, "--out", tmp_path / "run",
                              "--steps", 1)
        assert code == 1, err
        [line] = err.strip().splitlines()
        assert line.startswith(f"lapa finetune-bags: --init {init}: ") and reason in line, line
        assert not (tmp_path / "run").exists()   # nothing converted
