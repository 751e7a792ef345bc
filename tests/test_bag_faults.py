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
    for name in ("ep_1_good", "ep_4_good"):
        write_episode_bag(tmp_path / "good" / name)
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
