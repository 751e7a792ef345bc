"""Episode format: round trip, resume, unlabelled video, and clear errors on damaged files."""
import json

import numpy as np
import pytest

from lapa_models.data import (DatasetInfo, Episode, EpisodeDataset, EpisodeFormatError, EpisodeWriter, VideoFolder,
                              open_episodes)
from lapa_models.data.frames import FrameStore
from lapa_models.data.video import write_video
from lapa_sim.generate import generate


def _episode(n=7, h=32, w=40, seed=0):
    rng = np.random.default_rng(seed)
    return Episode(frames=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), timestamps=np.arange(n) * 0.05,
                   actions=rng.normal(size=(n, 4)).astype(np.float32), states=rng.normal(size=(n, 4)).astype(np.float32),
                   instruction="push the puck to the goal", task="push", success=True, metadata={"seed": seed})


def _info(h=32, w=40, actions=True):
    return DatasetInfo(fps=20.0, image_height=h, image_width=w, action_names=["vx", "vy", "vz", "gripper"] if actions else None,
                       state_names=["ee_x", "ee_y", "ee_z", "gripper"])


def test_episode_written_and_read_back_is_identical(tmp_path):
    ep = _episode()
    EpisodeWriter(tmp_path, _info()).write(ep)
    back = EpisodeDataset(tmp_path)[0]
    assert np.array_equal(back.frames, ep.frames)
    assert np.array_equal(back.actions, ep.actions) and np.array_equal(back.states, ep.states)
    assert np.array_equal(back.timestamps, ep.timestamps)
    assert (back.instruction, back.task, back.success, back.metadata["seed"]) == (ep.instruction, "push", True, 0)
    streamed = [f for f, _ in EpisodeDataset(tmp_path).iter_frames(0)]
    assert np.array_equal(np.stack(streamed), ep.frames)


def test_generated_sim_episodes_round_trip_and_resume(tmp_path):
    out = tmp_path / "ds"
    first = generate(out, tasks="reach,drawer-close", episodes_per_task=2, image_size=(48, 48), progress=False)
    assert first["written"] == 4 and first["successes"] >= 3
    again = generate(out, tasks="reach,drawer-close", episodes_per_task=3, image_size=(48, 48), progress=False)
    assert again["skipped"] == 4 and again["written"] == 2
    ds = EpisodeDataset(out)
    assert len(ds) == 6 and ds.info.action_names == ["vx", "vy", "vz", "gripper"]
    ep = ds[0]
    assert ep.frames.shape[1:] == (48, 48, 3) and len(ep.actions) == len(ep.frames) == len(ep.states)
    assert np.abs(ep.actions[:, :3]).max() <= 0.8 + 1e-6 and ep.instruction in \
        __import__("lapa_sim").get_task(ep.task).instructions
    # The same arguments give the same episode.
    out2 = tmp_path / "ds2"
    generate(out2, tasks="reach", episodes_per_task=1, image_size=(48, 48), progress=False)
    assert np.array_equal(EpisodeDataset(out2)[0].frames, ep.frames)


def test_generation_without_actions_gives_unlabelled_video(tmp_path):
    generate(tmp_path, tasks="reach", episodes_per_task=1, image_size=(32, 32), with_actions=False, progress=False)
    ds = EpisodeDataset(tmp_path)
    assert not ds.info.has_actions and ds[0].actions is None


