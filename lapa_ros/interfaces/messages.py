"""Message <-> numpy conversions used by the nodes (thin: the work is in lapa_ros.core)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lapa_ros.core import images
from lapa_ros.core.clock import stamp_to_sec  # noqa: F401  (messages.stamp_to_sec: the inverse of sec_to_stamp)


def sec_to_stamp(t: float) -> Time:
    sec, nanosec = divmod(int(round(t * 1e9)), 1_000_000_000)  # 3.9999999999 s -> (4, 0), not (3, 0)
    return Time(sec=sec, nanosec=nanosec)


def image_msg(rgb: np.ndarray, stamp: Time, frame_id: str, encoding: str = "rgb8") -> Image:
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step, data = images.encode(rgb, encoding)
    msg.data = data
    return msg


def rgb_from_image_msg(msg: Image, max_pixels: int = images.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any colour Image message -> uint8 (H, W, 3) RGB; ImageConversionError on bad messages."""
    arr = images.decode(msg.height, msg.width, msg.encoding, msg.step, msg.data, bool(msg.is_bigendian), max_pixels)
    return images.to_rgb8(arr, msg.encoding)


def rgb_from_compressed_msg(msg: CompressedImage, max_pixels: int = images.MAX_IMAGE_PIXELS) -> np.ndarray:
    return images.decode_compressed(msg.format, msg.data, max_pixels)


def check_image_size(msg, max_pixels: int) -> None:
    """Refuse, on arrival, an Image with more than ``max_pixels`` pixels or a CompressedImage with more
    bytes than such a raw image. A compressed image's own size is checked from its JPEG/PNG header once,
    by ``rgb_from_compressed_msg``, before any pixel is decoded."""
    if isinstance(msg, CompressedImage):
        if len(msg.data) > 3 * max_pixels:   # larger than the raw image it could hold
            raise images.ImageConversionError(f"compressed image of {len(msg.data)} bytes is larger than a raw "
                                              f"image of max_image_pixels {max_pixels}")
    else:
        images.check_pixels(msg.height, msg.width, max_pixels)


def pinhole_camera_info(width: int, height: int, fovy_deg: float, stamp: Time, frame_id: str) -> CameraInfo:
    """CameraInfo of an ideal pinhole camera (square pixels, no distortion) with vertical FOV fovy."""
    fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
    fx, cx, cy = fy, (width - 1) / 2.0, (height - 1) / 2.0
    msg = CameraInfo()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.width, msg.height = width, height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def twist_msg(linear: np.ndarray, stamp: Time, frame_id: str, angular: Optional[np.ndarray] = None) -> TwistStamped:
    msg = TwistStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
    if angular is not None:
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in angular)
    return msg


def twist_to_arrays(msg: TwistStamped) -> Tuple[np.ndarray, np.ndarray]:
    t = msg.twist
    return (np.array([t.linear.x, t.linear.y, t.linear.z], dtype=np.float64),
            np.array([t.angular.x, t.angular.y, t.angular.z], dtype=np.float64))


def pose_msg(position: np.ndarray, quat_xyzw: np.ndarray, stamp: Time, frame_id: str) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in position)
    q.x, q.y, q.z, q.w = (float(v) for v in quat_xyzw)
    return msg
