# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""cosmos3_ros.ros.convert on real sensor_msgs messages (no graph, no rclpy.init)."""

from __future__ import annotations

import array
import io
import time

import numpy as np
import pytest
from PIL import Image as PILImage

pytest.importorskip("sensor_msgs.msg", reason="needs the ROS 2 message packages")

from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from cosmos3_ros.core.images import DecodeOptions, ImageDecodeError
from cosmos3_ros.ros.convert import (
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    rgb_to_image_msg,
    sec_to_stamp,
    stamp_to_sec,
)

H, W = 6, 5


@pytest.fixture
def rgb() -> np.ndarray:
    return (np.arange(H * W * 3, dtype=np.uint32).reshape(H, W, 3) * 7 % 251).astype(np.uint8)


def image_msg(
    data: bytes, encoding: str, width: int = W, height: int = H, step: int | None = None, big: int = 0
) -> Image:
    bpp = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "mono16": 2, "16UC1": 2}
    msg = Image()
    msg.header.frame_id = "cam"
    msg.height, msg.width, msg.encoding, msg.is_bigendian = height, width, encoding, big
    msg.step = step if step is not None else width * bpp.get(encoding, 3)
    msg.data = array.array("B", data)
    return msg


def _grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _cases(rgb: np.ndarray) -> dict[str, tuple[bytes, int, np.ndarray]]:
    """encoding -> (data, is_bigendian, expected RGB)."""
    alpha = np.full((H, W, 1), 3, np.uint8)
    grey = rgb[..., 1]
    g16 = grey.astype(np.uint16) * 256 + 77  # high byte = grey
    depth = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 500  # 0 .. 14500 mm
    depth8 = ((np.minimum(depth, 10000).astype(np.uint32) * 255 + 5000) // 10000).astype(np.uint8)
    return {
        "rgb8": (rgb.tobytes(), 0, rgb),
        "bgr8": (rgb[..., ::-1].tobytes(), 0, rgb),
        "8UC3": (rgb[..., ::-1].tobytes(), 0, rgb),
        "rgba8": (np.concatenate([rgb, alpha], 2).tobytes(), 0, rgb),
        "bgra8": (np.concatenate([rgb[..., ::-1], alpha], 2).tobytes(), 0, rgb),
        "mono8": (grey.tobytes(), 0, _grey3(grey)),
        "8UC1": (grey.tobytes(), 0, _grey3(grey)),
        "mono16": (g16.astype("<u2").tobytes(), 0, _grey3(grey)),
        "mono16-be": (g16.astype(">u2").tobytes(), 1, _grey3(grey)),
        "16UC1": (depth.astype("<u2").tobytes(), 0, _grey3(depth8)),
        "16UC1-be": (depth.astype(">u2").tobytes(), 1, _grey3(depth8)),
    }


@pytest.mark.parametrize(
    "case", ["rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "mono16-be", "16UC1", "16UC1-be"]
)
def test_every_encoding_from_a_message(rgb, case):
    data, big, expected = _cases(rgb)[case]
    encoding = case.removesuffix("-be")
    out = image_msg_to_rgb(image_msg(data, encoding, big=big))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_padded_message_rows(rgb):
    rows = rgb[..., ::-1].reshape(H, W * 3)
    data = np.concatenate([rows, np.full((H, 9), 0xAB, np.uint8)], axis=1).tobytes()
    np.testing.assert_array_equal(image_msg_to_rgb(image_msg(data, "bgr8", step=W * 3 + 9)), rgb)


def test_rgb8_message_is_not_copied(rgb):
    msg = image_msg(rgb.tobytes(), "rgb8")
    out = image_msg_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_max_depth_is_passed_through():
    depth = np.array([[0, 1000, 2000]], np.uint16)
    out = image_msg_to_rgb(image_msg(depth.tobytes(), "16UC1", width=3, height=1), DecodeOptions(max_depth_mm=2000))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"encoding": "yuv422"}, "encoding"),
        ({"encoding": ""}, "encoding"),
        ({"width": 0}, "size"),
        ({"height": 0}, "size"),
        ({"step": W * 3 - 1}, "step"),
        ({"data": b""}, "empty"),
        ({"data": bytes(H * W * 3 - 1)}, "truncated"),
        ({"data": bytes(H * W * 3 + 1)}, "size"),
        ({"encoding": "mono16"}, "size"),  # rgb8-sized data under a 2-byte encoding: more than step * height
    ],
)
def test_malformed_messages_are_rejected(rgb, change, reason):
    args = {"data": rgb.tobytes(), "encoding": "rgb8", "width": W, "height": H, "step": None}
    args.update(change)
    msg = image_msg(args["data"], args["encoding"], args["width"], args["height"], args["step"])
    if "step" in change:
        msg.step = change["step"]
    with pytest.raises(ImageDecodeError) as exc_info:
        image_msg_to_rgb(msg)
    assert exc_info.value.reason == reason


# ---------------------------------------------------------------- compressed


def compressed_msg(image: np.ndarray, codec: str, fmt: str, **save) -> CompressedImage:
    buf = io.BytesIO()
    PILImage.fromarray(image).save(buf, codec, **save)
    msg = CompressedImage()
    msg.format = fmt
    msg.data = array.array("B", buf.getvalue())
    return msg


@pytest.fixture
def smooth() -> np.ndarray:
    y, x = np.mgrid[0:32, 0:48]
    return np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8"])
def test_jpeg_message(smooth, fmt):
    out = compressed_msg_to_rgb(compressed_msg(smooth, "JPEG", fmt, quality=95))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 2.0


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8"])
def test_png_message(smooth, fmt):
    np.testing.assert_array_equal(compressed_msg_to_rgb(compressed_msg(smooth, "PNG", fmt)), smooth)


