# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The HTML report: one self-contained file with the embedded figures, from tracker output or plain tuples."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosmos3_ros.bags import report
from cosmos3_ros.bags.report import ChunkTrace, FrameStrip, LatencyRecord, ReportData, render_html, write_report
from cosmos3_ros.core.forecast import ErrorSample, ForecastTracker
from cosmos3_ros.core.synthetic import moving_scene_frame

SRC = re.compile(r'\b(?:src|href)\s*=\s*"([^"]*)"', re.IGNORECASE)


def scene(t: float) -> np.ndarray:
    return moving_scene_frame(t, 96, 128)


def replay_like_data(dims: int = 3) -> ReportData:
    """What a replay would collect: chunks every 0.8 s, a forecast per chunk (every 4th one drifting), timings."""
    rng = np.random.default_rng(0)
    tracker = ForecastTracker(0.05, keep_frames_size=(64, 48))
    t0, dt, horizon = 1_700_000_000.0, 0.1, 16
    chunks, lats, errors = [], [], []
    for i in range(80):
        t = t0 + i * dt
        if i % 8 == 0:
            cid = i // 8
            chunks.append(ChunkTrace(t, rng.normal(size=(horizon, dims)).cumsum(axis=0) * 0.05, dt, cid))
            drift = 0.4 if cid % 4 == 3 else 0.0
            stamps = [t + (k + 1) * dt for k in range(horizon)]
            tracker.add_forecast(cid, stamps, np.stack([scene(s - t0 + drift * (k + 1)) for k, s in enumerate(stamps)]))
            lats.append(LatencyRecord(t, 0.8 + 0.1 * rng.random(), None if cid % 5 == 4 else 0.5, cid))
        errors += tracker.observe(t, scene(t - t0))
    errors += tracker.flush()
    assert tracker.worst_chunk is not None and tracker.best_chunk is not None
    strips = [
        FrameStrip.from_chunk_frames(tracker.worst_chunk, f"Worst chunk {tracker.worst_chunk.chunk_id}"),
        FrameStrip.from_chunk_frames(tracker.best_chunk, f"Best chunk {tracker.best_chunk.chunk_id}"),
    ]
    return ReportData(
        title="Replay <of> demo & co",
        chunks=chunks,
        errors=errors,
        latencies=lats,
        strips=strips,
        threshold=0.2,
        action_names=[f"joint_{d}" for d in range(dims)],
        summary={"input bag": "demo.mcap", "replay wall time [s]": 12.345678},
    )


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


def test_report_is_one_self_contained_file(tmp_path: Path) -> None:
    data = replay_like_data()
    path = write_report(tmp_path / "sub" / "report.html", data)
    assert path == tmp_path / "sub" / "report.html"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower() and "url(" not in text
    # four figures (actions, error, latency) + one per strip, each a real PNG of a sensible size
    images = embedded_pngs(text)
    assert len(images) == 3 + len(data.strips)
    for img in images:
        assert img.width >= 400 and img.height >= 100
    # escaped title, summary rows (given and computed)
    assert "Replay &lt;of&gt; demo &amp; co" in text and "<of>" not in text
    assert "demo.mcap" in text and "12.35" in text
    assert "action chunks" in text and "error samples" in text and "samples past threshold" in text
    assert "forecasts run / skipped" in text and "8 / 2" in text
    for section in ("Action chunks", "Prediction error", "Latency per chunk", "Predicted versus actual frames"):
        assert f"<h2>{section}</h2>" in text
    assert "Worst chunk 3" in text and "Best chunk" in text


def test_empty_report(tmp_path: Path) -> None:
    text = write_report(tmp_path / "r.html", ReportData(title="nothing")).read_text()
    assert "No action chunks recorded." in text and "No prediction-error samples" in text
    assert "No timing recorded." in text and "No forecast frames to show." in text
    assert embedded_pngs(text) == []


def test_plain_tuples_dicts_and_edge_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "MAX_ACTION_DIMS", 4)  # keeps the test fast; 32 by default
    rng = np.random.default_rng(1)
    frames = [scene(0.1 * k) for k in range(12)]
    data = ReportData(
        chunks=[(10.0, rng.normal(size=(8, 6)), 0.1), (10.8, rng.normal(size=8), 0.1)],  # 6 dims; a 1-D chunk
        errors=[
            {"stamp": 10.1, "chunk_id": 0, "step": 0, "nmse": 0.1},
            ErrorSample(0, 1, 10.2, 10.2, float("nan"), 20.0, 0.1),  # NaN skipped
            {"stamp": 10.3, "chunk_id": None, "step": None, "nmse": 0.3},
        ],
        latencies=[(10.0, 0.9), (10.8, 0.95, 0.4)],
        strips=[
            FrameStrip("long strip", frames, [f if k % 3 else None for k, f in enumerate(frames)]),
            FrameStrip("float frames", [f.astype(np.float32) / 255 for f in frames[:2]], [None, None]),
            FrameStrip("empty", [], []),
        ],
        metric="nmse",
    )
    text = render_html(data)
    assert "Only the first 4 of 6 action dimensions are drawn." in text
    assert len(embedded_pngs(text)) == 3 + 2  # the empty strip is left out
    assert "error samples</td><td>2<" in text


@pytest.mark.parametrize("metric", ["psnr", "mae"])
def test_other_metrics(metric: str) -> None:
    errors = [ErrorSample(0, k, 1.0 + 0.1 * k, 1.0 + 0.1 * k, 0.1 * k, 40.0 - k, 0.01 * k) for k in range(6)]
    text = render_html(ReportData(errors=errors, metric=metric, threshold=37.5 if metric == "psnr" else 0.03))
    assert len(embedded_pngs(text)) == 1
    if metric == "psnr":
        assert "psnr &lt; 37.5" in text and "3 of 6" in text
    else:
        assert "mae &gt; 0.03" in text and "2 of 6" in text
