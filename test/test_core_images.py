# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""cosmos3_ros.core.images: every raw encoding against a hand-built expected array, every rejection reason."""

from __future__ import annotations

import array
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cosmos3_ros.core.images import (
    RAW_ENCODINGS,
    REJECT_REASONS,
    ImageDecodeError,
    decode_compressed,
    decode_raw,
    encode_rgb8,
)

H, W = 3, 4


@pytest.fixture
def rgb() -> np.ndarray:
    """A 3x4 RGB image whose every byte differs."""
    return np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3) * 3 + 1


def _pad_rows(rows: np.ndarray, pad: int) -> bytes:
    """``rows`` (H x row_bytes uint8) with ``pad`` junk bytes after each row."""
    junk = np.full((rows.shape[0], pad), 0xEE, dtype=np.uint8)
    return np.concatenate([rows, junk], axis=1).tobytes()


def _encode(image: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _reason(exc_info: pytest.ExceptionInfo) -> str:
    assert isinstance(exc_info.value, ValueError)
    return exc_info.value.reason


# ---------------------------------------------------------------- raw: colour


def test_rgb8_is_a_zero_copy_view(rgb):
    data = array.array("B", rgb.tobytes())  # what rclpy hands over
    out = decode_raw(memoryview(data), "rgb8", W, H, W * 3, 0)
    np.testing.assert_array_equal(out, rgb)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.shares_memory(out, np.frombuffer(data, dtype=np.uint8))


@pytest.mark.parametrize("encoding", ["bgr8", "8UC3"])
def test_bgr8_reverses_channels(rgb, encoding):
    bgr = rgb[..., ::-1]
    out = decode_raw(bgr.tobytes(), encoding, W, H, W * 3, 0)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous
    # Spelled out for one pixel: bytes (b, g, r) become (r, g, b).
    assert tuple(out[0, 0]) == (rgb[0, 0, 0], rgb[0, 0, 1], rgb[0, 0, 2])
    assert tuple(bgr.tobytes()[:3]) == (rgb[0, 0, 2], rgb[0, 0, 1], rgb[0, 0, 0])


def test_rgba8_drops_alpha(rgb):
    rgba = np.concatenate([rgb, np.full((H, W, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_raw(rgba.tobytes(), "rgba8", W, H, W * 4, 0), rgb)


def test_bgra8_reverses_channels_and_drops_alpha(rgb):
    bgra = np.concatenate([rgb[..., ::-1], np.full((H, W, 1), 7, np.uint8)], axis=2)
    out = decode_raw(bgra.tobytes(), "bgra8", W, H, W * 4, 0)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous


# ---------------------------------------------------------------- raw: grey and depth


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_is_replicated(encoding):
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W) * 20
    out = decode_raw(grey.tobytes(), encoding, W, H, W, 0)
    assert out.shape == (H, W, 3) and out.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


@pytest.mark.parametrize("big", [0, 1])
def test_mono16_takes_the_high_byte_in_either_byte_order(big):
    values = np.array([[0, 255, 256, 0x1234], [0x7FFF, 0x8000, 0xFF00, 0xFFFF], [1, 511, 0xABCD, 0x00FF]], np.uint16)
    data = values.astype(">u2" if big else "<u2").tobytes()
    out = decode_raw(data, "mono16", 4, 3, 8, big)
    expected = np.array([[0, 0, 1, 0x12], [0x7F, 0x80, 0xFF, 0xFF], [0, 1, 0xAB, 0]], np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)


@pytest.mark.parametrize("big", [0, 1])
def test_16uc1_is_depth_clipped_and_scaled(big):
    values = np.array([[0, 5000, 10000, 20000], [39, 40, 60000, 9999]], np.uint16)
    data = values.astype(">u2" if big else "<u2").tobytes()
    out = decode_raw(data, "16UC1", 4, 2, 8, big)
    # round(min(v, 10000) * 255 / 10000): 5000 -> 127.5 -> 128, 39 -> 0.99 -> 1, 40 -> 1.02 -> 1.
    expected = np.array([[0, 128, 255, 255], [1, 1, 255, 255]], np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)


def test_16uc1_max_depth_is_a_parameter():
    values = np.array([[0, 500, 1000, 4000]], np.uint16)
    out = decode_raw(values.tobytes(), "16UC1", 4, 1, 8, 0, max_depth_mm=1000)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255, 255])
    with pytest.raises(ValueError, match="max_depth_mm"):
        decode_raw(values.tobytes(), "16UC1", 4, 1, 8, 0, max_depth_mm=0)


# ---------------------------------------------------------------- raw: padding, buffers


@pytest.mark.parametrize(
    ("encoding", "bpp"), [("rgb8", 3), ("bgr8", 3), ("rgba8", 4), ("bgra8", 4), ("mono8", 1), ("mono16", 2)]
)
@pytest.mark.parametrize("pad", [1, 13])
def test_row_padding_is_skipped(rgb, encoding, bpp, pad):
    unpadded = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, np.zeros((H, W, 1), np.uint8)], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], np.zeros((H, W, 1), np.uint8)], axis=2),
        "mono8": rgb[..., 0],
        "mono16": np.stack([np.zeros((H, W), np.uint8), rgb[..., 0]], axis=-1),  # little endian: low, high
    }[encoding]
    rows = np.ascontiguousarray(unpadded).reshape(H, W * bpp)
    out = decode_raw(_pad_rows(rows, pad), encoding, W, H, W * bpp + pad, 0)
    expected = rgb if encoding in ("rgb8", "bgr8", "rgba8", "bgra8") else np.repeat(rgb[..., :1], 3, axis=2)
    np.testing.assert_array_equal(out, expected)
    assert out.flags.c_contiguous


