# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The HTML report: one self-contained file with the embedded figures; its summary agrees with the JSON; it shows the
run configuration, holds with reasons, rejected inputs, drift trips, the latency budget and the boundary metrics; the
worst chunk is ranked among chunks with enough matched frames; time axes stay within the input's span."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosmos3_ros.bags import report_plots
from cosmos3_ros.bags.report import (
    ChunkTrace,
    FrameStrip,
    LatencyRecord,
    Mark,
    ReportData,
    fmt,
    render_html,
    write_report,
)
from cosmos3_ros.bags.report_config import run_config
from cosmos3_ros.bags.report_data import LABELS, summarize
from cosmos3_ros.bags.report_strips import StripPicker, enough_matched
from cosmos3_ros.core.forecast import ErrorSample
from cosmos3_ros.core.synthetic import moving_scene_frame

SRC = re.compile(r'\b(?:src|href)\s*=\s*"([^"]*)"', re.IGNORECASE)
T0, DT = 1_700_000_000.0, 0.2


def scene(t: float) -> np.ndarray:
    return moving_scene_frame(t, 48, 64)


def constructed_run(**over) -> ReportData:
    """Three 8-point chunks every 0.8 s (half of each replaced) with known jumps 1.0 and 2.5 on joint 1, then a hold;
    one rejected frame, one drift trip; the input spans 0 .. 3.0 s while the last chunk's points reach 3.2 s."""
    base = np.zeros((8, 2))
    chunks = []
    for i, level in enumerate((0.0, 1.0, 3.5)):
        acts = base.copy()
        acts[:, 1] = level
        chunks.append(ChunkTrace(T0 + 0.8 * i, acts, DT, i + 1, published=T0 + 0.8 * i))
    data = ReportData(
        title="Constructed <run> & co",
        chunks=chunks,
        latencies=[
            LatencyRecord(T0 + 0.8 * i, 0.3 + 0.6 * (i == 2), None, i + 1, forecast="not_due") for i in range(3)
        ],
        holds=[Mark(T0 + 3.25, "chunk_expired", chunk_id=3, position=np.array([0.0, 3.5]))],
        rejections=[Mark(T0 + 0.5, "bad_encoding", "/camera/image_raw")],
        drift_trips=[Mark(T0 + 1.1, "nmse 0.61")],
        threshold=0.5,
        action_names=["shoulder", "elbow"],
        span=(T0, T0 + 3.0),
        control_rate=5.0,
    )
    for k, v in over.items():
        setattr(data, k, v)
    return data


@pytest.fixture
def no_pngs(monkeypatch: pytest.MonkeyPatch) -> list:
    """Figures are built but not encoded (keeps the tests that read the HTML text cheap); returns them."""
    figures: list = []
    monkeypatch.setattr(report_plots, "png", lambda fig: figures.append(fig) or "")
    return figures


def embedded_pngs(text: str) -> list[Image.Image]:
    out = []
    for src in SRC.findall(text):
        assert src.startswith("data:image/png;base64,"), f"external or non-PNG resource: {src[:80]}"
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        img = Image.open(io.BytesIO(raw))
        img.load()
        out.append(img)
    return out


def summary_cells(text: str) -> dict[str, str]:
    """Label -> printed value of the summary table."""
    table = text.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    pairs = re.findall(r'<td class="k">(.*?)</td><td>(.*?)</td>', table)
    return {html.unescape(k): html.unescape(v) for k, v in pairs}


def test_report_is_one_self_contained_file(tmp_path: Path) -> None:
    data = constructed_run()
    path = write_report(tmp_path / "sub" / "report.html", data)
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower() and "url(" not in text
    images = embedded_pngs(text)
    assert len(images) == 3  # commands, boundaries, timeline (no errors, no strips, no raw actions here)
    assert all(img.width >= 400 and img.height >= 100 for img in images)
    assert "Constructed &lt;run&gt; &amp; co" in text and "<run>" not in text
    for section in ("Summary", "Run configuration", "Commands sent", "Chunk boundaries", "Prediction error"):
        assert f"<h2>{section}</h2>" in text


