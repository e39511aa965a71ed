# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The control loop's decisions, free of ROS: when to ask for a chunk, what to publish, when to hold.

The live node and the offline replay drive the same ``PolicyController`` through
:class:`~cosmos3_ros.control.loop.PolicyLoop`: frames go in with ``add_frame`` (and the robot state with
``add_state``), ``step(now)`` is called at the control rate and may hand out an ``InferenceRequest``; whoever
runs the model reports back with ``complete``. Every method returns the ``Trajectory`` commands to publish. Time
is whatever clock the caller uses (node clock, sim time, bag time), in seconds.

Safety rules:
* frames and robot states with bad stamps (not finite, negative, more than ``max_clock_skew`` ahead of the clock)
  are rejected on their own and never become the reference later frames are measured against;
* when the clock jumps back (a looping ``ros2 bag play --clock``, a simulator reset) everything buffered is dropped,
  one hold is published, and the loop resumes from fresh frames;
* at most one inference in flight; a new chunk is requested once ``replan_every`` actions of the
  current chunk are due, and only from an observation newer than the last one used;
* frames older than ``max_observation_age`` are never used;
* when the current chunk runs out without a fresh valid successor, when inference fails, or when
  the controller is disarmed, exactly one hold (the last commanded positions) is published and
  commanding stops until a valid chunk arrives;
* nothing non-finite is ever returned for publishing.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from cosmos3_ros.control.chunking import MIN_LEAD_S, DelayEstimator, Plan, boundary_jump, join
from cosmos3_ros.control.requests import (  # noqa: F401 (re-exported: the controller's public types)
    CLOCK_JUMP_S,
    POSE_DIMS,
    STAMP_MODES,
    ControllerConfig,
    InferenceRequest,
)
from cosmos3_ros.core.clip_buffer import ClipBuffer, FrameRejectedError, check_stamp
from cosmos3_ros.core.compose import compose
from cosmos3_ros.core.poses import relative_to_absolute
from cosmos3_ros.core.results import ActionChunk
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.stats import Counters
from cosmos3_ros.core.trajectory import Trajectory


