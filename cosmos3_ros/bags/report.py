# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A self-contained HTML report of a run (offline replay or a live recording).

:func:`write_report` writes ONE file that opens in any browser with no server and no network: the figures are PNGs made
with matplotlib (Agg, through ``matplotlib.figure.Figure``, so no pyplot state is touched) and embedded as base64 data
URIs; the style sheet is inline; there is no script. Sections:

1. Summary table (what the caller passes in :attr:`ReportData.summary`, plus counts and statistics computed here).
2. Action chunks over time, one subplot per action dimension: each chunk is a segment whose point k is drawn at
   ``stamp + first_offset + k * dt`` (``first_offset`` defaults to ``dt``: action k is reached (k + 1) periods after
   the observation, as :func:`cosmos3_ros.core.trajectory.chunk_times` has it); a small mark shows where each chunk was
   observed. Consecutive chunks alternate colours so overlaps stay readable.
3. Prediction error over time (each matched predicted frame at its expected time, coloured by step k, and the mean per
   chunk), with the drift threshold as a dashed line.
4. Latency per chunk: the policy call, and the forecast call when one ran (skipped forecasts are marked).
5. Predicted-versus-actual frame strips (e.g. for the chunks with the worst and the best error): a row of predicted
   frames at steps k, and below it the real frames they were matched with.

Times on the x axes are seconds since the earliest stamp in the data (printed in the axis label).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChunkTrace", "FrameStrip", "LatencyRecord", "ReportData", "render_html", "write_report"]

#: Most action dimensions drawn (the rest are listed as omitted).
MAX_ACTION_DIMS = 32
#: Most columns in a frame strip (longer chunks are subsampled evenly).
MAX_STRIP_COLUMNS = 8


@dataclass
class ChunkTrace:
    """One published action chunk: observed at ``stamp`` (s), ``actions`` [T, D], ``dt`` seconds between actions."""

    stamp: float
    actions: np.ndarray
    dt: float
    chunk_id: int | None = None
    first_offset: float | None = None  # time of action 0 after the stamp; None: dt


@dataclass
class LatencyRecord:
    """Timing of one chunk: the policy call and the forecast call (None when the forecast was skipped or off)."""

    stamp: float
    policy_s: float
    forecast_s: float | None = None
    chunk_id: int | None = None


@dataclass
class FrameStrip:
    """Predicted frames of one chunk and the real frames they were compared with (None where none matched).

    ``labels`` are per-column captions (e.g. ``"k=3  nmse 0.12"``); frames are HxWx3 uint8 (or float in [0, 1]).
    """

    title: str
    predicted: Sequence[np.ndarray]
    actual: Sequence[np.ndarray | None]
    labels: Sequence[str] | None = None

    @classmethod
    def from_chunk_frames(cls, frames: Any, title: str) -> FrameStrip:
        """From a :class:`cosmos3_ros.core.forecast.ChunkFrames` (the tracker's best/worst chunk)."""
        labels = [
            f"k={k}" + ("" if math.isnan(e) else f"  nmse {e:.3g}")
            for k, e in zip(frames.steps, frames.nmse, strict=True)
        ]
        return cls(title=title, predicted=list(frames.predicted), actual=list(frames.actual), labels=labels)


@dataclass
class ReportData:
    """Everything the report shows. Lists may be empty: the section then says there is nothing to show.

    ``chunks`` take :class:`ChunkTrace` or ``(stamp, actions, dt)`` tuples; ``errors`` take any records with
    ``stamp``, ``chunk_id``, ``step`` and the ``metric`` attribute (e.g. monitoring's ``ErrorSample``) or dicts with
    those keys; ``latencies`` take :class:`LatencyRecord` or ``(stamp, policy_s, forecast_s)`` tuples.
    """

    title: str = "cosmos3_ros report"
    chunks: list[Any] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    latencies: list[Any] = field(default_factory=list)
    strips: list[FrameStrip] = field(default_factory=list)
    threshold: float | None = None
    metric: str = "nmse"
    action_names: list[str] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------------------------------------------------


