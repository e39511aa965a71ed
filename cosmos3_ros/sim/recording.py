# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""What went over the wire in a closed-loop run, recorded in a process of its own.

:class:`Recorder` subscribes to ``/clock``, the simulator's ``~/monitor`` topics, ``/joint_command``,
the node's trajectories and prediction errors, and keeps each with the simulated time it arrived at (``epoch``
counts clock jumps back: a simulator restart). :class:`RecorderProcess` runs it in a child process (its own
interpreter and rclpy context) and answers questions over a pipe, so the 100 Hz streams cost the policy node's
process nothing and the measurement does not disturb what it measures. :func:`window_report` turns the records of a
simulated time window into figures (:mod:`cosmos3_ros.sim.metrics`).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.ros.convert import stamp_to_sec
from cosmos3_ros.sim.metrics import Chunk, boundary_jumps, jerk, moves_toward, summarize, tracking_error
from cosmos3_ros.sim.world import CONTROLLED

TRAJECTORY_TOPIC = "/cosmos3_policy/joint_trajectory"


class Recorder:
    """Collects /clock, /joint_states, the simulator's ~/reference, /joint_command, the node's trajectories and
    prediction errors, each with the simulated time it arrived at (``epoch`` counts clock jumps back)."""

    def __init__(self, context: Any) -> None:
        from rclpy.node import Node
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64
        from std_srvs.srv import SetBool, Trigger
        from trajectory_msgs.msg import JointTrajectory

        self.node = Node("cosmos3_sim_loop_recorder", context=context)
        self.lock = threading.Lock()
        self.clock, self.epoch, self.clock_msgs = float("nan"), 0, 0
        self.joint_states: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        self.reference: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        self.commands: list[tuple[int, float, np.ndarray]] = []
        self.chunks: list[tuple[int, Chunk]] = []
        self.prediction_errors: list[float] = []
        n = self.node
        n.create_subscription(Clock, "/clock", self._on_clock, 10)
        n.create_subscription(JointState, "/cosmos3_sim/monitor/measured", self._on_js, 100)
        n.create_subscription(JointState, "/cosmos3_sim/monitor/reference", self._on_ref, 100)
        n.create_subscription(JointState, "/joint_command", self._on_cmd, 50)
        n.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, self._on_traj, 50)
        n.create_subscription(Float64, "/cosmos3_policy/prediction_error", self._on_error, 50)
        self.pause_client = n.create_client(SetBool, "/cosmos3_sim/pause")
        self.reset_client = n.create_client(Trigger, "/cosmos3_sim/reset")
        self._SetBool, self._Trigger = SetBool, Trigger

    def _on_clock(self, msg: Any) -> None:
        t = stamp_to_sec(msg.clock)
        with self.lock:
            if t < self.clock - 0.5:
                self.epoch += 1
            self.clock = t
            self.clock_msgs += 1

    def _pick(self, msg: Any, names: tuple[str, ...], field_name: str) -> np.ndarray:
        index = {n: i for i, n in enumerate(msg.name)}
        values = getattr(msg, field_name)
        return (
            np.array([values[index[n]] for n in names]) if len(values) == len(msg.name) else np.full(len(names), np.nan)
        )

    def _row(self, msg: Any) -> tuple:
        """(epoch, stamp, positions, velocities) of the controlled joints in a JointState."""
        positions, velocities = self._pick(msg, CONTROLLED, "position"), self._pick(msg, CONTROLLED, "velocity")
        return self.epoch, stamp_to_sec(msg.header.stamp), positions, velocities

    def _on_js(self, msg: Any) -> None:
        row = self._row(msg)
        with self.lock:
            self.joint_states.append(row)

    def _on_ref(self, msg: Any) -> None:
        row = self._row(msg)
        with self.lock:
            self.reference.append(row)

    def _on_cmd(self, msg: Any) -> None:
        known = [n for n in CONTROLLED if n in msg.name]
        pos = self._pick(msg, tuple(known), "position") if known else np.array([])
        with self.lock:
            self.commands.append((self.epoch, stamp_to_sec(msg.header.stamp), pos))

    def _on_traj(self, msg: Any) -> None:
        stamp = stamp_to_sec(msg.header.stamp)
        order = [list(msg.joint_names).index(n) for n in CONTROLLED if n in msg.joint_names]
        pos = np.array([[p.positions[i] for i in order] for p in msg.points])
        vel = None
        if msg.points and all(len(p.velocities) == len(msg.joint_names) for p in msg.points):
            vel = np.array([[p.velocities[i] for i in order] for p in msg.points])
        with self.lock:
            received = self.clock
            start = stamp if stamp > 0 else received
            times = start + np.array([stamp_to_sec(p.time_from_start) for p in msg.points])
            hold = stamp == 0.0 and len(msg.points) == 1
            self.chunks.append((self.epoch, Chunk(received, times, pos, vel, hold)))

    def _on_error(self, msg: Any) -> None:
        with self.lock:
            self.prediction_errors.append(float(msg.data))

    # -- questions from the parent process ------------------------------------------------------------------------

    def rpc_status(self) -> dict[str, Any]:
        """Clock, epoch and how many messages of each kind arrived."""
        with self.lock:
            return {
                "clock": self.clock,
                "epoch": self.epoch,
                "clock_msgs": self.clock_msgs,
                "measured": len(self.joint_states),
                "commands": len(self.commands),
                "chunks": len(self.chunks),
            }

    def rpc_publishers(self, topic: str) -> int:
        """How many publishers of ``topic`` this process has discovered."""
        return self.node.count_publishers(topic)

    def rpc_chunks(self, epoch: int | None = None, holds: bool = False) -> list[Chunk]:
        """Chunks (holds too when asked) of ``epoch`` (default: the current one)."""
        with self.lock:
            e = self.epoch if epoch is None else epoch
            return [c for ep, c in self.chunks if ep == e and (holds or not c.hold)]

    def rpc_commands(self, start: int = 0) -> list[tuple[int, float, np.ndarray]]:
        """JointState commands from index ``start``: (epoch, stamp, positions)."""
        with self.lock:
            return list(self.commands[start:])

    def rpc_report(self, t0: float, t1: float, lower: list[float], upper: list[float]) -> dict[str, Any]:
        """:func:`window_report` over [t0, t1] of the current epoch."""
        with self.lock:
            e = self.epoch
            js = [r for r in self.joint_states if r[0] == e and t0 <= r[1] <= t1]
            ref = [r for r in self.reference if r[0] == e and t0 <= r[1] <= t1]
            cmds = [r for r in self.commands if r[0] == e and t0 <= r[1] <= t1]
            chunks = [c for ep, c in self.chunks if ep == e and t0 <= c.received <= t1]
            errors = list(self.prediction_errors)
        return window_report(js, ref, cmds, chunks, errors, np.array(lower), np.array(upper))

    def rpc_pause(self, paused: bool) -> bool:
        """Pause or resume the simulator (its ~/pause service)."""
        return self._call(self.pause_client, self._SetBool.Request(data=paused)).success

    def rpc_reset(self) -> bool:
        """Reset the simulator (its ~/reset service)."""
        return self._call(self.reset_client, self._Trigger.Request()).success

    def _call(self, client: Any, request: Any, timeout: float = 10.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from {client.srv_name}")
            time.sleep(0.01)
        return future.result()


def window_report(
    js: list, ref: list, cmds: list, chunks: list[Chunk], errors: list[float], lower: np.ndarray, upper: np.ndarray
) -> dict[str, Any]:
    """Tracking error and jerk of the arm joints, whether they move towards the reference, chunk boundary jumps,
    holds, chunks, commands and whether every one was finite and within [lower, upper]."""
    points = [p for c in chunks for p in c.positions] + [row[2] for row in cmds if len(row[2]) == 8]
    pts = np.array(points) if points else np.zeros((0, 8))
    out: dict[str, Any] = {}
    if js and ref:
        t_js, q_js = np.array([r[1] for r in js]), np.array([r[2][:7] for r in js])
        t_ref, q_ref = np.array([r[1] for r in ref]), np.array([r[2][:7] for r in ref])
        out["tracking_error_rad"] = tracking_error(t_js, q_js, t_ref, q_ref)
        out["joint_jerk_rad_s3"] = jerk(t_js, np.array([r[3][:7] for r in js]))
        out["joint_range_rad"] = np.ptp(q_js, axis=0).round(3).tolist()
        share, n = moves_toward(t_js, q_js, t_ref, q_ref)
        out["moves_toward_reference"] = {"share": round(share, 3), "n": n}
        out["joint_state_samples"] = len(js)
    out["chunk_boundary_jump_rad"] = boundary_jumps(chunks)
    out["chunks"] = sum(not c.hold for c in chunks)
    out["holds"] = sum(c.hold for c in chunks)
    out["joint_commands"] = len(cmds)
    out["non_finite_commands"] = int((~np.isfinite(pts)).any(axis=1).sum()) if len(pts) else 0
    outside = (pts < lower - 1e-9) | (pts > upper + 1e-9)
    out["commands_outside_limits"] = int(outside.any(axis=1).sum()) if len(pts) else 0
    out["prediction_error"] = summarize([v for v in errors if np.isfinite(v)])
    return out


def _child(domain_id: int, conn: Any) -> None:
    """The recorder process: a Recorder on its own rclpy context, answering ``(method, args)`` over ``conn``."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    rec = Recorder(ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(rec.node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    conn.send((True, "ready"))
    try:
        while True:
            name, args = conn.recv()
            if name == "quit":
                break
            try:
                conn.send((True, getattr(rec, f"rpc_{name}")(*args)))
            except Exception as exc:  # answered, not raised: the parent reports it
                conn.send((False, f"{type(exc).__name__}: {exc}"))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        ctx.try_shutdown()  # ends the spin (joined before the interpreter exits, or C++ terminates it)
        executor.shutdown(timeout_sec=1.0)
        spin.join(timeout=5)
        rec.node.destroy_node()


class RecorderProcess:
    """A :class:`Recorder` in a child process on ``domain_id``; ``call(name, *args)`` asks it (``rpc_<name>``).

    The child is ``python -m cosmos3_ros.sim.recording`` talking over a socket pair (not multiprocessing's spawn,
    which would re-import the caller's main script); its output goes to ``log`` (or is discarded).
    """

    def __init__(self, domain_id: int, log: Path | None = None, timeout: float = 60.0) -> None:
        parent, child = socket.socketpair()
        out = log.open("a") if log is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cosmos3_ros.sim.recording", str(domain_id), str(child.fileno())],
                pass_fds=[child.fileno()],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            child.close()
            if log is not None:
                out.close()
        self._conn = Connection(parent.detach())
        self._lock = threading.Lock()
        if not self._conn.poll(timeout):
            self.close()
            raise TimeoutError("the recorder process did not start")
        self._conn.recv()

    def call(self, name: str, *args: Any, timeout: float = 60.0) -> Any:
        """The answer of ``rpc_<name>(*args)``; RuntimeError with the child's error."""
        with self._lock:
            self._conn.send((name, args))
            if not self._conn.poll(timeout):
                raise TimeoutError(f"the recorder did not answer {name} within {timeout} s")
            ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"recorder: {value}")
        return value

    def close(self) -> None:
        """Stop the child process. Idempotent."""
        if self.proc.poll() is None:
            try:
                with self._lock:
                    self._conn.send(("quit", ()))
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._conn.close()


if __name__ == "__main__":
    _child(int(sys.argv[1]), Connection(int(sys.argv[2])))