def test_16uc1_with_odd_padding_big_endian():
    values = np.array([[0, 2500, 10000], [7500, 5000, 1]], np.uint16)
    rows = values.astype(">u2").view(np.uint8).reshape(2, 6)
    out = decode_raw(_pad_rows(rows, 3), "16UC1", 3, 2, 9, 1)
    np.testing.assert_array_equal(out[..., 2], [[0, 64, 255], [191, 128, 0]])


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8)],
    ids=["bytes", "bytearray", "memoryview", "array", "ndarray"],
)
def test_any_buffer_type(rgb, wrap):
    np.testing.assert_array_equal(decode_raw(wrap(rgb[..., ::-1].tobytes()), "bgr8", W, H, W * 3, 0), rgb)


def test_typed_ndarray_is_read_as_its_bytes():
    values = np.array([[0x0102, 0xFF00]], np.uint16)  # native (little-endian on every supported host)
    out = decode_raw(values, "mono16", 2, 1, 4, 0)
    np.testing.assert_array_equal(out[0, :, 0], [1, 0xFF])


# ---------------------------------------------------------------- raw: rejections


@pytest.mark.parametrize(
    ("kwargs", "reason", "named"),
    [
        ({"encoding": "yuv422"}, "encoding", "yuv422"),
        ({"encoding": "32FC1"}, "encoding", "32FC1"),
        ({"encoding": ""}, "encoding", "''"),
        ({"width": 0}, "size", "width"),
        ({"height": 0}, "size", "height"),
        ({"width": -4}, "size", "-4"),
        ({"step": 11}, "step", "11"),
        ({"step": 0}, "step", "step 0"),
        ({"data": b""}, "empty", "empty"),
        ({"data": bytes(35)}, "truncated", "35"),
        ({"data": bytes(37)}, "size", "37"),
        ({"data": bytes(12 * 3 - 1), "step": 12}, "truncated", "35"),
    ],
)
def test_malformed_raw_is_rejected(rgb, kwargs, reason, named):
    args = {"data": rgb.tobytes(), "encoding": "rgb8", "width": W, "height": H, "step": W * 3, "is_bigendian": 0}
    args.update(kwargs)
    with pytest.raises(ImageDecodeError) as exc_info:
        decode_raw(**args)
    assert _reason(exc_info) == reason
    assert named in str(exc_info.value)


def test_padding_counts_towards_the_needed_length(rgb):
    rows = rgb.reshape(H, W * 3)
    data = _pad_rows(rows, 4)
    with pytest.raises(ImageDecodeError) as exc_info:
        decode_raw(data[:-1], "rgb8", W, H, W * 3 + 4, 0)
    assert _reason(exc_info) == "truncated"


def test_every_reason_is_known_and_unknown_reasons_are_refused():
    assert len(set(REJECT_REASONS)) == len(REJECT_REASONS)
    with pytest.raises(ValueError, match="unknown reject reason"):
        ImageDecodeError("nope", "x")
    assert set(RAW_ENCODINGS) >= {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "8UC3", "8UC1"}


# ---------------------------------------------------------------- compressed


@pytest.fixture
def smooth() -> np.ndarray:
    """A 48x64 smooth RGB image (JPEG keeps it within a few levels)."""
    y, x = np.mgrid[0:48, 0:64]
    return np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", "JPEG", ""])
def test_jpeg_decodes(smooth, fmt):
    out = decode_compressed(_encode(smooth, "JPEG", quality=95), fmt)
    assert out.shape == smooth.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 2.0


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", ""])
def test_png_decodes_exactly(smooth, fmt):
    np.testing.assert_array_equal(decode_compressed(_encode(smooth, "PNG"), fmt), smooth)


