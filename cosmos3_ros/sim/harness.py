# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The closed loop on one machine: ``cosmos3-ros sim`` in its own process, the policy node with a shipped preset on
simulated time, and a recorder of what went over the wire. Used by ``bench/sim_loop.py``, ``cosmos3-ros demo --sim``
and the end-to-end tests.

    with SimLoop(LoopConfig(preset="isaac", backend="fake")) as loop:
        loop.run_for(20.0)           # simulated seconds
        print(loop.report())         # tracking error, jerk, boundary jumps, holds, real-time factor, CPU

The simulator runs in a subprocess (its own interpreter: no GIL shared with the model, its CPU cost measured apart)
on an isolated ROS_DOMAIN_ID; the node and the recorder share one rclpy context in this process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.sim.metrics import Chunk
from cosmos3_ros.sim.recording import TRAJECTORY_TOPIC, RecorderProcess

#: The node's parameter file for each simulator preset.
NODE_PRESETS = {"isaac": "isaac_sim.yaml", "droid": "droid.yaml"}


def preset_file(name: str) -> Path:
    """The shipped parameter file ``name`` (config/ of a checkout, or the installed share/cosmos3_ros/config)."""
    candidates = [
        Path(__file__).resolve().parents[2] / "config" / name,
        Path(sys.prefix) / "share/cosmos3_ros/config" / name,
    ]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("cosmos3_ros")) / "config" / name)
    except Exception:  # no ament index (pip install without ROS): the other places
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"parameter file {name} not found in {[str(c.parent) for c in candidates]}")


def node_values(preset: str, **overrides: Any) -> dict[str, Any]:
    """The node's parameter values for a simulator preset: the shipped file, use_sim_time on, then ``overrides``."""
    from cosmos3_ros.core.params_file import read_params_file

    report = read_params_file(preset_file(NODE_PRESETS[preset]), "/cosmos3_policy")
    if not report.ok:
        raise ValueError("; ".join(report.warnings()))
    values = dict(report.values)
    values["use_sim_time"] = True
    values.update(overrides)
    return values


@dataclass
class LoopConfig:
    """One closed-loop run: simulator preset and pace, the node's backend and parameter overrides."""

    preset: str = "isaac"
    backend: str = "fake"
    model: str = ""
    device: str = "cpu"
    real_time_factor: float = 1.0
    camera_rate: float = 15.0
    width: int | None = None
    height: int | None = None
    seed: int = 0
    joint_state_rate: float = 60.0
    monitor_rate: float = 200.0
    node_overrides: dict[str, Any] = field(default_factory=dict)
    sim_overrides: dict[str, Any] = field(default_factory=dict)
    domain_id: int | None = None
    gl: str | None = None

    def sim_args(self) -> list[str]:
        """Command-line arguments of ``cosmos3-ros sim``."""
        args = ["--preset", self.preset, "--real-time-factor", f"{self.real_time_factor}"]
        args += ["--camera-rate", f"{self.camera_rate}", "--seed", str(self.seed)]
        args += ["--joint-state-rate", f"{self.joint_state_rate}", "--monitor-rate", f"{self.monitor_rate}"]
        if self.width:
            args += ["--width", str(self.width)]
        if self.height:
            args += ["--height", str(self.height)]
        if self.gl:
            args += ["--gl", self.gl]
        for name, value in self.sim_overrides.items():
            args += ["--" + name.replace("_", "-"), json.dumps(value)]
        return args

    def node_parameters(self) -> dict[str, Any]:
        """The policy node's parameters for this run."""
        over: dict[str, Any] = {"backend": self.backend, "device": self.device}
        if self.model:
            over["model"] = self.model
        over.update(self.node_overrides)
        return node_values(self.preset, **over)


