# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Real-time chunking and controller-grade trajectories (cosmos3_ros.control.chunking, core.trajectory): the delay
estimate, prefixes, joins that continue from the command, velocities, rate limits. Pure, fast."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.control.chunking import DelayEstimator, Plan, boundary_jump, join
from cosmos3_ros.control.controller import ControllerConfig, PolicyController
from cosmos3_ros.core.results import ActionChunk, Timing
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.trajectory import ActionMapping, RateLimits, hermite, point_velocities

IMG = np.zeros((8, 8, 3), np.uint8)
NAMES = ("a", "b")
SETTINGS = PolicySettings(action_chunk_size=16, fps=10.0, domain_name="pusht")


def _controller(**kw) -> PolicyController:
    mapping = kw.pop("mapping", ActionMapping.build(NAMES))
    cfg = ControllerConfig(cameras=("cam",), mapping=mapping, replan_every=4, max_observation_age=10.0, **kw)
    return PolicyController(cfg, SETTINGS)


def _ramp(start: float, slope: float, n: int = 16) -> np.ndarray:
    k = np.arange(n, dtype=np.float32)[:, None]
    return np.hstack([start + slope * k, -(start + slope * k)]).astype(np.float32)


def _answer(req, actions: np.ndarray) -> ActionChunk:
    """A backend's answer: ``actions`` with the request's prefix rows given back unchanged (as the runtime does)."""
    a = actions.copy()
    if req.prefix is not None:
        a[: len(req.prefix)] = req.prefix
    return ActionChunk(a, req.settings, Timing())


# -- delay estimate ------------------------------------------------------------------------------------------------


def test_delay_estimate_skips_the_cold_call_and_uses_a_windowed_p95():
    est = DelayEstimator(window=20)
    est.add(5.0)  # the first result after a start (compile, cold caches): never counted
    assert est.latency() is None and est.delay_steps(0.0, 0.1) is None
    for _ in range(20):
        est.add(0.25)
    assert est.latency() == 0.25
    assert est.delay_steps(0.05, 0.1) == 4  # ceil((0.05 + 0.25) / 0.1) + 1
    est.add(0.6)  # one slow call: p95 of 20 is the second highest, not moved by a single outlier
    assert est.latency() == 0.25
    est.add(0.6)  # a step change: followed within two calls
    assert est.latency() == 0.6
    for _ in range(20):  # and back down once the window has moved on
        est.add(0.2)
    assert est.latency() == 0.2
    est.add(float("nan"))
    est.add(-1.0)
    assert est.samples == 20
    est.reset()
    est.add(0.3)
    assert est.latency() is None  # skipped again after a reset


# -- plans and joins -----------------------------------------------------------------------------------------------


def test_plan_grid_snap_and_rows_hold_the_last():
    plan = Plan(1.0, 0.1, np.arange(10, dtype=float)[:, None])
    np.testing.assert_allclose(plan.times()[:2], [1.1, 1.2])
    assert plan.snap(1.34) == pytest.approx((1.3, 3)) and plan.snap(1.36) == pytest.approx((1.4, 4))
    np.testing.assert_array_equal(plan.rows(8, 4)[:, 0], [8, 9, 9, 9])


def test_boundary_jump_on_aligned_and_unaligned_grids():
    old = Plan(0.0, 0.1, np.zeros((10, 1)))
    new = Plan(0.3, 0.1, np.ones((10, 1)))
    assert boundary_jump(old, new, 0.45) == 1.0
    assert boundary_jump(None, new, 0.45) is None
    shifted = Plan(0.35, 0.1, np.full((10, 1), 0.5))
    assert boundary_jump(old, shifted, 0.4) == 0.5
    assert boundary_jump(old, new, 5.0) is None  # the new plan is over: nothing to compare


def test_join_continues_from_the_command_and_drops_rows_already_due():
    mapping = ActionMapping.build(NAMES)
    plan = Plan(0.0, 0.1, np.tile(np.arange(1.0, 11.0)[:, None], (1, 2)))
    j = join(plan, (np.array([0.5, 0.5]), np.array([1.0, 1.0])), 0.25, 7, mapping)
    t = j.trajectory
    assert j.consumed == 2 and j.prepended and t.chunk_id == 7
    np.testing.assert_allclose(t.point_times()[:3], [0.25, 0.3, 0.4])
    np.testing.assert_allclose(t.positions[0], [0.5, 0.5])
    np.testing.assert_allclose(t.velocities[0], [1.0, 1.0])  # continues the commanded velocity
    np.testing.assert_allclose(t.velocities[-1], [0.0, 0.0])  # ends at rest (joint_trajectory_controller rule)
    np.testing.assert_allclose(t.sample(0.25), [0.5, 0.5])  # no step at the switch
    with pytest.raises(ValueError, match="already due"):
        join(plan, None, 2.0, 1, mapping)


