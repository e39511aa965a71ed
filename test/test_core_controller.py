# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""PolicyController, ClipBuffer and the chunk-to-trajectory math (pure core, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.control.controller import ControllerConfig, PolicyController
from cosmos3_ros.core.clip_buffer import CameraBuffer, ClipBuffer, Frame, FrameRejectedError
from cosmos3_ros.core.results import ActionChunk, Timing
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.stats import LatencyStats, RateEstimator
from cosmos3_ros.core.trajectory import ActionMapping, Trajectory, chunk_times, default_joint_names

SETTINGS = PolicySettings(fps=5.0, action_chunk_size=16)
IMG = np.zeros((4, 6, 3), np.uint8)


def _controller(**kw) -> PolicyController:
    names = default_joint_names("bridge_orig_lerobot", 10)
    cfg = ControllerConfig(cameras=("cam",), mapping=ActionMapping.build(names), replan_every=8, **kw)
    return PolicyController(cfg, SETTINGS)


def _chunk(value: float = 0.5, shape=(16, 10)) -> ActionChunk:
    return ActionChunk(actions=np.full(shape, value, np.float32), settings=SETTINGS, timing=Timing())


def test_default_joint_names():
    assert default_joint_names("bridge_orig_lerobot", 10)[-1] == "gripper"
    assert len(default_joint_names("robomind-franka-dual", 20)) == 20
    assert default_joint_names("pusht", 2) == ["x", "y"]
    assert default_joint_names("galbot", 30)[0] == "a0"


def test_mapping_scale_offset_clamp_and_validation():
    m = ActionMapping.build(["a", "b"], scale=[2, 1], offset=[1, 0], lower=[-10, -0.5], upper=[10, 0.5])
    out = m.apply(np.array([[1.0, 1.0], [-100.0, -1.0]]))
    np.testing.assert_allclose(out, [[3.0, 0.5], [-10.0, -0.5]])
    with pytest.raises(ValueError, match="action_scale has 3 values"):
        ActionMapping.build(["a", "b"], scale=[1, 2, 3])
    with pytest.raises(ValueError, match=r"lower 1\.0 > upper 0\.0"):
        ActionMapping.build(["a"], lower=[1], upper=[0])
    with pytest.raises(ValueError, match="unique"):
        ActionMapping.build(["a", "a"])
    with pytest.raises(ValueError, match="not finite"):
        ActionMapping.build(["a"]).apply(np.array([[np.nan]]))


def test_trajectory_timing_and_interpolation():
    t = chunk_times(4, 5.0)
    np.testing.assert_allclose(t, [0.2, 0.4, 0.6, 0.8])
    tr = Trajectory(("a",), np.array([[0.0], [1.0], [2.0], [3.0]]), t, 10.0, 1)
    assert tr.end_time == pytest.approx(10.8)
    assert tr.points_due(10.39) == 1 and tr.points_due(10.4) == 2
    assert tr.sample(10.3)[0] == pytest.approx(0.5)
    assert tr.sample(11.0)[0] == 3.0
    assert tr.sample(10.1, before=np.array([-1.0]))[0] == pytest.approx(-0.5)


def test_camera_buffer_order_bounds_and_nearest():
    b = CameraBuffer(capacity=5)
    for i in range(8):
        b.add(Frame(i * 0.1, np.full((1, 1, 3), i, np.uint8)))
    assert len(b) == 5
    with pytest.raises(FrameRejectedError) as e:
        b.add(Frame(0.7, IMG))
    assert e.value.reason == "out_of_order"
    with pytest.raises(FrameRejectedError):
        b.add(Frame(float("nan"), IMG))
    with pytest.raises(FrameRejectedError) as e:
        b.add(Frame(-0.1, IMG))
    assert e.value.reason == "negative_stamp"
    assert round(b.nearest(0.0).stamp, 1) == 0.3  # 0.0 .. 0.2 fell out of the buffer
    assert int(b.newest().image[0, 0, 0]) == 7


def test_clip_buffer_sync_and_staleness():
    cb = ClipBuffer(["front", "wrist"])
    cb.add("front", 1.00, IMG)
    obs, reason = cb.observation(now=1.0, max_age=0.5, sync_tolerance=0.05)
    assert obs is None and reason == "no_frames"
    cb.add("wrist", 1.20, IMG)
    assert cb.observation(1.2, 0.5, 0.05)[1] == "unsynced"
    cb.add("wrist", 1.21, IMG)
    cb.add("front", 1.19, IMG)
    obs, reason = cb.observation(1.25, 0.5, 0.05)
    assert reason == "ok" and obs.stamp == 1.19 and obs.frames["wrist"].stamp == 1.20
    assert cb.observation(2.0, 0.5, 0.05)[1] == "stale"
    with pytest.raises(KeyError):
        cb.add("left", 1.0, IMG)