def test_summary_uses_labels_each_figure_once_and_agrees_with_the_json(no_pngs: list) -> None:
    data = constructed_run(summary={"in_bag": "demo.mcap", "frames": 31, "replay_wall_s": 1.25})
    summary = summarize(data)
    json.dumps(summary, allow_nan=False)  # forecasting off: null, never NaN
    assert summary["prediction_error_mean"] is None and summary["forecasts"] == 0
    cells = summary_cells(render_html(data))
    assert len(cells) == len(summary)  # one row per figure, none repeated
    for key, value in summary.items():
        assert cells[LABELS[key]] == fmt(value), key  # the labels, and the JSON's value
    assert not any("_" in label for label in cells)  # labels, not raw keys
    assert cells["prediction error mean"] == "n/a" and cells["forecasts run"] == "0"
    assert cells["holds by reason"] == "chunk_expired: 1" and cells["rejected inputs by reason"] == "bad_encoding: 1"
    assert cells["input frames"] == "31"


def test_motion_metrics_of_a_constructed_run_in_the_report_and_the_json(no_pngs: list) -> None:
    data = constructed_run()
    summary = summarize(data)
    assert summary["boundary_jump_max"] == pytest.approx(2.5) and summary["boundary_jump_median"] == pytest.approx(1.75)
    assert summary["skipped_actions"] == 0 and summary["repeated_actions"] == 0
    text = render_html(data)
    section = text.split("<h2>Chunk boundaries</h2>", 1)[1].split("<h2>", 1)[0]
    rows = re.findall(r"<tr>(<td.*?)</tr>", section)
    cells = [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows]
    assert [c[1] for c in cells] == ["2", "3"]  # chunk ids
    assert [c[4] for c in cells] == ["1", "2.5"] and {c[5] for c in cells} == {"elbow"}  # jump, joint
    assert [c[3] for c in cells] == ["chunk", "chunk"]
    # the policy call of chunk 3 (0.9 s) was longer than its budget: chunk 2 had 0.8 s left when chunk 3 was observed
    assert summary["calls_over_budget"] == 1


def test_run_configuration_is_shown_and_its_parameter_file_reproduces_the_run(no_pngs: list, tmp_path: Path) -> None:
    from cosmos3_ros.control.config import values_from_overrides
    from cosmos3_ros.core.params_file import read_params_file

    values = values_from_overrides(
        {"backend": "fake", "camera_topics": ["/cam/image_raw"], "prompt": "stack the cups", "seed": 7, "guidance": 2.0}
    )
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    seed: 7\n")
    config = run_config(values, kind="replay", params_file=params, in_bag="in.mcap")
    json.dumps(config, allow_nan=False)
    text = render_html(constructed_run(config=config))
    section = html.unescape(text.split("<h2>Run configuration</h2>", 1)[1].split("<h2>", 1)[0])
    for expected in ("stack the cups", "/cam/image_raw", str(params), "in.mcap", "numpy", np.__version__):
        assert expected in section, expected
    for name in ("model", "domain_name", "num_steps", "guidance", "seed", "params_file_sha256"):
        assert f">{name}<" in section, name
    yaml_file = tmp_path / "again.yaml"
    yaml_file.write_text(config["parameter_file"])
    again = read_params_file(yaml_file)
    assert again.ok and values_from_overrides(again.values) == values
    assert "No run configuration recorded" in render_html(constructed_run())


def test_holds_rejections_and_drift_trips_have_their_reasons(no_pngs: list) -> None:
    text = html.unescape(render_html(constructed_run()))
    section = text.split("<h2>Timeline", 1)[1].split("<h2>", 1)[0]
    assert "<h3>Holds</h3>" in section and "chunk_expired" in section
    assert "<h3>Rejected inputs</h3>" in section and "bad_encoding" in section and "/camera/image_raw" in section
    assert "<h3>Drift trips</h3>" in section and "nmse 0.61" in section


