"""`lapa data import-videos SRC OUT`: a folder of plain videos -> an unlabelled episode dataset.

Each video becomes one episode (brought to --image-size, resampled to --fps), with no actions: the
input of the latent action stages. Unreadable videos are reported by name and skipped; the rest are
imported.

    lapa data import-videos ~/videos data/videos --image-size 128 128 --workers 4
    lapa bench import --clips 64 --workers 1 2        # clips/s on generated clips (JSON)

--resize-mode: ``crop`` (default) centre-crops each frame to the target aspect ratio, then resizes
(nothing distorted, the borders are lost); ``pad`` letterboxes with black bars (nothing lost or
distorted); ``squash`` resizes straight to the target size (the aspect ratio changes).

At scale: --workers N decodes, resizes and encodes N clips at a time in worker processes; the parent
only appends index lines (O(1) each). Episode indices are fixed before any work, in sorted file order,
and episodes are committed in that order, so the dataset is the same whatever the worker count.
Resumable: an interrupted import run again continues where it stopped: clips already in the index
(by source file) are skipped, an episode whose index line was not written is not part of the dataset
(its files are overwritten), and temporary files of the interrupted writes are removed. A clip that
fails keeps its number unused (the dataset's episode indices then have a gap).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .episodes import DatasetInfo, Episode, EpisodeWriter, VideoFolder, _read_json
from .errors import EpisodeFormatError
from .video import RESIZE_MODES, fit_frame, iter_video, video_fps, write_video

Job = Tuple[int, str]   # (episode index, source file)


def _clip_episode(path: Path, image_size: Tuple[int, int], target_fps: float, resize_mode: str) -> Episode:
    """One clip as an unlabelled episode: frames resampled to ``target_fps`` and fitted to ``image_size``."""
    src_fps = video_fps(path)
    step = max(src_fps / target_fps, 1e-9)
    frames = [fit_frame(f, image_size, resize_mode) for k, f in enumerate(iter_video(path))
              if k == 0 or int(k / step) != int((k - 1) / step)]
    if not frames:
        raise EpisodeFormatError(f"{path}: video has no decodable frames")
    n = len(frames)
    return Episode(frames=np.stack(frames), timestamps=np.arange(n) / target_fps,
                   metadata={"source_file": str(path), "source": "video"})


_worker: dict = {}


def _init_worker(out: str, info: DatasetInfo, image_size: Tuple[int, int], resize_mode: str,
                 in_pool: bool = True) -> None:
    if in_pool:
        import cv2

        cv2.setNumThreads(1)   # one clip per process: the processes are the parallelism
    _worker.update(writer=EpisodeWriter(out, info), image_size=image_size, fps=info.fps, mode=resize_mode)


def _run_job(job: Job) -> Tuple[Optional[dict], Optional[str]]:
    """(index entry, None) once the clip's files are written, or (None, error naming the file)."""
    index, path = job
    try:
        episode = _clip_episode(Path(path), _worker["image_size"], _worker["fps"], _worker["mode"])
        return _worker["writer"].write_files(episode, index), None
    except (EpisodeFormatError, ValueError, OSError) as e:
        return None, str(e) if path in str(e) else f"{path}: {e}"


def _key(path: str) -> str:
    """Source files are recorded by absolute path: a resume from another working directory still matches."""
    return str(Path(path).resolve())


def _first_fps(files: Sequence[Path]) -> float:
    for path in files:
        try:
            return video_fps(path)
        except EpisodeFormatError:
            continue
    raise EpisodeFormatError(f"{files[0].parent}: none of the {len(files)} video files is readable")


