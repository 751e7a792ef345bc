"""Video import at scale: parallel workers give the same dataset as one, crop/pad/squash, resume after an
interruption, a corrupt clip skipped and named, and an index appended without being read again."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lapa_models.data import EpisodeDataset, EpisodeWriter
from lapa_models.data.episodes import DatasetInfo
from lapa_models.data.import_videos import import_videos, make_clips
from lapa_models.data.video import fit_frame, write_video


def _contents(root):
    ds = EpisodeDataset(root)
    return [(e["episode_index"], os.path.basename(e["source_file"]), e["length"]) for e in ds.entries], ds


def test_parallel_import_equals_serial_and_skips_a_corrupt_clip(tmp_path):
    src = tmp_path / "clips"
    make_clips(src, 5, frames=12, size=(40, 64), fps=20)
    (src / "clip_00002b.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")   # sorts in the middle
    one = import_videos(str(src), str(tmp_path / "w1"), (32, 32), progress=False, workers=1)
    two = import_videos(str(src), str(tmp_path / "w2"), (32, 32), progress=False, workers=2)
    for summary in (one, two):
        assert summary["written"] == 5 and len(summary["failed"]) == 1 and "clip_00002b.mp4" in summary["failed"][0]
    (a, ds_a), (b, ds_b) = _contents(tmp_path / "w1"), _contents(tmp_path / "w2")
    assert a == b and [name for _, name, _ in a] == [f"clip_{i:05d}.mp4" for i in range(5)]
    assert [i for i, _, _ in a] == [0, 1, 2, 4, 5]     # the corrupt clip's number stays unused
    for i in range(5):
        assert np.array_equal(ds_a[i].frames, ds_b[i].frames) and ds_a[i].frames.shape == (12, 32, 32, 3)
    assert ds_a.info.extra["resize_mode"] == "crop"


def test_a_dataset_inside_its_source_folder_is_not_imported_into_itself(tmp_path):
    """`import-videos clips clips/dataset` twice: the second run finds the dataset's own episode videos under
    the source folder and must not take them as new clips (the dataset would double at every run)."""
    from lapa_models.data.errors import EpisodeFormatError

    src = tmp_path / "clips"
    make_clips(src, 2, frames=8, size=(32, 32), fps=10)
    out = src / "dataset"
    assert import_videos(str(src), str(out), (32, 32), progress=False)["written"] == 2
    again = import_videos(str(src), str(out), (32, 32), progress=False)
    assert again["written"] == 0 and again["skipped"] == 2
    assert [name for _, name, _ in _contents(out)[0]] == ["clip_00000.mp4", "clip_00001.mp4"]
    with pytest.raises(EpisodeFormatError, match="no video files besides the episodes of the dataset"):
        import_videos(str(out / "videos"), str(out), (32, 32), progress=False)
    assert len(_contents(out)[0]) == 2


def test_resize_modes_crop_pad_squash():
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, :20] = (255, 0, 0)      # left quarter red
    frame[:, 20:60] = (0, 255, 0)    # middle half green
    frame[:, 60:] = (0, 0, 255)      # right quarter blue
    crop = fit_frame(frame, (20, 20), "crop")           # keeps the centre 40x40: green only
    assert crop.shape == (20, 20, 3) and np.all(crop == (0, 255, 0))
    pad = fit_frame(frame, (20, 20), "pad")             # 80x40 -> 20x10 band with black bars above and below
    assert pad.shape == (20, 20, 3) and np.all(pad[:5] == 0) and np.all(pad[15:] == 0)
    assert tuple(pad[10, 0]) == (255, 0, 0) and tuple(pad[10, -1]) == (0, 0, 255) and tuple(pad[10, 10]) == (0, 255, 0)
    squash = fit_frame(frame, (20, 20), "squash")       # everything, distorted
    assert tuple(squash[10, 0]) == (255, 0, 0) and tuple(squash[10, -1]) == (0, 0, 255)
    tall = fit_frame(np.repeat(frame.transpose(1, 0, 2), 1, 0), (10, 10), "crop")
    assert np.all(tall == (0, 255, 0))
    with pytest.raises(ValueError, match="resize mode"):
        fit_frame(frame, (20, 20), "stretch")


def test_resume_after_a_crash_gives_the_uninterrupted_dataset(tmp_path):
    src = tmp_path / "clips"
    make_clips(src, 8, frames=40, size=(64, 96))
    reference, _ = _contents(import_videos(str(src), str(tmp_path / "ref"), (48, 48), progress=False)["out"])

    out = tmp_path / "out"
    code = ("import sys; from lapa_models.data.import_videos import import_videos; "
            f"import_videos({str(src)!r}, {str(out)!r}, (48, 48), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    index = out / "meta" / "episodes.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (index.is_file() and index.read_text().count("\n") >= 2):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = index.read_text().count("\n")
    assert 2 <= done_before < 8, "the import should have been killed part-way"
    # What a crash can also leave: a torn index line and temporary files of an episode being written.
    with open(index, "a") as f:
        f.write('{"episode_index": 99, "len')
    (out / "data" / "episode_000099.parquet.tmp").write_bytes(b"half")
    (out / "videos" / "episode_000099.tmp.mp4").write_bytes(b"half")

    summary = import_videos(str(src), str(out), (48, 48), progress=False)
    assert summary["skipped"] == done_before and summary["written"] == 8 - done_before and not summary["failed"]
    resumed, ds = _contents(out)
    assert resumed == reference
    assert not list(out.glob("*/*.tmp*")) and all(line.startswith("{") for line in index.read_text().splitlines())
    ref = EpisodeDataset(tmp_path / "ref")
    for i in range(8):
        assert np.array_equal(ds[i].frames, ref[i].frames)


def test_writer_appends_to_the_index_without_reading_it_again(tmp_path):
    index = tmp_path / "meta" / "episodes.jsonl"
    opened = []

    def hook(event, args):
        if event == "open" and str(args[0]) == str(index) and opened is not None:
            opened.append(args[1] or "r")

    sys.addaudithook(hook)   # the interpreter's own record of file opens
    try:
        writer = EpisodeWriter(tmp_path, DatasetInfo(fps=10.0, image_height=8, image_width=8))
        for i in range(200):
            assert writer.next_index() == i
            writer.commit({"episode_index": i, "length": 3, "task": "", "instruction": ""})
        reads = [m for m in opened if "r" in m and "+" not in m]
        assert len(reads) <= 1, f"the index was read {len(reads)} times for 200 episodes"
        assert writer.completed_indices() == set(range(200))
    finally:
        opened = None   # (audit hooks cannot be removed: this one goes quiet)
    assert len(EpisodeDataset(tmp_path)) == 200


def test_import_command_with_workers_and_pad(tmp_path, capsys):
    from lapa_ros.cli import main

    src = tmp_path / "clips"
    frames = np.zeros((6, 20, 60, 3), np.uint8)
    frames[..., 1] = 200
    write_video(src / "wide.mp4", frames, fps=10)
    write_video(src / "tall.mp4", frames.transpose(0, 2, 1, 3).copy(), fps=10)
    assert main(["data", "import-videos", str(src), str(tmp_path / "ds"), "--image-size", "30", "30",
                 "--resize-mode", "pad", "--workers", "2", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 2
    ds = EpisodeDataset(tmp_path / "ds")
    tall, wide = ds[0].frames[0], ds[1].frames[0]     # sorted: tall.mp4, wide.mp4
    assert np.all(wide[:8] == 0) and np.all(wide[22:] == 0) and wide[15, 15, 1] == 200
    assert np.all(tall[:, :8] == 0) and np.all(tall[:, 22:] == 0) and tall[15, 15, 1] == 200
    assert main(["data", "import-videos", str(src), str(tmp_path / "ds"), "--resize-mode", "pad",
                 "--image-size", "30", "30", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 2
