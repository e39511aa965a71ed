# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""PolicyLoop on the fake backend, without ROS: chunks, holds, forecasts and their budget, drift, run-time values."""

from __future__ import annotations

import numpy as np
import pytest
from loop_util import Clock, Events, Rig, frame, make_loop, values

from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.control.config import apply_runtime_values
from cosmos3_ros.control.events import LoopSink, Tee


def test_a_frame_becomes_one_published_chunk_and_one_record():
    r = make_loop()
    record = r.cycle()
    assert record is not None and record.published and record.error is None
    (traj,) = r.ev.chunks()
    assert traj.stamp == pytest.approx(r.clock.t) and traj.positions.shape == (8, 10)
    expected = r.fake.policy(frame(r.clock.t), r.loop.controller.settings).actions
    np.testing.assert_allclose(traj.positions, expected, atol=1e-6)  # identity mapping
    assert [k for k, _ in r.ev.events] == ["frame", "trajectory", "chunk_done"], "each event once, in order"
    assert r.ev.of("chunk_done")[0] is record


def test_replans_after_replan_every_actions_from_a_newer_frame():
    r = make_loop(replan_every=4)
    r.cycle()
    for _ in range(3):  # 0.6 s < 4 actions at 5 Hz
        assert r.cycle(dt=0.2) is None
    assert r.cycle(dt=0.2) is not None
    assert len(r.ev.chunks()) == 2 and not r.ev.holds()


def test_backend_failure_gives_exactly_one_hold_then_silence():
    r = make_loop(replan_every=1)
    r.cycle()
    r.fake.inject("error", count=5)
    for _ in range(5):
        r.cycle(dt=0.3)
    assert len(r.ev.holds()) == 1 and len(r.ev.chunks()) == 1
    assert r.loop.controller.counters.get("inference_errors") == 5
    assert r.loop.controller.consecutive_errors == 5
    r.cycle(dt=0.3)  # the backend recovers: commanding resumes
    assert len(r.ev.chunks()) == 2 and r.loop.controller.consecutive_errors == 0


def test_non_finite_output_is_never_published():
    r = make_loop()
    r.fake.inject("nonfinite")
    record = r.cycle()
    assert not record.published and "NonFiniteOutputError" in record.error
    assert not r.ev.of("trajectory")


def test_stop_discards_the_in_flight_result_after_its_hold():
    r = make_loop(replan_every=1)
    r.cycle()
    r.clock.t += 0.3
    r.loop.on_frame("cam", r.clock.t, frame(r.clock.t))
    request = r.loop.step(r.clock.t)
    assert request is not None
    r.loop.stop()  # deactivate while the model runs
    r.loop.run_request(request)  # the result arrives after the hold
    assert [t.kind for t in r.ev.of("trajectory")] == ["chunk", "hold"]
    assert r.loop.controller.counters.get("unexpected_results") == 1


def test_rejections_are_counted_and_emitted():
    r = make_loop()
    r.loop.on_frame("cam", 5.0, frame(0))
    r.loop.on_frame("cam", 4.0, frame(0))  # older than the newest: out of order
    r.loop.reject("cam", 6.0, "encoding", "unsupported encoding")
    assert [reason for _, _, reason in r.ev.of("rejected")] == ["out_of_order", "encoding"]
    assert r.loop.controller.counters.get("rejected_frames.encoding") == 1


def test_a_failing_sink_never_stops_the_loop_or_the_other_sinks():
    class Broken(LoopSink):
        def trajectory(self, traj, now):
            raise RuntimeError("disk full")

    good = Events()
    errors = []
    tee = Tee(Broken(), good, on_error=lambda sink, method, exc: errors.append((method, str(exc))))
    r = make_loop()
    r.loop.sink = tee
    r.cycle()
    assert len(good.chunks()) == 1 and errors == [("trajectory", "disk full")] and tee.errors == 1


# -- forecasts ----------------------------------------------------------------------------------------------------


def test_forward_dynamics_forecast_is_stamped_when_expected():
    r = make_loop(forecast_every=1, replan_every=8)
    record = r.cycle()
    assert record.forecast == "ok" and record.forecast_s is not None
    (fc,) = r.ev.of("forecast")
    np.testing.assert_allclose(fc.stamps, r.clock.t + np.arange(1, 9) / 5.0)
    assert fc.frames.shape == (8, 48, 64, 3)
    assert [c.mode for c in r.fake.calls] == ["policy", "forward_dynamics"]


def test_policy_video_forecast_needs_no_second_call():
    r = make_loop(forecast_every=1, forecast_source="policy_video", replan_every=8)
    assert r.cycle().forecast == "ok"
    assert [c.mode for c in r.fake.calls] == ["policy"] and len(r.ev.of("forecast")) == 1