def test_velocities_are_consistent_with_positions():
    t = np.array([0.0, 0.1, 0.2, 0.4, 0.5])
    p = (3 * t**2)[:, None]  # a parabola: the three-point rule is exact at interior points
    v = point_velocities(p, t)
    np.testing.assert_allclose(v[1:-1, 0], 6 * t[1:-1], atol=1e-12)
    assert v[-1, 0] == 0.0
    pos, vel = hermite(np.array([0.0]), np.array([0.0]), np.array([1.0]), np.array([0.0]), 2.0, 1.0)
    assert pos[0] == pytest.approx(0.5) and vel[0] == pytest.approx(0.75)


def test_rate_limits_clamp_and_count():
    limits = RateLimits.build(1, max_velocity=[1.0], max_acceleration=[5.0])
    times = np.array([0.1, 0.2, 0.3])
    out, n_vel, n_acc = limits.apply(np.zeros(1), np.zeros(1), 0.0, np.array([[1.0], [1.0], [1.0]]), times)
    steps = np.diff(np.concatenate([[0.0], out[:, 0]])) / 0.1
    assert (np.abs(steps) <= 1.0 + 1e-12).all() and n_vel >= 1
    assert n_acc >= 1  # from rest, 5 m/s^2 allows only 0.5 m/s after 0.1 s
    assert not RateLimits.build(2).active
    with pytest.raises(ValueError, match="max_velocity has 1 values but there are 2"):
        RateLimits.build(2, max_velocity=[1.0])
    with pytest.raises(ValueError, match="> 0"):
        RateLimits.build(1, max_acceleration=[0.0])


# -- the controller with RTC ----------------------------------------------------------------------------------------


def _run_two_chunks(rtc: bool, **kw):
    c = _controller(rtc=rtc, **kw)
    c.add_frame("cam", 1.0, IMG)
    req, _ = c.step(1.0)
    assert req.prefix is None  # nothing to continue yet
    [first] = c.complete(req, _answer(req, _ramp(0.0, 0.1)), None, now=1.02)
    c.add_frame("cam", 1.43, IMG)  # off the first chunk's grid (1.1, 1.2, ...) by 0.03
    req2, _ = c.step(1.45)  # 4 rows due: replan
    [second] = c.complete(req2, _answer(req2, _ramp(5.0, -0.2)), None, now=1.7)
    return c, req2, first, second


def test_rtc_prefix_is_the_previous_chunk_on_its_own_grid():
    c, req2, first, second = _run_two_chunks(True)
    assert req2.grid_base == pytest.approx(1.4) and req2.stamp == 1.43  # snapped to the nearest grid point
    d = len(req2.prefix)
    # no latency measured yet (the first result is the cold call): every remaining row is given, up to the cap
    assert d == 16 - 4
    np.testing.assert_allclose(req2.prefix, _ramp(0.0, 0.1)[4 : 4 + d], atol=1e-6)
    # points of the new chunk inside the delay equal the previous chunk's at the same absolute times
    t1, t2 = first.point_times(), second.point_times()
    inside = (t2 > 1.7 + 1e-9) & (t2 <= req2.grid_base + d * 0.1 + 1e-9)
    assert inside.sum() >= 5
    for t, p in zip(t2[inside], second.positions[inside], strict=True):
        k = int(np.argmin(np.abs(t1 - t)))
        assert abs(t1[k] - t) < 1e-9
        np.testing.assert_allclose(p, first.positions[k], atol=1e-6)
    assert c.last_join["boundary_jump"] < 1e-6 and c.last_join["prefix_rows"] == d


def test_without_rtc_the_same_switch_jumps():
    c, req2, _, _ = _run_two_chunks(False)
    assert req2.prefix is None and req2.grid_base == 1.43
    assert c.last_join["boundary_jump"] > 1.0