class PolicyController:
    """Decides requests, publications and holds for one policy loop (thread-safe)."""

    def __init__(self, config: ControllerConfig, settings: PolicySettings) -> None:
        _check(config, settings)
        self.config = config
        self._settings = settings
        self.buffer = ClipBuffer(list(config.cameras), capacity=config.buffer_capacity)
        self._state: tuple[float, np.ndarray] | None = None
        self._pose: tuple[float, np.ndarray, np.ndarray, str] | None = None
        self._last_now: float | None = None
        self.counters = Counters()
        self._lock = threading.RLock()
        self._armed = True
        self._commanding = False
        self._current: Trajectory | None = None
        self._plan: Plan | None = None
        self._last_command: np.ndarray | None = None
        self.delay = DelayEstimator()
        #: How the last chunk joined the one before: prefix rows given, rows already due when it arrived, the
        #: largest joint difference at the switch (None without a previous chunk), velocity/acceleration clamps.
        self.last_join: dict[str, float | int | None] = {}
        self._position_clamps = 0
        self._in_flight: InferenceRequest | None = None
        self._last_request_stamp = float("-inf")
        self._next_id = 1
        self.consecutive_errors = 0
        self.last_error = ""

    # -- configuration -------------------------------------------------------------------

    @property
    def settings(self) -> PolicySettings:
        """Sampling settings used for the next request."""
        return self._settings

    def set_settings(self, settings: PolicySettings) -> None:
        """Replace the sampling settings (e.g. a new prompt); applies from the next request."""
        self.reconfigure(self.config, settings)

    def reconfigure(self, config: ControllerConfig, settings: PolicySettings) -> None:
        """Replace the configuration and settings (run-time parameter changes); applies from the next step.

        The cameras cannot change (their buffers hold the frames).
        """
        _check(config, settings)
        if config.cameras != self.config.cameras:
            raise ValueError(f"camera_topics cannot change at run time ({self.config.cameras} -> {config.cameras})")
        with self._lock:
            self.config = config
            self._settings = settings

    def note(self, key: str, message: str = "") -> None:
        """Count ``key`` and, with ``message``, make it the last error (for events decided outside the controller)."""
        self.counters.inc(key)
        if message:
            self.last_error = message

    # -- state ----------------------------------------------------------------------------

    @property
    def armed(self) -> bool:
        """Whether chunks may be published."""
        return self._armed

    @property
    def commanding(self) -> bool:
        """Whether a valid chunk is currently being executed."""
        return self._commanding

    @property
    def in_flight(self) -> bool:
        """Whether an inference is running."""
        return self._in_flight is not None

    @property
    def current(self) -> Trajectory | None:
        """The last published chunk."""
        return self._current

    # -- inputs ---------------------------------------------------------------------------

    def add_frame(
        self, camera: str, stamp: float, image: np.ndarray, now: float | None = None
    ) -> FrameRejectedError | None:
        """Buffer a decoded frame received at ``now``; returns the rejection (also counted by reason) when it is not
        buffered."""
        try:
            check_stamp(stamp, now, self.config.max_clock_skew)
            self.buffer.add(camera, stamp, image)
        except FrameRejectedError as exc:
            self.note(f"rejected_frames.{exc.reason}", str(exc))
            return exc
        self.counters.inc(f"frames.{camera}")
        return None

    def add_state(self, stamp: float, positions: np.ndarray, now: float | None = None) -> str | None:
        """Keep the newest robot state (robot units, in ``joint_names`` order); returns a rejection reason or None."""
        try:
            check_stamp(stamp, now, self.config.max_clock_skew)
        except FrameRejectedError as exc:
            self.note(f"rejected_states.{exc.reason}", f"robot state: {exc}")
            return exc.reason
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (self.config.mapping.width,):
            reason = "state_shape"
            self.note(
                f"rejected_states.{reason}",
                f"robot state of shape {positions.shape}, expected ({self.config.mapping.width},)",
            )
            return reason
        if not (np.isfinite(positions).all() and np.isfinite(stamp)):
            self.note("rejected_states.non_finite", "robot state or its stamp is not finite")
            return "non_finite"
        with self._lock:
            self._state = (float(stamp), positions.copy())
        self.counters.inc("states")
        return None

    def arm(self, now: float, armed: bool) -> list[Trajectory]:
        """Arm or disarm; disarming while commanding publishes one hold."""
        with self._lock:
            self._armed = armed
            if not armed:
                return self._hold(now, "disarmed")
            return []

    # -- the loop -------------------------------------------------------------------------

    def add_pose(
        self, stamp: float, position: np.ndarray, quaternion: np.ndarray, frame_id: str, now: float | None = None
    ) -> str | None:
        """Keep the newest end-effector pose (ee_pose action space); returns a rejection reason or None."""
        try:
            check_stamp(stamp, now, self.config.max_clock_skew)
        except FrameRejectedError as exc:
            self.note(f"rejected_poses.{exc.reason}", f"end-effector pose: {exc}")
            return exc.reason
        position, quaternion = np.asarray(position, float), np.asarray(quaternion, float)
        if position.shape != (3,) or quaternion.shape != (4,) or not np.isfinite([*position, *quaternion]).all():
            self.note("rejected_poses.malformed", "end-effector pose is not a finite position and quaternion")
            return "malformed"
        if not 0.5 < np.linalg.norm(quaternion) < 2.0:
            self.note("rejected_poses.quaternion", f"end-effector quaternion {quaternion.tolist()} is not unit")
            return "quaternion"
        with self._lock:
            self._pose = (float(stamp), position.copy(), quaternion.copy(), frame_id)
        return None

    def reset_time(self, now: float, reason: str = "clock_jump") -> list[Trajectory]:
        """The clock jumped back: drop every frame and state, forget the chunk and the in-flight request (its result
        will be discarded), hold once if commanding; fresh frames start the loop again."""
        with self._lock:
            out = self._hold(now, reason)
            self.buffer.clear()
            self._state = None
            self._pose = None
            self._current = None
            self._plan = None
            self._in_flight = None
            self._last_request_stamp = float("-inf")
            self._last_now = now
            self.delay.reset()
            self.counters.inc("clock_jumps")
            self.last_error = f"the clock jumped back to {now:.3f}: buffered frames dropped"
            return out

    def step(self, now: float) -> tuple[InferenceRequest | None, list[Trajectory]]:
        """Advance to ``now``: maybe a hold (chunk ran out), maybe a new inference request.

        A clock that went back by more than :data:`CLOCK_JUMP_S` resets the loop first (:meth:`reset_time`).
        """
        with self._lock:
            out: list[Trajectory] = []
            if self._last_now is not None and now < self._last_now - CLOCK_JUMP_S:
                out += self.reset_time(now)
            self._last_now = now if self._last_now is None else max(now, self._last_now)
            cur = self._current
            if self._commanding and cur is not None:
                self._last_command = cur.sample(now)
                if now >= cur.end_time:
                    out += self._hold(now, "chunk_expired")
            request = None
            if self._armed and self._in_flight is None and self._replan_due(now):
                request = self._make_request(now)
            return request, out

    def complete(
        self, request: InferenceRequest, chunk: ActionChunk | None, error: BaseException | None, now: float
    ) -> list[Trajectory]:
        """Report the result of ``request``: a chunk, or the error that replaced it."""
        with self._lock:
            if self._in_flight is None or self._in_flight.request_id != request.request_id:
                self.counters.inc("unexpected_results")
                return []
            self._in_flight = None
            if error is not None or chunk is None:
                self.consecutive_errors += 1
                self.counters.inc("inference_errors")
                self.last_error = f"{type(error).__name__}: {error}" if error is not None else "no chunk"
                return self._hold(now, "backend_failure")
            try:
                plan, poses, frame = self._to_plan(chunk, request)
            except ValueError as exc:
                self.counters.inc("invalid_chunks")
                self.last_error = f"invalid chunk: {exc}"
                return self._hold(now, "invalid_chunk")
            self.consecutive_errors = 0
            if request.made_at is not None:
                self.delay.add(now - request.made_at)
            if not self._armed:
                self.counters.inc("discarded_disarmed")
                return []
            if plan.times()[-1] <= now + MIN_LEAD_S:
                self.counters.inc("stale_chunks")
                self.last_error = f"chunk from observation {request.stamp:.3f} arrived after its last point ({now:.3f})"
                return []
            return self._publish(plan, poses, frame, request, now)

    def command_at(self, now: float) -> np.ndarray | None:
        """Interpolated command at ``now`` while commanding (for JointState streaming), else None."""
        with self._lock:
            if not self._commanding or self._current is None:
                return None
            m = self.config.mapping  # a spline between points in range can bulge out of it: clamp the stream too
            cmd = np.clip(self._current.sample(now, before=self._last_command), m.lower, m.upper)
            self._last_command = cmd
            return cmd

    def withdraw(self, request: InferenceRequest) -> None:
        """``request`` could not be run (the worker was still busy with an abandoned call): forget it, so a later
        step asks again instead of waiting for a result that never comes."""
        with self._lock:
            if self._in_flight is not None and self._in_flight.request_id == request.request_id:
                self._in_flight = None
                self._last_request_stamp = float("-inf")
                self.counters.inc("withdrawn_requests")

    def next_request_time(self) -> float | None:
        """When the next chunk will be requested (the time the replan_every-th point is due), if known."""
        with self._lock:
            plan = self._plan
            if plan is None or not self._commanding:
                return None
            return float(plan.times()[min(self.config.replan_every, len(plan.positions)) - 1])

    def release(self) -> None:
        """Forget the current chunk and any in-flight request (e.g. on cleanup)."""
        with self._lock:
            self._commanding = False
            self._current = None
            self._plan = None
            self._in_flight = None
            self.delay.reset()

    def stop(self, now: float, reason: str = "stopped") -> list[Trajectory]:
        """Stop commanding in one step: one hold if commanding, then forget the chunk and any in-flight request.

        Atomic: a result of the in-flight request that arrives afterwards is discarded (``unexpected_results``), so
        nothing is published after the hold. The armed state is kept.
        """
        with self._lock:
            out = self._hold(now, reason)
            self._current = None
            self._in_flight = None
            return out

    # -- internals --------------------------------------------------------------------------

    def _replan_due(self, now: float) -> bool:
        plan = self._plan
        if plan is None or not self._commanding:
            return True
        return int(np.searchsorted(plan.times(), now, side="right")) >= self.config.replan_every

    def _make_request(self, now: float) -> InferenceRequest | None:
        obs, reason = self.buffer.observation(now, self.config.max_observation_age, self.config.sync_tolerance)
        if obs is None:
            self.counters.inc(f"no_observation.{reason}")
            return None
        if obs.stamp <= self._last_request_stamp:
            self.counters.inc("no_observation.not_newer")
            return None
        state = None
        if self._settings.use_state:  # the model takes the robot state as a known row
            if self._state is None:
                self.counters.inc("no_observation.no_state")
                return None
            state_stamp, positions = self._state
            if now - state_stamp > self.config.max_observation_age:
                self.counters.inc("no_observation.stale_state")
                return None
            state = self.config.mapping.to_model(positions)
        pose = None
        if self.config.action_space == "ee_pose":
            if self._pose is None or now - self._pose[0] > self.config.max_observation_age:
                self.counters.inc("no_observation.no_pose" if self._pose is None else "no_observation.stale_pose")
                return None
            pose = self._pose[1:]
        images = {cam: f.image for cam, f in obs.frames.items()}
        try:
            image = compose(images, list(self.config.cameras), self.config.camera_layout)
        except ValueError as exc:
            self.counters.inc("no_observation.compose_failed")
            self.last_error = f"compose failed: {exc}"
            return None
        base, prefix = self._rtc_prefix(obs.stamp, now)
        req = InferenceRequest(self._next_id, image, obs.stamp, self._settings, obs, state, pose, prefix, base, now)
        self._next_id += 1
        self._last_request_stamp = obs.stamp
        self._in_flight = req
        self.counters.inc("requests")
        return req

    def _rtc_prefix(self, stamp: float, now: float) -> tuple[float | None, np.ndarray | None]:
        """RTC: the grid base of the next chunk (continuing the current one's) and its known first rows."""
        plan, cfg = self._plan, self.config
        if not cfg.rtc or plan is None or not self._commanding:
            return None, None
        chunk = self._settings.action_chunk_size
        if abs(plan.dt - 1.0 / self._settings.fps) > 1e-9:
            return None, None  # fps changed at run time: grids differ, start afresh
        base, m = plan.snap(stamp)
        cap = min(cfg.execution_horizon or chunk - cfg.replan_every, chunk - 1)
        d = cfg.rtc_delay or self.delay.delay_steps(now - base, plan.dt)
        if d is None:  # no latency measured yet: give every remaining row (overestimating d is safe)
            d = len(plan.positions) - m
        if d > cap:
            self.note(
                "rtc.delay_capped",
                f"rtc: the inference delay ({d} steps) exceeds what the chunk leaves ({cap}): the join will jump; "
                "raise action_chunk_size or lower replan_every",
            )
        d = int(min(max(d, 1), cap))
        return base, self.config.mapping.to_model(plan.rows(m, d))

    def _to_plan(self, chunk: ActionChunk, request: InferenceRequest) -> tuple[Plan, np.ndarray | None, str]:
        actions = chunk.actions
        expected = (request.settings.action_chunk_size, self.config.mapping.width)
        if actions.shape != expected:
            raise ValueError(f"actions of shape {actions.shape}, expected {expected}")
        if not np.isfinite(actions).all():
            raise ValueError("actions contain non-finite values")
        if request.prefix is not None:
            d = len(request.prefix)
            if np.abs(actions[:d] - request.prefix).max() > 1e-4:
                self.note("rtc.prefix_ignored", "rtc: the backend did not return the given prefix rows unchanged")
        clipped = self.config.mapping.clipped(actions)
        self._position_clamps = clipped
        if clipped:
            self.counters.inc("clamps.position", clipped)
        positions = self.config.mapping.apply(actions)
        poses, frame = None, ""
        if request.reference_pose is not None:
            position, quaternion, frame = request.reference_pose
            poses = relative_to_absolute(positions[:, :POSE_DIMS], position, quaternion)
        return Plan(request.grid_base, 1.0 / request.settings.fps, positions), poses, frame

    def _publish(
        self, plan: Plan, poses: np.ndarray | None, frame: str, request: InferenceRequest, now: float
    ) -> list[Trajectory]:
        """Join ``plan`` to what is commanded now and make it the current chunk."""
        start = None
        if self._commanding and self._current is not None:
            start = self._current.sample_with_velocity(now, before=self._last_command)
        elif self._last_command is not None:  # after a hold: from where the robot was left
            start = (self._last_command.copy(), np.zeros_like(self._last_command))
        joined = join(
            plan,
            start,
            now,
            request.request_id,
            self.config.mapping,
            self.config.rate_limits,
            self.config.accelerations,
        )
        traj, plan = joined.trajectory, joined.plan
        if poses is not None:
            kept_poses = poses[joined.kept]
            if joined.prepended:  # the pose of the last point due: where the arm is being sent now
                cur = self._current
                lead = kept_poses[:1]
                if cur is not None and cur.poses is not None:
                    lead = cur.poses[max(0, cur.points_due(now) - 1)][None, :]
                kept_poses = np.concatenate([lead, kept_poses])
            traj = dataclasses.replace(traj, poses=kept_poses, frame_id=frame)
        for key, n in (
            ("clamps.velocity", joined.velocity_clamps),
            ("clamps.acceleration", joined.acceleration_clamps),
        ):
            if n:
                self.counters.inc(key, n)
        prefix_rows = 0 if request.prefix is None else len(request.prefix)
        jump = boundary_jump(self._plan if self._commanding else None, plan, now)
        self.last_join = {
            "prefix_rows": prefix_rows,
            "consumed_rows": joined.consumed,
            "boundary_jump": jump,
            "velocity_clamps": joined.velocity_clamps,
            "acceleration_clamps": joined.acceleration_clamps,
            "position_clamps": self._position_clamps,
        }
        if prefix_rows and joined.consumed > prefix_rows:
            self.note(
                "rtc.late_chunks",
                f"rtc: the chunk arrived {joined.consumed} steps in, after its {prefix_rows} given rows: it joins "
                "with a jump (the delay estimate was too low)",
            )
        if self.config.stamp_mode == "now":
            traj = _restamp_now(traj, now)
        self._current, self._plan = traj, plan
        self._commanding = True
        self.counters.inc("chunks_published")
        return [traj]

    def _hold(self, now: float, reason: str) -> list[Trajectory]:
        if not self._commanding or self._current is None:
            return []
        cur = self._current
        last = self._last_command if self._last_command is not None else cur.sample(now)
        if not np.isfinite(last).all():  # cannot happen with finite chunks; never publish it anyway
            last = cur.positions[-1]
        self._commanding = False
        self.counters.inc("holds")
        self.counters.inc(f"holds.{reason}")
        pose = None
        if cur.poses is not None:  # the pose of the last point due: where the arm was sent
            pose = cur.poses[max(0, cur.points_due(now) - 1)][None, :].copy()
        hold = Trajectory(
            cur.joint_names,
            last[None, :].copy(),
            np.array([1e-3]),
            None,
            cur.chunk_id,
            "hold",
            pose,
            cur.frame_id,
            velocities=np.zeros((1, len(last))),
            accelerations=np.zeros((1, len(last))) if self.config.accelerations else None,
            reason=reason,
        )
        return [hold]


def _check(config: ControllerConfig, settings: PolicySettings) -> None:
    if settings.action_width != config.mapping.width:
        raise ValueError(
            f"domain {settings.domain_name!r} has {settings.action_width} action dimensions but "
            f"{config.mapping.width} joint_names are configured"
        )
    if config.replan_every > settings.action_chunk_size:
        raise ValueError(
            f"replan_every ({config.replan_every}) exceeds action_chunk_size ({settings.action_chunk_size})"
        )


def _restamp_now(traj: Trajectory, now: float) -> Trajectory:
    """Same absolute schedule, expressed from ``now``: points already due are dropped."""
    abs_t = traj.point_times()
    keep = abs_t >= now
    poses = None if traj.poses is None else traj.poses[keep]
    vel = None if traj.velocities is None else traj.velocities[keep]
    acc = None if traj.accelerations is None else traj.accelerations[keep]
    return dataclasses.replace(
        traj,
        positions=traj.positions[keep],
        times=abs_t[keep] - now,
        stamp=now,
        poses=poses,
        velocities=vel,
        accelerations=acc,
    )
