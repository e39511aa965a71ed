# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Camera frames in, HxWx3 uint8 RGB out: the fields of ``sensor_msgs/Image`` and ``CompressedImage`` as plain values.

Pure: numpy and PIL only, no ROS imports. ``cosmos3_ros.ros.convert`` passes message fields here.

Raw encodings (``decode_raw``), and how each becomes RGB:

===============  ===========================================================================
``rgb8``         as is. Zero-copy: a view of ``data`` when rows are unpadded.
``bgr8``         channels reversed. ``8UC3`` is read as ``bgr8`` (as cv_bridge does).
``rgba8``        alpha dropped.
``bgra8``        channels reversed, alpha dropped.
``mono8``        replicated to three channels. ``8UC1`` is read as ``mono8``.
``mono16``       the high byte of each 16-bit value (``v >> 8``: 0..65535 maps linearly onto
                 0..255), replicated to three channels. ``is_bigendian`` is honoured.
``16UC1``        depth in millimetres (the REP 118 convention): clipped to ``[0, max_depth_mm]``
                 and scaled linearly, rounded to nearest, onto 0..255 (``0`` stays black, so
                 missing depth reads as "near"); replicated to three channels.
                 ``is_bigendian`` is honoured.
===============  ===========================================================================

Compressed images (``decode_compressed``): JPEG and PNG only, decoded with PIL. Grey, palette and alpha
images become RGB; 16-bit grey PNGs take the ``mono16`` rule above. ``compressedDepth`` payloads are refused.

Every malformed input raises :class:`ImageDecodeError`, a ``ValueError`` whose ``reason`` is one of
:data:`REJECT_REASONS`, so a node can count rejections per reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from cosmos3_ros.core.settings import validate_image

#: Why a frame was rejected. ``empty``: no data. ``encoding``: a raw encoding we do not decode.
#: ``size``: width or height not a positive integer, or more data than ``step * height``.
#: ``step``: a row stride shorter than one row of pixels. ``truncated``: less data than ``step * height``,
#: or a compressed stream that ends early. ``format``: a compressed format other than JPEG or PNG, or data
#: that is not what the format says. ``corrupt``: a JPEG or PNG stream PIL cannot decode.
#: ``too_large``: a compressed image with more pixels than allowed (decompression bomb guard).
REJECT_REASONS: tuple[str, ...] = ("empty", "encoding", "size", "step", "truncated", "format", "corrupt", "too_large")

#: Raw encodings ``decode_raw`` accepts, with their bytes per pixel.
RAW_ENCODINGS: dict[str, int] = {
    "rgb8": 3,
    "bgr8": 3,
    "8UC3": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "8UC1": 1,
    "mono16": 2,
    "16UC1": 2,
}

#: Depth (``16UC1``, millimetres) that maps to white.
DEFAULT_MAX_DEPTH_MM = 10_000

#: Largest compressed image ``decode_compressed`` decodes by default: 4096 x 4096 pixels.
DEFAULT_MAX_PIXELS = 4096 * 4096

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAGIC = {"jpeg": _JPEG_MAGIC, "png": _PNG_MAGIC}


@dataclass(frozen=True)
class DecodeOptions:
    """How camera frames are decoded: depth mapping, the largest frame accepted, the size frames are kept at."""

    max_depth_mm: int = DEFAULT_MAX_DEPTH_MM
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int | None = None

    @classmethod
    def for_tier(cls, image_size: int, *, max_depth_mm: int, max_pixels: int) -> DecodeOptions:
        """Options for a policy at resolution tier ``image_size``: frames kept at most 2 x the tier a side."""
        return cls(max_depth_mm=max_depth_mm, max_pixels=max_pixels, max_side=2 * image_size)


class ImageDecodeError(ValueError):
    """A frame that cannot be decoded: ``reason`` (one of :data:`REJECT_REASONS`) says why, the message says what."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {reason!r}; expected one of {list(REJECT_REASONS)}")
        super().__init__(message)
        self.reason = reason


def _as_bytes_view(data: Any) -> np.ndarray:
    """A flat uint8 view of any buffer (bytes, bytearray, memoryview, array.array, numpy array), without copying."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"image data must be a bytes-like buffer or numpy array, got {type(data).__name__}") from exc


