"""Frames streamed from shards (lapa_models.data.shards) against frames in RAM (lapa_models.data.frames),
the batch samplers, and the training commands' data options (modes, workers, trackers)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from lapa_models.data.episodes import open_episodes
from lapa_models.data.errors import EpisodeFormatError
from lapa_models.data.frames import FrameStore, open_frames
from lapa_models.data.sampling import RandomBatches, ShuffledBatches
from lapa_models.data.shards import FrameShards
from lapa_models.data.video import write_video
from lapa_models.laq import get_config

from test_multiprocess_training import metrics, same_weights, write_moving_squares


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_moving_squares(tmp_path_factory.mktemp("stream") / "squares", episodes=6, frames=10)


def narrow():
    return get_config("tiny", dim=32, heads=2, spatial_depth=1, temporal_depth=1, decoder_depth=1)


def test_streamed_frames_are_the_frames_in_ram(data):
    memory = open_frames(data, (32, 32), mode="memory", progress=False)
    stream = open_frames(data, (32, 32), mode="stream", workers=2, progress=False)
    assert isinstance(memory, FrameStore) and isinstance(stream, FrameShards)
    assert (memory.mode, stream.mode) == ("memory", "stream") and len(memory) == len(stream) == 60
    index = np.random.default_rng(0).integers(0, 60, 200)
    assert np.array_equal(stream.read(index), memory.read(index))
    assert np.array_equal(stream.read(np.arange(60)), np.asarray(memory.frames))
    for key in ("lengths", "starts", "actions", "states", "timestamps"):
        assert np.array_equal(getattr(stream, key), getattr(memory, key)), key
    assert stream.instructions == memory.instructions and stream.episode_ids == memory.episode_ids
    assert np.array_equal(stream.pairs(3), memory.pairs(3))
    assert stream.disk_bytes() < len(stream) * 32 * 32 * 3   # compressed


def test_a_folder_of_videos_streams_too(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "a.mp4", frames, fps=10)
    write_video(tmp_path / "sub" / "b.mp4", frames[:4], fps=10)
    stream = open_frames(tmp_path, mode="stream", workers=0, progress=False)
    memory = open_frames(tmp_path, mode="memory", progress=False)
    assert stream.lengths.tolist() == memory.lengths.tolist() == [9, 4]
    assert np.array_equal(stream.read(np.arange(13)), np.asarray(memory.frames))


def test_shards_are_written_once_and_rebuilt_when_an_episode_changes(tmp_path):
    data = write_moving_squares(tmp_path / "changing", episodes=6, frames=10)
    FrameStore(data, (16, 16), progress=False)
    first = open_frames(data, (16, 16), mode="stream", workers=0, progress=False)
    stamps = [p.stat().st_mtime_ns for p in first.paths]
    again = open_frames(data, (16, 16), mode="stream", workers=0, progress=False)
    assert [p.stat().st_mtime_ns for p in again.paths] == stamps
    episode = open_episodes(data).load(2)
    write_video(open_episodes(data).video_path(2), episode.frames[:, ::-1].copy(), fps=10)   # same length
    changed = open_frames(data, (16, 16), mode="stream", workers=0, progress=False)
    assert [p.stat().st_mtime_ns != s for p, s in zip(changed.paths, stamps)] == [False, False, True] + [False] * 3
    in_ram = FrameStore(data, (16, 16), progress=False)   # its cache is keyed on the video files too
    assert np.array_equal(changed.read(np.arange(60)), in_ram.read(np.arange(60)))


def test_unreadable_episodes_are_named_together_in_stream_mode(tmp_path):
    root = write_moving_squares(tmp_path / "bad", episodes=4, frames=8)
    dataset = open_episodes(root)
    dataset.video_path(1).unlink()
    write_video(dataset.video_path(3), dataset.load(0).frames[:5], fps=10)
    with pytest.raises(EpisodeFormatError) as refused:
        open_frames(root, mode="stream", workers=0, progress=False)
    message = str(refused.value)
    assert "2 of 4 episodes cannot be read" in message and "episodes.jsonl" in message
    assert "episode 1: " in message and "episode_000001.mp4: video file not found" in message
    assert "episode 3: " in message and "has 5 frames, index says 8" in message


def test_auto_mode_streams_what_does_not_fit_and_says_why(data, caplog):
    with caplog.at_level(logging.INFO, logger="lapa_models.data.frames"):
        small = open_frames(data, (16, 16), mode="auto", memory_limit=1 << 20, progress=False)
        large = open_frames(data, (16, 16), mode="auto", memory_limit=1000, workers=0, progress=False)
    assert small.mode == "memory" and large.mode == "stream"
    assert "exceed the 0.00 GiB in-RAM limit" in large.mode_reason
    assert "frames in stream mode (auto:" in caplog.text
    with pytest.raises(ValueError, match="data mode must be one of auto, memory, stream"):
        open_frames(data, mode="disk")


def test_batches_depend_on_the_seed_and_position_only():
    draws = RandomBatches(100, 8, seed=3, stop=5, shift=2)
    batches = list(draws)
    assert len(batches) == 5 and batches[0].shape == (8, 3) and batches[0][:, 1:].max() <= 4
    later = RandomBatches(100, 8, seed=3, start=2, stop=5, shift=2)
    assert all(np.array_equal(a, b) for a, b in zip(batches[2:], later))
    assert not np.array_equal(batches[0], RandomBatches(100, 8, seed=4, stop=1, shift=2).batch(0))
    epochs = ShuffledBatches(10, 4, seed=0, stop=6)   # 2 batches per epoch, the last 2 samples dropped
    seen = list(epochs)
    assert epochs.batches_per_epoch == 2 and len(seen) == 6
    assert len(set(np.concatenate(seen[:2]).tolist())) == 8       # no repeats inside an epoch
    assert not np.array_equal(np.concatenate(seen[:2]), np.concatenate(seen[2:4]))
    assert np.array_equal(ShuffledBatches(10, 4, seed=0, start=3, stop=4).batch(3), seen[3])


def test_laq_training_reads_the_same_batches_from_ram_and_from_stream_workers(data, tmp_path):
    from lapa_models.laq.train import train

    kwargs = dict(steps=3, batch_size=6, log_every=1, save_every=3, warmup_steps=1, num_monitor_pairs=8,
                  progress=False, augment_shift=2)
    memory = train(narrow(), data, tmp_path / "memory", data_mode="memory", num_workers=0, **kwargs)
    stream = train(narrow(), data, tmp_path / "stream", data_mode="stream", num_workers=2, **kwargs)
    assert (memory["data_mode"], stream["data_mode"], stream["num_workers"]) == ("memory", "stream", 2)
    assert metrics(tmp_path / "memory", timing=False) == metrics(tmp_path / "stream", timing=False)
    assert same_weights(tmp_path / "memory" / "final", tmp_path / "stream" / "final")


def test_policy_training_streams_with_workers(data, tmp_path):
    import argparse

    from lapa_models.policy import finetune

    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    args = ["--data", data, "--init", "scratch", "--config", "tiny", "--steps", 3, "--batch-size", 8,
            "--log-every", 1, "--eval-every", 3, "--save-every", 0, "--no-progress", "--threads", 1, "--no-augment",
            "--val-fraction", 0.3]
    for mode, workers in (("memory", 0), ("stream", 2)):
        out = tmp_path / mode
        assert finetune.main(parser.parse_args([str(a) for a in args + ["--data-mode", mode, "--num-workers",
                                                                         workers, "--out", out]])) == 0
    assert json.loads((tmp_path / "stream" / "run.json").read_text())["data_mode"] == "stream"
    a, b = metrics(tmp_path / "memory"), metrics(tmp_path / "stream")
    assert [r["train/loss"] for r in a] == [r["train/loss"] for r in b] and a[-1]["val/loss"] == b[-1]["val/loss"]


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
def test_trackers_are_optional_and_a_missing_one_is_one_clear_error(tracker, data, tmp_path, capsys, monkeypatch):
    from lapa_models.laq import train as laq_train

    import argparse

    parser = argparse.ArgumentParser()
    laq_train.add_arguments(parser)
    args = parser.parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "4",
                              "--log-every", "1", "--no-progress", "--report-to", tracker])
    from lapa_models.training.run import tracker_available

    installed = tracker_available(tracker)
    if installed:
        # W&B offline: it writes its run files locally and never reaches a server.
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
        (tmp_path / "wandb").mkdir()
        args.config = "tiny"
        assert laq_train.main(args) == 0
        written = (tmp_path / "run" / "tracking").rglob("events.out.tfevents.*") if tracker == "tensorboard" \
            else (tmp_path / "wandb").rglob("*.wandb")
        assert list(written)
        assert len(metrics(tmp_path / "run")) == 2
    else:
        assert laq_train.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --report-to {tracker}: the {tracker} package is not installed")
        assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_shard_corrupted_on_disk_is_named_when_read(tmp_path):
    data = write_moving_squares(tmp_path / "corrupt", episodes=3, frames=10)
    frames = open_frames(data, (16, 16), mode="stream", workers=0, progress=False)
    shard = frames.paths[1]
    body = bytearray(shard.read_bytes())
    for i in range(20, 200):   # inside the compressed frames; the footer (what staleness checks) is intact
        body[i] ^= 0x5A
    shard.write_bytes(bytes(body))
    again = open_frames(data, (16, 16), mode="stream", workers=0, progress=False)
    assert np.array_equal(again.read(np.arange(10)), frames.read(np.arange(10)))   # other episodes still read
    with pytest.raises(EpisodeFormatError, match=rf"{shard.name}: stream shard is corrupt .*delete it"):
        again.read(np.arange(10, 20))