def test_forecast_every_k_chunks():
    r = make_loop(forecast_every=2, replan_every=1)
    assert [r.cycle(dt=0.25).forecast for _ in range(4)] == ["ok", "not_due", "ok", "not_due"]


class _ClockAdvancingBackend(FakeBackend):
    """A fake whose calls take ``clock_s[mode]`` on the node clock (simulated time), whatever they take on the wall."""

    def __init__(self, latency_s: float = 0.0, **clock_s: float) -> None:
        super().__init__(latency_s=latency_s)
        self.clock_s = clock_s
        self.clock: Clock | None = None

    def policy(self, *args, **kwargs):
        out = super().policy(*args, **kwargs)
        self.clock.t += self.clock_s.get("policy", 0.0)
        return out

    def forward_dynamics(self, *args, **kwargs):
        out = super().forward_dynamics(*args, **kwargs)
        self.clock.t += self.clock_s.get("forward_dynamics", 0.0)
        return out


def test_forecast_is_skipped_when_it_would_delay_the_next_policy_call():
    backend = _ClockAdvancingBackend(policy=0.15)
    r = make_loop(backend, forecast_every=1, replan_every=1)
    backend.clock = r.clock
    # Next chunk due one period (0.2 s) after the observation; the policy call takes 0.15 s of node time, so the clock
    # reads 0.15 s after the observation when the forecast would start, and the forecast is expected to take ~0.15 s
    # (the policy call's latency before any forecast ran).
    r.clock.t += 0.1
    r.loop.on_frame("cam", r.clock.t, frame(r.clock.t))
    request = r.loop.step(r.clock.t)
    record = r.loop.run_request(request)
    assert record.published and record.forecast == "skipped_budget"
    assert r.loop.controller.counters.get("forecast_skipped") == 1 and not r.ev.of("forecast")
    assert [c.mode for c in r.fake.calls] == ["policy"]


def test_forecast_budget_is_on_the_node_clock_not_the_wall():
    """A simulator at a fifth of real time: a 0.15 s (wall) call is 0.03 s of simulated time, and the forecast fits."""
    backend = _ClockAdvancingBackend(latency_s=0.15, policy=0.03)
    r = make_loop(backend, forecast_every=1, replan_every=1)
    backend.clock = r.clock
    r.clock.t += 0.1
    r.loop.on_frame("cam", r.clock.t, frame(r.clock.t))
    record = r.loop.run_request(r.loop.step(r.clock.t))
    assert record.policy_s >= 0.15 and record.forecast == "ok"  # wall latencies would have skipped it


def test_forecast_runs_when_it_fits_the_budget():
    r = make_loop(FakeBackend(latency_s=0.05), forecast_every=1, replan_every=8)  # next chunk due 1.6 s later
    assert r.cycle().forecast == "ok"


def test_forecast_failure_is_counted_and_the_chunk_stands():
    r = make_loop(forecast_every=1, replan_every=8)
    r.fake.inject("error", mode="forward_dynamics")
    record = r.cycle()
    assert record.published and record.forecast == "error"
    assert r.loop.controller.counters.get("forecast_errors") == 1 and len(r.ev.chunks()) == 1 and not r.ev.holds()


# -- drift --------------------------------------------------------------------------------------------------------


