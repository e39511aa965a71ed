# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Tile several camera frames into the one image Cosmos 3 takes with ``view_point="concat_view"``.

Pure image work: numpy and PIL, no ROS. Frames are HxWx3 uint8 RGB; ``order`` lists the cameras to use, first
camera first (frames of cameras not in ``order`` are ignored). :func:`plan` works out where every camera goes
from the frame sizes alone; :func:`compose` resizes each frame once, straight to its place, and fills the canvas.
The plan also tells a consumer where each camera sits in the composite (to cut a predicted composite back into
camera views, say).

Sizes scale with aspect ratio preserved; a scaled length is ``max(1, round(length * factor))``, rounded half
up. Resampling is PIL bilinear, skipped when the size does not change, so equal-size cameras tile bit-exactly.

Layouts (``H0 x W0`` is the first camera's height x width):

``single``
    Exactly one camera; its frame is returned as is (no copy).
``side_by_side``
    Every camera scaled to height ``H0``, then placed left to right in ``order``. Canvas ``H0 x sum(widths)``.
``grid``
    ``cols = ceil(sqrt(n))`` columns, ``rows = ceil(n / cols)`` rows of ``H0 x W0`` cells, filled row by row
    in ``order``. Each camera is scaled to the largest size that fits its cell and centered in it (offsets
    ``(H0 - h) // 2`` and ``(W0 - w) // 2``); the rest of the cell, and any unused cell, is black. Canvas
    ``rows * H0 x cols * W0``.
``wrist_top``
    DROID-style, at least two cameras. The first camera is the wrist camera; the remaining cameras form a
    bottom row laid out exactly as ``side_by_side`` (common height = the second camera's height ``Hb``,
    total width ``Wb``). The wrist frame is scaled to width ``Wb`` (its height ``Ht`` follows its aspect),
    so it spans, and is centered over, the whole row. Canvas ``(Ht + Hb) x Wb``, wrist rows first.

``droid``
    Exactly NVIDIA's composition for its released DROID policy (cosmos-framework's
    ``action_policy_server_robolab.py``): three cameras, wrist first, then the two exterior cameras. The wrist frame
    stays at its own size ``H x W`` on top; each exterior frame is resized to ``H//2 x W//2`` and they sit side by
    side below; the ``(H + H//2) x W`` composite is then resized to 540 x 640 unless it already is (a 360x640 wrist
    and two 180x320 exteriors compose to exactly that). Resizing is bilinear with half-pixel centres and no
    antialiasing, truncated to uint8, as ``torch.nn.functional.interpolate(..., "bilinear", align_corners=False)``
    followed by ``.astype(uint8)`` does there (tests check against torch: exact for the native sizes, elsewhere
    at most one level apart on under 0.1% of pixels, where float rounding lands next to an integer).

``max_height`` (optional): when the canvas is taller, the whole plan is scaled by ``max_height / H`` (every tile
edge rounded half up, so tiles stay edge to edge) and each frame is resized once to its final size. Cosmos 3
downscales its input to the resolution tier anyway, so passing the tier here saves the work of composing
large and shrinking after (an upscaled wrist camera, for one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from cosmos3_ros.core.settings import validate_image

#: Layout names ``compose`` accepts.
LAYOUTS: tuple[str, ...] = ("single", "side_by_side", "grid", "wrist_top", "droid")
#: Size NVIDIA's DROID server resizes its composite to (height, width).
DROID_SIZE: tuple[int, int] = (540, 640)


@dataclass(frozen=True)
class Tile:
    """Where camera ``name`` sits in the composite: rows ``top:top+height``, columns ``left:left+width``."""

    name: str
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class Plan:
    """A composite of ``height x width`` pixels and the tile of every camera, in ``order``."""

    height: int
    width: int
    tiles: tuple[Tile, ...]


def _scaled(length: int, num: int, den: int) -> int:
    """``max(1, round(length * num / den))``, rounded half up, in integers."""
    return max(1, (2 * length * num + den) // (2 * den))


def _row(names: list[str], sizes: Mapping[str, tuple[int, int]], height: int) -> list[Tile]:
    """``names`` scaled to ``height`` and placed left to right from the top left corner."""
    tiles, left = [], 0
    for name in names:
        h, w = sizes[name]
        width = _scaled(w, height, h)
        tiles.append(Tile(name, 0, left, height, width))
        left += width
    return tiles


def _grid(names: list[str], sizes: Mapping[str, tuple[int, int]]) -> Plan:
    cell_h, cell_w = sizes[names[0]]
    cols = math.ceil(math.sqrt(len(names)))
    rows = math.ceil(len(names) / cols)
    tiles = []
    for i, name in enumerate(names):
        h, w = sizes[name]
        if w * cell_h >= h * cell_w:  # relatively wider than the cell: the width binds
            fh, fw = min(cell_h, _scaled(h, cell_w, w)), cell_w
        else:
            fh, fw = cell_h, min(cell_w, _scaled(w, cell_h, h))
        top = (i // cols) * cell_h + (cell_h - fh) // 2
        left = (i % cols) * cell_w + (cell_w - fw) // 2
        tiles.append(Tile(name, top, left, fh, fw))
    return Plan(rows * cell_h, cols * cell_w, tuple(tiles))


def _shrink(p: Plan, max_height: int) -> Plan:
    """``p`` scaled by ``max_height / p.height``: tile edges rounded half up, so neighbours stay edge to edge."""

    def f(x: int) -> int:
        return (2 * x * max_height + p.height) // (2 * p.height)

    height, width = max_height, max(1, f(p.width))
    tiles = []
    for t in p.tiles:
        top, left = min(f(t.top), height - 1), min(f(t.left), width - 1)
        tiles.append(Tile(t.name, top, left, max(1, f(t.top + t.height) - top), max(1, f(t.left + t.width) - left)))
    return Plan(height, width, tuple(tiles))


def plan(
    sizes: Mapping[str, tuple[int, int]], order: Sequence[str], layout: str, *, max_height: int | None = None
) -> Plan:
    """Where each camera of ``order`` goes, from ``sizes[name] = (height, width)``; see the module doc.

    Raises ValueError naming the problem: an unknown layout, an empty or repeated ``order``, a camera missing
    from ``sizes``, a camera count the layout does not take, a ``max_height`` below 1.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} unknown; expected one of {list(LAYOUTS)}")
    if isinstance(order, str):
        raise ValueError(f"order must be a sequence of camera names, got the string {order!r}")
    names = list(order)
    if not names:
        raise ValueError("order names no camera")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"order names cameras more than once: {repeated}")
    missing = [n for n in names if n not in sizes]
    if missing:
        raise ValueError(f"no frame for camera(s) {missing}; have {sorted(sizes)}")
    if max_height is not None and max_height < 1:
        raise ValueError(f"max_height must be >= 1, got {max_height!r}")

    if layout == "single":
        if len(names) != 1:
            raise ValueError(f"layout 'single' takes exactly one camera, got {len(names)}: {names}")
        h, w = sizes[names[0]]
        p = Plan(h, w, (Tile(names[0], 0, 0, h, w),))
    elif layout == "side_by_side":
        row = _row(names, sizes, sizes[names[0]][0])
        p = Plan(row[0].height, row[-1].left + row[-1].width, tuple(row))
    elif layout == "grid":
        p = _grid(names, sizes)
    elif layout == "droid":
        if len(names) != 3:
            raise ValueError(f"layout 'droid' takes exactly three cameras (wrist, exterior 1, exterior 2), got {names}")
        h, w = sizes[names[0]]
        hh, hw = h // 2, w // 2
        tiles = (Tile(names[0], 0, 0, h, w), Tile(names[1], h, 0, hh, hw), Tile(names[2], h, hw, hh, hw))
        p = Plan(h + hh, w, tiles)
    else:  # wrist_top
        if len(names) < 2:
            raise ValueError(f"layout 'wrist_top' takes a wrist camera and at least one more, got {names}")
        row = _row(names[1:], sizes, sizes[names[1]][0])
        row_width = row[-1].left + row[-1].width
        h, w = sizes[names[0]]
        wrist_h = _scaled(h, row_width, w)
        wrist = Tile(names[0], 0, 0, wrist_h, row_width)
        p = Plan(wrist_h + row[0].height, row_width, (wrist, *(replace(t, top=wrist_h) for t in row)))
    return _shrink(p, max_height) if max_height is not None and p.height > max_height else p


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` resized to ``height x width`` with PIL bilinear; the same array when the size already matches."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def resize_bilinear_truncating(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` resized like ``F.interpolate(float(x), (height, width), mode="bilinear", align_corners=False)``
    then ``.astype(uint8)`` (half-pixel centres, no antialiasing, truncation): NVIDIA's DROID preprocessing."""
    in_h, in_w = image.shape[:2]
    if (in_h, in_w) == (height, width):
        return image

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(n_in / n_out)
        src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
        i0 = np.minimum(src.astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        frac = (src - i0).astype(np.float32)
        return i0, i1, frac

    y0, y1, fy = axis(height, in_h)
    x0, x1, fx = axis(width, in_w)
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bottom = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    return out.astype(np.uint8)


def compose(
    frames: Mapping[str, np.ndarray], order: Sequence[str], layout: str, *, max_height: int | None = None
) -> np.ndarray:
    """Tile ``frames[name] for name in order`` into one HxWx3 uint8 RGB frame with ``layout`` (see the module doc).

    Raises ValueError naming the problem: everything :func:`plan` refuses, and a frame that is not HxWx3 uint8.
    """
    names = [] if isinstance(order, str) else list(order)  # plan() refuses a string order
    sizes = {n: validate_image(frames[n], name=f"frame of camera {n!r}").shape[:2] for n in names if n in frames}
    p = plan(sizes, order, layout, max_height=max_height)
    if layout == "single" and (p.height, p.width) == sizes[names[0]]:
        return frames[names[0]]
    canvas = np.zeros((p.height, p.width, 3), dtype=np.uint8)
    fit = resize_bilinear_truncating if layout == "droid" else resize
    for t in p.tiles:
        canvas[t.top : t.top + t.height, t.left : t.left + t.width] = fit(frames[t.name], t.height, t.width)
    if layout == "droid":
        return resize_bilinear_truncating(canvas, *DROID_SIZE)
    return canvas
