"""LeRobotDataset v3: export episode datasets to it, and read it as episodes.

    lapa data export-lerobot data/sim/mt10 data/sim/mt10_v3            # sim-generated or bag-converted episodes
    lapa laq train --data data/sim/mt10_v3 ...                         # train directly from a v3 dataset

The layout (LeRobot's ``codebase_version`` "v3.0"; several episodes per file, relational metadata)::

    <root>/
      meta/info.json                 codebase_version, fps, robot_type, totals, chunks_size, file size limits,
                                     data_path / video_path templates, features (dtype, shape, names; video info)
      meta/tasks.parquet             task (the instruction, the pandas index) -> task_index
      meta/episodes/chunk-000/file-000.parquet
                                     one row per episode: episode_index, tasks, length, data/chunk_index,
                                     data/file_index, dataset_from_index, dataset_to_index,
                                     videos/<camera>/{chunk_index,file_index,from_timestamp,to_timestamp},
                                     meta/episodes/{chunk_index,file_index}, stats/<feature>/<stat>
      meta/stats.json                per feature: min, max, mean, std, count, q01, q10, q50, q90, q99
      data/chunk-000/file-000.parquet    one row per frame: observation.state, action, timestamp, frame_index,
                                         episode_index, index, task_index (one row group per episode)
      videos/observation.images.<camera>/chunk-000/file-000.mp4
                                     the frames of consecutive episodes, one after the other; episode e is
                                     [from_timestamp, to_timestamp) of its file
      meta/lapa_info.json            this repo's DatasetInfo (source, gripper mapping, ...): LeRobot ignores it

How this repo's episodes map onto it: ``instruction`` is the LeRobot task (the language the policy is
conditioned on; the task name when an episode has none); the task name, success flag, original episode index and
other metadata are extra episode columns ``lapa/task``, ``lapa/success``, ``lapa/source_episode_index``,
``lapa/metadata`` (JSON). ``state`` -> ``observation.state``, ``action`` -> ``action`` (float32, names from the
dataset). Timestamps become ``frame_index / fps``: LeRobot looks frames up by timestamp in constant-rate videos
(bag-converted episodes, resampled to a fixed rate, differ by the camera's jitter). Episodes are renumbered
0..N-1 in the source's order. Files rotate when the data (uncompressed) or video bytes pass the size limits.
Images in stats are per channel in [0, 1] over up to 100 frames sampled per episode; dataset-wide quantiles
are count-weighted means of the episodes' (as LeRobot aggregates them).

Codecs (``--codec``): ``av1`` (default: LeRobot's own, libsvtav1, keyframe every 2 frames), ``h264``
(yuv420p), ``lossless`` (H.264 RGB, bit-exact frames). Reading decodes with PyAV: AV1 (libdav1d), H.264,
HEVC, VP9 as its FFmpeg build has them. ``LeRobotV3Dataset`` reads a v3 dataset (ours or LeRobot's) through
EpisodeDataset's interface; ``open_episodes`` and ``EpisodeDataset(root)`` return one for a v3 directory.
Frames come from one camera (``camera``, default the first video feature); image features stored inside the
parquet files are not read.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .episodes import DatasetInfo, EpisodeDataset, _read_json, open_episodes
from .errors import EpisodeFormatError
from .video import CODECS, VideoWriter, iter_video_segment

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000           # files per chunk folder
DEFAULT_DATA_FILE_SIZE_MB = 100
DEFAULT_VIDEO_FILE_SIZE_MB = 200
EPISODES_PER_META_FILE = 1000
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
LAPA_INFO_PATH = "meta/lapa_info.json"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
STATE_KEY, ACTION_KEY, IMAGES_PREFIX = "observation.state", "action", "observation.images."
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
IMAGE_STAT_FRAMES = 100             # frames sampled per episode for image stats (LeRobot: at least 100)


# ---------------------------------------------------------------------------- statistics
def feature_stats(x: np.ndarray) -> Dict[str, np.ndarray]:
    """min, max, mean, std, count, quantiles over axis 0 of (N, D) values."""
    raw = np.asarray(x)
    x = raw.astype(np.float64)
    # min/max keep the values' kind (integers stay integers, as LeRobot writes them)
    out = {"min": raw.min(0), "max": raw.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    qs = np.quantile(x, list(QUANTILES.values()), axis=0)
    out.update({name: qs[k] for k, name in enumerate(QUANTILES)})
    return out


def image_stats(frames: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-channel stats of uint8 (N, H, W, 3) frames in [0, 1], shaped (3, 1, 1) as LeRobot keeps them."""
    step = max(1, max(frames.shape[1:3]) // 150)    # LeRobot downsamples large images to ~150 px too
    px = frames[:, ::step, ::step].reshape(-1, 3).astype(np.float32) / 255.0
    stats = {k: v.reshape(3, 1, 1) for k, v in feature_stats(px).items() if k != "count"}
    stats["count"] = np.array([len(frames)])   # LeRobot counts the sampled images
    return stats


def aggregate_stats(per_episode: List[Dict[str, Dict[str, np.ndarray]]]) -> Dict[str, Dict[str, np.ndarray]]:
    """Dataset-wide stats from the episodes' (pooled mean and variance; quantiles count-weighted)."""
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for key in per_episode[0]:
        items = [s[key] for s in per_episode]
        counts = np.array([float(s["count"][0]) for s in items])
        total = counts.sum()
        w = counts.reshape(-1, *([1] * np.ndim(items[0]["mean"])))
        means = np.stack([s["mean"] for s in items])
        mean = (means * w).sum(0) / total
        var = ((np.stack([s["std"] for s in items]) ** 2 + (means - mean) ** 2) * w).sum(0) / total
        agg = {"min": np.min([s["min"] for s in items], axis=0), "max": np.max([s["max"] for s in items], axis=0),
               "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)])}
        for q in QUANTILES:
            agg[q] = (np.stack([s[q] for s in items]) * w).sum(0) / total
        out[key] = agg
    return out


def _jsonable(stats: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


# ---------------------------------------------------------------------------- export
def _tasks_table(tasks: Sequence[str]):
    """meta/tasks.parquet as pandas writes a frame indexed by "task" (LeRobot reads it with pandas)."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                     "numpy_type": "int64", "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "task": pa.array(list(tasks), pa.string())})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


class _Rotating:
    """chunk/file numbering of one kind of file: a new file when the current one is full."""

    def __init__(self, chunks_size: int):
        self.chunks_size = chunks_size
        self.chunk = self.file = 0

    def advance(self) -> None:
        self.file += 1
        if self.file == self.chunks_size:
            self.chunk, self.file = self.chunk + 1, 0


def _fps_value(fps: float):
    return int(round(fps)) if abs(fps - round(fps)) < 1e-9 else float(fps)


def _video_info(path: Path, fps) -> dict:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"video.height": s.height, "video.width": s.width, "video.codec": s.codec_context.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt, "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
                "has_audio": bool(c.streams.audio)}


def export_lerobot(src, out, camera: str = "camera", codec: str = "av1", robot_type: Optional[str] = None,
                   chunks_size: int = DEFAULT_CHUNK_SIZE, data_file_size_mb: float = DEFAULT_DATA_FILE_SIZE_MB,
                   video_file_size_mb: float = DEFAULT_VIDEO_FILE_SIZE_MB, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Write the episode dataset ``src`` as a LeRobotDataset v3 at ``out``; returns a summary.

    Built in ``<out>.partial`` and moved into place at the end: a failure (an unreadable episode, named in
    the error) leaves no half dataset at ``out``, and the source is never changed."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    source = src if isinstance(src, EpisodeDataset) else open_episodes(src)
    if not isinstance(source, EpisodeDataset):
        raise EpisodeFormatError(f"{src}: a folder of plain videos, not an episode dataset "
                                 "(import it first: lapa data import-videos)")
    if codec not in CODECS:
        raise ValueError(f"unknown video codec '{codec}'; choose one of {sorted(CODECS)}")
    if len(source) == 0:
        raise EpisodeFormatError(f"{source.root}: has no episodes to export")
    if chunks_size < 1 or data_file_size_mb <= 0 or video_file_size_mb <= 0:
        raise ValueError("chunks_size and the file size limits must be positive")
    out = Path(out)
    source_root = Path(source.root).resolve()
    if out.resolve() == source_root:
        raise ValueError(f"{out}: is the source dataset itself")
    if out.resolve() in source_root.parents:   # --overwrite would delete the source with it
        raise ValueError(f"{out}: holds the source dataset {source.root}; write the export somewhere else")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (choose another directory, or --overwrite)")
    info = source.info
    h, w = info.image_height, info.image_width
    _, pix_fmt, _ = CODECS[codec]
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise ValueError(f"{source.root}: frames are {h}x{w}; codec '{codec}' needs even sizes "
                         "(use --codec lossless)")
    fps = _fps_value(info.fps)
    video_key = IMAGES_PREFIX + camera
    features: Dict[str, dict] = {}
    if info.state_names is not None:
        features[STATE_KEY] = {"dtype": "float32", "shape": [len(info.state_names)], "names": list(info.state_names)}
    if info.action_names is not None:
        features[ACTION_KEY] = {"dtype": "float32", "shape": [len(info.action_names)], "names": list(info.action_names)}
    features[video_key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
    features.update(json.loads(json.dumps(DEFAULT_FEATURES)))

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "meta").mkdir(parents=True)
    data_pos, video_pos, meta_pos = _Rotating(chunks_size), _Rotating(chunks_size), _Rotating(chunks_size)
    data_writer = video_writer = None
    data_bytes = video_frames = 0
    tasks: Dict[str, int] = {}
    episode_rows: List[dict] = []
    all_stats: List[dict] = []
    total_frames = 0
    data_limit, video_limit = data_file_size_mb * 1024 ** 2, video_file_size_mb * 1024 ** 2
    bar = tqdm(total=len(source), desc=f"export {out.name}", unit="ep", disable=not progress, file=sys.stderr)
    start_time = time.perf_counter()

    def video_file() -> Path:
        return tmp / VIDEO_PATH.format(video_key=video_key, chunk_index=video_pos.chunk, file_index=video_pos.file)

    def flush_episode_rows() -> None:
        if episode_rows:
            path = tmp / EPISODES_PATH.format(chunk_index=meta_pos.chunk, file_index=meta_pos.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(episode_rows), path)
            episode_rows.clear()
            meta_pos.advance()

    try:
        for pos in range(len(source)):
            entry = source.entries[pos]
            cols = source.read_table(pos)
            n = int(entry["length"])
            instruction = entry.get("instruction") or entry.get("task") or ""
            task_index = tasks.setdefault(instruction, len(tasks))
            # frames: streamed into the camera's current video file
            if video_writer is not None and video_file().is_file() and video_file().stat().st_size >= video_limit:
                video_writer.close()
                video_writer, video_frames = None, 0
                video_pos.advance()
            if video_writer is None:
                video_writer = VideoWriter(video_file(), info.fps, w, h, codec)
            from_frame = video_frames
            sample = set(np.round(np.linspace(0, n - 1, min(n, IMAGE_STAT_FRAMES))).astype(int).tolist())
            sampled = []
            count = 0
            for k, (frame, _) in enumerate(source.iter_frames(pos)):
                video_writer.write(frame)
                if k in sample:
                    sampled.append(frame)
                count += 1
            if count != n:
                raise EpisodeFormatError(f"{source.root}: episode {entry['episode_index']}: {count} frames, "
                                         f"index says {n}")
            video_frames += n
            # numbers: one row group per episode in the current data file
            frame_index = np.arange(n, dtype=np.int64)
            numbers = {"timestamp": (frame_index / info.fps).astype(np.float32), "frame_index": frame_index,
                       "episode_index": np.full(n, pos, np.int64),
                       "index": np.arange(total_frames, total_frames + n, dtype=np.int64),
                       "task_index": np.full(n, task_index, np.int64)}
            arrays, stats = {}, {}
            for key, col in ((STATE_KEY, "state"), (ACTION_KEY, "action")):
                if key in features:
                    values = np.asarray(cols[col], dtype=np.float32)
                    arrays[key] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
                    stats[key] = feature_stats(values)
            stats[video_key] = image_stats(np.stack(sampled))
            for key, values in numbers.items():
                arrays[key] = pa.array(values)
                stats[key] = feature_stats(values[:, None])
            table = pa.table(arrays)
            if data_writer is not None and data_bytes + table.nbytes > data_limit:
                data_writer.close()
                data_writer, data_bytes = None, 0
                data_pos.advance()
            if data_writer is None:
                path = tmp / DATA_PATH.format(chunk_index=data_pos.chunk, file_index=data_pos.file)
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            data_writer.write_table(table)
            data_bytes += table.nbytes
            row = {"episode_index": pos, "tasks": [instruction], "length": n,
                   "data/chunk_index": data_pos.chunk, "data/file_index": data_pos.file,
                   "dataset_from_index": total_frames, "dataset_to_index": total_frames + n,
                   f"videos/{video_key}/chunk_index": video_pos.chunk, f"videos/{video_key}/file_index": video_pos.file,
                   f"videos/{video_key}/from_timestamp": from_frame / info.fps,
                   f"videos/{video_key}/to_timestamp": (from_frame + n) / info.fps,
                   "meta/episodes/chunk_index": meta_pos.chunk, "meta/episodes/file_index": meta_pos.file}
            for key, s in stats.items():
                row.update({f"stats/{key}/{name}": np.asarray(v).tolist() for name, v in s.items()})
            extra = {k: v for k, v in entry.items()
                     if k not in ("episode_index", "task", "instruction", "length", "success")}
            row.update({"lapa/task": entry.get("task") or "", "lapa/instruction": entry.get("instruction") or "",
                        "lapa/success": entry.get("success"),
                        "lapa/source_episode_index": int(entry["episode_index"]),
                        "lapa/metadata": json.dumps(extra)})
            episode_rows.append(row)
            all_stats.append(stats)
            total_frames += n
            if len(episode_rows) >= EPISODES_PER_META_FILE:
                flush_episode_rows()
            bar.update(1)
        flush_episode_rows()
    except BaseException:
        for writer in (data_writer, video_writer):
            try:
                if writer is not None:
                    writer.close()
            except Exception:   # already failing: the first error is the one to report
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    data_writer.close()
    video_writer.close()

    first_video = tmp / VIDEO_PATH.format(video_key=video_key, chunk_index=0, file_index=0)
    features[video_key]["info"] = _video_info(first_video, fps)
    v3_info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(source),
               "total_frames": total_frames, "total_tasks": len(tasks), "chunks_size": chunks_size,
               "data_files_size_in_mb": data_file_size_mb, "video_files_size_in_mb": video_file_size_mb,
               "fps": fps, "splits": {"train": f"0:{len(source)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
               "features": features}
    (tmp / INFO_PATH).write_text(json.dumps(v3_info, indent=4) + "\n")
    (tmp / STATS_PATH).write_text(json.dumps(_jsonable(aggregate_stats(all_stats)), indent=4) + "\n")
    pq.write_table(_tasks_table(list(tasks)), tmp / TASKS_PATH)
    lapa_info = {**info.to_json(), "video_codec": codec, "exported_from": str(source.root), "camera": video_key}
    (tmp / LAPA_INFO_PATH).write_text(json.dumps(lapa_info, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return {"out": str(out), "episodes": len(source), "frames": total_frames, "tasks": len(tasks),
            "camera": video_key, "codec": codec, "data_files": data_pos.chunk * chunks_size + data_pos.file + 1,
            "video_files": video_pos.chunk * chunks_size + video_pos.file + 1,
            "seconds": round(time.perf_counter() - start_time, 2)}


# ---------------------------------------------------------------------------- reading
def _names(feature: dict, key: str, where: str) -> List[str]:
    shape = feature.get("shape")
    if not isinstance(shape, (list, tuple)) or len(shape) != 1:
        raise EpisodeFormatError(f"{where}: feature '{key}' must be a vector (shape [D]), got shape {shape}")
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:   # older datasets: {"motors": [...]}
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == shape[0] and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"{key}_{i}" for i in range(int(shape[0]))]


def _image_hw(feature: dict, key: str, where: str) -> Tuple[int, int]:
    shape, names = feature.get("shape"), feature.get("names")
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise EpisodeFormatError(f"{where}: video feature '{key}' must have shape [H, W, C], got {shape}")
    if isinstance(names, list) and len(names) == 3 and names[0] in ("channel", "channels"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _read_parquet(path: Path, **kwargs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise EpisodeFormatError(f"{path}: file is missing")
    try:
        return pq.read_table(path, **kwargs)
    except (pa.ArrowInvalid, OSError) as e:
        raise EpisodeFormatError(f"{path}: corrupt or truncated parquet file ({e})") from e


def _read_tasks(root: Path) -> Dict[int, str]:
    import pyarrow as pa

    path = root / TASKS_PATH
    table = _read_parquet(path)
    meta = table.schema.metadata or {}
    text_col = "task" if "task" in table.column_names else None
    if text_col is None and b"pandas" in meta:   # an unnamed pandas index
        index_cols = [c for c in json.loads(meta[b"pandas"]).get("index_columns", []) if isinstance(c, str)]
        text_col = index_cols[0] if index_cols else None
    if text_col is None:
        text_col = next((f.name for f in table.schema
                         if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)), None)
    if text_col is None or "task_index" not in table.column_names:
        raise EpisodeFormatError(f"{path}: expected a task (text) and a task_index column, got {table.column_names}")
    return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist())}


class LeRobotV3Dataset(EpisodeDataset):
    """A LeRobotDataset v3 directory read through EpisodeDataset's interface (episodes, frames, tables,
    latents beside it). ``size=(H, W)`` resizes frames while decoding; ``camera`` picks the video feature
    (a key such as "observation.images.front" or just "front"; default: the first)."""

    def __init__(self, root: str | Path, size: Optional[Tuple[int, int]] = None, camera: Optional[str] = None):
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise EpisodeFormatError(f"{self.root}: not a LeRobot dataset (no {INFO_PATH})")
        raw = _read_json(info_path)
        version = str(raw.get("codebase_version", ""))
        if not version.startswith("v3."):
            raise EpisodeFormatError(f"{info_path}: codebase_version {version!r} is not v3.x (this reader reads "
                                     "LeRobotDataset v3; convert older datasets with LeRobot first)")
        missing = [k for k in ("fps", "features", "data_path") if not raw.get(k)]
        if missing or not isinstance(raw.get("features"), dict):
            raise EpisodeFormatError(f"{info_path}: missing or malformed {', '.join(missing) or 'features'}")
        self.v3_info = raw
        where = str(info_path)
        features: Dict[str, dict] = raw["features"]
        video_keys = [k for k, f in features.items() if isinstance(f, dict) and f.get("dtype") == "video"]
        if not video_keys or not raw.get("video_path"):
            raise EpisodeFormatError(f"{info_path}: no video feature or video_path (images stored in the parquet "
                                     "files are not read)")
        if camera is not None:
            key = camera if camera in video_keys else IMAGES_PREFIX + camera
            if key not in video_keys:
                raise EpisodeFormatError(f"{info_path}: no camera '{camera}' (cameras: {', '.join(video_keys)})")
        else:
            key = video_keys[0]
        self.camera = key
        self.size = tuple(size) if size is not None else None
        h, w = self.size or _image_hw(features[key], key, where)
        self.fps = float(raw["fps"])
        lapa_path = self.root / LAPA_INFO_PATH
        lapa = _read_json(lapa_path) if lapa_path.is_file() else {}
        state_names = _names(features[STATE_KEY], STATE_KEY, where) if STATE_KEY in features else None
        action_names = _names(features[ACTION_KEY], ACTION_KEY, where) if ACTION_KEY in features else None
        self.info = DatasetInfo(fps=self.fps, image_height=int(h), image_width=int(w), action_names=action_names,
                                state_names=state_names, video_codec=lapa.get("video_codec", "h264")
                                if lapa.get("video_codec") in CODECS else "h264",
                                source=lapa.get("source") or "lerobot", gripper=lapa.get("gripper"),
                                extra={**(lapa.get("extra") or {}),
                                       "lerobot": {"codebase_version": version, "robot_type": raw.get("robot_type"),
                                                   "camera": key, "cameras": video_keys}})
        self.tasks = _read_tasks(self.root)   # task_index -> text
        rows = self._read_episodes()
        total = raw.get("total_episodes")
        if isinstance(total, int) and total != len(rows):
            raise EpisodeFormatError(f"{self.root / EPISODES_DIR}: {len(rows)} episodes, {INFO_PATH} says {total}")
        self.entries: List[dict] = []
        self._where: List[dict] = []
        vk = f"videos/{key}/"
        for r in rows:
            ep = int(r["episode_index"])
            try:
                data_file = self.root / raw["data_path"].format(chunk_index=int(r["data/chunk_index"]),
                                                                file_index=int(r["data/file_index"]))
                video_file = self.root / raw["video_path"].format(video_key=key, chunk_index=int(r[vk + "chunk_index"]),
                                                                  file_index=int(r[vk + "file_index"]))
                location = {"data": data_file, "video": video_file, "from": float(r[vk + "from_timestamp"]),
                            "to": float(r[vk + "to_timestamp"]), "length": int(r["length"])}
            except (KeyError, TypeError, ValueError) as e:
                raise EpisodeFormatError(f"{self.root / EPISODES_DIR}: episode {ep}: missing or bad column "
                                         f"({e})") from e
            names = list(r.get("tasks") or [])
            instruction = r.get("lapa/instruction")
            if instruction is None:
                instruction = names[0] if names else ""
            entry = {"episode_index": ep, "task": r.get("lapa/task") or (names[0] if names else ""),
                     "instruction": instruction, "length": location["length"], "success": r.get("lapa/success")}
            if r.get("lapa/metadata"):
                try:
                    entry.update({k: v for k, v in json.loads(r["lapa/metadata"]).items() if k not in entry})
                except (json.JSONDecodeError, AttributeError):
                    pass
            if len(names) > 1:
                entry["tasks"] = names
            self.entries.append(entry)
            self._where.append(location)

    def _read_episodes(self) -> List[dict]:
        import pyarrow.parquet as pq

        folder = self.root / EPISODES_DIR
        files = sorted(folder.glob("*/*.parquet"))
        if not files:
            raise EpisodeFormatError(f"{folder}: no episode metadata files (chunk-XXX/file-XXX.parquet)")
        rows: List[dict] = []
        for path in files:
            try:
                names = pq.read_schema(path).names
            except Exception as e:  # pyarrow raises several types for a damaged footer
                raise EpisodeFormatError(f"{path}: corrupt or truncated parquet file ({e})") from e
            table = _read_parquet(path, columns=[c for c in names if not c.startswith("stats/")])
            rows.extend(table.to_pylist())
        try:
            rows.sort(key=lambda r: int(r["episode_index"]))
        except (KeyError, TypeError, ValueError) as e:
            raise EpisodeFormatError(f"{folder}: episode rows without a valid episode_index ({e})") from e
        return rows

    # -- the EpisodeDataset interface
    def data_path(self, i: int) -> Path:
        """The data file holding episode i (shared with other episodes)."""
        return self._where[i]["data"]

    def video_path(self, i: int) -> Path:
        """The video file holding episode i's frames, between other episodes' (see ``video_segment``)."""
        return self._where[i]["video"]

    def video_segment(self, i: int) -> Tuple[Path, float, float]:
        """(video file, from_timestamp, to_timestamp) of episode i's frames."""
        w = self._where[i]
        return w["video"], w["from"], w["to"]

    def read_table(self, i: int) -> Dict[str, np.ndarray]:
        """The numeric columns of episode i (no frames), as EpisodeDataset gives them: frame_index (int32),
        timestamp (float64), action (float32 (N, A))?, state (float32 (N, S))?."""
        import pyarrow as pa

        entry, path = self.entries[i], self._where[i]["data"]
        if not path.is_file():
            raise EpisodeFormatError(f"{path}: episode data file is missing (episode {entry['episode_index']})")
        wanted = {"frame_index": "frame_index", "timestamp": "timestamp"}
        if self.info.action_names is not None:
            wanted[ACTION_KEY] = "action"
        if self.info.state_names is not None:
            wanted[STATE_KEY] = "state"
        try:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        except Exception as e:  # a damaged footer raises several pyarrow types
            raise EpisodeFormatError(f"{path}: corrupt or truncated parquet file ({e})") from e
        absent = [c for c in (*wanted, "episode_index") if c not in names]
        if absent:
            raise EpisodeFormatError(f"{path}: missing columns {absent}")
        table = _read_parquet(path, columns=[*wanted, "episode_index"],
                              filters=[("episode_index", "=", int(entry["episode_index"]))])
        out: Dict[str, np.ndarray] = {}
        order = np.argsort(table.column("frame_index").to_numpy(), kind="stable")
        for col, name in wanted.items():
            c = table.column(col).combine_chunks()
            if pa.types.is_list(c.type) or pa.types.is_fixed_size_list(c.type) or pa.types.is_large_list(c.type):
                values = c.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(c), -1)
            else:
                values = c.to_numpy(zero_copy_only=False)
            out[name] = values[order]
        out["frame_index"] = out["frame_index"].astype(np.int32)
        out["timestamp"] = out["timestamp"].astype(np.float64)
        if len(out["frame_index"]) != entry["length"]:
            raise EpisodeFormatError(f"{path}: has {len(out['frame_index'])} rows for episode "
                                     f"{entry['episode_index']}, the episodes table says {entry['length']}")
        return out

    def _video_frames(self, i: int) -> Iterator[np.ndarray]:
        entry, w = self.entries[i], self._where[i]
        where = f"{self.root}: episode {entry['episode_index']}"
        count = 0
        try:
            for frame in iter_video_segment(w["video"], w["from"], w["to"], self.fps, self.size):
                if count == w["length"]:
                    break
                count += 1
                yield frame
        except EpisodeFormatError as e:
            raise EpisodeFormatError(f"{where}: {e}") from e
        if count < w["length"]:
            raise EpisodeFormatError(f"{where}: {w['video']} has {count} frames in [{w['from']:.3f}, {w['to']:.3f}) s, "
                                     f"the episodes table says {w['length']} (truncated or corrupt video)")


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="episode dataset directory (sim-generated, bag-converted, imported videos)")
    p.add_argument("out", help="LeRobotDataset v3 directory to write")
    p.add_argument("--camera", default="camera", help="camera name: the video feature observation.images.<camera>")
    p.add_argument("--codec", default="av1", choices=sorted(CODECS),
                   help="av1 (LeRobot's default), h264 (yuv420p) or lossless (H.264 RGB, bit-exact)")
    p.add_argument("--robot-type", default=None, help="info.json robot_type (e.g. sawyer, panda)")
    p.add_argument("--chunks-size", type=int, default=DEFAULT_CHUNK_SIZE, help="files per chunk folder")
    p.add_argument("--data-file-size-mb", type=float, default=DEFAULT_DATA_FILE_SIZE_MB)
    p.add_argument("--video-file-size-mb", type=float, default=DEFAULT_VIDEO_FILE_SIZE_MB)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from lapa_models.commands import report_input_errors

    def run(a: argparse.Namespace) -> int:
        summary = export_lerobot(a.src, a.out, camera=a.camera, codec=a.codec, robot_type=a.robot_type,
                                 chunks_size=a.chunks_size, data_file_size_mb=a.data_file_size_mb,
                                 video_file_size_mb=a.video_file_size_mb, overwrite=a.overwrite,
                                 progress=not a.no_progress)
        print(json.dumps(summary))
        return 0

    return report_input_errors(run, args)


__all__ = ["LeRobotV3Dataset", "export_lerobot", "CODEBASE_VERSION"]