def _reality_unlike_the_forecast(r: Rig, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(8):  # noise, nothing like the forecast
        r.clock.t += 0.2
        r.loop.on_frame("cam", r.clock.t, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


def _drift_run(disarm: bool, threshold: float) -> Rig:
    r = make_loop(forecast_every=1, replan_every=8, drift_threshold=threshold, disarm_on_drift=disarm)
    r.cycle()
    _reality_unlike_the_forecast(r)
    return r


def test_drift_past_the_threshold_disarms_with_one_hold():
    r = _drift_run(disarm=True, threshold=0.05)
    assert r.loop.controller.counters.get("drift_trips") == 1
    assert r.loop.controller.counters.get("drift_disarms") == 1 and not r.loop.controller.armed
    assert len(r.ev.holds()) == 1
    samples = [s for batch, _ in r.ev.of("prediction_errors") for s in batch]
    assert samples and all(np.isfinite(s.nmse) for s in samples)


def test_drift_without_disarm_only_warns():
    r = _drift_run(disarm=False, threshold=0.05)
    assert r.loop.controller.counters.get("drift_trips") == 1 and r.loop.controller.armed and not r.ev.holds()


def test_drift_below_the_threshold_does_not_trip():
    r = _drift_run(disarm=True, threshold=500.0)
    assert r.loop.controller.counters.get("drift_trips") == 0 and r.loop.controller.armed


# -- run-time values: each takes effect on the next cycle ---------------------------------------------------------


def test_sampling_values_reach_the_next_policy_call():
    r = make_loop(replan_every=1)
    r.cycle()
    apply_runtime_values(r.loop, values(replan_every=1, seed=77, num_steps=3, prompt="new task", guidance=2.0))
    r.cycle(dt=0.3)
    s = r.fake.policy_calls[-1].settings
    assert (s.seed, s.num_steps, s.prompt, s.guidance) == (77, 3, "new task", 2.0)


def test_sync_tolerance_takes_effect():
    two = {"camera_topics": ["a", "b"], "camera_layout": "side_by_side"}
    r = make_loop(sync_tolerance=0.01, **two)
    r.clock.t += 0.1
    r.loop.on_frame("a", r.clock.t, frame(0))
    r.loop.on_frame("b", r.clock.t - 0.03, frame(1))
    assert r.loop.step(r.clock.t) is None and r.loop.controller.counters.get("no_observation.unsynced") == 1
    apply_runtime_values(r.loop, values(sync_tolerance=0.05, **two))
    assert r.loop.step(r.clock.t) is not None


def test_max_observation_age_takes_effect():
    r = make_loop(max_observation_age=0.5)
    r.loop.on_frame("cam", r.clock.t - 1.0, frame(0))
    assert r.loop.step(r.clock.t) is None and r.loop.controller.counters.get("no_observation.stale") == 1
    apply_runtime_values(r.loop, values(max_observation_age=2.0))
    assert r.loop.step(r.clock.t) is not None


def test_drift_threshold_and_disarm_take_effect():
    r = _drift_run(disarm=False, threshold=500.0)
    assert r.loop.controller.counters.get("drift_trips") == 0
    apply_runtime_values(r.loop, values(forecast_every=1, replan_every=8, drift_threshold=0.05, disarm_on_drift=True))
    r.cycle(dt=1.0)
    _reality_unlike_the_forecast(r, seed=1)
    assert r.loop.controller.counters.get("drift_disarms") == 1


def test_forecast_every_takes_effect():
    r = make_loop(forecast_every=0, replan_every=1)
    assert r.cycle().forecast == "not_due"
    apply_runtime_values(r.loop, values(forecast_every=1, replan_every=1))
    assert r.cycle(dt=0.3).forecast == "ok"


def test_read_only_values_cannot_change_a_running_loop():
    r = make_loop()
    with pytest.raises(ValueError, match="camera_topics cannot change"):
        apply_runtime_values(r.loop, values(camera_topics=["other"]))


# -- robot state --------------------------------------------------------------------------------------------------


def test_state_is_required_when_configured_and_goes_to_the_model_in_model_units():
    r = make_loop(joint_states_topic="/joint_states", use_state=True, action_scale=[2.0] * 10, action_offset=[1.0] * 10)
    r.clock.t += 0.1
    r.loop.on_frame("cam", r.clock.t, frame(0))
    assert r.loop.step(r.clock.t) is None and r.loop.controller.counters.get("no_observation.no_state") == 1
    r.loop.on_state(r.clock.t, np.full(10, 3.0))  # robot units: (3 - 1) / 2 = 1 in model units
    request = r.loop.step(r.clock.t)
    assert request is not None
    np.testing.assert_allclose(request.state, np.ones(10))
    r.loop.run_request(request)
    np.testing.assert_allclose(r.fake.policy_calls[-1].state, np.ones(10))


def test_stale_or_malformed_state_blocks_planning():
    r = make_loop(joint_states_topic="/joint_states", use_state=True)
    r.clock.t += 0.1
    r.loop.on_frame("cam", r.clock.t, frame(0))
    r.loop.on_state(r.clock.t - 2.0, np.zeros(10))
    assert r.loop.step(r.clock.t) is None and r.loop.controller.counters.get("no_observation.stale_state") == 1
    assert not r.loop.on_state(r.clock.t, np.zeros(3)) and not r.loop.on_state(r.clock.t, np.full(10, np.nan))
    assert [reason for _, _, reason in r.ev.of("rejected")] == ["state_shape", "non_finite"]


def test_a_state_topic_without_use_state_is_recorded_but_not_waited_for():
    """joint_states_topic alone: the state is passed on (recording) but a model without a state row plans without."""
    r = make_loop(joint_states_topic="/joint_states", use_state=False)
    r.clock.t += 0.1
    r.loop.on_frame("cam", r.clock.t, frame(0))
    assert r.loop.on_state(r.clock.t, np.full(10, 0.5))
    request = r.loop.step(r.clock.t)
    assert request is not None and request.state is None
    ((stamp, positions),) = r.ev.of("state")
    assert stamp == r.clock.t and positions.tolist() == [0.5] * 10


# -- bad time -----------------------------------------------------------------------------------------------------


def test_frames_before_the_first_clock_message_are_rejected_as_no_clock():
    """use_sim_time: the node clock reads 0 until /clock arrives; frames stamped in simulated time wait for it."""
    r = make_loop(max_clock_skew=1.0)
    r.clock.t = 0.0
    assert not r.loop.on_frame("cam", 12.5, frame(0)) and not r.loop.on_state(12.5, np.zeros(10))
    assert r.loop.controller.counters.get("rejected_frames.no_clock") == 1
    assert r.loop.controller.counters.get("rejected_states.no_clock") == 1
    r.clock.t = 12.5  # the first /clock
    assert r.loop.on_frame("cam", 12.5, frame(0))


def test_a_frame_from_the_future_is_rejected_alone_and_good_frames_go_on():
    r = make_loop(max_clock_skew=1.0)
    r.clock.t += 0.1
    assert not r.loop.on_frame("cam", r.clock.t + 3600.0, frame(0))  # an hour ahead: a camera with a bad clock
    for _ in range(3):
        r.cycle(dt=0.1)
    assert r.loop.controller.counters.get("rejected_frames.future_stamp") == 1
    assert r.loop.controller.counters.get("rejected_frames.out_of_order") == 0  # it never became the reference
    chunks = r.ev.chunks()
    assert chunks and all(c.stamp <= r.clock.t for c in chunks)  # never commanding from the future


def test_negative_and_non_finite_stamps_are_rejected_frames_not_exceptions():
    r = make_loop()
    assert not r.loop.on_frame("cam", -5.0, frame(0))
    assert not r.loop.on_frame("cam", float("nan"), frame(0))
    assert not r.loop.on_state(-1.0, np.zeros(10))
    assert [reason for _, _, reason in r.ev.of("rejected")] == ["negative_stamp", "non_finite_stamp", "negative_stamp"]
    assert r.cycle() is not None


def test_a_looping_clock_resets_the_loop_with_one_hold_and_resumes():
    r = make_loop(replan_every=1, forecast_every=1)
    for _ in range(5):
        r.cycle(dt=0.3)
    assert len(r.ev.chunks()) == 5 and r.loop.tracker.pending
    r.clock.t -= 25.0  # the bag loops: sim time goes back 25 s
    # The first frames of the new timeline come before the next control tick: they are older than what is buffered.
    r.loop.on_frame("cam", r.clock.t, frame(r.clock.t))
    request = r.loop.step(r.clock.t)
    assert len(r.ev.holds()) == 1 and r.loop.controller.counters.get("clock_jumps") == 1
    assert request is None and not r.loop.tracker.pending  # everything of the old timeline is gone
    for _ in range(3):
        r.cycle(dt=0.3)
    after = [c for c in r.ev.chunks() if c.stamp < r.clock.t - 10]
    assert len(r.ev.chunks()) >= 7 and not after, "chunks resumed on the new timeline, none from the old one"


def test_clock_jump_callback_drops_the_in_flight_result():
    r = make_loop(replan_every=1)
    r.cycle()
    r.clock.t += 0.3
    r.loop.on_frame("cam", r.clock.t, frame(r.clock.t))
    request = r.loop.step(r.clock.t)
    r.clock.t -= 10.0
    r.loop.on_clock_jump()  # rclpy's jump callback, while the model runs
    r.loop.run_request(request)
    assert [t.kind for t in r.ev.of("trajectory")] == ["chunk", "hold"]
    assert r.loop.controller.counters.get("unexpected_results") == 1


def test_the_first_forecast_is_judged_on_a_measured_latency():
    """A forecast decodes video: it can take far longer than a policy call. Unprimed, the first forecast is judged on
    the policy call's latency and delays the next chunk; primed after warm-up, it is skipped."""
    outcomes = {}
    for primed in (False, True):
        fake = _ClockAdvancingBackend(policy=0.02, forward_dynamics=0.4)
        r = make_loop(fake, forecast_every=1, replan_every=4)  # the next chunk is due 0.8 s after the observation
        fake.clock = r.clock
        if primed:
            r.loop.prime_on_first_request()
        r.clock.t += 0.1
        r.loop.on_frame("cam", r.clock.t, frame(r.clock.t))
        request = r.loop.step(r.clock.t)
        r.clock.t += 0.1
        # unprimed: 0.12 s after the observation, a forecast judged at 0.02 s fits; primed (0.42 s of measuring
        # first): 0.54 s after, a 0.4 s forecast does not
        outcomes[primed] = r.loop.run_request(request).forecast
        if primed:
            assert r.loop._forecast_clock_s.p95() >= 0.4  # noqa: SLF001 (measured on the first request's frame)
            assert [c.image_shape for c in fake.calls[:2]] == [(48, 64, 3)] * 2
    assert outcomes == {False: "ok", True: "skipped_budget"}
