"""sensor_msgs/CompressedImage (jpeg, png) <-> numpy; needs OpenCV, so it lives outside tests/pure."""
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from lapa_ros.core.images import ImageConversionError, decode_compressed, encode_compressed  # noqa: E402


def gradient(h=48, w=64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], axis=2).astype(np.uint8)


def test_png_round_trip_is_lossless_and_rgb_ordered():
    rgb = gradient()
    data = encode_compressed(rgb, "png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out = decode_compressed("png", data)
    assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_round_trip_is_close_and_keeps_channel_order():
    rgb = gradient()
    out = decode_compressed("jpeg", encode_compressed(rgb, "jpeg", quality=95))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3.0
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    decoded = decode_compressed("jpeg", encode_compressed(red, "jpg"))
    assert decoded[..., 0].mean() > 240 and decoded[..., 2].mean() < 15  # red stays in channel 0


def test_format_string_from_image_transport_is_accepted():
    rgb = gradient()
    data = encode_compressed(rgb, "png")
    # compressed_image_transport writes "<encoding>; <codec> compressed <encoding>"; decoding sniffs the bytes.
    np.testing.assert_array_equal(decode_compressed("rgb8; png compressed bgr8", data), rgb)


def test_grayscale_png_decodes_to_three_channels():
    ok, buf = cv2.imencode(".png", np.full((8, 8), 77, np.uint8))
    out = decode_compressed("png", buf.tobytes())
    assert out.shape == (8, 8, 3) and np.all(out == 77)


def test_empty_compressed_data_is_refused():
    with pytest.raises(ImageConversionError, match="no data"):
        decode_compressed("jpeg", b"")


def test_garbage_compressed_data_is_refused():
    with pytest.raises(ImageConversionError, match="format 'jpeg'.*could not be decoded"):
        decode_compressed("jpeg", b"\x00\x01\x02 not an image")


def test_unsupported_compressed_format_is_refused():
    with pytest.raises(ImageConversionError, match="unsupported compressed format 'webp'"):
        encode_compressed(gradient(), "webp")
