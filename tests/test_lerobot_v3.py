"""LeRobotDataset v3: an export conforms to the published v3 layout, reads back through the episode
interface (frames within codec tolerance, numbers exact), and damaged files give clear errors."""
import json

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lapa_models.data import DatasetInfo, Episode, EpisodeDataset, EpisodeFormatError, EpisodeWriter, open_episodes
from lapa_models.data.lerobot import LeRobotV3Dataset, export_lerobot
from lapa_sim.generate import generate

CAM = "observation.images.camera"
STAT_KEYS = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "ds"
    generate(out, tasks="reach,drawer-close", episodes_per_task=2, image_size=(48, 48), progress=False)
    return out


def _smooth_episodes(root, count=5, h=24, w=32, codec="lossless"):
    """Episodes with varied lengths, instructions and metadata (smooth frames: what cameras give)."""
    writer = EpisodeWriter(root, DatasetInfo(fps=10.0, image_height=h, image_width=w, action_names=["a0", "a1"],
                                             state_names=["s0", "s1", "s2"], video_codec=codec, source="test"))
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:h, 0:w]
    for e in range(count):
        n = 6 + 3 * e
        frames = np.stack([np.stack([(xx * 7 + t * 5 + e * 40) % 256, (yy * 9 + t * 3) % 256,
                                     np.full((h, w), 30 * e)], -1) for t in range(n)]).astype(np.uint8)
        writer.write(Episode(frames=frames, timestamps=np.arange(n) / 10.0,
                             actions=rng.normal(size=(n, 2)).astype(np.float32),
                             states=rng.normal(size=(n, 3)).astype(np.float32),
                             instruction=["open it", "close it"][e % 2], task=f"task{e % 3}",
                             success=[True, False, None][e % 3], metadata={"seed": e}))
    return root