class SimProcess:
    """``cosmos3-ros sim`` in a subprocess on ``domain_id``; its output goes to ``log``."""

    def __init__(self, domain_id: int, args: list[str], log: Path) -> None:
        self.domain_id, self.args, self.log = domain_id, args, log
        self.proc: subprocess.Popen | None = None
        self.summaries: list[dict[str, Any]] = []

    def start(self) -> SimProcess:
        """Start it (a fresh simulation at time 0)."""
        env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain_id), PYTHONUNBUFFERED="1")
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cosmos3_ros.cli", "sim", *self.args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the simulator process has used so far."""
        if self.proc is None or self.proc.poll() is not None:
            return float("nan")
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 15.0) -> dict[str, Any]:
        """SIGINT, wait; the simulator's own summary (empty if it printed none). Kills it after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return {}
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        summary: dict[str, Any] = {"returncode": proc.returncode}
        for line in reversed(self.log.read_text().splitlines()):
            if line.startswith("cosmos3-ros sim: {"):
                summary.update(json.loads(line.split(": ", 1)[1]))
                break
        self.summaries.append(summary)
        return summary


class SimLoop:
    """Simulator + policy node + recorder (see the module docstring). Use as a context manager."""

    def __init__(self, config: LoopConfig, *, log_dir: Path | None = None, node_name: str = "cosmos3_policy") -> None:
        self.config = config
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="cosmos3-sim-loop-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.node_name = node_name
        self.domain_id = config.domain_id if config.domain_id is not None else random.randint(100, 200)
        self.sim = SimProcess(self.domain_id, config.sim_args(), self.log_dir / "sim.log")
        self.node: Any = None
        self.recorder: RecorderProcess | None = None
        self._ctx: Any = None
        self._executor: Any = None
        self._spin: threading.Thread | None = None
        self.configure_s = float("nan")

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def __enter__(self) -> SimLoop:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, sim_timeout: float = 120.0) -> None:
        """Start the recorder and the simulator, wait for its clock, then configure and activate the node."""
        import rclpy
        from rclpy.context import Context
        from rclpy.lifecycle import TransitionCallbackReturn
        from rclpy.parameter import Parameter

        from cosmos3_ros.ros.executor import DrainingExecutor
        from cosmos3_ros.ros.policy_node import PolicyNode

        self.recorder = RecorderProcess(self.domain_id, self.log_dir / "recorder.log")
        self.sim.start()
        self.wait_for(lambda: self.status()["clock_msgs"] > 0, sim_timeout, "the simulator's /clock")
        self._ctx = Context()
        rclpy.init(context=self._ctx, domain_id=self.domain_id)
        self._executor = DrainingExecutor(num_threads=4, context=self._ctx)
        self._spin = threading.Thread(target=self._executor.spin, daemon=True)
        self._spin.start()
        params = [Parameter(k, value=v) for k, v in self.config.node_parameters().items()]
        self.node = PolicyNode(self.node_name, context=self._ctx, parameter_overrides=params)
        self._executor.add_node(self.node)
        t0 = time.monotonic()
        if self.node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f"the policy node did not configure: {self.node.backend_error}")
        self.configure_s = time.monotonic() - t0
        # The recorder must have discovered the node's trajectory publisher before the first chunk goes out.
        found = lambda: self.recorder.call("publishers", TRAJECTORY_TOPIC) > 0  # noqa: E731
        self.wait_for(found, 30.0, f"the recorder discovering {TRAJECTORY_TOPIC}")
        self.node.trigger_activate()

    def close(self) -> dict[str, Any]:
        """Stop the node, the simulator and the recorder; returns the simulator's summary (empty when closed)."""
        summary = self.sim.stop()
        if self.node is not None:
            self.node.teardown()
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=2.0)
        if self._ctx is not None:
            self._ctx.try_shutdown()
        if self._spin is not None:
            self._spin.join(timeout=5)
        if self.node is not None:
            self.node.destroy_node()
        if self.recorder is not None:
            self.recorder.close()
        self.node, self._executor, self._ctx, self._spin, self.recorder = None, None, None, None, None
        return summary

    # -- driving the run ------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The recorder's view: newest simulated time (``clock``), ``epoch`` (simulator restarts seen) and how many
        clock messages, joint states, JointState commands and trajectories arrived."""
        assert self.recorder is not None
        return self.recorder.call("status")

    def sim_time(self) -> float:
        """The newest simulated time seen on /clock."""
        return float(self.status()["clock"])

    def wait_for(self, predicate: Any, timeout: float, what: str = "condition") -> Any:
        """Poll ``predicate`` until true; TimeoutError naming ``what`` (and the simulator's log tail) after
        ``timeout`` wall seconds, or RuntimeError when the simulator exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.sim.proc is not None and self.sim.proc.poll() is not None:
                raise RuntimeError(f"the simulator exited ({self.sim.proc.returncode}):\n{self.sim_log()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{what} not met within {timeout} s; simulator log:\n{self.sim_log()[-2000:]}")

    def run_for(self, sim_seconds: float, timeout: float | None = None) -> tuple[float, float]:
        """Let ``sim_seconds`` of simulated time pass; returns (start, end) simulated times."""
        t0 = self.sim_time()
        limit = timeout if timeout is not None else 60.0 + 4.0 * sim_seconds / max(self.config.real_time_factor, 0.05)
        self.wait_for(lambda: self.sim_time() >= t0 + sim_seconds, limit, f"{sim_seconds} simulated seconds")
        return t0, self.sim_time()

    def chunks(self, epoch: int | None = None) -> list[Chunk]:
        """Received chunks (holds excluded) of ``epoch`` (default: the current one)."""
        assert self.recorder is not None
        return self.recorder.call("chunks", epoch)

    def wait_chunks(self, n: int, timeout: float) -> None:
        """Wait until ``n`` chunks (not holds) arrived in the current epoch."""
        self.wait_for(lambda: len(self.chunks()) >= n, timeout, f"{n} chunks")

    def commands(self, start: int = 0) -> list[tuple[int, float, np.ndarray]]:
        """JointState commands seen on /joint_command from index ``start``: (epoch, stamp, positions)."""
        assert self.recorder is not None
        return self.recorder.call("commands", start)

    def pause_sim(self, paused: bool) -> None:
        """Pause or resume the simulator (its ~/pause service)."""
        assert self.recorder is not None
        self.recorder.call("pause", paused)

    def restart_sim(self) -> dict[str, Any]:
        """Stop the simulator process and start a new one (time starts again at 0); returns the old one's summary."""
        summary = self.sim.stop()
        self.sim.start()
        return summary

    def sim_log(self) -> str:
        """The simulator's output so far."""
        return self.sim.log.read_text() if self.sim.log.exists() else ""

    # -- measuring ------------------------------------------------------------------------------------------------

    def measure(self, sim_seconds: float, timeout: float | None = None) -> dict[str, Any]:
        """Run ``sim_seconds`` and report on exactly that window (see :meth:`report`), with the achieved real-time
        factor and the CPU used by the simulator process and by this process (the node and its model)."""
        wall0, cpu0, sim_cpu0 = time.monotonic(), time.process_time(), self.sim.cpu_seconds()
        t0, t1 = self.run_for(sim_seconds, timeout)
        wall = time.monotonic() - wall0
        out = self.report(t0, t1)
        out["wall_s"] = round(wall, 3)
        out["real_time_factor"] = round((t1 - t0) / wall, 3)
        out["cpu_sim_fraction_of_one_core"] = round((self.sim.cpu_seconds() - sim_cpu0) / wall, 3)
        out["cpu_node_process_fraction_of_one_core"] = round((time.process_time() - cpu0) / wall, 3)
        return out

    def report(self, t0: float = -np.inf, t1: float = np.inf) -> dict[str, Any]:
        """Figures over simulated times [t0, t1] of the current epoch (:func:`~cosmos3_ros.sim.recording.
        window_report`), plus the node's counters, forecast figures and policy latency."""
        assert self.recorder is not None
        values = self.config.node_parameters()
        lower = list(values.get("joint_limits.lower") or [-np.inf] * 8)
        upper = list(values.get("joint_limits.upper") or [np.inf] * 8)
        out: dict[str, Any] = {"window_sim_s": [round(t0, 3), round(t1, 3)]}
        out.update(self.recorder.call("report", t0, t1, lower, upper))
        if self.node is not None and self.node.loop is not None:
            loop = self.node.loop
            out["node_counters"] = loop.controller.counters.snapshot()
            summary = loop.monitor_summary()
            out["forecast"] = {k: v for k, v in summary.items() if k.startswith("forecast") and "latency" not in k}
            out["policy_latency_s"] = loop.policy_latency.summary()
        return out