def test_play_episodes_reach_about_in_the_scene_with_their_commands_recorded_and_no_instruction(tmp_path):
    """--play-steps: random reaching in each task's scene, deterministic in the seed; the recorded actions
    are the commands (within the arm's speed), the hand stays in the box around its start, no task is
    attempted; an expert is not needed, and a play step count of 1 or play without actions is refused."""
    from lapa_sim.generate import PLAY_RADIUS
    from lapa_sim.tasks import make_world

    out = tmp_path / "play"
    summary = generate(out, tasks="reach,window-open", episodes_per_task=2, image_size=(48, 48), progress=False,
                       play_steps=30)
    assert summary["written"] == 4 and summary["successes"] == 0 and summary["frames"] == 4 * 30
    ds = EpisodeDataset(out)
    assert ds.info.extra["play_steps"] == 30
    world = make_world("reach", image_size=(48, 48), render=False)
    speed = world.max_speed
    world.close()
    moved = []
    for i in range(4):
        ep = ds[i]
        assert ep.instruction == "" and not ep.success and ep.metadata["source"] == "sim-play"
        assert len(ep.actions) == len(ep.frames) == len(ep.states) == 30
        assert np.all(np.isfinite(ep.actions)) and np.abs(ep.actions[:, :3]).max() <= speed + 1e-6
        assert set(np.unique(ep.actions[:, 3])) <= {0.0, 1.0}
        # within the box around where the hand started (a little overshoot from the noise)
        assert np.all(np.abs(ep.states[:, :3] - ep.states[0, :3]) <= PLAY_RADIUS + 0.05)
        moved.append(np.linalg.norm(ep.states[-1, :3] - ep.states[0, :3]))
    assert max(moved) > 0.03
    again = tmp_path / "again"
    generate(again, tasks="reach", episodes_per_task=1, image_size=(48, 48), progress=False, play_steps=30)
    assert np.array_equal(EpisodeDataset(again)[0].actions, ds[0].actions)
    with pytest.raises(ValueError, match="--play-steps must be 0"):
        generate(tmp_path / "x", tasks="reach", play_steps=1, progress=False)
    with pytest.raises(ValueError, match="play is for its actions"):
        generate(tmp_path / "y", tasks="reach", play_steps=10, with_actions=False, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_corrupt_parquet_gives_an_error_naming_the_file(tmp_path):
    EpisodeWriter(tmp_path, _info()).write(_episode())
    path = tmp_path / "data" / "episode_000000.parquet"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(EpisodeFormatError, match="episode_000000.parquet"):
        EpisodeDataset(tmp_path)[0]


def test_truncated_video_gives_an_error_naming_the_file(tmp_path):
    EpisodeWriter(tmp_path, _info()).write(_episode(n=30))
    path = tmp_path / "videos" / "episode_000000.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(EpisodeFormatError, match="episode_000000.mp4"):
        EpisodeDataset(tmp_path)[0]


def test_missing_and_garbage_files_give_clear_errors(tmp_path):
    with pytest.raises(EpisodeFormatError, match="does not exist"):
        open_episodes(tmp_path / "nothing")
    with pytest.raises(EpisodeFormatError, match="no video files"):
        VideoFolder(tmp_path)
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(EpisodeFormatError, match="junk.mp4"):
        VideoFolder(tmp_path)[0]
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EpisodeFormatError, match="empty.mp4"):
        VideoFolder(tmp_path).load(0)


def test_index_with_a_corrupt_line_is_reported_and_a_torn_last_line_is_ignored(tmp_path):
    w = EpisodeWriter(tmp_path, _info())
    w.write(_episode())
    index = tmp_path / "meta" / "episodes.jsonl"
    index.write_text(index.read_text() + '{"episode_index": 1, "len')  # a crash mid-append
    assert len(EpisodeDataset(tmp_path)) == 1
    index.write_text('{"broken\n' + index.read_text())
    with pytest.raises(EpisodeFormatError, match="episodes.jsonl:1"):
        EpisodeDataset(tmp_path)


def test_writer_refuses_mismatched_episodes(tmp_path):
    w = EpisodeWriter(tmp_path, _info())
    with pytest.raises(ValueError, match="frames are 16x40"):
        w.write(_episode(h=16))
    bad = _episode()
    bad.actions[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        w.write(bad)
    with pytest.raises(ValueError, match="different"):
        EpisodeWriter(tmp_path, _info(h=64))


def test_plain_videos_become_unlabelled_episodes(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "clip_a.mp4", frames, fps=10)
    write_video(tmp_path / "sub" / "clip_b.mp4", frames[:5], fps=10)
    src = open_episodes(tmp_path)
    assert isinstance(src, VideoFolder) and len(src) == 2
    assert np.array_equal(src[0].frames, frames) and src[0].actions is None
    store = FrameStore(src, image_size=(16, 16), progress=False)
    assert store.frames.shape == (17, 16, 16, 3) and store.pairs(2).shape == (10 + 3, 2)


def test_frame_store_pairs_stay_inside_episodes(tmp_path):
    w = EpisodeWriter(tmp_path, _info())
    for s in range(3):
        w.write(_episode(n=5 + s, seed=s))
    store = FrameStore(tmp_path, progress=False)
    pairs = store.pairs(3)
    assert np.all(store.episode_of(pairs[:, 0]) == store.episode_of(pairs[:, 1]))
    assert len(pairs) == (5 - 3) + (6 - 3) + (7 - 3)
    cached = FrameStore(tmp_path, progress=False)  # second time from the on-disk cache
    assert np.array_equal(np.asarray(cached.frames), store.frames)
    assert json.loads((tmp_path / "meta" / "info.json").read_text())["format"] == "lapa-episodes"