def test_request_publish_replan_and_no_duplicate_requests():
    c = _controller(max_observation_age=10.0)
    req, out = c.step(0.0)
    assert req is None and out == []  # no frames yet
    assert c.counters.get("no_observation.no_frames") == 1
    c.add_frame("cam", 1.0, IMG)
    req, _ = c.step(1.05)
    assert req is not None and req.stamp == 1.0
    assert c.step(1.06)[0] is None  # one in flight at most
    [traj] = c.complete(req, _chunk(), None, now=1.5)
    # rows 0 and 1 (1.2, 1.4) were due before the chunk arrived: dropped; the first chunk starts at row 2
    assert traj.stamp == 1.0 and traj.positions.shape == (14, 10) and traj.kind == "chunk"
    np.testing.assert_allclose(traj.times[:2], [0.6, 0.8])
    assert traj.velocities.shape == traj.positions.shape and c.last_join["consumed_rows"] == 2
    c.add_frame("cam", 2.45, IMG)
    assert c.step(2.5)[0] is None  # 7 points due (1.2..2.4): not yet
    req2, _ = c.step(2.6)  # 8 points due -> replan from the newest observation
    assert req2 is not None and req2.stamp == 2.45
    c.complete(req2, _chunk(0.1), None, now=2.7)
    assert c.step(4.1)[0] is None  # replan due again, but no newer frame than 2.45
    assert c.counters.get("no_observation.not_newer") >= 1


def test_hold_once_when_chunk_runs_out_then_resume():
    c = _controller(max_observation_age=10.0)
    c.add_frame("cam", 0.0, IMG)
    req, _ = c.step(0.0)
    c.complete(req, _chunk(0.25), None, now=0.1)
    _, out = c.step(3.3)  # end of chunk at 3.2, no newer frame
    assert [t.kind for t in out] == ["hold"] and out[0].stamp is None
    np.testing.assert_allclose(out[0].positions[0], np.full(10, 0.25))
    assert not c.commanding
    assert c.step(3.4)[1] == []  # exactly one hold
    c.add_frame("cam", 3.35, IMG)
    req, _ = c.step(3.5)
    assert req is not None
    [traj] = c.complete(req, _chunk(0.3), None, now=3.6)
    assert c.commanding and traj.kind == "chunk"


def test_backend_failure_and_invalid_chunk_hold():
    c = _controller()
    c.add_frame("cam", 0.0, IMG)
    req, _ = c.step(0.0)
    c.complete(req, _chunk(), None, now=0.1)
    c.add_frame("cam", 1.7, IMG)
    req, _ = c.step(1.7)
    out = c.complete(req, None, RuntimeError("GPU fell off the bus"), now=1.8)
    assert [t.kind for t in out] == ["hold"] and c.counters.get("inference_errors") == 1
    assert "GPU fell off" in c.last_error and c.consecutive_errors == 1
    c.add_frame("cam", 1.9, IMG)
    req, _ = c.step(1.9)
    assert c.complete(req, _chunk(shape=(16, 9)), None, now=2.0) == []  # not commanding: nothing to hold
    assert c.counters.get("invalid_chunks") == 1 and not c.commanding


def test_stale_chunk_discarded_and_disarm():
    c = _controller()
    c.add_frame("cam", 0.0, IMG)
    req, _ = c.step(0.0)
    assert c.complete(req, _chunk(), None, now=5.0) == []  # all points in the past
    assert c.counters.get("stale_chunks") == 1
    c.add_frame("cam", 5.0, IMG)
    req, _ = c.step(5.0)
    c.complete(req, _chunk(), None, now=5.1)
    out = c.arm(5.2, False)
    assert [t.kind for t in out] == ["hold"]
    c.add_frame("cam", 5.3, IMG)
    assert c.step(5.4)[0] is None  # disarmed: no requests
    c.arm(5.5, True)
    assert c.step(5.6)[0] is not None


def test_stamp_mode_now_keeps_absolute_schedule():
    c = _controller(stamp_mode="now")
    c.add_frame("cam", 1.0, IMG)
    req, _ = c.step(1.0)
    [traj] = c.complete(req, _chunk(), None, now=1.5)
    assert traj.stamp == 1.5 and len(traj.times) == 14  # points at 1.2 and 1.4 already due
    np.testing.assert_allclose(traj.times[0], 0.1)


def test_config_validation():
    names = default_joint_names("bridge_orig_lerobot", 10)
    with pytest.raises(ValueError, match="10 action dimensions but 2 joint_names"):
        PolicyController(ControllerConfig(("c",), ActionMapping.build(["a", "b"])), SETTINGS)
    with pytest.raises(ValueError, match="replan_every"):
        PolicyController(ControllerConfig(("c",), ActionMapping.build(names), replan_every=17), SETTINGS)
    with pytest.raises(ValueError, match="'single' takes one camera"):
        ControllerConfig(("a", "b"), ActionMapping.build(names))
    with pytest.raises(ValueError, match="trajectory_stamp"):
        ControllerConfig(("a",), ActionMapping.build(names), stamp_mode="later")


def test_stats():
    s = LatencyStats()
    for v in [0.1, 0.2, 0.3, 0.4]:
        s.add(v)
    d = s.summary()
    assert d["last"] == 0.4 and d["count"] == 4 and 0.2 < d["p50"] < 0.3
    r = RateEstimator()
    for i in range(11):
        r.tick(i * 0.1)
    assert r.rate(now=1.0) == pytest.approx(10.0)
    assert r.rate(now=10.0) == 0.0
