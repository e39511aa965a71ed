# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The report's figures: PNGs made with matplotlib (Agg through ``matplotlib.figure.Figure``, so no pyplot state),
returned base64-encoded. Times are seconds since ``t0``; ``xlim`` (the input's span) bounds every time axis."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cosmos3_ros.bags.report_data import ChunkTrace, FrameStrip, LatencyRecord, Mark
from cosmos3_ros.core.motion import MotionReport, derivatives

#: Most action dimensions drawn (the rest are listed as omitted).
MAX_ACTION_DIMS = 32
#: Most columns in a frame strip (longer chunks are subsampled evenly).
MAX_STRIP_COLUMNS = 8
#: Chunk colours: neighbours always differ (tab10 without red, which marks holds and trips).
CHUNK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
HOLD_COLOUR = "#d62728"
REASON_COLOURS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e", "#1f77b4")


def figure(width_in: float, height_in: float) -> Any:
    """A constrained-layout Figure (no pyplot)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def png(fig: Any) -> str:
    """The figure as base64 PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def style_axes(ax: Any) -> None:
    """Light grid, no top/right spines."""
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def _legend(ax: Any, ncol: int = 5) -> None:
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=ncol, frameon=False)


def _grid(n: int, height_per_row: float) -> tuple[Any, np.ndarray, int]:
    ncols = 1 if n <= 4 else (2 if n <= 12 else 3)
    nrows = math.ceil(n / ncols)
    fig = figure(13.0, max(2.4, height_per_row * nrows + 0.8))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    return fig, axes, ncols


def commands_png(
    chunks: list[ChunkTrace],
    motion: MotionReport,
    holds: Sequence[Mark],
    names: list[str] | None,
    t0: float,
    xlim: tuple[float, float],
) -> tuple[str, str]:
    """Commands per joint: each chunk's executed part solid, its replaced part dashed and faint, skipped points
    dotted grey; takeover times as thin vertical lines; holds as red crosses at the held command."""
    dims = max(c.actions.shape[1] for c in chunks)
    shown = min(dims, MAX_ACTION_DIMS)
    fig, axes, ncols = _grid(shown, 1.75)
    span_of = {(s.chunk.chunk_id, round(s.chunk.start, 9)): s for s in motion.spans}
    for d in range(shown):
        ax = axes[d]
        style_axes(ax)
        for i, c in enumerate(chunks):
            if d >= c.actions.shape[1]:
                continue
            colour = CHUNK_COLOURS[i % len(CHUNK_COLOURS)]
            t = c.times() - t0
            y = c.actions[:, d]
            s = span_of.get((-1 if c.chunk_id is None else int(c.chunk_id), round(c.start, 9)))
            lo, hi = (s.first, s.stop) if s is not None else (0, len(t))
            if lo > 0:
                ax.plot(t[: lo + 1], y[: lo + 1], color="#aaaaaa", linewidth=0.8, linestyle=":")
            if hi > lo:
                ax.plot(t[lo:hi], y[lo:hi], color=colour, linewidth=1.7, marker=".", markersize=3)
            if hi < len(t):
                a = max(lo, hi - 1)
                ax.plot(t[a:], y[a:], color=colour, linewidth=0.8, linestyle="--", alpha=0.45)
            ax.axvline(c.start - t0, color=colour, linewidth=0.6, alpha=0.35)
        for h in holds:
            if h.position is not None and d < np.size(h.position):
                ax.plot([h.stamp - t0], [np.ravel(h.position)[d]], "x", color=HOLD_COLOUR, markersize=7, mew=1.6)
        label = names[d] if names and d < len(names) else f"a[{d}]"
        ax.set_ylabel(label, fontsize=8)
        ax.set_xlim(*xlim)
    for ax in axes[shown:]:
        ax.set_visible(False)
    for ax in axes[max(0, shown - ncols) : shown]:
        ax.set_xlabel("t − t0 [s]", fontsize=8)
    note = "" if shown == dims else f"Only the first {shown} of {dims} action dimensions are drawn."
    return png(fig), note


