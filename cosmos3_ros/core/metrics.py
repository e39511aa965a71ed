# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The forecast-error metric between a predicted and a real frame. Pure numpy.

The metric
----------
Both frames are converted to float RGB in [0, 1] and area-averaged down to a common small size (default 64x48, width x
height, the frame is stretched if the aspect ratios differ), then compared:

- ``nmse`` = mean((p - a)^2) / (var(a) + 1e-3): the mean squared error normalised by the variance of the actual
  (downscaled) frame, so a scene with little contrast and one with a lot are on the same scale. 0 for identical
  frames; about 1 means "as far off as predicting a flat frame of the right mean colour"; 2 is roughly what an
  unrelated frame with the same statistics gives. The epsilon (a floor of ~8 grey levels of standard deviation) keeps
  it finite on a flat frame.
- ``psnr`` = 10 log10(1 / mse) in dB, capped at :data:`PSNR_CAP_DB` (60 dB) so identical frames give a finite number.
- ``mae`` = mean |p - a|, in [0, 1].

Why: the area average is a low-pass filter that suppresses per-pixel sensor noise (a 5x5 block average divides iid noise
by 5) and small sub-block misalignments, which the world model is not expected to reproduce, while keeping what it
should get right: where things are and how the scene moved. World-model frames are low resolution anyway. Downscaling
costs about 0.5 ms for a 640x480 frame (3 ms at 1920x1080) and the comparison at 64x48x3 is negligible, so it never
competes with the control loop. nmse is the primary metric (thresholds are set on it by default); psnr and mae are
reported alongside for people used to them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: Default comparison size, (width, height).
DEFAULT_SIZE: tuple[int, int] = (64, 48)
#: PSNR reported for identical (or nearly identical) frames, in dB.
PSNR_CAP_DB: float = 60.0
#: Variance floor added to the denominator of nmse.
NMSE_EPS: float = 1e-3
#: Metrics the tracker and the drift monitor know, with True where higher is worse.
METRICS: dict[str, bool] = {"nmse": True, "mae": True, "psnr": False}


@lru_cache(maxsize=64)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix whose rows average the input cells each output cell covers (exact area weights)."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1, dtype=np.float64) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1.0) - np.maximum(lo, cells), 0.0, None)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights.astype(np.float32)


def _rgb_and_scale(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """HxWx3 view of ``frame`` in its own dtype, and the factor that maps its values to [0, 1]."""
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 frame, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] == 1:
        arr = np.broadcast_to(arr, (*arr.shape[:2], 3))
    if arr.dtype == np.uint8:
        return arr, 1.0 / 255.0
    if arr.dtype == np.uint16:
        return arr, 1.0 / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        return arr, 1.0
    raise ValueError(f"unsupported frame dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")


def _block_mean(arr: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Mean over fy x fx blocks of the centred largest whole multiple of the block size; float32 out."""
    h, w = arr.shape[:2]
    oh, ow = h // fy, w // fx
    y0, x0 = (h - oh * fy) // 2, (w - ow * fx) // 2
    x = arr[y0 : y0 + oh * fy, x0 : x0 + ow * fx]
    # Rows first in a narrow accumulator (strided whole-row adds are fast), then columns in float32.
    if x.dtype == np.uint8 and fy <= 257:
        rows = x[0::fy].astype(np.uint16)
    else:
        rows = x[0::fy].astype(np.float32)
    for i in range(1, fy):
        rows += x[i::fy]
    rows = rows.astype(np.float32, copy=False)
    out = rows[:, 0::fx].copy()
    for i in range(1, fx):
        out += rows[:, i::fx]
    out *= np.float32(1.0 / (fy * fx))
    return out


def area_resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxW or HxWxC array to ``size`` = (width, height) by area averaging (box filter); returns float32.

    Exact for integer ratios (each output pixel is the mean of its block). For other ratios, a block mean with the
    integer factors (H // height, W // width) runs first on the centred largest whole multiple (dropping less than one
    output cell of border pixels, split between both sides), then exact area weights finish the job on the small
    intermediate. Upscaling uses the exact area weights. A 1920x1080 frame to 64x48 takes about 3 ms.
    """
    arr = np.asarray(frame)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    out_w, out_h = int(size[0]), int(size[1])
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"size must be positive, got {size}")
    fy, fx = max(1, arr.shape[0] // out_h), max(1, arr.shape[1] // out_w)
    if fy > 1 or fx > 1:
        arr = _block_mean(arr, fy, fx)
    else:
        arr = arr.astype(np.float32)
    h, w, c = arr.shape
    if (h, w) != (out_h, out_w):
        ry = _area_weights(h, out_h)  # [out_h, h]
        rx = _area_weights(w, out_w)  # [out_w, w]
        tmp = (ry @ arr.reshape(h, w * c)).reshape(out_h, w, c).transpose(0, 2, 1)  # [out_h, c, w]
        arr = np.ascontiguousarray((tmp @ rx.T).transpose(0, 2, 1))  # [out_h, out_w, c]
    return arr[:, :, 0] if squeeze else arr


def downscale(frame: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """The metric's view of a frame: float32 RGB in [0, 1], area-averaged to ``size`` (width, height)."""
    arr, scale = _rgb_and_scale(frame)
    out = area_resize(arr, size)
    if scale != 1.0:
        out *= np.float32(scale)
    return out


def compare_small(pred: np.ndarray, act: np.ndarray) -> dict[str, float]:
    """nmse, psnr and mae of two frames already downscaled to the same size (float RGB in [0, 1])."""
    diff = pred - act
    mse = float(np.mean(diff * diff, dtype=np.float64))
    var = float(np.var(act, dtype=np.float64))
    nmse = mse / (var + NMSE_EPS)
    psnr = PSNR_CAP_DB if mse <= 10.0 ** (-PSNR_CAP_DB / 10.0) else min(PSNR_CAP_DB, 10.0 * math.log10(1.0 / mse))
    mae = float(np.mean(np.abs(diff), dtype=np.float64))
    return {"nmse": nmse, "psnr": psnr, "mae": mae}


def prediction_error(
    predicted: np.ndarray, actual: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE
) -> dict[str, float]:
    """Error between a predicted and a real frame: ``{"nmse", "psnr", "mae"}`` (see the module docstring).

    Frames may differ in size and dtype (uint8 0..255, or float 0..1): both are downscaled to ``size`` (width, height).
    """
    return compare_small(downscale(predicted, size), downscale(actual, size))
