"""Camera sources behind the camera node: RealSense, V4L2/OpenCV devices and video files. No ROS import.

Each source yields ``Frame``s (uint8 RGB, capture time, optional depth) and knows its intrinsics
when the device reports them. Opening a source that is not there fails fast with a message that
says what was looked for and what exists.
"""
from __future__ import annotations

import dataclasses
import glob
import time
from pathlib import Path
from typing import List, Optional

import numpy as np


class CameraError(RuntimeError):
    """A camera that cannot be opened or stopped delivering frames."""


class EndOfVideo(CameraError):
    """A video file played to its end and does not loop: no more frames will come."""


@dataclasses.dataclass
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    distortion: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def pinhole_from_fov(cls, width: int, height: int, hfov_deg: float = 69.0) -> "Intrinsics":
        """A guess for cameras that report nothing (69 deg: a typical webcam / D435 colour FOV)."""
        fx = 0.5 * width / np.tan(np.radians(hfov_deg) / 2.0)
        return cls(width, height, fx, fx, (width - 1) / 2.0, (height - 1) / 2.0)


@dataclasses.dataclass
class Frame:
    rgb: np.ndarray                       # uint8 (H, W, 3)
    stamp: float                          # capture time, seconds on the system clock
    depth: Optional[np.ndarray] = None    # uint16 (H, W) in depth_scale units (RealSense: aligned to colour)
    depth_scale: float = 0.001


