"""Video files <-> uint8 RGB frames, with PyAV (FFmpeg).

Codecs for episode storage:
  - ``lossless``: H.264 RGB at CRF 0 (libx264rgb) in .mp4: frames read back bit-exact; what training
    and round-trip tests use.
  - ``h264``: H.264 yuv420p CRF 18 in .mp4: ~6x smaller, slightly lossy, plays everywhere (rollout videos).
  - ``av1``: AV1 yuv420p CRF 30, keyframe every 2 frames (libsvtav1): LeRobot's default encoding, what
    LeRobotDataset v3 exports use by default. Decoded by libdav1d (both ship in PyAV's wheels).

Frames are stamped explicitly (frame k at k / fps), so a file's timestamps are exact multiples of the
frame period: what LeRobot's timestamp-based frame lookup (tolerance 1e-4 s) relies on.

``fit_frame`` brings a frame to a target size: ``crop`` (centre crop to the target aspect ratio, then
resize: nothing is distorted, the borders are lost), ``pad`` (letterbox with black bars: nothing lost,
nothing distorted) or ``squash`` (plain resize: the aspect ratio changes).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from .errors import EpisodeFormatError

CODECS = {
    # name: (ffmpeg encoder, pixel format, options)
    "lossless": ("libx264rgb", "rgb24", {"crf": "0", "preset": "ultrafast"}),
    "h264": ("libx264", "yuv420p", {"crf": "18", "preset": "veryfast"}),
    "av1": ("libsvtav1", "yuv420p", {"crf": "30", "preset": "8", "g": "2"}),
}
RESIZE_MODES = ("crop", "pad", "squash")
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
        if encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")   # SVT-AV1 prints its whole configuration otherwise
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rate = Fraction(fps).limit_denominator(1000)
        self._time_base = 1 / rate
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(encoder, rate=rate, options=dict(options))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        self._size = (height, width)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        if frame.dtype != np.uint8 or frame.shape != (*self._size, 3):
            raise ValueError(f"{self.path}: frame must be uint8 {(*self._size, 3)}, got {frame.dtype} {frame.shape}")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts, video_frame.time_base = self.frames_written, self._time_base
        for packet in self._stream.encode(video_frame):
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


def _open_video(path: str | Path):
    """(Path, open PyAV container); EpisodeFormatError naming the file when it is missing, empty or
    not a video PyAV can open."""
    import av

    path = Path(path)
    if not path.is_file():
        raise EpisodeFormatError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise EpisodeFormatError(f"{path}: video file is empty")
    try:
        return path, av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise EpisodeFormatError(f"{path}: not a readable video ({e})") from e


def iter_video(path: str | Path, size: Optional[tuple] = None) -> Iterator[np.ndarray]:
    """Decode frames one at a time as uint8 (H, W, 3) RGB; ``size=(H, W)`` resizes while decoding.

    Raises EpisodeFormatError naming the file when it is missing, empty or not a decodable video."""
    import av

    path, container = _open_video(path)
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


def iter_video_segment(path: str | Path, start: float, end: float, fps: float,
                       size: Optional[tuple] = None) -> Iterator[np.ndarray]:
    """Frames of ``path`` whose timestamps lie in [start, end) seconds (to within half a frame), decoded
    from the keyframe before ``start``: one episode of a video file that holds several one after the
    other (LeRobotDataset v3). Errors as ``iter_video``."""
    import av

    path, container = _open_video(path)
    half = 0.5 / fps
    try:
        if not container.streams.video:
            raise EpisodeFormatError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        kwargs = {"format": "rgb24"}
        if size is not None:
            kwargs.update(height=int(size[0]), width=int(size[1]))
        try:
            if start > half:
                container.seek(max(0, int((start - half) / stream.time_base)), stream=stream, backward=True,
                               any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                if t < start - half:
                    continue
                if t >= end - half:
                    break
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


def fit_frame(frame: np.ndarray, size: Optional[Tuple[int, int]], mode: str = "crop") -> np.ndarray:
    """``frame`` (H, W, 3) brought to ``size`` = (height, width) by ``mode``: crop, pad or squash (see above)."""
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    import cv2

    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode '{mode}'; choose one of {', '.join(RESIZE_MODES)}")
    th, tw = int(size[0]), int(size[1])
    h, w = frame.shape[:2]
    if mode == "crop":
        if w * th > h * tw:      # too wide: keep the centre columns
            cw = max(1, round(h * tw / th))
            x = (w - cw) // 2
            frame = frame[:, x:x + cw]
        elif w * th < h * tw:    # too tall: keep the centre rows
            ch = max(1, round(w * th / tw))
            y = (h - ch) // 2
            frame = frame[y:y + ch]
    elif mode == "pad":
        scale = min(th / h, tw / w)
        nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
        inner = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        out = np.zeros((th, tw, 3), dtype=frame.dtype)
        y, x = (th - nh) // 2, (tw - nw) // 2
        out[y:y + nh, x:x + nw] = inner
        return out
    shrink = frame.shape[0] >= th and frame.shape[1] >= tw
    return cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def video_fps(path: str | Path) -> float:
    import av

    try:
        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate or c.streams.video[0].guessed_rate
            return float(rate) if rate else 30.0
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise EpisodeFormatError(f"{path}: not a readable video ({e})") from e
