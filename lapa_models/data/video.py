"""Video files <-> uint8 RGB frames, with PyAV (FFmpeg).

Two codecs for episode storage:
  - ``lossless``: H.264 RGB at CRF 0 (libx264rgb) in .mp4: frames read back bit-exact; what training
    and round-trip tests use.
  - ``h264``: H.264 yuv420p CRF 18 in .mp4: ~6x smaller, slightly lossy, plays everywhere (rollout videos).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .errors import EpisodeFormatError

CODECS = {
    # name: (ffmpeg encoder, pixel format, options)
    "lossless": ("libx264rgb", "rgb24", {"crf": "0", "preset": "ultrafast"}),
    "h264": ("libx264", "yuv420p", {"crf": "18", "preset": "veryfast"}),
}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")


def _check_frames(frames: np.ndarray, path: Path) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"{path}: frames must be uint8 (T, H, W, 3) RGB, got {got}")
    if len(frames) == 0:
        raise ValueError(f"{path}: no frames to write")


class VideoWriter:
    """Streams frames into a video file (context manager)."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int, codec: str = "lossless"):
        import av
        from fractions import Fraction

        if codec not in CODECS:
            raise ValueError(f"unknown video codec '{codec}'; choose one of {sorted(CODECS)}")
        encoder, pix_fmt, options = CODECS[codec]
        if pix_fmt == "yuv420p" and (width % 2 or height % 2):
            raise ValueError(f"codec '{codec}' needs even image sizes, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1000),
                                                  options=dict(options))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        self._size = (height, width)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        if frame.dtype != np.uint8 or frame.shape != (*self._size, 3):
            raise ValueError(f"{self.path}: frame must be uint8 {(*self._size, 3)}, got {frame.dtype} {frame.shape}")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "lossless") -> None:
    _check_frames(frames, Path(path))
    with VideoWriter(path, fps, frames.shape[2], frames.shape[1], codec) as w:
        for f in frames:
            w.write(f)


def iter_video(path: str | Path, size: Optional[tuple] = None) -> Iterator[np.ndarray]:
    """Decode frames one at a time as uint8 (H, W, 3) RGB; ``size=(H, W)`` resizes while decoding.

    Raises EpisodeFormatError naming the file when it is missing, empty or not a decodable video."""
    import av

    path = Path(path)
    if not path.is_file():
        raise EpisodeFormatError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise EpisodeFormatError(f"{path}: video file is empty")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise EpisodeFormatError(f"{path}: not a readable video ({e})") from e
    try:
        if not container.streams.video:
            raise EpisodeFormatError(f"{path}: has no video stream")
        kwargs = {"format": "rgb24"}
        if size is not None:
            kwargs.update(height=int(size[0]), width=int(size[1]))
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(**kwargs)
        except av.error.FFmpegError as e:
            raise EpisodeFormatError(f"{path}: video is corrupt or truncated ({e})") from e
    finally:
        container.close()


def read_video(path: str | Path, size: Optional[tuple] = None) -> np.ndarray:
    frames = list(iter_video(path, size))
    if not frames:
        raise EpisodeFormatError(f"{path}: video has no decodable frames")
    return np.stack(frames)


def video_fps(path: str | Path) -> float:
    import av

    try:
        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate or c.streams.video[0].guessed_rate
            return float(rate) if rate else 30.0
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise EpisodeFormatError(f"{path}: not a readable video ({e})") from e
