"""sensor_msgs/Image fields <-> numpy, for the encodings cv_bridge users meet. No ROS import.

The PyPI ``cv-bridge`` is a ROS 1 port that breaks with numpy 2, so the conversion lives here:
``decode(height, width, encoding, step, data, is_bigendian)`` returns an array view of the right
dtype and shape (row padding in ``step`` is dropped), ``to_rgb8`` turns any colour or mono image into
the RGB uint8 the policy takes, ``encode`` goes back. Bad messages raise ImageConversionError with
a sentence saying what is wrong.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

# encoding -> (numpy dtype, channels)
ENCODINGS = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3), "8UC4": (np.uint8, 4),
    "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1),
    "rgb16": (np.uint16, 3), "bgr16": (np.uint16, 3),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3", "8UC4", "mono16", "rgb16", "bgr16")
# Single-channel encodings to_rgb8 repeats into three channels: a grey or infrared camera. A policy trained on
# colour must not act on them unless told to (mono_problem).
MONO_ENCODINGS = ("mono8", "8UC1", "mono16")
MAX_IMAGE_PIXELS = 8192 * 8192


class ImageConversionError(ValueError):
    """An image message that cannot be turned into an array: wrong size, encoding or data length."""


def check_pixels(height: int, width: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse an empty image or one with more than ``max_pixels`` pixels (before anything is converted)."""
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"invalid image size {width}x{height}")
    if height * width > max_pixels:
        raise ImageConversionError(f"image {width}x{height} has {height * width} pixels, more than the limit of "
                                   f"{max_pixels} (max_image_pixels): send a smaller image")


def compressed_dimensions(data, fmt: str = "") -> Tuple[int, int]:
    """(height, width) from a JPEG/PNG header, without decoding the pixels."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageConversionError(f"compressed image (format '{fmt}') could not be decoded: "
                                   f"{type(e).__name__}") from None
    return int(height), int(width)


def decode(height: int, width: int, encoding: str, step: int, data, is_bigendian: bool = False,
           max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Image message fields -> array of shape (H, W) or (H, W, C); a view on ``data`` where possible.

    ``data`` must be exactly ``step * height`` bytes (as sensor_msgs/Image defines it): shorter or
    longer data is refused, so is an image with more than ``max_pixels`` pixels."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding '{encoding}'; supported: {', '.join(ENCODINGS)}")
    check_pixels(height, width, max_pixels)
    dtype, channels = ENCODINGS[encoding]
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageConversionError(f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)")
    buf = np.frombuffer(memoryview(data).cast("B") if not isinstance(data, np.ndarray) else data.view(np.uint8),
                        dtype=np.uint8)
    need = step * height
    if buf.size != need:
        raise ImageConversionError(f"image data has {buf.size} bytes; {width}x{height} {encoding} with step {step} "
                                   f"needs exactly {need} (step x height)")
    if step == row_bytes:
        raw = buf[:height * row_bytes]
    else:  # drop the row padding
        raw = np.ascontiguousarray(np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1)))
    wire = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    arr = raw.view(wire).reshape(height, width, channels)
    if not wire.isnative:
        arr = arr.astype(wire.newbyteorder("="))
    return arr[:, :, 0] if channels == 1 else arr


def mono_problem(encoding: str, accept_mono: bool) -> Optional[str]:
    """Why a frame of ``encoding`` must not reach a colour policy, or None. Single-channel frames (a grey
    or infrared stream, often the wrong topic: camera/infra1/image_rect_raw is mono8) are refused unless
    ``accept_mono`` (a policy trained on grey frames repeated into RGB)."""
    if encoding in MONO_ENCODINGS and not accept_mono:
        return (f"encoding '{encoding}' has one channel (a grey or infrared image) but the policy takes colour; "
                f"subscribe to the colour stream, or set accept_mono to feed grey frames as RGB")
    return None


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """Any colour or mono image (as returned by ``decode``) -> contiguous uint8 (H, W, 3) RGB."""
    if encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(f"encoding '{encoding}' is not a colour image (depth?); the policy needs colour: "
                                   f"one of {', '.join(COLOR_ENCODINGS)}")
    img = image
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if encoding.startswith("bgr"):
        img = img[:, :, 2::-1]
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def encode(image: np.ndarray, encoding: str) -> Tuple[int, bytes]:
    """Array -> (step, data) for an Image message of ``encoding`` (little endian, no padding)."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding '{encoding}'")
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(image)
    shape_ok = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if not shape_ok or arr.dtype != dtype:
        raise ImageConversionError(f"{encoding} needs {np.dtype(dtype).name} with {channels} channel(s), "
                                   f"got {arr.dtype} {arr.shape}")
    arr = np.ascontiguousarray(arr.astype(np.dtype(dtype).newbyteorder("<"), copy=False))
    return arr.shape[1] * channels * arr.itemsize, arr.tobytes()


def decode_compressed(fmt: str, data, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ...) -> uint8 (H, W, 3) RGB. The size in the header is
    checked against ``max_pixels`` before the pixels are decoded."""
    import cv2

    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size == 0:
        raise ImageConversionError("compressed image has no data")
    check_pixels(*compressed_dimensions(buf, fmt), max_pixels)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageConversionError(f"compressed image (format '{fmt}') could not be decoded")
    return np.ascontiguousarray(img[:, :, ::-1])


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    import cv2

    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt.split(";")[0].strip().lower())
    if ext is None:
        raise ImageConversionError(f"unsupported compressed format '{fmt}' (jpeg or png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ImageConversionError(f"could not encode {fmt}")
    return buf.tobytes()
