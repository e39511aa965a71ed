# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The simulator's JointTrajectory following (joint_trajectory_controller's semantics) and its metrics, pure numpy."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.sim.metrics import Chunk, boundary_jumps, jerk, moves_toward, tracking_error
from cosmos3_ros.sim.trajectory import CommandError, TrajectoryCommand, TrajectoryFollower, interpolate, validate

JOINTS = ("a", "b")


def cmd(stamp: float, times, positions, velocities=(), accelerations=(), names=JOINTS) -> TrajectoryCommand:
    return TrajectoryCommand.build(names, stamp, times, positions, velocities, accelerations)


def test_interpolation_is_linear_cubic_or_quintic_by_what_the_points_carry():
    a, b = np.array([0.0]), np.array([1.0])
    # linear: positions only
    pos, vel, acc = interpolate(0.0, (a, None, None), 2.0, (b, None, None), 0.5)
    assert pos == pytest.approx(0.25) and vel == pytest.approx(0.5) and acc == 0.0
    # cubic: a cubic polynomial is reproduced exactly from its values and slopes at the ends
    f = lambda t: 1 + 2 * t - 3 * t**2 + 0.5 * t**3  # noqa: E731
    df = lambda t: 2 - 6 * t + 1.5 * t**2  # noqa: E731
    sa, sb = (np.array([f(1.0)]), np.array([df(1.0)]), None), (np.array([f(3.0)]), np.array([df(3.0)]), None)
    for t in (1.0, 1.7, 2.9, 3.0):
        pos, vel, _ = interpolate(1.0, sa, 3.0, sb, t)
        assert pos[0] == pytest.approx(f(t)) and vel[0] == pytest.approx(df(t))
    # quintic: a quintic polynomial is reproduced from values, slopes and curvatures
    g = np.polynomial.Polynomial([0.3, -1.0, 0.5, 2.0, -0.7, 0.1])
    d1, d2 = g.deriv(), g.deriv(2)
    ends = [(np.array([g(x)]), np.array([d1(x)]), np.array([d2(x)])) for x in (0.0, 1.5)]
    for t in (0.2, 0.75, 1.4):
        pos, vel, acc = interpolate(0.0, ends[0], 1.5, ends[1], t)
        assert (pos[0], vel[0], acc[0]) == pytest.approx((g(t), d1(t), d2(t)))
    # outside the segment: the nearer end, held (no extrapolation of the spline)
    pos, vel, _ = interpolate(1.0, sa, 3.0, sb, 5.0)
    assert pos[0] == pytest.approx(f(3.0))


def test_a_late_trajectory_skips_the_points_already_past():
    c = cmd(10.0, [0.1, 0.2, 0.3, 0.4], [[0, 0], [1, 1], [2, 2], [3, 3]])
    f = TrajectoryFollower(c, validate(c, JOINTS, 10.25))
    f.begin(10.25, np.array([9.0, 9.0]), np.zeros(2))  # arrives between points 1 (10.2 s) and 2 (10.3 s)
    pos, vel, _ = f.sample(10.25)
    np.testing.assert_allclose(pos, [1.5, 1.5])  # on the segment, not from the state before (a jump)
    np.testing.assert_allclose(vel, [10.0, 10.0])
    pos, vel, _ = f.sample(11.0)
    np.testing.assert_allclose(pos, [3, 3])
    np.testing.assert_allclose(vel, [0, 0])  # after the last point: held, at rest
    assert f.sample(10.0) is None  # before it was received: the previous command stays


