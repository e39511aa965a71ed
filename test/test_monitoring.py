# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Prediction-error metric, forecast tracker and drift monitor (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosmos3_ros.core.drift import DriftMonitor
from cosmos3_ros.core.forecast import ErrorSample, ForecastTracker
from cosmos3_ros.core.metrics import PSNR_CAP_DB, area_resize, prediction_error
from cosmos3_ros.core.synthetic import moving_scene_frame

# ---------------------------------------------------------------------------------------------------------------------
# Metric
# ---------------------------------------------------------------------------------------------------------------------


def test_identical_frames_zero_error(frame: np.ndarray) -> None:
    err = prediction_error(frame, frame.copy())
    assert err["nmse"] == 0.0
    assert err["mae"] == 0.0
    assert err["psnr"] == PSNR_CAP_DB


def test_shift_is_worse_than_sensor_noise(frame: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(frame.astype(np.float64) + rng.normal(0, 12.0, frame.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(frame, 24, axis=1)
    e_noise = prediction_error(noisy, frame)
    e_shift = prediction_error(shifted, frame)
    assert e_shift["nmse"] > 10 * e_noise["nmse"]
    assert e_shift["psnr"] < e_noise["psnr"]
    assert e_shift["mae"] > e_noise["mae"]
    # The area average suppresses iid noise: nmse stays small.
    assert e_noise["nmse"] < 0.02


def test_moving_scene_error_grows_with_time_offset() -> None:
    ref = moving_scene_frame(0.0)
    errs = [prediction_error(moving_scene_frame(dt), ref)["nmse"] for dt in (0.0, 0.2, 0.6)]
    assert errs[0] == 0.0
    assert errs[0] < errs[1] < errs[2]


def test_different_sizes_and_dtypes(frame: np.ndarray) -> None:
    small = area_resize(frame, (160, 120)).round().astype(np.uint8)  # exact 2x2 average
    err = prediction_error(small, frame)
    assert err["nmse"] < 1e-4
    assert err["psnr"] > 45
    # float input in [0, 1] equals uint8 input
    err_f = prediction_error(frame.astype(np.float32) / 255.0, frame)
    assert err_f["nmse"] < 1e-10
    # odd sizes and grey frames
    odd = np.full((37, 53), 128, np.uint8)
    e = prediction_error(odd, np.full((240, 320, 3), 128, np.uint8))
    assert e["nmse"] == pytest.approx(0.0, abs=1e-9)
    # different aspect ratio works (stretched) and is finite
    wide = prediction_error(np.zeros((100, 400, 3), np.uint8), frame)
    assert all(math.isfinite(v) for v in wide.values())


def test_nmse_of_unrelated_frames_is_order_one() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    b = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    assert 1.5 < prediction_error(a, b)["nmse"] < 2.5
    # flat prediction of the mean colour: nmse about 1
    mean = np.broadcast_to(a.reshape(-1, 3).mean(axis=0), a.shape).astype(np.float32) / 255.0
    assert prediction_error(mean, a)["nmse"] == pytest.approx(1.0, rel=0.05)


def test_flat_actual_frame_stays_finite() -> None:
    black = np.zeros((48, 64, 3), np.uint8)
    white = np.full((48, 64, 3), 255, np.uint8)
    e = prediction_error(white, black)
    assert math.isfinite(e["nmse"]) and e["nmse"] == pytest.approx(1000.0)
    assert e["psnr"] == pytest.approx(0.0)
    assert e["mae"] == pytest.approx(1.0)


def test_area_resize_exact_weights() -> None:
    img = np.arange(6, dtype=np.float32).reshape(1, 6, 1)
    out = area_resize(img, (4, 1))  # each output covers 1.5 input pixels
    np.testing.assert_allclose(out[0, :, 0], [0.5 / 1.5, 2.5 / 1.5, 5.0 / 1.5, 7.0 / 1.5], rtol=1e-6)
    assert area_resize(np.ones((7, 11, 3)), (64, 48)).shape == (48, 64, 3)
    np.testing.assert_allclose(area_resize(np.full((7, 11, 3), 0.25), (64, 48)), 0.25, rtol=1e-6)


def test_bad_frames_rejected() -> None:
    with pytest.raises(ValueError):
        prediction_error(np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        prediction_error(np.zeros((4, 4, 3), np.int32), np.zeros((4, 4, 3), np.uint8))


# ---------------------------------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------------------------------


def scene(t: float) -> np.ndarray:
    return moving_scene_frame(t, 96, 128)


def test_tracker_matches_closest_frame_within_tolerance() -> None:
    tr = ForecastTracker(tolerance_s=0.05)
    stamps = [1.0, 1.1, 1.2]
    tr.add_forecast(7, stamps, np.stack([scene(s) for s in stamps]))
    # Camera at 30 Hz, slightly offset: frames at 0.98, 1.013, 1.046, ...
    cam = [0.98 + i / 30 for i in range(12)]
    got: list[ErrorSample] = []
    for t in cam:
        got += tr.observe(t, scene(t))
    assert [s.step for s in got] == [0, 1, 2]
    for s in got:
        best = min(cam, key=lambda t, s=s: abs(t - s.stamp))
        assert s.actual_stamp == pytest.approx(best)
        assert s.chunk_id == 7
    assert tr.matched == 3 and tr.missed == 0 and tr.pending == 0
    [chunk] = tr.drain_completed()
    assert chunk.chunk_id == 7 and chunk.matched == 3 and chunk.missed == 0
    assert chunk.mean_nmse == pytest.approx(np.mean([s.nmse for s in got]))
    assert tr.drain_completed() == []


def test_tracker_sample_decided_by_first_frame_at_or_after_stamp() -> None:
    tr = ForecastTracker(tolerance_s=0.05)
    tr.add_forecast(0, [1.0], scene(1.0)[None])
    assert tr.observe(0.97, scene(0.97)) == []  # candidate, might still improve
    [s] = tr.observe(1.02, scene(1.02))  # at/after the stamp: decided, 1.02 is closer than 0.97
    assert s.actual_stamp == pytest.approx(1.02)
    tr.add_forecast(1, [2.0], scene(2.0)[None])
    assert tr.observe(1.99, scene(1.99)) == []
    [s] = tr.observe(2.04, scene(2.04))  # 1.99 was closer: kept
    assert s.actual_stamp == pytest.approx(1.99)


def test_tracker_exact_identical_frames() -> None:
    tr = ForecastTracker(tolerance_s=0.05)
    frames = np.stack([scene(0.1 * k) for k in range(4)])
    tr.add_forecast(3, [0.1 * k for k in range(4)], frames)
    out = []
    for k in range(4):
        out += tr.observe(0.1 * k, frames[k])
    assert len(out) == 4
    assert all(s.nmse == 0.0 and s.psnr == PSNR_CAP_DB for s in out)


def test_tracker_missed_steps_and_tolerance() -> None:
    tr = ForecastTracker(tolerance_s=0.02)
    tr.add_forecast(1, [1.0, 1.1, 1.2], np.stack([scene(1.0)] * 3))
    assert tr.observe(0.95, scene(0.95)) == []  # too early for step 0
    assert tr.observe(1.05, scene(1.05)) == []  # step 0 missed (1.05 > 1.0 + 0.02)
    assert tr.missed == 1
    [s] = tr.observe(1.115, scene(1.115))
    assert s.step == 1
    assert tr.observe(1.5, scene(1.5)) == []  # step 2 missed, chunk complete
    assert tr.missed == 2 and tr.matched == 1 and tr.pending == 0
    [chunk] = tr.drain_completed()
    assert (chunk.matched, chunk.missed) == (1, 2)


def test_tracker_overlapping_chunks_share_a_frame() -> None:
    tr = ForecastTracker(tolerance_s=0.05)
    tr.add_forecast(0, [1.0, 1.1], np.stack([scene(1.0), scene(1.1)]))
    tr.add_forecast(1, [1.1, 1.2], np.stack([scene(1.1), scene(1.2)]))
    out = []
    for t in (1.0, 1.1, 1.2):
        out += tr.observe(t, scene(t))
    assert sorted((s.chunk_id, s.step) for s in out) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_tracker_bounded_memory_evicts_oldest() -> None:
    tr = ForecastTracker(tolerance_s=0.05, max_pending=3, window=5, keep_chunks=4)
    for c in range(10):
        tr.add_forecast(c, [100.0 + c, 100.5 + c], np.stack([scene(0.0)] * 2))
    assert tr.pending == 3
    assert tr.evicted == 7 * 2
    assert tr.forecasts == 10
    # The three newest survive and get matched.
    out = []
    for t in np.arange(107.0, 110.0, 0.5):
        out += tr.observe(float(t), scene(0.0))
    assert sorted({s.chunk_id for s in out}) == [7, 8, 9]
    assert len(tr.recent()) == 5  # rolling window bounded
    assert len(tr.drain_completed()) == 3


def test_tracker_flush_and_reset() -> None:
    tr = ForecastTracker(tolerance_s=0.05)
    tr.add_forecast(0, [1.0, 1.1], np.stack([scene(1.0)] * 2))
    assert tr.observe(0.99, scene(0.99)) == []
    out = tr.flush()
    assert [s.step for s in out] == [0]
    assert tr.missed == 1 and tr.pending == 0
    tr.add_forecast(1, [5.0], scene(5.0)[None])
    tr.reset()
    assert tr.pending == 0
    assert tr.observe(5.0, scene(5.0)) == []


def test_tracker_time_jump_back_drops_pending() -> None:
    tr = ForecastTracker(tolerance_s=0.05)
    tr.add_forecast(0, [10.0, 10.1], np.stack([scene(10.0)] * 2))
    assert len(tr.observe(10.0, scene(10.0))) == 1
    tr.observe(0.5, scene(0.5))  # the bag looped
    assert tr.time_jumps == 1 and tr.pending == 0 and tr.evicted == 1
    tr.add_forecast(1, [0.6], scene(0.6)[None])
    assert len(tr.observe(0.6, scene(0.6))) == 1  # works again from the new time
    tr.observe(0.1, scene(0.1))  # 0.5 s back: jitter, not a jump (jump_back_s is 1 s here)
    assert tr.time_jumps == 1
    with pytest.raises(ValueError):
        tr.observe(float("nan"), scene(0.0))


def test_tracker_summary_and_best_worst_frames() -> None:
    tr = ForecastTracker(tolerance_s=0.05, window=4, keep_frames_size=(32, 24))
    # chunk 0: perfect prediction; chunk 1: shifted prediction (bad)
    tr.add_forecast(0, [1.0, 1.1], np.stack([scene(1.0), scene(1.1)]))
    tr.add_forecast(1, [1.2, 1.3], np.stack([np.roll(scene(1.2), 30, axis=1), np.roll(scene(1.3), 30, axis=1)]))
    for t in (1.0, 1.1, 1.2, 1.3):
        tr.observe(t, scene(t))
    summ = tr.summary()
    assert summ["window"] == 4 and summ["matched"] == 4
    assert summ["last"] > 0 and summ["max"] >= summ["mean"] >= 0
    assert tr.best_chunk is not None and tr.best_chunk.chunk_id == 0
    assert tr.worst_chunk is not None and tr.worst_chunk.chunk_id == 1
    assert tr.best_chunk.score == 0.0
    assert tr.worst_chunk.predicted[0].shape == (24, 32, 3) and tr.worst_chunk.predicted[0].dtype == np.uint8
    assert all(a is not None for a in tr.worst_chunk.actual)
    empty = ForecastTracker(tolerance_s=0.1).summary()
    assert math.isnan(empty["mean"]) and empty["window"] == 0


def test_tracker_psnr_metric_ranks_low_psnr_as_worst() -> None:
    tr = ForecastTracker(tolerance_s=0.05, metric="psnr", keep_frames_size=(16, 12))
    tr.add_forecast(0, [1.0], scene(1.0)[None])
    tr.add_forecast(1, [2.0], np.roll(scene(2.0), 40, axis=1)[None])
    for t in (1.0, 2.0):
        tr.observe(t, scene(t))
    assert tr.worst_chunk.chunk_id == 1 and tr.best_chunk.chunk_id == 0
    assert tr.summary()["max"] == pytest.approx(min(s.psnr for s in tr.recent()))


def test_tracker_validates_input() -> None:
    with pytest.raises(ValueError):
        ForecastTracker(tolerance_s=0.0)
    tr = ForecastTracker(tolerance_s=0.1)
    with pytest.raises(ValueError):
        tr.add_forecast(0, [1.0, 2.0], scene(0.0)[None])
    with pytest.raises(ValueError):
        tr.add_forecast(0, [2.0, 1.0], np.stack([scene(0.0)] * 2))
    with pytest.raises(ValueError):
        tr.add_forecast(0, [float("inf")], scene(0.0)[None])


# ---------------------------------------------------------------------------------------------------------------------
# Drift monitor
# ---------------------------------------------------------------------------------------------------------------------


def test_drift_monitor_threshold_and_consecutive() -> None:
    dm = DriftMonitor(0.5, window=2)
    st = dm.update([0.1, 0.2])
    assert not st.exceeded and st.consecutive == 0
    st = dm.update([0.9])  # mean(0.2, 0.9) = 0.55
    assert st.exceeded and st.tripped and st.consecutive == 1
    st = dm.update([1.0])
    assert st.exceeded and not st.tripped and st.consecutive == 2
    assert dm.update([]).consecutive == 2  # no samples: no change
    st = dm.update([0.0, 0.0])
    assert not st.exceeded and st.consecutive == 0
    assert dm.trips == 1
    dm.update([2.0, 2.0])
    assert dm.trips == 2
    dm.reset()
    assert not dm.state().exceeded and math.isnan(dm.state().value)


def test_drift_monitor_psnr_lower_is_worse_and_min_samples() -> None:
    dm = DriftMonitor(20.0, metric="psnr", window=3, min_samples=3)
    s = ErrorSample(0, 0, 0.0, 0.0, nmse=1.0, psnr=10.0, mae=0.5)
    assert not dm.update([s, s]).exceeded  # fewer than min_samples
    st = dm.update([s])
    assert st.exceeded and st.value == pytest.approx(10.0)
    st = dm.update([ErrorSample(0, 1, 0.0, 0.0, 0.0, 60.0, 0.0)] * 3)
    assert not st.exceeded
    with pytest.raises(ValueError):
        DriftMonitor(1.0, metric="ssim")
