# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Motion metrics of the executed command stream (cosmos3_ros.core.motion) on hand-made streams."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cosmos3_ros.core.motion import CommandedChunk, Stop, analyse, chunk_spans, derivatives, executed_stream

DT = 0.2


def chunk(start: float, first: float, values, chunk_id: int = 0, **kw) -> CommandedChunk:
    """Points ``values`` (1-D: one joint, or [T, N]) on the grid first, first + DT, ..., taking over at ``start``."""
    v = np.asarray(values, dtype=np.float64)
    return CommandedChunk(first + DT * np.arange(len(v)), v, start, chunk_id, **kw)


def test_a_known_jump_and_which_points_ran() -> None:
    a = chunk(0.0, 0.2, np.zeros((8, 2)), 1)
    b = chunk(0.8, 1.0, np.column_stack([np.full(8, 1.0), np.full(8, -3.0)]), 2)
    report = analyse([b, a], rate=5.0)  # order does not matter: sorted by takeover
    sa, sb = report.spans
    assert (sa.skipped, sa.executed, sa.replaced, sa.ended_by) == (0, 4, 4, "chunk")  # 0.2 .. 0.8 ran
    assert (sb.skipped, sb.executed, sb.replaced, sb.ended_by) == (0, 8, 0, "end")
    (bd,) = report.boundaries
    assert (bd.chunk_id, bd.previous_id, bd.after) == (2, 1, "chunk")
    assert bd.first_time == pytest.approx(1.0) and bd.gap_s == pytest.approx(DT)
    np.testing.assert_allclose(bd.jump, [1.0, -3.0])  # new(1.0) - old(1.0)
    assert bd.jump_max == 3.0 and bd.jump_joint == 1
    assert (bd.skipped, bd.repeated) == (0, 0)
    # at the point rate the stream steps by the jump in one period: |v| = 3 / DT
    assert bd.peak_velocity == pytest.approx(3.0 / DT)
    d = report.to_dict(["x", "y"])
    json.dumps(d, allow_nan=False)
    assert d["per_boundary"][0]["jump_joint"] == "y" and d["jump_max"] == 3.0


def test_a_chunk_that_continues_the_old_one_has_no_jump_and_no_jerk() -> None:
    ramp = lambda t: 0.5 * t  # noqa: E731
    a = chunk(0.0, 0.2, ramp(0.2 + DT * np.arange(8)), 1)
    b = chunk(0.8, 1.0, ramp(1.0 + DT * np.arange(8)), 2)
    report = analyse([a, b], rate=50.0)
    (bd,) = report.boundaries
    assert bd.jump_max == pytest.approx(0.0, abs=1e-12)
    assert bd.peak_velocity == pytest.approx(0.5) and bd.peak_jerk == pytest.approx(0.0, abs=1e-6)
    assert report.peak_velocity == pytest.approx(0.5)


def test_skipped_and_repeated_actions() -> None:
    a = chunk(0.0, 0.2, np.zeros(8), 1)
    late = chunk(0.8, 0.4, np.ones(8), 2)  # points 0.4, 0.6 were in the past when it took over at 0.8
    report = analyse([a, late])
    (bd,) = report.boundaries
    assert bd.skipped == 2 and bd.first_time == pytest.approx(1.0) and bd.repeated == 0
    assert report.spans[1].executed == 6  # 0.8 (its anchor at the switch) .. 1.8
    shifted = chunk(0.8, 0.85, np.ones(8), 3)  # 0.85 is within half a period of a's last executed point (0.8)
    (bd,) = analyse([a, shifted]).boundaries
    assert bd.skipped == 0 and bd.repeated == 1 and bd.gap_s == pytest.approx(0.05)
    half = chunk(0.8, 0.9, np.ones(8), 4)  # exactly half a period later: a new slot, not a repeat
    assert analyse([a, half]).boundaries[0].repeated == 0