def test_rtc_delay_follows_measured_latency_and_is_capped():
    c = _controller(rtc=True)
    stamp, now = 0.0, 0.0
    for i in range(6):  # latencies of 0.12 s on the node clock; the first one is not counted
        c.add_frame("cam", stamp, IMG)
        req, _ = c.step(now)
        assert req is not None, i
        c.complete(req, _answer(req, _ramp(0.0, 0.01)), None, now=now + 0.12)
        stamp, now = stamp + 0.4, now + 0.4
    assert c.delay.latency() == pytest.approx(0.12)
    c.add_frame("cam", stamp, IMG)
    req, _ = c.step(now)
    assert len(req.prefix) == 3  # ceil((age 0 + 0.12) / 0.1) + 1
    c.complete(req, _answer(req, _ramp(0.0, 0.01)), None, now=now + 0.12)
    capped = _controller(rtc=True, rtc_delay=15)
    capped.add_frame("cam", 0.0, IMG)
    r, _ = capped.step(0.0)
    capped.complete(r, _answer(r, _ramp(0.0, 0.01)), None, now=0.05)
    capped.add_frame("cam", 0.4, IMG)
    r, _ = capped.step(0.4)
    assert len(r.prefix) == 12 and capped.counters.get("rtc.delay_capped") == 1  # chunk 16 - replan_every 4


def test_late_chunk_and_ignored_prefix_are_counted():
    c = _controller(rtc=True, rtc_delay=2)
    c.add_frame("cam", 0.0, IMG)
    r, _ = c.step(0.0)
    c.complete(r, _answer(r, _ramp(0.0, 0.01)), None, now=0.01)
    c.add_frame("cam", 0.4, IMG)
    r, _ = c.step(0.4)
    c.complete(r, ActionChunk(_ramp(3.0, 0.0), r.settings, Timing()), None, now=0.75)  # prefix not given back
    assert c.counters.get("rtc.prefix_ignored") == 1
    assert c.counters.get("rtc.late_chunks") == 1  # 3 rows due at 0.75, only 2 were given


def test_rate_limited_commands_and_every_point_has_velocities():
    limits = RateLimits.build(2, max_velocity=[0.5, 0.5])
    c = _controller(rate_limits=limits, accelerations=True)
    c.add_frame("cam", 0.0, IMG)
    r, _ = c.step(0.0)
    c.complete(r, _answer(r, np.zeros((16, 2), np.float32)), None, now=0.01)
    c.add_frame("cam", 0.4, IMG)
    r, _ = c.step(0.4)
    [t] = c.complete(r, _answer(r, np.full((16, 2), 3.0, np.float32)), None, now=0.41)
    steps = np.abs(np.diff(t.positions, axis=0)) / np.diff(t.point_times())[:, None]
    assert (steps <= 0.5 + 1e-9).all() and c.counters.get("clamps.velocity") > 0
    assert t.velocities.shape == t.accelerations.shape == t.positions.shape
    [hold] = c.stop(0.5)
    assert hold.velocities.shape == hold.positions.shape == (1, 2)


def test_rtc_is_refused_where_it_cannot_work():
    with pytest.raises(ValueError, match="action_scale must not contain 0"):
        _controller(rtc=True, mapping=ActionMapping.build(NAMES, scale=[1.0, 0.0]))
    with pytest.raises(ValueError, match="joint_pos"):
        _controller(rtc=True, action_space="ee_pose")


def test_the_spline_never_overshoots_its_points():
    t = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    p = np.array([[0.0], [1.0], [1.0], [0.0], [0.0]])  # a plateau and a drop: a naive cubic bulges past 1 and 0
    from cosmos3_ros.core.trajectory import Trajectory

    traj = Trajectory(("a",), p, t, 0.0, 1, velocities=point_velocities(p, t))
    samples = np.array([traj.sample(x)[0] for x in np.linspace(0.0, 0.4, 401)])
    assert samples.min() >= -1e-12 and samples.max() <= 1.0 + 1e-12


def test_a_request_the_worker_refused_is_withdrawn_and_asked_again():
    c = _controller()
    c.add_frame("cam", 0.0, IMG)
    req, _ = c.step(0.0)
    assert c.in_flight
    c.withdraw(req)  # the worker was busy with an abandoned call
    assert not c.in_flight and c.counters.get("withdrawn_requests") == 1
    again, _ = c.step(0.05)
    assert again is not None and again.stamp == 0.0
