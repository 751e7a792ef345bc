"""sensor_msgs/Image <-> numpy without cv_bridge: round trips, padding, byte order, bad messages."""
import array

import numpy as np
import pytest

from lapa_ros.core import images
from lapa_ros.core.images import ENCODINGS, ImageConversionError, decode, encode, to_rgb8

H, W = 3, 5


def sample(encoding: str) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(0)
    shape = (H, W) if channels == 1 else (H, W, channels)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1",
                                      "8UC1", "8UC3", "8UC4", "rgb16", "bgr16"])
def test_encode_decode_round_trip(encoding):
    image = sample(encoding)
    step, data = encode(image, encoding)
    assert step == W * image.itemsize * (1 if image.ndim == 2 else image.shape[2])
    assert len(data) == step * H
    out = decode(H, W, encoding, step, data)
    assert out.dtype == image.dtype and out.shape == image.shape
    np.testing.assert_array_equal(out, image)


def test_padded_rows_are_dropped():
    image = sample("rgb8")
    row = W * 3
    step = row + 7  # drivers pad rows to an alignment
    data = b"".join(image[r].tobytes() + b"\xAA" * 7 for r in range(H))
    out = decode(H, W, "rgb8", step, data)
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("extra", [-4, -1, 1, 4096])
def test_data_must_be_exactly_step_times_height(extra):
    """sensor_msgs/Image: data is step * height bytes; a shorter or longer buffer is refused."""
    image = sample("mono16")
    step = W * 2 + 4
    data = b"".join(image[r].tobytes() + b"\0" * 4 for r in range(H))
    np.testing.assert_array_equal(decode(H, W, "mono16", step, data), image)
    bad = data[:extra] if extra < 0 else data + b"\0" * extra
    with pytest.raises(ImageConversionError, match="exactly"):
        decode(H, W, "mono16", step, bad)


def test_pixel_limit_is_checked_before_the_data():
    with pytest.raises(ImageConversionError, match="max_image_pixels"):
        decode(4096, 4096, "rgb8", 4096 * 3, b"", max_pixels=1920 * 1080)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1", "rgb16"])
def test_big_endian_data_is_converted_to_native(encoding):
    image = sample(encoding)
    data = image.astype(image.dtype.newbyteorder(">")).tobytes()
    step = len(data) // H
    out = decode(H, W, encoding, step, data, is_bigendian=True)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, image)


def test_big_endian_flag_is_meaningful():
    image = np.array([[1, 256]], dtype=np.uint16)
    out = decode(1, 2, "mono16", 4, image.astype("<u2").tobytes(), is_bigendian=True)
    np.testing.assert_array_equal(out, [[256, 1]])


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: array.array("B", b),
                                  lambda b: np.frombuffer(b, dtype=np.uint8)])
def test_accepts_the_buffer_types_messages_carry(wrap):
    image = sample("bgr8")
    step, data = encode(image, "bgr8")
    np.testing.assert_array_equal(decode(H, W, "bgr8", step, wrap(data)), image)


def test_unpadded_decode_is_a_view_without_copy():
    data = np.arange(H * W * 3, dtype=np.uint8)
    out = decode(H, W, "rgb8", W * 3, data)
    assert np.shares_memory(out, data)


def test_to_rgb8_converts_every_colour_encoding():
    rgb = sample("rgb8")
    np.testing.assert_array_equal(to_rgb8(rgb, "rgb8"), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb[:, :, ::-1], "bgr8"), rgb)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb8(rgba, "rgba8"), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((H, W, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb8(bgra, "bgra8"), rgb)
    mono = rgb[:, :, 0]
    np.testing.assert_array_equal(to_rgb8(mono, "mono8"), np.repeat(mono[:, :, None], 3, axis=2))
    mono16 = mono.astype(np.uint16) << 8 | 0xFF
    np.testing.assert_array_equal(to_rgb8(mono16, "mono16"), np.repeat(mono[:, :, None], 3, axis=2))
    out = to_rgb8(rgb[:, :, ::-1], "bgr8")
    assert out.dtype == np.uint8 and out.flags.c_contiguous


def test_to_rgb8_refuses_depth_images():
    with pytest.raises(ImageConversionError, match="'32FC1' is not a colour image"):
        to_rgb8(sample("32FC1"), "32FC1")
    with pytest.raises(ImageConversionError, match="16UC1"):
        to_rgb8(sample("16UC1"), "16UC1")


def test_empty_data_is_refused():
    with pytest.raises(ImageConversionError, match="has 0 bytes.*needs exactly 45"):
        decode(H, W, "rgb8", W * 3, b"")


def test_short_data_is_refused():
    with pytest.raises(ImageConversionError, match="has 44 bytes"):
        decode(H, W, "rgb8", W * 3, bytes(44))


def test_step_shorter_than_a_row_is_refused():
    with pytest.raises(ImageConversionError, match="step 10 is smaller than one row"):
        decode(H, W, "rgb8", 10, bytes(100))


@pytest.mark.parametrize("height, width", [(0, 5), (5, 0), (-1, 5)])
def test_invalid_size_is_refused(height, width):
    with pytest.raises(ImageConversionError, match="invalid image size"):
        decode(height, width, "mono8", max(width, 1), bytes(10))


def test_unknown_encoding_is_refused_with_the_supported_list():
    with pytest.raises(ImageConversionError, match="unsupported image encoding 'yuv422'.*rgb8.*32FC1"):
        decode(H, W, "yuv422", W * 2, bytes(100))
    with pytest.raises(ImageConversionError, match="unsupported image encoding 'yuv422'"):
        encode(sample("rgb8"), "yuv422")


@pytest.mark.parametrize("image, encoding", [
    (np.zeros((H, W, 3), np.float32), "rgb8"),
    (np.zeros((H, W), np.uint8), "rgb8"),
    (np.zeros((H, W, 3), np.uint8), "mono8"),
    (np.zeros((H, W), np.float64), "32FC1"),
])
def test_encode_refuses_wrong_dtype_or_channels(image, encoding):
    with pytest.raises(ImageConversionError, match=f"{encoding} needs"):
        encode(image, encoding)


def test_image_conversion_error_is_a_value_error():
    assert issubclass(ImageConversionError, ValueError)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1", "mono16"])
def test_single_channel_frames_are_refused_for_a_colour_policy_unless_accepted(encoding):
    problem = images.mono_problem(encoding, accept_mono=False)
    assert problem and f"'{encoding}' has one channel" in problem and "accept_mono" in problem
    assert images.mono_problem(encoding, accept_mono=True) is None


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "rgb16"])
def test_colour_frames_are_never_refused_as_mono(encoding):
    assert images.mono_problem(encoding, accept_mono=False) is None