def test_truncated_jpeg_message_is_rejected(smooth):
    msg = compressed_msg(smooth, "JPEG", "jpeg", quality=95)
    msg.data = msg.data[: len(msg.data) // 2]
    with pytest.raises(ImageDecodeError) as exc_info:
        compressed_msg_to_rgb(msg)
    assert exc_info.value.reason == "truncated"


@pytest.mark.parametrize(
    ("fmt", "reason"), [("16UC1; compressedDepth png", "format"), ("tiff", "format"), ("png", "format")]
)
def test_bad_compressed_messages_are_rejected(smooth, fmt, reason):
    msg = compressed_msg(smooth, "JPEG", fmt)  # a JPEG under every one of these formats
    with pytest.raises(ImageDecodeError) as exc_info:
        compressed_msg_to_rgb(msg)
    assert exc_info.value.reason == reason


def test_empty_and_oversized_compressed_messages(smooth):
    with pytest.raises(ImageDecodeError) as exc_info:
        compressed_msg_to_rgb(CompressedImage(format="jpeg"))
    assert exc_info.value.reason == "empty"
    with pytest.raises(ImageDecodeError) as exc_info:
        compressed_msg_to_rgb(compressed_msg(smooth, "PNG", "png"), DecodeOptions(max_pixels=100))
    assert exc_info.value.reason == "too_large"


# ---------------------------------------------------------------- publishing and time


def test_rgb_to_image_msg_round_trips(rgb):
    msg = rgb_to_image_msg(rgb, Time(sec=12, nanosec=500), "wrist")
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian) == ("rgb8", W, H, W * 3, 0)
    assert msg.header.frame_id == "wrist" and msg.header.stamp == Time(sec=12, nanosec=500)
    assert isinstance(msg.data, array.array) and len(msg.data) == H * W * 3
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_rgb_to_image_msg_takes_seconds_and_refuses_non_rgb(rgb):
    assert rgb_to_image_msg(rgb, 3.25, "c").header.stamp == Time(sec=3, nanosec=250_000_000)
    with pytest.raises(ValueError):
        rgb_to_image_msg(rgb[..., 0], 0.0, "c")


def test_published_message_survives_serialisation(rgb):
    from rclpy.serialization import deserialize_message, serialize_message

    msg = deserialize_message(serialize_message(rgb_to_image_msg(rgb, 1.5, "c")), Image)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    ("seconds", "sec", "nanosec"),
    [
        (0.0, 0, 0),
        (1.5, 1, 500_000_000),
        (1_700_000_000.25, 1_700_000_000, 250_000_000),
        (0.9999999999, 1, 0),  # rounds up into the next second
        (-0.25, -1, 750_000_000),
    ],
)
def test_stamp_conversions(seconds, sec, nanosec):
    stamp = sec_to_stamp(seconds)
    assert (stamp.sec, stamp.nanosec) == (sec, nanosec)
    assert stamp_to_sec(stamp) == pytest.approx(seconds, abs=1e-9 * max(1.0, abs(seconds)))


def test_stamp_to_sec_of_a_message_stamp():
    assert stamp_to_sec(Time(sec=7, nanosec=123_000_000)) == pytest.approx(7.123)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2.0**31, -(2.0**31) - 1])
def test_unrepresentable_stamps_are_refused(bad):
    with pytest.raises(ValueError):
        sec_to_stamp(bad)


def test_frames_are_capped_before_decoding_and_kept_at_what_the_tier_needs():
    big = np.zeros((600, 800, 3), np.uint8)
    opts = DecodeOptions(max_pixels=800 * 600, max_side=200)
    out = image_msg_to_rgb(image_msg(big.tobytes(), "rgb8", width=800, height=600), opts)
    assert out.shape == (150, 200, 3)
    jpeg = compressed_msg_to_rgb(compressed_msg(np.full((600, 800, 3), 90, np.uint8), "JPEG", "jpeg"), opts)
    assert jpeg.shape == (150, 200, 3) and abs(int(jpeg.mean()) - 90) <= 2
    png = compressed_msg_to_rgb(compressed_msg(np.full((600, 800, 3), 90, np.uint8), "PNG", "png"), opts)
    assert png.shape == (150, 200, 3)
    too_big = DecodeOptions(max_pixels=800 * 600 - 1)
    for msg in (image_msg(big.tobytes(), "rgb8", width=800, height=600), compressed_msg(big, "PNG", "png")):
        with pytest.raises(ImageDecodeError) as e:
            (image_msg_to_rgb if isinstance(msg, Image) else compressed_msg_to_rgb)(msg, too_big)
        assert e.value.reason == "too_large"
    small = np.zeros((60, 80, 3), np.uint8)
    assert image_msg_to_rgb(image_msg(small.tobytes(), "rgb8", width=80, height=60), opts).shape == (60, 80, 3)


def test_a_small_png_that_decodes_huge_is_refused_from_its_header():
    buf = io.BytesIO()
    PILImage.new("RGB", (4096, 4096)).save(buf, format="PNG")  # about 50 KB on the wire, 50 MB decoded
    msg = CompressedImage(format="png", data=buf.getvalue())
    assert len(msg.data) < 200_000
    t0 = time.perf_counter()
    with pytest.raises(ImageDecodeError) as e:
        compressed_msg_to_rgb(msg, DecodeOptions.for_tier(480, max_depth_mm=10000, max_pixels=3840 * 2160))
    assert e.value.reason == "too_large" and time.perf_counter() - t0 < 0.5  # never decoded
