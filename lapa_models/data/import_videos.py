"""`lapa data import-videos SRC OUT`: a folder of plain videos -> an unlabelled episode dataset.

Each video becomes one episode (resized to --image-size, resampled to --fps), with no actions: the
input of the latent action stages. Unreadable videos are reported by name and skipped.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .episodes import DatasetInfo, Episode, EpisodeWriter, VideoFolder
from .errors import EpisodeFormatError
from .video import iter_video, video_fps


def import_videos(src: str, out: str, image_size=(128, 128), fps: float = 0.0, progress: bool = True) -> dict:
    from tqdm import tqdm

    folder = VideoFolder(src)
    target_fps = fps or video_fps(folder.files[0])
    writer = EpisodeWriter(out, DatasetInfo(fps=target_fps, image_height=image_size[0], image_width=image_size[1],
                                            source="video", extra={"imported_from": str(src)}))
    done = {e.get("source_file") for e in _entries(writer)}
    written, failed = 0, []
    for path in tqdm(folder.files, desc="import videos", unit="video", disable=not progress, file=sys.stderr):
        if str(path) in done:
            continue
        try:
            src_fps = video_fps(path)
            step = max(src_fps / target_fps, 1e-9)
            frames = [f for k, f in enumerate(iter_video(path, image_size)) if int(k / step) != int((k - 1) / step) or k == 0]
            if not frames:
                raise EpisodeFormatError(f"{path}: video has no decodable frames")
        except EpisodeFormatError as e:
            failed.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
            continue
        n = len(frames)
        writer.write(Episode(frames=np.stack(frames), timestamps=np.arange(n) / target_fps,
                             metadata={"source_file": str(path), "source": "video"}))
        written += 1
    return {"out": out, "written": written, "failed": failed}


def _entries(writer: EpisodeWriter):
    from .episodes import _read_index
    return _read_index(writer.root / "meta" / "episodes.jsonl")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder of .mp4/.mkv/.avi/.mov/.webm files (searched recursively)")
    p.add_argument("out", help="episode dataset directory to write")
    p.add_argument("--image-size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    p.add_argument("--fps", type=float, default=0.0, help="resample to this rate (default: the first video's)")


def main(args: argparse.Namespace) -> int:
    summary = import_videos(args.src, args.out, tuple(args.image_size), args.fps)
    print(json.dumps(summary))
    return 0 if not summary["failed"] else 1