def raw_png(chunks: list[ChunkTrace], names: list[str] | None, t0: float, xlim: tuple[float, float]) -> str:
    """The model's raw (normalized) actions per dimension, each chunk in its colour (secondary figure)."""
    with_raw = [(i, c) for i, c in enumerate(chunks) if c.raw is not None]
    dims = min(max(c.raw.shape[1] for _, c in with_raw), MAX_ACTION_DIMS)
    fig, axes, ncols = _grid(dims, 1.3)
    for d in range(dims):
        ax = axes[d]
        style_axes(ax)
        for i, c in with_raw:
            if d < c.raw.shape[1]:
                ax.plot(c.raw_times() - t0, c.raw[:, d], color=CHUNK_COLOURS[i % len(CHUNK_COLOURS)], linewidth=0.9)
        ax.set_ylabel(names[d] if names and d < len(names) else f"a[{d}]", fontsize=8)
        ax.set_xlim(*xlim)
    for ax in axes[dims:]:
        ax.set_visible(False)
    for ax in axes[max(0, dims - ncols) : dims]:
        ax.set_xlabel("t − t0 [s]", fontsize=8)
    return png(fig)


def boundaries_png(motion: MotionReport, t0: float, xlim: tuple[float, float], names: list[str] | None) -> str:
    """Top: the largest joint jump at each boundary. Bottom: the executed stream's speed (largest |v| over joints)
    with the boundaries marked."""
    fig = figure(13.0, 4.6)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.3))
    for ax in (ax1, ax2):
        style_axes(ax)
        for b in motion.boundaries:
            ax.axvline(b.time - t0, color="#999999", linewidth=0.6, alpha=0.6)
    tb = np.array([b.time - t0 for b in motion.boundaries])
    jumps = np.array([b.jump_max for b in motion.boundaries])
    ok = np.isfinite(jumps)
    after_hold = np.array([b.after != "chunk" for b in motion.boundaries], dtype=bool)
    if ok.any():
        ax1.vlines(tb[ok], 0, jumps[ok], color="#1f77b4", linewidth=2.0)
        ax1.plot(tb[ok & ~after_hold], jumps[ok & ~after_hold], "o", color="#1f77b4", markersize=5, label="replan")
        if (ok & after_hold).any():
            ax1.plot(tb[ok & after_hold], jumps[ok & after_hold], "s", color=HOLD_COLOUR, markersize=5,
                     label="after a hold")  # fmt: skip
        _legend(ax1)
    ax1.set_ylim(bottom=0)
    ax1.set_ylabel("jump (largest joint)", fontsize=8)
    if motion.stream is not None and motion.stream.t.size > 1:
        (tv, v), _, _ = derivatives(motion.stream)
        ax2.plot(tv - t0, np.abs(v).max(axis=1), color="#333333", linewidth=0.9,
                 label=f"largest |velocity| over joints (resampled at {motion.rate:g} Hz)")  # fmt: skip
        _legend(ax2, 2)
    ax2.set_ylim(bottom=0)
    ax2.set_ylabel("speed [units/s]", fontsize=8)
    ax2.set_xlabel("t − t0 [s]", fontsize=8)
    ax2.set_xlim(*xlim)
    return png(fig)