def import_videos(src: str, out: str, image_size=(128, 128), fps: float = 0.0, progress: bool = True,
                  workers: int = 1, resize_mode: str = "crop") -> dict:
    """Import every video under ``src`` into the episode dataset ``out`` (created or resumed); a summary."""
    from tqdm import tqdm

    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode '{resize_mode}'; choose one of {', '.join(RESIZE_MODES)}")
    folder = VideoFolder(src)
    # A dataset written inside the source folder: its own episode videos are not clips to import (a second
    # run would import the dataset into itself, every run doubling it).
    own = (Path(out) / "videos").resolve()
    sources = [p for p in folder.files if own not in p.resolve().parents]
    if not sources:
        raise EpisodeFormatError(f"{src}: no video files besides the episodes of the dataset {out} itself")
    info_path = Path(out) / "meta" / "info.json"
    if not fps and info_path.is_file():   # resuming: keep the rate the dataset was started with
        fps = float(_read_json(info_path).get("fps") or 0.0)
    target_fps = fps or _first_fps(sources)
    info = DatasetInfo(fps=target_fps, image_height=int(image_size[0]), image_width=int(image_size[1]),
                       source="video", extra={"imported_from": str(src), "resize_mode": resize_mode})
    writer = EpisodeWriter(out, info)
    writer.remove_partial_files()
    done = {_key(p) for p in writer.completed("source_file") if p}
    files = [str(p.resolve()) for p in sources]
    pending = [p for p in files if p not in done]
    start = writer.next_index()
    jobs: List[Job] = [(start + k, path) for k, path in enumerate(pending)]
    written, frames, failed = 0, 0, []
    initargs = (str(out), info, (int(image_size[0]), int(image_size[1])), resize_mode)
    pool = None
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(*initargs, in_pool=False)
        results = map(_run_job, jobs)
    else:
        pool = mp.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=initargs)
        results = pool.imap(_run_job, jobs)   # in job order: commits (and so the index) follow the file order
    bar = tqdm(total=len(jobs), desc="import videos", unit="video", disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()
    try:
        for entry, error in results:
            if entry is not None:
                writer.commit(entry)
                written += 1
                frames += entry["length"]
            else:
                failed.append(error)
                bar.write(f"skipped: {error}", file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    seconds = time.perf_counter() - t0
    return {"out": str(out), "written": written, "skipped": len(files) - len(pending),
            "frames": frames, "failed": failed, "seconds": round(seconds, 3),
            "clips_per_s": round(written / seconds, 2) if seconds > 0 else None}


# ---------------------------------------------------------------------------- benchmark
def make_clips(folder: Path, count: int, frames: int = 30, size: Tuple[int, int] = (96, 128),
               fps: float = 30.0, seed: int = 0) -> List[Path]:
    """``count`` small H.264 clips with moving content (what the benchmark and tests import)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for c in range(count):
        base = rng.integers(0, 256, 3)
        cx, cy, vx, vy = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-3, 3), rng.uniform(-3, 3)
        clip = np.empty((frames, h, w, 3), np.uint8)
        for t in range(frames):
            blob = ((xx - cx - vx * t) ** 2 + (yy - cy - vy * t) ** 2) < (min(h, w) / 5) ** 2
            clip[t] = (base[None, None] * (0.5 + 0.5 * xx[..., None] / w)).astype(np.uint8)
            clip[t][blob] = 255 - base
        path = folder / f"clip_{c:05d}.mp4"
        write_video(path, clip, fps=fps, codec="h264")
        paths.append(path)
    return paths


def benchmark(clips: int = 48, frames: int = 30, clip_size=(96, 128), image_size=(64, 64),
              workers: Sequence[int] = (1, 2), resize_mode: str = "crop", keep: Optional[str] = None) -> dict:
    """Import the same generated clips with each worker count; clips/s and whether the results agree."""
    from .episodes import EpisodeDataset

    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="lapa-bench-import-"))
    try:
        src = tmp / "clips"
        src.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        make_clips(src, clips, frames, tuple(clip_size))
        runs, reference = [], None
        for n in workers:
            out = tmp / f"out_w{n}"
            shutil.rmtree(out, ignore_errors=True)
            summary = import_videos(str(src), str(out), tuple(image_size), progress=False, workers=n,
                                    resize_mode=resize_mode)
            ds = EpisodeDataset(out)
            order = [(e["episode_index"], Path(e["source_file"]).name, e["length"]) for e in ds.entries]
            if reference is None:
                reference = order
            runs.append({"workers": n, "clips": summary["written"], "seconds": summary["seconds"],
                         "clips_per_s": summary["clips_per_s"],
                         "frames_per_s": round(summary["frames"] / summary["seconds"], 1),
                         "same_episodes_as_first": order == reference})
        return {"benchmark": "import-videos", "clips": clips, "frames_per_clip": frames,
                "clip_size": list(clip_size), "image_size": list(image_size), "resize_mode": resize_mode,
                "cpus": os.cpu_count(),
                "make_clips_s": round(time.perf_counter() - t0 - sum(r["seconds"] for r in runs), 2),
                "runs": runs}
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder of .mp4/.mkv/.avi/.mov/.webm files (searched recursively)")
    p.add_argument("out", help="episode dataset directory to write (created, or resumed if it exists)")
    p.add_argument("--image-size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    p.add_argument("--resize-mode", choices=RESIZE_MODES, default="crop",
                   help="crop: centre crop to the target aspect, then resize (default); pad: letterbox with "
                        "black bars; squash: plain resize (distorts the aspect ratio)")
    p.add_argument("--fps", type=float, default=0.0,
                   help="resample to this rate (default: the dataset's when resuming, else the first video's)")
    p.add_argument("--workers", type=int, default=1, help="clips imported in parallel (processes)")
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from lapa_models.commands import report_input_errors

    def run(a: argparse.Namespace) -> int:
        summary = import_videos(a.src, a.out, tuple(a.image_size), a.fps, progress=not a.no_progress,
                                workers=a.workers, resize_mode=a.resize_mode)
        print(json.dumps(summary))
        return 0 if not summary["failed"] else 1

    return report_input_errors(run, args)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clips", type=int, default=48, help="clips to generate and import")
    p.add_argument("--frames", type=int, default=30, help="frames per clip")
    p.add_argument("--clip-size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    p.add_argument("--image-size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    p.add_argument("--resize-mode", choices=RESIZE_MODES, default="crop")
    p.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")


def bench_main(args: argparse.Namespace) -> int:
    print(json.dumps(benchmark(args.clips, args.frames, tuple(args.clip_size), tuple(args.image_size),
                               args.workers, args.resize_mode, args.keep), indent=2))
    return 0