def test_export_conforms_to_the_v3_layout(sim, tmp_path):
    out = tmp_path / "v3"
    summary = export_lerobot(sim, out, progress=False)   # default codec: AV1, as LeRobot writes
    src = EpisodeDataset(sim)
    n_eps, n_frames = len(src), sum(e["length"] for e in src.entries)
    assert summary["episodes"] == n_eps == 4 and summary["frames"] == n_frames
    for rel in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet", f"videos/{CAM}/chunk-000/file-000.mp4"):
        assert (out / rel).is_file(), rel
    assert not (out.parent / "v3.partial").exists()

    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and isinstance(info["fps"], int)
    assert (info["total_episodes"], info["total_frames"], info["splits"]) == (n_eps, n_frames, {"train": f"0:{n_eps}"})
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert {"chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "robot_type", "total_tasks"} <= set(info)
    feats = info["features"]
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        assert feats[key] == {"dtype": dtype, "shape": [1], "names": None}
    assert feats["observation.state"] == {"dtype": "float32", "shape": [4], "names": src.info.state_names}
    assert feats["action"] == {"dtype": "float32", "shape": [4], "names": src.info.action_names}
    video = feats[CAM]
    assert video["dtype"] == "video" and video["shape"] == [48, 48, 3] and video["names"] == ["height", "width", "channels"]
    assert video["info"]["video.codec"] == "av1" and video["info"]["video.pix_fmt"] == "yuv420p"
    assert video["info"]["video.fps"] == 20 and video["info"]["video.is_depth_map"] is False

    # data: the declared features, one row group per episode, a global index without gaps
    data = pq.ParquetFile(out / "data/chunk-000/file-000.parquet")
    schema = data.schema_arrow
    assert schema.names == ["observation.state", "action", "timestamp", "frame_index", "episode_index", "index",
                            "task_index"]
    assert schema.field("observation.state").type == pa.list_(pa.float32(), 4)
    assert schema.field("timestamp").type == pa.float32() and schema.field("index").type == pa.int64()
    assert data.num_row_groups == n_eps
    table = data.read()
    assert table.column("index").to_pylist() == list(range(n_frames))

    # episodes: contiguous indices and frame ranges, video segments back to back, stats per episode
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    task_of = dict(zip(tasks.column("task_index").to_pylist(), tasks.column("task").to_pylist()))
    assert info["total_tasks"] == len(task_of)
    assert [e["episode_index"] for e in eps] == list(range(n_eps))
    ep_col, ts_col, task_col = (table.column(c).to_numpy() for c in ("episode_index", "timestamp", "task_index"))
    end = 0.0
    for k, e in enumerate(eps):
        assert e["dataset_from_index"] == (eps[k - 1]["dataset_to_index"] if k else 0)
        assert e["dataset_to_index"] - e["dataset_from_index"] == e["length"] == src.entries[k]["length"]
        assert e["data/chunk_index"] == e["data/file_index"] == 0 and e["meta/episodes/file_index"] == 0
        rows = slice(e["dataset_from_index"], e["dataset_to_index"])
        assert np.all(ep_col[rows] == k) and set(task_col[rows]) == {tasks.column("task").to_pylist().index(e["tasks"][0])}
        assert e["tasks"] == [src.entries[k]["instruction"]] and e["tasks"][0] in task_of.values()
        assert np.allclose(ts_col[rows], np.arange(e["length"]) / 20, atol=1e-6)
        assert e[f"videos/{CAM}/from_timestamp"] == pytest.approx(end)
        end = e[f"videos/{CAM}/to_timestamp"]
        assert end - e[f"videos/{CAM}/from_timestamp"] == pytest.approx(e["length"] / 20)
        assert STAT_KEYS == {c.split("/")[-1] for c in e if c.startswith("stats/action/")}
        assert e["stats/action/count"] == [e["length"]] and np.shape(e[f"stats/{CAM}/mean"]) == (3, 1, 1)
    # every frame LeRobot will ask for (from_timestamp + timestamp) is in the video within its 1e-4 s tolerance
    with av.open(str(out / f"videos/{CAM}/chunk-000/file-000.mp4")) as c:
        stream = c.streams.video[0]
        pts = np.array([float(f.pts * stream.time_base) for f in c.decode(stream)])
    wanted = np.concatenate([e[f"videos/{CAM}/from_timestamp"] + np.arange(e["length"]) / 20 for e in eps])
    assert len(pts) == n_frames and np.abs(np.sort(pts) - wanted).max() < 1e-4

    stats = json.loads((out / "meta/stats.json").read_text())
    assert set(stats) == set(feats) and all(set(s) == STAT_KEYS for s in stats.values())
    actions = np.concatenate([src.read_table(i)["action"] for i in range(n_eps)])
    assert np.allclose(stats["action"]["mean"], actions.mean(0), atol=1e-5)
    assert np.allclose(stats["action"]["std"], actions.std(0), atol=1e-5)
    assert stats["action"]["count"] == [n_frames] and stats["index"]["max"] == [n_frames - 1]
    assert np.shape(stats[CAM]["mean"]) == (3, 1, 1) and 0 <= np.min(stats[CAM]["min"]) <= np.max(stats[CAM]["max"]) <= 1


def test_v3_dataset_reads_back_as_episodes(sim, tmp_path):
    out = tmp_path / "v3"
    export_lerobot(sim, out, codec="h264", progress=False)
    src = EpisodeDataset(sim)
    ds = open_episodes(out)
    assert isinstance(ds, LeRobotV3Dataset) and isinstance(EpisodeDataset(out), LeRobotV3Dataset)
    assert len(ds) == len(src)
    assert (ds.info.fps, ds.info.image_height, ds.info.image_width) == (20.0, 48, 48)
    assert ds.info.action_names == src.info.action_names and ds.info.state_names == src.info.state_names
    assert ds.info.gripper == src.info.gripper and ds.info.source == "sim"
    for i in range(len(ds)):
        a, b = src[i], ds[i]
        assert b.frames.shape == a.frames.shape and b.frames.dtype == np.uint8
        assert np.abs(a.frames.astype(int) - b.frames).mean() < 8   # lossy H.264 yuv420p on 48x48 frames
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.states, b.states)
        assert np.allclose(a.timestamps, b.timestamps, atol=1e-6) and b.timestamps.dtype == np.float64
        assert (b.instruction, b.task, b.success, b.index) == (a.instruction, a.task, a.success, i)
        assert b.metadata["seed"] == a.metadata["seed"]
        table = ds.read_table(i)
        assert set(table) == {"frame_index", "timestamp", "action", "state"}
        assert table["frame_index"].dtype == np.int32 and table["action"].dtype == np.float32
        streamed = list(ds.iter_frames(i))
        assert np.array_equal(np.stack([f for f, _ in streamed]), b.frames)
        assert streamed[-1][1]["frame_index"] == len(a) - 1 and streamed[0][1]["action"].shape == (4,)
        assert len(ds.load(i, frames=False).frames) == len(a)
    assert ds.entries[0]["length"] == src.entries[0]["length"] and ds.latents_dir("laq") == out / "latents" / "laq"
    small = LeRobotV3Dataset(out, size=(24, 32))
    assert small[1].frames.shape == (len(src[1]), 24, 32, 3) and small.info.image_width == 32