class CameraSource:
    name = "camera"
    intrinsics: Optional[Intrinsics] = None
    fps: float = 30.0

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame:
        """Block until the next frame; raise CameraError when the device is gone."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- RealSense
class RealSenseSource(CameraSource):
    name = "realsense"

    def __init__(self, serial: str = "", width: int = 640, height: int = 480, fps: int = 30, align_depth: bool = False):
        self.serial, self.width, self.height, self.fps, self.align_depth = serial, width, height, fps, align_depth
        self._pipeline = None
        self._align = None
        self.depth_scale = 0.001

    @staticmethod
    def list_devices() -> List[dict]:
        import pyrealsense2 as rs

        return [{"serial": d.get_info(rs.camera_info.serial_number), "name": d.get_info(rs.camera_info.name)}
                for d in rs.context().query_devices()]

    def open(self) -> None:
        try:
            import pyrealsense2 as rs
        except ImportError as e:
            raise CameraError(f"realsense backend needs pyrealsense2 (and apt libusb-1.0-0): {e}") from e
        # Query first: pipeline.start() with nothing attached blocks ~15 s before failing.
        devices = self.list_devices()
        if not devices:
            raise CameraError("no RealSense camera found (pyrealsense2 sees 0 devices); check the USB 3 cable and "
                              "`rs-enumerate-devices`")
        if self.serial and self.serial not in [d["serial"] for d in devices]:
            raise CameraError(f"no RealSense camera with serial '{self.serial}'; connected: "
                              + ", ".join(f"{d['name']} ({d['serial']})" for d in devices))
        cfg = rs.config()
        if self.serial:
            cfg.enable_device(self.serial)
        cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        if self.align_depth:
            cfg.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
            self._align = rs.align(rs.stream.color)
        self._pipeline = rs.pipeline()
        profile = self._pipeline.start(cfg)
        if self.align_depth:
            self.depth_scale = profile.get_device().first_depth_sensor().get_depth_scale()
        intr = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self.intrinsics = Intrinsics(intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy,
                                     "plumb_bob", tuple(float(c) for c in intr.coeffs[:5]))

    def read(self) -> Frame:
        if self._pipeline is None:
            raise CameraError("RealSense camera is not open")
        try:
            frames = self._pipeline.wait_for_frames(timeout_ms=2000)
        except RuntimeError as e:
            raise CameraError(f"RealSense stopped delivering frames: {e}") from e
        stamp = time.time()
        if self._align is not None:
            frames = self._align.process(frames)
        color = np.asanyarray(frames.get_color_frame().get_data()).copy()
        depth = np.asanyarray(frames.get_depth_frame().get_data()).copy() if self._align is not None else None
        return Frame(color, stamp, depth, self.depth_scale)

    def close(self) -> None:
        if self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            try:
                pipeline.stop()
            except RuntimeError:   # the device is already gone
                pass


# --------------------------------------------------------------------------- V4L2 / OpenCV
class OpenCVSource(CameraSource):
    name = "v4l2"

    def __init__(self, device: str = "0", width: int = 640, height: int = 480, fps: float = 30.0):
        self.device, self.width, self.height, self.fps = device, width, height, fps
        self._cap = None

    def open(self) -> None:
        import cv2

        dev = int(self.device) if str(self.device).isdigit() else str(self.device)
        cap = cv2.VideoCapture(dev, cv2.CAP_V4L2) if isinstance(dev, int) or str(dev).startswith("/dev/") \
            else cv2.VideoCapture(dev)
        if not cap.isOpened():
            found = sorted(glob.glob("/dev/video*"))
            raise CameraError(f"cannot open video device '{self.device}'; devices present: "
                              f"{', '.join(found) if found else 'none'}")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.intrinsics = Intrinsics.pinhole_from_fov(w, h)

    def read(self) -> Frame:
        if self._cap is None:
            raise CameraError(f"video device '{self.device}' is not open")
        ok, bgr = self._cap.read()
        stamp = time.time()
        if not ok or bgr is None:
            raise CameraError(f"video device '{self.device}' stopped delivering frames")
        return Frame(np.ascontiguousarray(bgr[:, :, ::-1]), stamp)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------------- video file
class VideoFileSource(CameraSource):
    """Plays a video file at its own frame rate (or ``fps`` if given), looping by default."""

    name = "video"

    def __init__(self, path: str, loop: bool = True, fps: float = 0.0):
        self.path, self.loop, self._fps_override = Path(path), loop, fps
        self._frames = None
        self._next = 0
        self._t_next = 0.0

    def open(self) -> None:
        from lapa_models.data.errors import EpisodeFormatError
        from lapa_models.data.video import read_video, video_fps

        try:
            self._frames = read_video(self.path)
            self.fps = self._fps_override or video_fps(self.path)
        except EpisodeFormatError as e:
            raise CameraError(str(e)) from e
        h, w = self._frames.shape[1:3]
        self.intrinsics = Intrinsics.pinhole_from_fov(w, h)
        self._next = 0
        self._t_next = time.monotonic()

    def read(self) -> Frame:
        if self._next >= len(self._frames):
            if not self.loop:
                raise EndOfVideo(f"{self.path}: end of video")
            self._next = 0
        delay = self._t_next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._t_next = max(self._t_next + 1.0 / self.fps, time.monotonic() - 1.0 / self.fps)
        frame = self._frames[self._next]
        self._next += 1
        return Frame(frame, time.time())


BACKENDS = ("realsense", "v4l2", "video")


# --------------------------------------------------------------------------- keeping a camera going
class CameraStream:
    """Frames from a source, kept going when the camera goes away: what the camera node's capture loop runs.

    ``read()`` returns the next frame, or None when there is none now: the camera was lost (unplugged, a
    driver error: it is reopened every ``retry_period`` seconds until it is back) or a video file that
    does not loop has ended (then no frame comes again). Any exception of a source counts as a lost
    camera, so the capture loop never dies. ``state`` is "ok", "lost" or "ended"; each change of state
    (and every tenth failed reopen) leaves a (level, message) in ``messages`` for the caller to log."""

    OK, LOST, ENDED = "ok", "lost", "ended"

    def __init__(self, source: CameraSource, retry_period: float = 1.0, clock=time.monotonic, sleep=time.sleep):
        self.source, self.retry_period = source, float(retry_period)
        self._clock, self._sleep = clock, sleep
        self.state = self.OK
        self.error = ""
        self.frames = 0
        self.reopen_attempts = 0
        self.lost_since: Optional[float] = None
        self.messages: List[tuple] = []

    def _lost(self, error: str) -> None:
        self.state, self.error = self.LOST, error
        self.lost_since, self.reopen_attempts = self._clock(), 0
        self.messages.append(("error", f"{error}; reopening the camera every {self.retry_period:g} s "
                                       "(nodes that use it see no new image and hold the arm)"))

    def _reopen(self) -> bool:
        self._sleep(self.retry_period)
        self.reopen_attempts += 1
        try:
            self.source.close()
        except Exception:   # noqa: BLE001 - a vanished device may fail to close; it is reopened anyway
            pass
        try:
            self.source.open()
        except Exception as e:   # noqa: BLE001 - any failure to open is "still lost"
            self.error = str(e) if isinstance(e, CameraError) else f"{type(e).__name__}: {e}"
            if self.reopen_attempts % 10 == 0:
                self.messages.append(("error", f"camera still lost after {self._clock() - self.lost_since:.0f} s "
                                               f"({self.reopen_attempts} reopen attempts): {self.error}"))
            return False
        self.messages.append(("info", f"camera back after {self._clock() - self.lost_since:.1f} s "
                                      f"({self.reopen_attempts} reopen attempt{'s' if self.reopen_attempts > 1 else ''})"))
        self.state, self.error, self.lost_since = self.OK, "", None
        return True

    def read(self) -> Optional[Frame]:
        if self.state == self.ENDED:
            self._sleep(self.retry_period)
            return None
        if self.state == self.LOST and not self._reopen():
            return None
        try:
            frame = self.source.read()
        except EndOfVideo as e:
            self.state, self.error = self.ENDED, str(e)
            self.messages.append(("warning", f"{e} after {self.frames} frames; `loop` is false, so no more frames "
                                             "come (set loop:=true to play it again)"))
            return None
        except CameraError as e:
            self._lost(str(e))
            return None
        except Exception as e:   # noqa: BLE001 - a driver's own exception: the camera is lost, the loop goes on
            self._lost(f"{self.source.name} camera read failed ({type(e).__name__}: {e})")
            return None
        self.frames += 1
        return frame

    def pop_messages(self) -> List[tuple]:
        messages, self.messages = self.messages, []
        return messages


def make_source(backend: str, *, device: str = "0", serial: str = "", path: str = "", width: int = 640,
                height: int = 480, fps: float = 30.0, align_depth: bool = False, loop: bool = True) -> CameraSource:
    if backend == "realsense":
        return RealSenseSource(serial, width, height, int(fps), align_depth)
    if backend == "v4l2":
        return OpenCVSource(device, width, height, fps)
    if backend == "video":
        if not path:
            raise CameraError("video backend needs a file: set the `video_path` parameter")
        return VideoFileSource(path, loop, 0.0)
    raise CameraError(f"unknown camera backend '{backend}'; choose one of {', '.join(BACKENDS)} "
                      "(in simulation the sim_robot node publishes the camera)")