def test_grey_and_alpha_pngs_become_rgb(smooth):
    grey = smooth[..., 0]
    np.testing.assert_array_equal(
        decode_compressed(_encode(grey, "PNG"), "mono8; png compressed mono8"), np.repeat(grey[..., None], 3, axis=2)
    )
    rgba = np.concatenate([smooth, np.full((48, 64, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_compressed(_encode(rgba, "PNG"), "png"), smooth)


def test_16bit_png_takes_the_mono16_rule():
    values = np.array([[0, 255, 256, 0xFFFF], [0x1234, 0x8000, 0xABCD, 511]], np.uint16)
    out = decode_compressed(_encode(values, "PNG"), "mono16; png compressed mono16")
    np.testing.assert_array_equal(out[..., 1], [[0, 0, 1, 0xFF], [0x12, 0x80, 0xAB, 1]])


def test_compressed_accepts_rclpy_buffers(smooth):
    data = _encode(smooth, "PNG")
    np.testing.assert_array_equal(decode_compressed(memoryview(array.array("B", data)), "png"), smooth)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg_is_rejected(smooth, cut):
    data = _encode(smooth, "JPEG", quality=95)
    with pytest.raises(ImageDecodeError) as exc_info:
        decode_compressed(data[: int(len(data) * cut)], "jpeg")
    assert _reason(exc_info) == "truncated"


def test_truncated_png_is_rejected(smooth):
    data = _encode(smooth, "PNG")
    with pytest.raises(ImageDecodeError) as exc_info:
        decode_compressed(data[: len(data) // 2], "png")
    assert _reason(exc_info) == "truncated"


def test_corrupt_png_is_rejected(smooth):
    data = bytearray(_encode(smooth, "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = bytes(32)  # zeroed deflate stream
    with pytest.raises(ImageDecodeError) as exc_info:
        decode_compressed(bytes(data), "png")
    assert _reason(exc_info) in ("corrupt", "truncated")


@pytest.mark.parametrize(
    ("fmt", "payload", "reason", "named"),
    [
        ("bmp", "png", "format", "bmp"),
        ("rgb8; tiff compressed rgb8", "png", "format", "tiff"),
        ("16UC1; compressedDepth png", "png", "format", "compressedDepth"),
        ("jpeg", "png", "format", "PNG"),
        ("png", "jpeg", "format", "JPEG"),
        ("jpeg", "garbage", "format", "neither"),
        ("", "garbage", "format", "neither"),
        ("jpeg", "empty", "empty", "empty"),
    ],
)
def test_malformed_compressed_is_rejected(smooth, fmt, payload, reason, named):
    data = {
        "png": _encode(smooth, "PNG"),
        "jpeg": _encode(smooth, "JPEG"),
        "garbage": b"GIF89a" + bytes(40),
        "empty": b"",
    }[payload]
    with pytest.raises(ImageDecodeError) as exc_info:
        decode_compressed(data, fmt)
    assert _reason(exc_info) == reason
    assert named in str(exc_info.value)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` RGB pixels and carries almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("side", "named"), [(5000, "5000x5000"), (100_000, "too large")])
def test_decompression_bomb_is_refused_from_the_header(side, named):
    # 5000^2 = 25 Mpixel passes PIL's own limits and meets ours; 10^10 pixels meets PIL's hard limit first.
    with pytest.raises(ImageDecodeError) as exc_info:
        decode_compressed(_png_header_only(side, side), "png")
    assert _reason(exc_info) == "too_large"
    assert named in str(exc_info.value)


def test_max_pixels_is_a_parameter(smooth):
    data = _encode(smooth, "PNG")
    with pytest.raises(ImageDecodeError) as exc_info:
        decode_compressed(data, "png", max_pixels=48 * 64 - 1)
    assert _reason(exc_info) == "too_large" and "3072" in str(exc_info.value)
    assert decode_compressed(data, "png", max_pixels=48 * 64).shape == (48, 64, 3)


# ---------------------------------------------------------------- encode


def test_encode_rgb8_round_trips(rgb):
    data, width, height, step = encode_rgb8(rgb[:, ::-1])  # a non-contiguous view is packed
    assert (width, height, step) == (W, H, W * 3)
    assert isinstance(data, bytes) and len(data) == step * height
    np.testing.assert_array_equal(decode_raw(data, "rgb8", width, height, step, 0), rgb[:, ::-1])


@pytest.mark.parametrize("bad", [np.zeros((2, 2), np.uint8), np.zeros((2, 2, 3), np.float32), "x"])
def test_encode_rgb8_refuses_non_rgb(bad):
    with pytest.raises(ValueError):
        encode_rgb8(bad)