def test_time_axes_stay_within_the_inputs_span(no_pngs: list) -> None:
    figures = no_pngs
    rng = np.random.default_rng(0)
    errors = [ErrorSample(1, k, T0 + 0.2 * (k + 1), T0 + 0.2 * (k + 1), rng.random(), 20.0, 0.1) for k in range(8)]
    render_html(constructed_run(errors=errors))
    assert len(figures) == 4
    checked = 0
    for fig in figures:
        for ax in fig.axes:
            if "t0" in ax.get_xlabel():
                lo, hi = ax.get_xlim()
                assert lo == pytest.approx(0.0) and hi == pytest.approx(3.0), ax.get_xlabel()  # not 3.2
                checked += 1
    assert checked >= 4


def test_only_chunks_with_enough_matched_frames_are_ranked(no_pngs: list) -> None:
    assert not enough_matched(2, 8) and not enough_matched(5, 8) and enough_matched(6, 8)
    assert enough_matched(2, 2) and not enough_matched(0, 0)
    picker = StripPicker("nmse", tolerance_s=0.05, size=(32, 24))

    def run(cid: int, start: float, matched: int, value: float) -> None:
        stamps = [start + 0.1 * (k + 1) for k in range(8)]
        picker.forecast(cid, stamps, [scene(s) for s in stamps])
        for k, s in enumerate(stamps):
            picker.real(s, scene(s))
            if k < matched:
                picker.sample(cid, k, value, s)

    run(1, 0.0, 1, 9.0)  # the largest error, but one matched frame: not ranked
    run(2, 1.0, 8, 0.6)
    run(3, 2.0, 7, 0.2)
    picker.finish()
    worst, best = picker.strips()
    assert "chunk 2" in worst.title and "chunk 3" in best.title
    assert sum(a is not None for a in worst.actual) == 8 and sum(a is not None for a in best.actual) == 7
    assert picker.ranked == 2 and picker.unranked == 1 and "1 chunks with fewer were not ranked" in picker.note()
    text = render_html(constructed_run(strips=picker.strips(), strip_note=picker.note()))
    assert "Worst chunk: chunk 2" in text and len(no_pngs) == 3 + 2


def test_empty_report_and_plain_tuples(tmp_path: Path, no_pngs: list) -> None:
    text = write_report(tmp_path / "r.html", ReportData(title="nothing")).read_text()
    assert "No action chunks recorded." in text and "No prediction-error samples" in text
    assert "No chunk boundary" in text and "Nothing happened." in text and "No forecast frames to show." in text
    assert embedded_pngs(text) == []
    json.dumps(summarize(ReportData()), allow_nan=False)
    rng = np.random.default_rng(1)
    data = ReportData(
        chunks=[(10.0, rng.normal(size=(8, 3)), 0.1), (10.4, rng.normal(size=8), 0.1)],  # a 1-D chunk
        errors=[{"stamp": 10.1, "chunk_id": 0, "step": 0, "nmse": 0.1}, {"stamp": 10.3, "nmse": float("nan")}],
        latencies=[(10.0, 0.9), (10.4, 0.95, 0.4)],
        strips=[FrameStrip("float frames", [scene(0.0).astype(np.float32) / 255] * 2, [None, None])],
    )
    text = render_html(data)
    cells = summary_cells(text)
    assert cells["predicted frames matched to a real frame"] == "1" and cells["forecasts run"] == "1"
    assert len(no_pngs) == 4  # commands, timeline, error, one strip
    assert "No chunk boundary" in text  # chunks of different widths are not compared


@pytest.mark.parametrize("metric", ["psnr", "mae"])
def test_other_metrics(no_pngs: list, metric: str) -> None:
    errors = [ErrorSample(0, k, 1.0 + 0.1 * k, 1.0 + 0.1 * k, 0.1 * k, 40.0 - k, 0.01 * k) for k in range(6)]
    data = ReportData(errors=errors, metric=metric, threshold=37.5 if metric == "psnr" else 0.03)
    summary = summarize(data)
    assert summary["samples_past_threshold"] == (3 if metric == "psnr" else 2)
    assert summary["prediction_error_worst"] == pytest.approx(35.0 if metric == "psnr" else 0.05)
    assert summary_cells(render_html(data))["matched frames past the threshold"] == str(
        summary["samples_past_threshold"]
    )