def _chunks(items: Sequence[Any]) -> list[ChunkTrace]:
    out = []
    for it in items:
        rec = it if isinstance(it, ChunkTrace) else ChunkTrace(float(it[0]), it[1], float(it[2]))
        acts = np.asarray(rec.actions, dtype=np.float64)
        if acts.ndim == 1:
            acts = acts[:, None]
        if acts.ndim != 2 or acts.shape[0] == 0:
            continue
        out.append(ChunkTrace(float(rec.stamp), acts, float(rec.dt), rec.chunk_id, rec.first_offset))
    return out


def _latencies(items: Sequence[Any]) -> list[LatencyRecord]:
    out = []
    for it in items:
        if isinstance(it, LatencyRecord):
            out.append(it)
        else:
            fc = it[2] if len(it) > 2 else None
            out.append(LatencyRecord(float(it[0]), float(it[1]), None if fc is None else float(fc)))
    return out


def _get(rec: Any, name: str, default: Any = None) -> Any:
    if isinstance(rec, Mapping):
        return rec.get(name, default)
    return getattr(rec, name, default)


def _errors(items: Sequence[Any], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    stamps, values, chunk_ids, steps = [], [], [], []
    for rec in items:
        v = _get(rec, metric)
        if v is None or not math.isfinite(float(v)):
            continue
        stamps.append(float(_get(rec, "stamp")))
        values.append(float(v))
        cid = _get(rec, "chunk_id", -1)
        chunk_ids.append(-1 if cid is None else int(cid))
        steps.append(int(_get(rec, "step", 0) or 0))
    return np.array(stamps), np.array(values), np.array(chunk_ids, dtype=np.int64), np.array(steps, dtype=np.int64)


# --------------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------------


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _style_axes(ax: Any) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


_CHUNK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _actions_png(chunks: list[ChunkTrace], names: list[str] | None, t0: float) -> tuple[str, str]:
    dims = max(c.actions.shape[1] for c in chunks)
    shown = min(dims, MAX_ACTION_DIMS)
    ncols = 1 if shown <= 4 else (2 if shown <= 12 else 3)
    nrows = math.ceil(shown / ncols)
    fig = _figure(13.0, max(2.2, 1.7 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    for d in range(shown):
        ax = axes[d]
        _style_axes(ax)
        for i, c in enumerate(chunks):
            if d >= c.actions.shape[1]:
                continue
            offset = c.dt if c.first_offset is None else c.first_offset
            t = c.stamp - t0 + offset + c.dt * np.arange(c.actions.shape[0])
            colour = _CHUNK_COLOURS[i % 2]
            ax.plot(t, c.actions[:, d], color=colour, linewidth=1.1, alpha=0.85)
            ax.plot([c.stamp - t0], [c.actions[0, d]], marker="|", color=colour, markersize=7, alpha=0.9)
        label = names[d] if names and d < len(names) else f"a[{d}]"
        ax.set_ylabel(label, fontsize=8)
    for ax in axes[shown:]:
        ax.set_visible(False)
    for ax in axes[max(0, shown - ncols) : shown]:
        ax.set_xlabel("t − t0 [s]", fontsize=8)
    note = "" if shown == dims else f"Only the first {shown} of {dims} action dimensions are drawn."
    return _png(fig), note


def _errors_png(
    stamps: np.ndarray,
    values: np.ndarray,
    chunk_ids: np.ndarray,
    steps: np.ndarray,
    metric: str,
    threshold: float | None,
    t0: float,
) -> str:
    fig = _figure(13.0, 3.6)
    ax = fig.subplots()
    _style_axes(ax)
    t = stamps - t0
    sc = ax.scatter(
        t, values, c=steps, cmap="viridis", s=14, alpha=0.8, linewidths=0, label="predicted frame (colour: step k)"
    )
    cbar = fig.colorbar(sc, ax=ax, pad=0.01, aspect=30)
    cbar.set_label("step k", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    from matplotlib.ticker import MaxNLocator

    cbar.locator = MaxNLocator(integer=True)
    cbar.update_ticks()
    # mean per chunk, drawn at the chunk's mean expected time
    ids = np.unique(chunk_ids)
    if len(ids) > 1 or (len(ids) == 1 and ids[0] >= 0):
        ct = np.array([t[chunk_ids == i].mean() for i in ids])
        cv = np.array([values[chunk_ids == i].mean() for i in ids])
        order = np.argsort(ct)
        ax.plot(ct[order], cv[order], color="#333333", linewidth=1.2, marker="o", markersize=3, label="mean per chunk")
    if threshold is not None and math.isfinite(threshold):
        ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1.3, label=f"threshold {threshold:g}")
    ax.set_xlabel("expected time t − t0 [s]", fontsize=8)
    ax.set_ylabel(metric + (" [dB]" if metric == "psnr" else ""), fontsize=9)
    top = float(values.max()) if values.size else 1.0
    if threshold is not None and math.isfinite(threshold):
        top = max(top, float(threshold))
    if metric != "psnr":
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, frameon=False)
    return _png(fig)


def _latency_png(lat: list[LatencyRecord], t0: float) -> str:
    fig = _figure(13.0, 3.2)
    ax = fig.subplots()
    _style_axes(ax)
    t = np.array([r.stamp for r in lat]) - t0
    pol = np.array([r.policy_s for r in lat])
    ax.plot(t, pol, color="#1f77b4", marker="o", markersize=3, linewidth=1.0, label="policy call")
    fc_t = np.array([ti for ti, r in zip(t, lat, strict=True) if r.forecast_s is not None])
    fc = np.array([r.forecast_s for r in lat if r.forecast_s is not None])
    if fc.size:
        ax.plot(fc_t, fc, color="#ff7f0e", marker="s", markersize=3, linewidth=1.0, label="forecast call")
    skipped = np.array([ti for ti, r in zip(t, lat, strict=True) if r.forecast_s is None])
    if skipped.size and fc.size:
        ax.plot(
            skipped,
            np.zeros_like(skipped),
            "x",
            color="#d62728",
            markersize=7,
            mew=1.5,
            clip_on=False,
            label="forecast skipped",
        )
    ax.set_ylim(bottom=0)
    ax.set_xlabel("observation time t − t0 [s]", fontsize=8)
    ax.set_ylabel("latency [s]", fontsize=9)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, frameon=False)
    return _png(fig)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr[:, :, :3]


def _strip_png(strip: FrameStrip) -> str:
    from matplotlib.figure import Figure

    n = len(strip.predicted)
    if n <= MAX_STRIP_COLUMNS:
        cols = list(range(n))
    else:
        cols = sorted({round(x) for x in np.linspace(0, n - 1, MAX_STRIP_COLUMNS)})
    frames = [_as_uint8(f) for f in strip.predicted]
    h, w = frames[0].shape[:2]
    aspect = h / max(1, w)
    # Exact layout in inches: row labels on the left, column captions on top, small gaps.
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
    return _png(fig)


# --------------------------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1320px;
       color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 30px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 18px 0 6px; }