def test_lossless_export_over_several_files_is_bit_exact(tmp_path):
    src = EpisodeDataset(_smooth_episodes(tmp_path / "src"))
    out = tmp_path / "v3"
    summary = export_lerobot(src, out, codec="lossless", camera="wrist", data_file_size_mb=0.0005,
                             video_file_size_mb=1e-6, chunks_size=2, progress=False)
    assert summary["data_files"] >= 3 and summary["video_files"] >= 2
    assert (out / "data/chunk-001/file-000.parquet").is_file()   # 2 files per chunk: a second chunk folder
    eps = [r for p in sorted((out / "meta/episodes").glob("*/*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len({(e["data/chunk_index"], e["data/file_index"]) for e in eps}) == summary["data_files"]
    ds = open_episodes(out)
    assert ds.camera == "observation.images.wrist" and len(ds) == len(src)
    for i in range(len(ds)):
        a, b = src[i], ds[i]
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
        assert (b.instruction, b.task, b.success, b.metadata["seed"]) == (a.instruction, a.task, a.success, i)
    tasks = pq.read_table(out / "meta/tasks.parquet").column("task").to_pylist()
    assert sorted(tasks) == ["close it", "open it"]


def test_damaged_v3_datasets_give_clear_errors(tmp_path):
    src = _smooth_episodes(tmp_path / "src", count=3, codec="lossless")
    out = tmp_path / "v3"
    export_lerobot(src, out, codec="lossless", video_file_size_mb=1e-6, progress=False)
    video = LeRobotV3Dataset(out).video_path(1)
    assert video != LeRobotV3Dataset(out).video_path(0)
    video.unlink()
    ds = open_episodes(out)
    assert len(ds[0]) == 6                                  # the other episodes still read
    with pytest.raises(EpisodeFormatError, match=r"episode 1: .*file-001\.mp4: video file not found"):
        ds[1]
    data = ds.data_path(0)
    data.write_bytes(data.read_bytes()[:200])
    with pytest.raises(EpisodeFormatError, match="file-000.parquet: corrupt or truncated"):
        ds.read_table(0)
    episodes = out / "meta/episodes/chunk-000/file-000.parquet"
    episodes.write_bytes(b"PAR1 not really")
    with pytest.raises(EpisodeFormatError, match="meta/episodes/chunk-000/file-000.parquet"):
        open_episodes(out)
    info = json.loads((out / "meta/info.json").read_text())
    (out / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(EpisodeFormatError, match="LeRobotDataset v2.1"):
        open_episodes(out)
    # Exporting a dataset with a missing video names it and leaves nothing behind.
    (src / "videos" / "episode_000001.mp4").unlink()
    with pytest.raises(EpisodeFormatError, match="episode_000001.mp4"):
        export_lerobot(src, tmp_path / "again", progress=False)
    assert not (tmp_path / "again").exists() and not (tmp_path / "again.partial").exists()
    with pytest.raises(FileExistsError, match="not empty"):
        export_lerobot(src, out, progress=False)


def test_an_export_over_a_folder_holding_the_source_is_refused_and_the_source_kept(tmp_path):
    src = _smooth_episodes(tmp_path / "data" / "src", count=2, codec="lossless")
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    for out in (tmp_path / "data", tmp_path):
        with pytest.raises(ValueError, match="holds the source dataset"):
            export_lerobot(src, out, codec="lossless", overwrite=True, progress=False)
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before
    with pytest.raises(ValueError, match="source dataset itself"):
        export_lerobot(src, src, codec="lossless", overwrite=True, progress=False)


def test_export_command_and_info_command(sim, tmp_path, capsys):
    from lapa_ros.cli import main

    assert main(["data", "export-lerobot", str(sim), str(tmp_path / "v3"), "--codec", "h264", "--no-progress",
                 "--robot-type", "sawyer"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 4 and json.loads((tmp_path / "v3/meta/info.json").read_text())["robot_type"] == "sawyer"
    assert main(["data", "info", str(tmp_path / "v3")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 4 and info["actions"] == ["vx", "vy", "vz", "gripper"]
    assert main(["data", "export-lerobot", str(sim), str(tmp_path / "v3"), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err


LEROBOT_WRITTEN = __import__("pathlib").Path(__file__).parent / "data" / "lerobot_v044_written"


def test_reads_a_dataset_written_by_lerobot_itself():
    """tests/data/lerobot_v044_written was written by LeRobot 0.4.4 (LeRobotDataset.create, add_frame,
    save_episode; libsvtav1): 3 episodes of 7, 11, 5 frames at 10 fps, 48x64 camera "front", the frames and
    numbers below (states and actions drawn alternately from default_rng(0)), tasks "task number {e % 2}"."""
    ds = open_episodes(LEROBOT_WRITTEN)
    assert isinstance(ds, LeRobotV3Dataset) and ds.camera == "observation.images.front"
    assert (len(ds), ds.info.fps, ds.info.image_height, ds.info.image_width) == (3, 10.0, 48, 64)
    assert ds.info.state_names == ["x", "y", "z"] and ds.info.action_names == ["a", "b"]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    for e, n in enumerate([7, 11, 5]):
        ep = ds[e]
        truth = [(rng.normal(size=3).astype(np.float32), rng.normal(size=2).astype(np.float32)) for _ in range(n)]
        frames = np.stack([np.stack([(xx * 3 + t * 9 + e * 50) % 256, (yy * 5) % 256, np.full((48, 64), 40 * e)], -1)
                           for t in range(n)]).astype(np.uint8)
        assert ep.frames.shape == frames.shape and np.abs(ep.frames.astype(int) - frames).mean() < 8
        assert np.array_equal(ep.states, np.stack([s for s, _ in truth]))
        assert np.array_equal(ep.actions, np.stack([a for _, a in truth]))
        assert np.allclose(ep.timestamps, np.arange(n) / 10) and ep.instruction == f"task number {e % 2}"


def test_our_files_have_the_schemas_lerobot_writes(tmp_path):
    out = tmp_path / "v3"
    export_lerobot(_smooth_episodes(tmp_path / "src", count=2), out, progress=False)   # 3 states, 2 actions: as theirs
    ours = pq.read_schema(out / "data/chunk-000/file-000.parquet")
    theirs = pq.read_schema(LEROBOT_WRITTEN / "data/chunk-000/file-000.parquet")
    assert [(f.name, f.type) for f in ours] == [(f.name, f.type) for f in theirs]
    ours = pq.read_schema(out / "meta/episodes/chunk-000/file-000.parquet")
    theirs = pq.read_schema(LEROBOT_WRITTEN / "meta/episodes/chunk-000/file-000.parquet")
    rename = {"observation.images.front": CAM}
    expected = {}
    for f in theirs:
        name = f.name
        for a, b in rename.items():
            name = name.replace(a, b)
        expected[name] = f.type
    got = {f.name: f.type for f in ours}
    assert {k: got.get(k) for k in expected} == expected     # every LeRobot column, same types (ours add lapa/*)
    assert set(got) - set(expected) == {c for c in got if c.startswith("lapa/")}
    info = json.loads((out / "meta/info.json").read_text())
    their_info = json.loads((LEROBOT_WRITTEN / "meta/info.json").read_text())
    assert set(info) == set(their_info)
    assert set(info["features"][CAM]["info"]) == set(their_info["features"]["observation.images.front"]["info"])
    stats, their_stats = (json.loads((p / "meta/stats.json").read_text()) for p in (out, LEROBOT_WRITTEN))
    assert set(stats["action"]) == set(their_stats["action"])
    assert np.shape(stats[CAM]["mean"]) == np.shape(their_stats["observation.images.front"]["mean"])
    their_tasks = pq.read_table(LEROBOT_WRITTEN / "meta/tasks.parquet")
    our_tasks = pq.read_table(out / "meta/tasks.parquet")
    # a pandas frame indexed by the task text: LeRobot 0.4 leaves the index unnamed, later versions name it "task"
    for table in (our_tasks, their_tasks):
        [index] = json.loads(table.schema.metadata[b"pandas"])["index_columns"]
        assert table.schema.names == ["task_index", index] and table.schema.field("task_index").type == pa.int64()
        assert table.schema.field(index).type in (pa.string(), pa.large_string())
