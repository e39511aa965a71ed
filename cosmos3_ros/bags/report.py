# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A self-contained HTML report of a run (offline replay or a live recording).

:func:`write_report` writes ONE file that opens in any browser with no server and no network: figures are PNGs
(:mod:`cosmos3_ros.bags.report_plots`) embedded as base64 data URIs, the style sheet is inline, there is no script.
Sections, in order:

1. **Summary**: the figures of :func:`cosmos3_ros.bags.report_data.summarize` with their labels (the replay prints
   the same dict as JSON), then the loop's counters.
2. **Run configuration**: model, prompt, domain, sampling, controller, topics, versions, and a complete parameter file
   that reproduces the run (:mod:`cosmos3_ros.bags.report_config`).
3. **Commands sent**: per joint, the commands after the action mapping and the joint limits; each chunk's executed
   part solid, the part replaced at the next replan dashed, points already past when it arrived dotted; holds as red
   crosses. Time axes span exactly the input (the bag's first to last frame).
4. **Chunk boundaries**: per boundary, the jump at the switch, actions skipped or repeated, peak velocity and jerk of
   the executed stream (:mod:`cosmos3_ros.core.motion`).
5. **Timeline**: chunks, holds with their reasons, drift trips, rejected inputs with their reasons, and each call's
   latency against its budget.
6. **Prediction error** over time with the drift threshold.
7. **Predicted versus actual frames**: the worst and the best chunk among those with enough matched frames.
8. **Raw model actions** (normalized, before the mapping), when known.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.bags import report_plots as plots
from cosmos3_ros.bags.report_data import (
    LABELS,
    ChunkTrace,
    FrameStrip,
    LatencyRecord,
    Mark,
    ReportData,
    budgets,
    chunk_traces,
    error_arrays,
    latency_records,
    motion_of,
    summarize,
)
from cosmos3_ros.core.motion import MotionReport

__all__ = ["ChunkTrace", "FrameStrip", "LatencyRecord", "Mark", "ReportData", "render_html", "write_report"]

#: Most rows of the per-boundary, hold and rejection tables (the rest are counted).
MAX_TABLE_ROWS = 60

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1320px;
       color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 30px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 18px 0 6px; }
