"""camera: publishes a RealSense, a V4L2/USB device or a video file as a ROS 2 camera.

Publishes (sensor-data QoS, header stamp = capture time):
  camera/image_raw                          sensor_msgs/Image, rgb8
  camera/camera_info                        sensor_msgs/CameraInfo (device intrinsics when it reports them)
  camera/aligned_depth_to_color/image_raw   sensor_msgs/Image 16UC1 [mm], RealSense with align_depth
  camera/image_raw/compressed               sensor_msgs/CompressedImage (jpeg), with publish_compressed
  /diagnostics                              state (publishing / camera lost / video ended), frame rate, frames
In simulation the sim_robot node publishes the same camera topics itself (its images are rendered
with the physics), so the simulated graphs have no camera node.

A camera that is not there stops the node at start with a message naming what was looked for
(RealSense devices are listed first, instead of waiting 15 s in pipeline.start()). A camera that
disappears later is reopened every second (lapa_ros.core.cameras.CameraStream), logged when lost and
when back, and reported as an error on /diagnostics meanwhile; the policy and controller see no new
image and hold the arm. A video file with `loop` false plays once: at its end the node says so, stops
publishing and reports "ended" on /diagnostics (it keeps running; stop it as any node).
"""
from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lapa_ros.core.cameras import BACKENDS, CameraError, CameraStream, make_source
from lapa_ros.core.images import encode_compressed
from lapa_ros.interfaces.messages import image_msg, sec_to_stamp
from lapa_ros.interfaces.ros_common import (COMMAND_QOS, SENSOR_QOS, Param, StartupError, declare_params,
                                           diagnostics_message, log_at, run_node)

PARAMS = (
    Param("backend", "realsense", "Camera driver.", read_only=True, choices=BACKENDS),
    Param("serial", "", "RealSense serial number (empty: the only/first camera).", read_only=True),
    Param("device", "0", "V4L2 device index or path (/dev/video0).", read_only=True),
    Param("video_path", "", "Video file for the video backend.", read_only=True),
    Param("loop", True, "Video backend: start again at the end of the file.", read_only=True),
    Param("width", 640, "Requested image width [px].", read_only=True, range=(16, 4096)),
    Param("height", 480, "Requested image height [px].", read_only=True, range=(16, 4096)),
    Param("fps", 30.0, "Requested frame rate [Hz] (video files play at their own rate).", read_only=True,
          range=(1.0, 240.0)),
    Param("align_depth", False, "RealSense: also publish depth aligned to the colour image.", read_only=True),
    Param("publish_compressed", False, "Also publish JPEG-compressed images.", read_only=True),
    Param("frame_id", "camera_color_optical_frame", "frame_id of the images (optical frame).", read_only=True),
)


class CameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__("camera", **kwargs)
        self.p = declare_params(self, PARAMS)
        try:
            self.source = make_source(self.p.backend, device=self.p.device, serial=self.p.serial,
                                      path=self.p.video_path, width=self.p.width, height=self.p.height,
                                      fps=self.p.fps, align_depth=self.p.align_depth, loop=self.p.loop)
            self.source.open()
        except CameraError as e:
            raise StartupError(f"camera ({self.p.backend}): {e}") from e
        self.pub_image = self.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.pub_info = self.create_publisher(CameraInfo, "camera/camera_info", SENSOR_QOS)
        self.pub_depth = self.create_publisher(Image, "camera/aligned_depth_to_color/image_raw", SENSOR_QOS) \
            if self.p.align_depth else None
        self.pub_compressed = self.create_publisher(CompressedImage, "camera/image_raw/compressed", SENSOR_QOS) \
            if self.p.publish_compressed else None
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.stream = CameraStream(self.source)
        self.frames_published = 0
        self._frames_at_last_report = (0, time.monotonic())
        self.create_timer(1.0, self._publish_diagnostics)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="camera_capture", daemon=True)
        self._thread.start()
        intr = self.source.intrinsics
        self.get_logger().info(f"{self.p.backend} camera open: {intr.width}x{intr.height} at {self.source.fps:.1f} Hz")

    def _info_msg(self, stamp) -> CameraInfo:
        i = self.source.intrinsics
        msg = CameraInfo()
        msg.header.stamp, msg.header.frame_id = stamp, self.p.frame_id
        msg.width, msg.height = i.width, i.height
        msg.distortion_model = i.distortion_model
        msg.d = [float(v) for v in i.distortion]
        msg.k = [i.fx, 0.0, i.cx, 0.0, i.fy, i.cy, 0.0, 0.0, 1.0]
        msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        msg.p = [i.fx, 0.0, i.cx, 0.0, 0.0, i.fy, i.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return msg

    def _loop(self) -> None:
        while self._running:
            frame = self.stream.read()
            for level, message in self.stream.pop_messages():
                if self._running:
                    log_at(self.get_logger(), level, message)
            if frame is None:
                continue
            stamp = sec_to_stamp(frame.stamp)
            try:
                self.pub_info.publish(self._info_msg(stamp))
                self.pub_image.publish(image_msg(frame.rgb, stamp, self.p.frame_id))
                if self.pub_depth is not None and frame.depth is not None:
                    self.pub_depth.publish(image_msg(frame.depth, stamp, self.p.frame_id, encoding="16UC1"))
                if self.pub_compressed is not None:
                    msg = CompressedImage(format="jpeg", data=encode_compressed(frame.rgb, "jpeg"))
                    msg.header.stamp, msg.header.frame_id = stamp, self.p.frame_id
                    self.pub_compressed.publish(msg)
            except Exception as e:  # context shut down under us
                if self._running:
                    self.get_logger().error(f"publish failed: {e}")
                break
            self.frames_published += 1

    def _publish_diagnostics(self) -> None:
        frames, t = self.frames_published, time.monotonic()
        last_frames, last_t = self._frames_at_last_report
        self._frames_at_last_report = (frames, t)
        rate = (frames - last_frames) / max(t - last_t, 1e-6)
        stream = self.stream
        if stream.state == stream.LOST:
            level, message = 2, f"camera lost, reopening: {stream.error}"
        elif stream.state == stream.ENDED:
            level, message = 1, f"video ended, no more frames (loop is false): {stream.error}"
        else:
            level, message = 0, "publishing"
        values = {"state": stream.state, "rate_hz": f"{rate:.1f}", "frames_published": frames,
                  "reopen_attempts": stream.reopen_attempts, "backend": self.p.backend,
                  "source": self.p.video_path if self.p.backend == "video" else
                  (self.p.device if self.p.backend == "v4l2" else self.p.serial)}
        self.pub_diagnostics.publish(diagnostics_message(self, "lapa_ros: camera", level, message, values))

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=3.0)
        self.source.close()


def main(args=None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