def test_the_segment_before_the_first_point_starts_from_the_measured_state():
    # zero stamp: starts when first sampled; with velocities the first segment is a cubic from the measured state
    c = cmd(0.0, [0.5, 1.0], [[1, 1], [2, 2]], velocities=[[1, 1], [0, 0]])
    f = TrajectoryFollower(c, validate(c, JOINTS, 3.0))
    f.begin(3.0, np.array([0.0, 0.5]), np.array([0.2, 0.0]))
    pos, vel, _ = f.sample(3.0)
    np.testing.assert_allclose(pos, [0.0, 0.5])
    np.testing.assert_allclose(vel, [0.2, 0.0])
    pos, vel, _ = f.sample(3.5)
    np.testing.assert_allclose(pos, [1, 1])
    np.testing.assert_allclose(vel, [1, 1])
    # without velocities in the message the first segment is linear
    c = cmd(0.0, [0.5], [[1, 1]])
    f = TrajectoryFollower(c, validate(c, JOINTS, 0.0))
    f.begin(0.0, np.array([0.0, 0.0]), np.array([5.0, 5.0]))
    np.testing.assert_allclose(f.sample(0.25)[0], [0.5, 0.5])


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: cmd(0.0, [0.1], [[0, 0]], names=("a", "zz")), "unknown_joints"),
        (lambda: cmd(0.0, [0.1], [[0]], names=("a",)), "partial_goal"),
        (lambda: cmd(0.0, [0.2, 0.2], [[0, 0], [1, 1]]), "time_order"),
        (lambda: cmd(1.0, [0.1, 0.2], [[0, 0], [1, 1]]), "ends_in_past"),
        (lambda: cmd(0.0, [0.1], [[0, 0]], velocities=[[0.1, 0]]), "end_velocity"),
        (lambda: cmd(0.0, [0.1], [[np.nan, 0]]), "non_finite"),
        (lambda: cmd(0.0, [-0.1], [[0, 0]]), "negative_time"),
        (lambda: cmd(0.0, [0.1, 0.2], [[0, 0], [1]]), "shape"),
        (lambda: cmd(0.0, [], []), "no_points"),
        (lambda: cmd(0.0, [0.1], [[0, 0]], names=("a", "a")), "duplicate_joints"),
    ],
)
def test_trajectories_the_controller_refuses(build, reason):
    with pytest.raises(CommandError) as exc:
        validate(build(), JOINTS, now=5.0)
    assert exc.value.reason == reason


def test_what_the_controller_parameters_allow():
    partial = cmd(0.0, [0.1], [[0]], names=("b",))
    np.testing.assert_array_equal(validate(partial, JOINTS, 0.0, allow_partial_joints_goal=True), [1])
    moving_end = cmd(0.0, [0.1], [[0, 0]], velocities=[[0.1, 0]])
    validate(moving_end, JOINTS, 0.0, allow_nonzero_velocity_at_trajectory_end=True)
    validate(cmd(0.0, [0.1], [[0, 0]]), JOINTS, now=1e6)  # a zero stamp never ends in the past


def test_metrics_tracking_jerk_and_boundary_jumps():
    t = np.arange(0, 1, 0.01)
    q = np.sin(t)[:, None]
    err = tracking_error(t, q + 0.01, t[::2], q[::2])  # only common stamps are compared
    assert err["n"] == 50 and err["max"] == pytest.approx(0.01)
    j = jerk(t, (t**3)[:, None])  # v = t^3: d2v/dt2 = 6 t
    assert j["max"] == pytest.approx(6 * t[-2], rel=1e-3)
    a = Chunk(0.0, np.array([0.5, 1.0, 1.5]), np.array([[0.0] * 7, [1.0] * 7, [2.0] * 7]))
    b = Chunk(0.75, np.array([1.0, 1.5]), np.array([[1.0] * 7, [1.0] * 7]))  # at 1.0 s where a is: no jump
    hold = Chunk(2.0, np.array([2.0]), np.array([[1.0] * 7]), hold=True)
    c = Chunk(2.5, np.array([3.0]), np.array([[4.0] * 7]))  # after a hold: no boundary
    jumps = boundary_jumps([a, b, hold, c])
    assert jumps["n"] == 1 and jumps["max"] == pytest.approx(0.0)
    b2 = Chunk(0.75, np.array([1.0, 1.5]), np.array([[2.0] * 7, [1.0] * 7]))
    assert boundary_jumps([a, b2])["max"] == pytest.approx(1.0)
    b3 = Chunk(0.75, np.array([0.75, 1.25]), np.array([[0.0] * 7, [1.0] * 7]))  # at 1.25 s a is at 1.5
    assert boundary_jumps([a, b3])["max"] == pytest.approx(0.5)


def test_moving_toward_the_reference_is_measured_against_chance():
    t = np.arange(0, 4, 0.01)
    ref = np.where(np.sin(3 * t) > 0, 1.0, -1.0)[:, None]  # a reference that jumps back and forth
    q = np.zeros_like(ref)
    for k in range(1, len(t)):  # a joint that goes towards it at 2 units/s
        q[k] = q[k - 1] + np.clip(ref[k - 1] - q[k - 1], -0.02, 0.02)
    share, n = moves_toward(t, q, t, ref)
    assert share > 0.9 and n > 100
    away, _ = moves_toward(t, -q, t, ref)
    assert away < 0.1