def _check_dim(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ImageDecodeError("size", f"{name} must be a positive integer, got {value!r}")
    return int(value)


@lru_cache(maxsize=8)
def _depth_lut(max_depth_mm: int) -> np.ndarray:
    """uint8 value of every 16-bit depth: ``round(min(v, max) * 255 / max)``, read-only."""
    v = np.minimum(np.arange(65536, dtype=np.uint32), max_depth_mm)
    lut = ((v * 255 + max_depth_mm // 2) // max_depth_mm).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _pick(pixels: np.ndarray, channels: tuple[int, int, int]) -> np.ndarray:
    """A new C-contiguous HxWx3 array of ``pixels[..., channels]``.

    Stacking channel planes is several times faster than fancy indexing plus a contiguous copy.
    """
    return np.stack([pixels[..., c] for c in channels], axis=-1)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.stack((grey, grey, grey), axis=-1)


def decode_raw(
    data: bytes | memoryview | np.ndarray,
    encoding: str,
    width: int,
    height: int,
    step: int,
    is_bigendian: int = 0,
    *,
    max_depth_mm: int = DEFAULT_MAX_DEPTH_MM,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode the pixel buffer of a ``sensor_msgs/Image`` into a C-contiguous HxWx3 uint8 RGB array.

    Images of more than ``max_pixels`` pixels are refused (``too_large``) before any pixel is converted.

    ``data`` must hold exactly ``step * height`` bytes (the message definition); rows may be padded
    (``step > width * bytes_per_pixel``). For ``rgb8`` with unpadded rows the result is a view of ``data``
    (read-only when ``data`` is immutable); copy it before writing to it. Every other case returns a new array.
    See the module docstring for how each encoding maps to RGB. Raises :class:`ImageDecodeError`.
    """
    if isinstance(max_depth_mm, bool) or not isinstance(max_depth_mm, (int, np.integer)) or max_depth_mm <= 0:
        raise ValueError(f"max_depth_mm must be a positive integer, got {max_depth_mm!r}")
    bpp = RAW_ENCODINGS.get(encoding)
    if bpp is None:
        raise ImageDecodeError(
            "encoding", f"encoding {encoding!r} is not supported; expected one of {sorted(RAW_ENCODINGS)}"
        )
    w = _check_dim("width", width)
    h = _check_dim("height", height)
    if w * h > max_pixels:
        raise ImageDecodeError("too_large", f"image is {w}x{h} = {w * h} pixels, more than max_pixels {max_pixels}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < w * bpp:
        raise ImageDecodeError(
            "step", f"step {step!r} is not an integer of at least one row of {w} {encoding} pixels ({w * bpp} bytes)"
        )
    step = int(step)
    buf = _as_bytes_view(data)
    n = buf.size
    if n == 0:
        raise ImageDecodeError("empty", f"image data is empty ({w}x{h} {encoding})")
    expected = step * h
    if n < expected:
        raise ImageDecodeError(
            "truncated", f"image data has {n} bytes, {w}x{h} {encoding} with step {step} needs {expected}"
        )
    if n > expected:
        raise ImageDecodeError(
            "size", f"image data has {n} bytes, more than {expected} for {w}x{h} {encoding} with step {step}"
        )

    # Rows of exactly w * bpp bytes; still a view of data (row stride = step).
    rows = buf.reshape(h, step)[:, : w * bpp]

    if encoding == "rgb8":
        img = rows.reshape(h, w, 3)
        return img if step == w * 3 else np.ascontiguousarray(img)
    if encoding in ("bgr8", "8UC3"):
        return _pick(rows.reshape(h, w, 3), (2, 1, 0))
    if encoding == "rgba8":
        return _pick(rows.reshape(h, w, 4), (0, 1, 2))
    if encoding == "bgra8":
        return _pick(rows.reshape(h, w, 4), (2, 1, 0))
    if encoding in ("mono8", "8UC1"):
        return _grey_to_rgb(rows)
    if encoding == "mono16":
        # The high byte of each value, picked straight from the byte rows: no arithmetic.
        return _grey_to_rgb(rows[:, 0::2] if is_bigendian else rows[:, 1::2])
    # 16UC1: depth in millimetres, through a 65536-entry lookup table (np.take is the fast gather).
    depth = rows.view(">u2" if is_bigendian else "<u2")
    return _grey_to_rgb(np.take(_depth_lut(int(max_depth_mm)), depth))


def _compressed_kind(fmt: str) -> str | None:
    """``"jpeg"``, ``"png"``, ``None`` for an empty format, or raise: the codec named in a CompressedImage format."""
    text = fmt.strip().lower()
    if not text:
        return None
    if "compresseddepth" in text:
        raise ImageDecodeError("format", f"compressed format {fmt!r}: compressedDepth is not supported, only jpeg/png")
    # Either the bare codec ("jpeg", "png") or image_transport's "<encoding>; <codec> compressed <encoding>".
    codec_part = text.split(";", 1)[1] if ";" in text else text
    words = codec_part.replace(",", " ").split()
    if "jpeg" in words or "jpg" in words:
        return "jpeg"
    if "png" in words:
        return "png"
    raise ImageDecodeError("format", f"compressed format {fmt!r} is not supported; expected jpeg or png")


def decode_compressed(
    data: bytes | memoryview | np.ndarray,
    format: str,  # the sensor_msgs/CompressedImage field name
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` payload (JPEG or PNG) into a new HxWx3 uint8 RGB array.

    ``format`` is the message's format string as ROS publishes it: ``"jpeg"``, ``"png"``,
    ``"rgb8; jpeg compressed bgr8"``, ``"mono16; png compressed mono16"``, ... An empty format is allowed and
    the codec is read from the data's signature; a non-empty format must agree with the signature. Images with
    more than ``max_pixels`` pixels are refused from their header, before any pixel is decoded. With
    ``max_side``, a JPEG is decoded at a reduced scale where the codec can (1/2, 1/4, 1/8), and the result is
    downscaled to fit ``max_side`` (see :func:`fit_within`). Raises :class:`ImageDecodeError`.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels!r}")
    kind = _compressed_kind(format)
    buf = _as_bytes_view(data)
    if buf.size == 0:
        raise ImageDecodeError("empty", f"compressed image data is empty (format {format!r})")
    head = buf[:8].tobytes()
    sniffed = next((k for k, magic in _MAGIC.items() if head.startswith(magic)), None)
    if sniffed is None:
        raise ImageDecodeError(
            "format", f"compressed data (format {format!r}) starts with {head[:4].hex()}: neither a JPEG nor a PNG"
        )
    if kind is not None and sniffed != kind:
        raise ImageDecodeError("format", f"format {format!r} says {kind} but the data is a {sniffed.upper()}")

    try:
        with warnings.catch_warnings():
            # Our max_pixels check below replaces PIL's warning; PIL's own hard limit still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(buf), formats=[sniffed.upper()])
            w, h = im.size
            if w * h > max_pixels:
                raise ImageDecodeError(
                    "too_large", f"compressed image is {w}x{h} = {w * h} pixels, more than max_pixels {max_pixels}"
                )
            if max_side is not None and max(w, h) > max_side and sniffed == "jpeg":
                scale = max_side / max(w, h)
                im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))  # decode at 1/2, 1/4 or 1/8
            im.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_large", f"compressed image refused by PIL as too large: {exc}") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error... for bad streams
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageDecodeError(reason, f"cannot decode {sniffed.upper()} data ({buf.size} bytes): {exc}") from exc

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(im)
        if grey.dtype.itemsize > 2:  # mode "I" holds 16-bit PNG values in int32
            grey = np.clip(grey, 0, 65535)
        return _grey_to_rgb((grey >> 8).astype(np.uint8))
    if im.mode != "RGB":
        im = im.convert("RGB")
    return fit_within(np.asarray(im), max_side)


def decode_raw_with(
    data: bytes | memoryview | np.ndarray,
    encoding: str,
    width: int,
    height: int,
    step: int,
    is_bigendian: int,
    options: DecodeOptions,
) -> np.ndarray:
    """:func:`decode_raw` under ``options``' caps, kept at ``options.max_side`` (what the node and replay keep)."""
    rgb = decode_raw(
        data,
        encoding,
        width,
        height,
        step,
        is_bigendian,
        max_depth_mm=options.max_depth_mm,
        max_pixels=options.max_pixels,
    )
    return fit_within(rgb, options.max_side)


def fit_within(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` downscaled (area average) so that its longer side is at most ``max_side``; unchanged when it fits.

    Frames are kept at what the policy can use: the model's input is downscaled to the resolution tier anyway, so
    a 4K frame buffered at full size only costs memory.
    """
    if max_side is None:
        return image
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BOX))


def encode_rgb8(image: np.ndarray) -> tuple[bytes, int, int, int]:
    """Pack an HxWx3 uint8 RGB image for a ``sensor_msgs/Image`` (``rgb8``): ``(data, width, height, step)``."""
    validate_image(image)
    h, w = image.shape[:2]
    return np.ascontiguousarray(image).tobytes(), w, h, w * 3