def timeline_png(
    motion: MotionReport,
    holds: Sequence[Mark],
    trips: Sequence[Mark],
    rejections: Sequence[Mark],
    lat: list[LatencyRecord],
    budgets: list[float | None],
    t0: float,
    xlim: tuple[float, float],
) -> str:
    """Lanes (chunks as executed/replaced bars, holds, drift trips, rejected inputs) above the latency of each
    policy and forecast call against its budget."""
    fig = figure(13.0, 5.4)
    ax, axl = fig.subplots(2, 1, sharex=True, height_ratios=(1.2, 1))
    style_axes(ax)
    lanes = ["rejected inputs", "drift trips", "holds", "chunks"]
    for i, s in enumerate(motion.spans):
        c = s.chunk
        colour = CHUNK_COLOURS[i % len(CHUNK_COLOURS)]
        end = c.times[-1] if math.isinf(s.end) else min(s.end, c.times[-1])
        ax.broken_barh([(c.start - t0, max(0.0, end - c.start))], (3 - 0.3, 0.6), color=colour, alpha=0.9)
        if end < c.times[-1]:  # the replaced part, as a thin bar above the lane (the next chunk runs there)
            ax.broken_barh([(end - t0, c.times[-1] - end)], (3.36, 0.14), color=colour, alpha=0.45)
    reasons = sorted({m.reason for m in holds})
    for j, r in enumerate(reasons):
        ts = [m.stamp - t0 for m in holds if m.reason == r]
        ax.plot(ts, [2] * len(ts), "v", color=REASON_COLOURS[j % len(REASON_COLOURS)], markersize=8,
                label=f"hold: {r} ({len(ts)})")  # fmt: skip
    if trips:
        ax.plot([m.stamp - t0 for m in trips], [1] * len(trips), "D", color="#d62728", markersize=6,
                label=f"drift trip ({len(trips)})")  # fmt: skip
    rreasons = sorted({m.reason for m in rejections})
    for j, r in enumerate(rreasons):
        ts = [m.stamp - t0 for m in rejections if m.reason == r]
        ax.plot(ts, [0] * len(ts), "|", color=REASON_COLOURS[(j + 3) % len(REASON_COLOURS)], markersize=12,
                mew=2, label=f"rejected: {r} ({len(ts)})")  # fmt: skip
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.set_ylim(-0.6, 3.6)
    if reasons or trips or rreasons:
        _legend(ax, 4)
    style_axes(axl)
    if lat:
        t = np.array([r.stamp for r in lat]) - t0
        pol = np.array([r.policy_s for r in lat])
        axl.plot(t, pol, "o-", color="#1f77b4", markersize=3, linewidth=1.0, label="policy call")
        fc = [(ti, r.forecast_s) for ti, r in zip(t, lat, strict=True) if r.forecast_s is not None]
        if fc:
            axl.plot(*zip(*fc, strict=True), "s-", color="#ff7f0e", markersize=3, linewidth=1.0, label="forecast call")
        skipped = [ti for ti, r in zip(t, lat, strict=True) if r.forecast == "skipped_budget"]
        if skipped:
            axl.plot(skipped, [0] * len(skipped), "x", color="#d62728", markersize=7, mew=1.5, clip_on=False,
                     label="forecast skipped (budget)")  # fmt: skip
        bt = [(ti, b) for ti, b in zip(t, budgets, strict=True) if b is not None]
        if bt:
            axl.plot(*zip(*bt, strict=True), "_", color="#2ca02c", markersize=14, mew=2.0,
                     label="budget: time left in the running chunk")  # fmt: skip
        over = [(ti, p) for ti, p, b in zip(t, pol, budgets, strict=True) if b is not None and p > b]
        if over:
            axl.plot(*zip(*over, strict=True), "o", color="#d62728", markersize=7, fillstyle="none", mew=1.5,
                     label="call longer than its budget")  # fmt: skip
        _legend(axl, 5)
    axl.set_ylim(bottom=0)
    axl.set_ylabel("seconds", fontsize=8)
    axl.set_xlabel("observation time t − t0 [s]", fontsize=8)
    axl.set_xlim(*xlim)
    return png(fig)