def test_a_known_cubic_gives_its_jerk_and_velocity() -> None:
    c, rate = 2.0, 50.0
    h = 1.0 / rate
    t = np.arange(0, 51) * h  # one chunk of points exactly on the resampling grid
    one = CommandedChunk(t, (c * t**3)[:, None], start=-1.0)
    stream = executed_stream(chunk_spans([one]), rate=rate)
    np.testing.assert_allclose(stream.t, t)
    (tv, v), (ta, acc), (_, j) = derivatives(stream)
    np.testing.assert_allclose(j[:, 0], 6 * c, rtol=1e-6)  # third difference of a cubic is exact
    np.testing.assert_allclose(acc[:, 0], 6 * c * ta, rtol=1e-6)  # centred second difference is exact too
    np.testing.assert_allclose(v[:, 0], c * (3 * tv**2 + h**2 / 4), rtol=1e-9)  # midpoint rule error h^2/4
    report = analyse([one], rate=rate)
    assert report.peak_jerk == pytest.approx(6 * c, rel=1e-6) and report.boundaries == []


def test_hermite_points_reproduce_a_cubic() -> None:
    t = np.array([0.0, 0.5, 1.0])
    p = (t**3)[:, None]
    v = (3 * t**2)[:, None]
    cc = CommandedChunk(t, p, start=-1.0, velocities=v)
    for x in (0.1, 0.3, 0.77):
        assert cc.at(x)[0] == pytest.approx(x**3, abs=1e-12)
    assert CommandedChunk(t, p, start=-1.0).at(0.25)[0] == pytest.approx(0.5 * 0.125)  # linear without them


def test_a_hold_between_chunks() -> None:
    a = chunk(0.0, 0.2, np.linspace(0, 1.4, 8), 1)  # ends at 1.6 with 1.4
    hold = Stop(1.7, np.array([1.4]), "chunk_expired")
    b = chunk(2.0, 2.2, np.full(8, 0.4), 2)
    report = analyse([a, b], [hold])
    sa = report.spans[0]
    assert sa.ended_by == "hold:chunk_expired" and sa.executed == 8 and sa.replaced == 0
    (bd,) = report.boundaries
    assert bd.after == "hold:chunk_expired"
    np.testing.assert_allclose(bd.jump, [-1.0])  # from the held 1.4 to the new 0.4
    assert bd.gap_s == pytest.approx(2.2 - 1.7)
    # a hold in the middle of a chunk (a backend failure) drops the rest of it
    mid = Stop(0.5, None, "backend_failure")
    sa = analyse([a, b], [mid]).spans[0]
    assert (sa.executed, sa.replaced, sa.ended_by) == (2, 6, "hold:backend_failure")


def test_the_loops_executed_until_wins() -> None:
    a = chunk(0.0, 0.2, np.zeros(8), 1, executed_until=0.5)
    b = chunk(0.8, 1.0, np.ones(8), 2)
    sa = chunk_spans([a, b])[0]
    assert (sa.executed, sa.ended_by) == (2, "loop")


def test_bad_input_is_a_clear_error_and_empty_input_is_empty() -> None:
    with pytest.raises(ValueError, match="increasing"):
        CommandedChunk(np.array([0.0, 0.0]), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="finite"):
        CommandedChunk(np.array([0.0, 1.0]), np.array([0.0, math.nan]), 0.0)
    with pytest.raises(ValueError, match="do not match"):
        CommandedChunk(np.array([0.0, 1.0]), np.zeros((3, 2)), 0.0)
    with pytest.raises(ValueError, match="rate"):
        executed_stream([], rate=0.0)
    empty = analyse([])
    assert empty.boundaries == [] and empty.stream is None
    json.dumps(empty.to_dict(), allow_nan=False)


def test_an_anchor_point_at_the_takeover_is_not_the_jump() -> None:
    """A trajectory that starts with the current command at its takeover time (real-time chunking's first point):
    the jump is measured at its first point after the takeover, where the policy's own actions start."""
    a = chunk(0.0, 0.2, np.zeros(8), 1)
    anchored = CommandedChunk(0.8 + DT * np.arange(9), np.r_[0.0, np.full(8, 2.0)], start=0.8, chunk_id=2)
    report = analyse([a, anchored])
    (bd,) = report.boundaries
    assert bd.skipped == 0 and bd.first_time == pytest.approx(1.0) and bd.jump_max == pytest.approx(2.0)
    assert report.spans[1].executed == 9