.meta { color: #666; font-size: 12px; }
table.kv, table.grid { border-collapse: collapse; font-size: 13px; }
table.kv td { padding: 3px 14px 3px 0; border-bottom: 1px solid #eee; vertical-align: top; }
table.kv td.k { color: #555; white-space: nowrap; }
table.grid th, table.grid td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
table.grid th { color: #555; font-weight: 600; border-bottom: 1px solid #ccc; }
table.grid td.l, table.grid th.l { text-align: left; }
div.cols { display: flex; flex-wrap: wrap; gap: 8px 36px; align-items: flex-start; }
pre { background: #f6f6f6; padding: 8px 10px; font-size: 12px; overflow-x: auto; }
img.fig { width: 100%; height: auto; display: block; }
img.strip { max-width: 100%; height: auto; display: block; }
p.empty, p.note { color: #777; font-style: italic; font-size: 13px; }
p.legend { font-size: 13px; color: #444; }
details summary { cursor: pointer; font-size: 13px; color: #444; margin: 8px 0; }
"""


def fmt(v: Any) -> str:
    """A summary value as the report prints it (None and NaN: "n/a")."""
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return "n/a" if not math.isfinite(f) else f"{f:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) if v else "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v) if v else "none"
    return str(v)


_esc = html.escape


def _kv_table(rows: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    out = ['<table class="kv">']
    for k, v in rows.items():
        label = (labels or {}).get(k, k)
        out.append(f'<tr><td class="k">{_esc(str(label))}</td><td>{_esc(fmt(v))}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _grid_table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    out = ['<table class="grid"><tr>']
    out += [f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr>")
    for row in rows[:MAX_TABLE_ROWS]:
        cells = [f'<td class="{"l" if i < left else ""}">{_esc(fmt(c))}</td>' for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if len(rows) > MAX_TABLE_ROWS:
        out.append(f'<p class="note">… and {len(rows) - MAX_TABLE_ROWS} more rows.</p>')
    return "\n".join(out)


def _img(b64: str, alt: str, cls: str = "fig") -> str:
    return f'<img class="{cls}" alt="{_esc(alt)}" src="data:image/png;base64,{b64}">'


def _time_frame(
    data: ReportData, chunks: list[ChunkTrace], lat: list[LatencyRecord], stamps: np.ndarray
) -> tuple[float, tuple[float, float]] | None:
    """(t0, xlim): the input's span when known, else the stamps' range."""
    if data.span is not None and all(math.isfinite(x) for x in data.span) and data.span[1] >= data.span[0]:
        lo, hi = float(data.span[0]), float(data.span[1])
    else:
        ts = [c.stamp for c in chunks] + [c.start for c in chunks] + [r.stamp for r in lat] + stamps.tolist()
        ts += [m.stamp for m in (*data.holds, *data.rejections, *data.drift_trips) if math.isfinite(m.stamp)]
        if not ts:
            return None
        lo, hi = min(ts), max(ts)
    pad = 0.0 if hi > lo else 0.5
    return lo, (-pad, hi - lo + pad)


def _config_section(config: Mapping[str, Any] | None) -> list[str]:
    parts = ["<h2>Run configuration</h2>"]
    if not config or not config.get("sections"):
        parts.append(
            '<p class="empty">No run configuration recorded (this recording predates it, or its recorder was not '
            "given one).</p>"
        )
        return parts
    parts.append('<div class="cols">')
    for title, rows in config["sections"].items():
        parts.append(f"<div><h3>{_esc(str(title))}</h3>{_kv_table(rows)}</div>")
    parts.append("</div>")
    if config.get("parameter_file"):
        parts.append(
            "<details><summary>Parameter file of this run (every node setting; pass it as --params-file to "
            "replay, or to the node)</summary>"
            f"<pre>{_esc(str(config['parameter_file']))}</pre></details>"
        )
    return parts


def _boundary_section(motion: MotionReport, names: list[str] | None, t0: float, xlim: tuple[float, float]) -> list[str]:
    parts = ["<h2>Chunk boundaries</h2>"]
    if not motion.boundaries:
        parts.append('<p class="empty">No chunk boundary (fewer than two chunks).</p>')
        return parts
    parts.append(
        '<p class="legend">At each switch to a new chunk: the <b>jump</b> is the new chunk\'s command minus the old '
        "chunk's command at the same time (the new chunk's first executed point), largest over joints, in robot units "
        "(after a hold: minus the held command). <b>Skipped</b>: actions of the new chunk already in the past when it "
        "arrived; <b>repeated</b>: actions for a time slot the old chunk had already commanded. Peak velocity and jerk "
        f"are of the executed command stream resampled at {motion.rate:g} Hz, within {motion.window_s:.3g} s of the "
        "switch (finite differences; jerk of piecewise-linear commands is spiky: compare boundaries with the "
        "interior figures below, at the same rate).</p>"
    )
    parts.append(_img(plots.boundaries_png(motion, t0, xlim, names), "boundary jumps and command speed"))
    rows = []
    for i, b in enumerate(motion.boundaries, 1):
        j = b.jump_joint
        joint = "" if j is None else (names[j] if names and j < len(names) else f"a[{j}]")
        rows.append(
            [i, b.chunk_id, b.time - t0, b.after, b.jump_max, joint, b.skipped, b.repeated, b.gap_s,
             b.peak_velocity, b.peak_jerk]
        )  # fmt: skip
    header = ["#", "chunk", "t − t0 [s]", "after", "jump", "joint", "skipped", "repeated", "gap [s]",
              "peak |v|", "peak |jerk|"]  # fmt: skip
    parts.append(_grid_table(header, rows, left=0))
    parts.append(
        f'<p class="note">Away from every boundary: peak |v| {fmt(motion.interior_velocity)}, peak |jerk| '
        f"{fmt(motion.interior_jerk)}; whole run: peak |v| {fmt(motion.peak_velocity)}, peak |jerk| "
        f"{fmt(motion.peak_jerk)}.</p>"
    )
    return parts


def _timeline_section(
    data: ReportData,
    motion: MotionReport,
    lat: list[LatencyRecord],
    bud: list[float | None],
    t0: float,
    xlim: tuple[float, float],
) -> list[str]:
    parts = ["<h2>Timeline: holds, drift trips, rejected inputs, latency budget</h2>"]
    if not (motion.spans or data.holds or data.rejections or data.drift_trips or lat):
        parts.append('<p class="empty">Nothing happened.</p>')
        return parts
    parts.append(
        '<p class="legend">Top: each chunk\'s executed part (thick bar) and replaced part (thin bar); holds with their '
        "reason; drift trips; rejected inputs with their reason. Bottom: each policy call's latency (at its "
        "observation) against its budget, the time left in the chunk running then: a live call longer than that "
        "leaves the robot holding. A replay runs on bag time (inference is instant there), so its budget is what a "
        "live run with these latencies would have had.</p>"
    )
    parts.append(
        _img(plots.timeline_png(motion, data.holds, data.drift_trips, data.rejections, lat, bud, t0, xlim), "timeline")
    )
    tables = []
    if data.holds:
        rows = [[m.stamp - t0, m.reason, m.chunk_id] for m in data.holds]
        tables.append("<div><h3>Holds</h3>" + _grid_table(["t − t0 [s]", "reason", "chunk"], rows, left=0) + "</div>")
    if data.drift_trips:
        rows = [[m.stamp - t0, m.reason] for m in data.drift_trips]
        tables.append("<div><h3>Drift trips</h3>" + _grid_table(["t − t0 [s]", "value"], rows, left=0) + "</div>")
    if data.rejections:
        rows = [[m.stamp - t0, m.detail, m.reason] for m in data.rejections]
        tables.append(
            "<div><h3>Rejected inputs</h3>" + _grid_table(["t − t0 [s]", "input", "reason"], rows, left=0) + "</div>"
        )
    if tables:
        parts.append('<div class="cols">' + "".join(tables) + "</div>")
    else:
        parts.append('<p class="note">No holds, drift trips or rejected inputs.</p>')
    return parts


def render_html(data: ReportData) -> str:
    """The report as one HTML string (see the module docstring)."""
    chunks = chunk_traces(data.chunks)
    lat = latency_records(data.latencies)
    stamps, values, chunk_ids, steps = error_arrays(data.errors, data.metric)
    motion = motion_of(data, chunks)
    summary = summarize(data, motion)
    frame = _time_frame(data, chunks, lat, stamps)
    t0, xlim = frame if frame is not None else (0.0, (0.0, 1.0))
    names = data.action_names
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(data.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(data.title)}</h1>",
        f'<p class="meta">Generated {_esc(generated)} by cosmos3_ros.'
        + (
            f" Time axes show t − t0 in seconds, t0 = {t0:.3f} s (the first input frame), over the input's "
            f"{xlim[1] - xlim[0]:.2f} s."
            if frame is not None
            else ""
        )
        + "</p>",
        "<h2>Summary</h2>",
        _kv_table({k: v for k, v in summary.items() if not isinstance(v, Mapping) or k in LABELS}, LABELS),
    ]
    if data.counters:
        parts.append(
            "<details><summary>Loop counters (raw names, as in diagnostics)</summary>"
            + _kv_table(dict(sorted(data.counters.items())))
            + "</details>"
        )
    parts += _config_section(data.config)

    parts.append("<h2>Commands sent</h2>")
    if chunks:
        b64, note = plots.commands_png(chunks, motion, data.holds, names, t0, xlim)
        parts.append(
            '<p class="legend">One panel per joint: the commands after the action mapping and the joint limits, as '
            "published. Each chunk has its own colour: solid where it was executed, dashed and faint where it was "
            "replaced at the next replan, dotted grey where its points were already past when it arrived; a thin "
            "vertical line marks when it took over. Red crosses: holds (the held command).</p>"
        )
        parts.append(_img(b64, "commands per joint over time"))
        if note:
            parts.append(f'<p class="note">{_esc(note)}</p>')
    else:
        parts.append('<p class="empty">No action chunks recorded.</p>')

    parts += _boundary_section(motion, names, t0, xlim)
    parts += _timeline_section(data, motion, lat, budgets(chunks, lat, data.holds), t0, xlim)

    parts.append("<h2>Prediction error</h2>")
    if values.size:
        parts.append(
            f'<p class="legend">{_esc(data.metric)} of each forecast frame against the real frame matched to it, at '
            "the time the frame was expected; the line is the mean per chunk"
            + (", the dashed red line the drift threshold" if data.threshold is not None else "")
            + (", red vertical lines the drift trips." if data.drift_trips else ".")
            + "</p>"
        )
        parts.append(
            _img(
                plots.errors_png(
                    stamps, values, chunk_ids, steps, data.metric, data.threshold, t0, xlim, data.drift_trips
                ),
                "prediction error",
            )
        )
    else:
        parts.append('<p class="empty">No prediction-error samples (forecasting off, or no frame matched).</p>')

    parts.append("<h2>Predicted versus actual frames</h2>")
    strips = [s for s in data.strips if len(s.predicted)]
    if data.strip_note:
        parts.append(f'<p class="note">{_esc(data.strip_note)}</p>')
    if strips:
        for s in strips:
            parts.append(f"<h3>{_esc(s.title)}</h3>")
            parts.append(_img(plots.strip_png(s), s.title, "strip"))
    elif not data.strip_note:
        parts.append('<p class="empty">No forecast frames to show.</p>')

    if any(c.raw is not None for c in chunks):
        parts.append("<h2>Raw model actions</h2>")
        parts.append(
            '<p class="legend">What the model returned, normalized, before the action mapping and the joint limits '
            "(each chunk whole, in its colour above).</p>"
        )
        parts.append(_img(plots.raw_png(chunks, names, t0, xlim), "raw model actions"))
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