.meta { color: #666; font-size: 12px; }
table.summary { border-collapse: collapse; font-size: 13px; }
table.summary td { padding: 3px 14px 3px 0; border-bottom: 1px solid #eee; vertical-align: top; }
table.summary td.k { color: #555; white-space: nowrap; }
img.fig { width: 100%; height: auto; display: block; }
img.strip { max-width: 100%; height: auto; display: block; }
p.empty, p.note { color: #777; font-style: italic; font-size: 13px; }
p.legend { font-size: 13px; color: #444; }
"""


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "n/a"
        return f"{f:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _computed_summary(
    data: ReportData, chunks: list[ChunkTrace], values: np.ndarray, lat: list[LatencyRecord]
) -> dict[str, Any]:
    out: dict[str, Any] = {"action chunks": len(chunks)}
    if chunks:
        out["action dimensions"] = max(c.actions.shape[1] for c in chunks)
    out["error samples"] = int(values.size)
    if values.size:
        worst = values.min() if data.metric == "psnr" else values.max()
        out[f"{data.metric} mean / median / worst"] = f"{values.mean():.4g} / {np.median(values):.4g} / {worst:.4g}"
        if data.threshold is not None:
            worse = values < data.threshold if data.metric == "psnr" else values > data.threshold
            out["samples past threshold"] = f"{int(worse.sum())} of {values.size} ({100.0 * worse.mean():.1f} %)"
    if data.threshold is not None:
        out["threshold"] = f"{data.metric} {'<' if data.metric == 'psnr' else '>'} {data.threshold:g}"
    if lat:
        pol = np.array([r.policy_s for r in lat])
        out["policy latency mean / p95 / max [s]"] = (
            f"{pol.mean():.3f} / {np.percentile(pol, 95):.3f} / {pol.max():.3f}"
        )
        fc = np.array([r.forecast_s for r in lat if r.forecast_s is not None])
        if fc.size:
            out["forecast latency mean / p95 / max [s]"] = (
                f"{fc.mean():.3f} / {np.percentile(fc, 95):.3f} / {fc.max():.3f}"
            )
        out["forecasts run / skipped"] = f"{fc.size} / {len(lat) - fc.size}"
    return out


def render_html(data: ReportData) -> str:
    """The report as one HTML string (see the module docstring)."""
    chunks = _chunks(data.chunks)
    lat = _latencies(data.latencies)
    stamps, values, chunk_ids, steps = _errors(data.errors, data.metric)
    all_t = [c.stamp for c in chunks] + [r.stamp for r in lat] + stamps.tolist()
    t0 = min(all_t) if all_t else 0.0

    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(data.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(data.title)}</h1>",
        f'<p class="meta">Generated {esc(_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))} '
        "by cosmos3_ros."
        + (f" Time axes show t − t0 with t0 = {t0:.3f} s (the earliest stamp)." if all_t else "")
        + "</p>",
        "<h2>Summary</h2>",
        '<table class="summary">',
    ]
    rows = dict(data.summary)
    for k, v in _computed_summary(data, chunks, values, lat).items():
        rows.setdefault(k, v)
    for k, v in rows.items():
        parts.append(f'<tr><td class="k">{esc(str(k))}</td><td>{esc(_fmt(v))}</td></tr>')
    parts.append("</table>")

    def img(b64: str, alt: str, cls: str = "fig") -> str:
        return f'<img class="{cls}" alt="{esc(alt)}" src="data:image/png;base64,{b64}">'

    parts.append("<h2>Action chunks</h2>")
    if chunks:
        b64, note = _actions_png(chunks, data.action_names, t0)
        parts.append(
            '<p class="legend">One panel per action dimension. Each chunk is a segment starting one period after its '
            "observation (tick mark); consecutive chunks alternate colours.</p>"
        )
        parts.append(img(b64, "action chunks per dimension over time"))
        if note:
            parts.append(f'<p class="note">{esc(note)}</p>')
    else:
        parts.append('<p class="empty">No action chunks recorded.</p>')

    parts.append("<h2>Prediction error</h2>")
    if values.size:
        parts.append(
            f'<p class="legend">{esc(data.metric)} of each forecast frame against the real frame matched to it, at the '
            "time the frame was expected; the line is the mean per chunk"
            + (", the dashed red line the drift threshold." if data.threshold is not None else ".")
            + "</p>"
        )
        parts.append(img(_errors_png(stamps, values, chunk_ids, steps, data.metric, data.threshold, t0), "error"))
    else:
        parts.append('<p class="empty">No prediction-error samples (forecasting off, or no frame matched).</p>')

    parts.append("<h2>Latency per chunk</h2>")
    if lat:
        parts.append(img(_latency_png(lat, t0), "latency per chunk"))
    else:
        parts.append('<p class="empty">No timing recorded.</p>')

    parts.append("<h2>Predicted versus actual frames</h2>")
    strips = [s for s in data.strips if len(s.predicted)]
    if strips:
        for s in strips:
            parts.append(f"<h3>{esc(s.title)}</h3>")
            parts.append(img(_strip_png(s), s.title, "strip"))
    else:
        parts.append('<p class="empty">No forecast frames to show.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, data: ReportData) -> Path:
    """Write the report to ``path`` (parent directories are created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(data)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