def errors_png(
    stamps: np.ndarray,
    values: np.ndarray,
    chunk_ids: np.ndarray,
    steps: np.ndarray,
    metric: str,
    threshold: float | None,
    t0: float,
    xlim: tuple[float, float],
    trips: Sequence[Mark] = (),
) -> str:
    """Each matched predicted frame at its expected time (colour: step k), the mean per chunk, the threshold."""
    from matplotlib.ticker import MaxNLocator

    fig = figure(13.0, 3.6)
    ax = fig.subplots()
    style_axes(ax)
    t = stamps - t0
    sc = ax.scatter(t, values, c=steps, cmap="viridis", s=14, alpha=0.8, linewidths=0,
                    label="predicted frame (colour: step k)")  # fmt: skip
    cbar = fig.colorbar(sc, ax=ax, pad=0.01, aspect=30)
    cbar.set_label("step k", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    cbar.locator = MaxNLocator(integer=True)
    cbar.update_ticks()
    ids = np.unique(chunk_ids)
    if len(ids) > 1 or (len(ids) == 1 and ids[0] >= 0):
        ct = np.array([t[chunk_ids == i].mean() for i in ids])
        cv = np.array([values[chunk_ids == i].mean() for i in ids])
        order = np.argsort(ct)
        ax.plot(ct[order], cv[order], color="#333333", linewidth=1.2, marker="o", markersize=3, label="mean per chunk")
    has_threshold = threshold is not None and math.isfinite(threshold)
    if has_threshold:
        ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1.3, label=f"threshold {threshold:g}")
    for i, m in enumerate(trips):
        ax.axvline(m.stamp - t0, color="#d62728", linewidth=0.9, alpha=0.6, label="drift trip" if i == 0 else None)
    ax.set_xlabel("expected time t − t0 [s]", fontsize=8)
    ax.set_ylabel(metric + (" [dB]" if metric == "psnr" else ""), fontsize=9)
    top = float(values.max()) if values.size else 1.0
    if has_threshold:
        top = max(top, float(threshold))
    if metric != "psnr":
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
    ax.set_xlim(*xlim)
    _legend(ax)
    return png(fig)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr[:, :, :3]


def strip_png(strip: FrameStrip) -> str:
    """Predicted frames on top, the matched real frames below (grey where none matched)."""
    from matplotlib.figure import Figure

    n = len(strip.predicted)
    if n <= MAX_STRIP_COLUMNS:
        cols = list(range(n))
    else:
        cols = sorted({round(x) for x in np.linspace(0, n - 1, MAX_STRIP_COLUMNS)})
    frames = [_as_uint8(f) for f in strip.predicted]
    h, w = frames[0].shape[:2]
    aspect = h / max(1, w)
    left, right, top, bottom, gap = 0.32, 0.04, 0.26, 0.04, 0.06
    cell_w = min(2.4, (13.0 - left - right - gap * (len(cols) - 1)) / len(cols))
    cell_h = cell_w * aspect
    fig_w = left + right + len(cols) * cell_w + gap * (len(cols) - 1)
    fig_h = top + bottom + 2 * cell_h + gap
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    for j, k in enumerate(cols):
        actual = strip.actual[k] if k < len(strip.actual) else None
        for row, img in ((0, frames[k]), (1, None if actual is None else _as_uint8(actual))):
            x0 = (left + j * (cell_w + gap)) / fig_w
            y0 = (bottom + (1 - row) * (cell_h + gap)) / fig_h
            ax = fig.add_axes((x0, y0, cell_w / fig_w, cell_h / fig_h))
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.set_facecolor("#eeeeee")
                ax.text(0.5, 0.5, "no matching\nframe", ha="center", va="center", fontsize=8, color="#777777")
            else:
                ax.imshow(img, interpolation="nearest", aspect="auto")
            if j == 0:
                ax.set_ylabel("predicted" if row == 0 else "actual", fontsize=9)
            if row == 0:
                label = strip.labels[k] if strip.labels is not None and k < len(strip.labels) else f"k={k}"
                ax.set_title(label, fontsize=8, pad=3)
    return png(fig)
