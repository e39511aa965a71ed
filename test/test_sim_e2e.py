# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The closed loop on a robot that moves: the policy node with the shipped presets (config/isaac_sim.yaml,
config/droid.yaml) on simulated time, the real diffusers pipeline with the tiny checkpoint, ``cosmos3-ros sim`` in
its own process, at least 20 simulated seconds each.

The tiny checkpoint has random weights: its actions are noise, and the presets' joint limits clamp most of them, so
the arm is sent back and forth across its range faster than it can follow. That exercises the whole loop (camera ->
policy -> commands -> physics -> camera, forecasts against rendered frames, recording, replay) but says nothing
about a skill; "follows" is therefore judged by whether each joint moves towards what it is commanded (well above the
chance level of 0.5), and tight tracking of smooth commands is checked in test_sim_bridge.py and test_sim_world.py.

The simulator runs at half real time (``RTF``) so a shared 2-core CPU keeps up with the model; the presets are used
as shipped except: smaller frames (cost), the DROID model input at the 256 tier (cost), and, for the Isaac run, the
forecast taken from the policy call's own video (a forward_dynamics forecast rarely fits the replan budget on a CPU).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cosmos3_ros.sim.world import select_gl

select_gl()
pytest.importorskip("mujoco")

from cosmos3_ros.bags.reader import open_bag  # noqa: E402
from cosmos3_ros.sim.harness import LoopConfig, SimLoop, preset_file  # noqa: E402
from cosmos3_ros.sim.recording import TRAJECTORY_TOPIC  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RTF = 0.5
#: Wall seconds for the model to load and warm up and the first chunk to arrive (a loaded CI machine).
STARTUP_S = 600.0


def config(preset: str, tiny_model: Path, **node) -> LoopConfig:
    size = {"isaac": (160, 120), "droid": (160, 90)}[preset]
    return LoopConfig(
        preset=preset,
        backend="in_process",
        model=str(tiny_model),
        device="cpu",
        real_time_factor=RTF,
        camera_rate=10.0,
        width=size[0],
        height=size[1],
        node_overrides=node,
    )


def check_loop(report: dict, min_chunks: int) -> None:
    """What every run must show: chunks, motion towards the commands, nothing non-finite or out of limits."""
    assert report["chunks"] >= min_chunks, report
    assert report["non_finite_commands"] == 0 and report["commands_outside_limits"] == 0, report
    assert max(report["joint_range_rad"]) > 0.3, f"the arm hardly moved: {report['joint_range_rad']}"
    toward = report["moves_toward_reference"]
    assert toward["n"] > 500 and toward["share"] > 0.6, f"the joints do not move towards the commands: {toward}"


def test_isaac_preset_closes_the_loop_records_and_replays(tiny_model, tmp_path):
    bag = tmp_path / "run"
    cfg = config("isaac", tiny_model, record_path=str(bag), forecast_source="policy_video", record_image_every=2)
    with SimLoop(cfg, log_dir=tmp_path / "logs") as loop:
        loop.wait_chunks(1, STARTUP_S)
        report = loop.measure(20.0)
        sim = loop.close()
    check_loop(report, min_chunks=8)
    assert report["joint_commands"] > 300  # the JointState stream at control_rate (60 Hz on simulated time)
    assert sim["commands"]["joint_commands"] >= report["joint_commands"] and sim["returncode"] == 0
    assert not any(k.startswith("rejected") for k in sim["commands"]), sim["commands"]
    # Forecasts were compared with the frames the simulator rendered.
    assert report["forecast"]["forecasts"] >= 2 and report["forecast"]["forecast_matched"] >= 5, report["forecast"]
    assert report["prediction_error"]["n"] >= 5 and np.isfinite(report["prediction_error"]["max"])
    # The recording holds the run with the robot state the node used, and cosmos3-ros replay replays it with the
    # preset as it is (use_state: the recorded /joint_states go to the model again).
    with open_bag(bag) as b:
        assert b.message_count(["/rgb"]) > 50 and b.message_count([TRAJECTORY_TOPIC]) >= 8
        assert b.message_count(["/joint_states"]) > 300  # every state the node accepted (60 Hz simulated)
    out = tmp_path / "replayed"
    params = str(preset_file("isaac_sim.yaml"))
    r = subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", "replay", str(bag), "--params-file", params,
         "--model", str(tiny_model), "--device", "cpu", "--out", str(out), "--no-progress",
         "-p", "forecast_every:=0"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    assert summary["chunks"] >= 5 and summary["frames"] > 50, summary
    assert summary["counters"]["states"] > 300, summary["counters"]
    with open_bag(out) as b:
        assert b.message_count([TRAJECTORY_TOPIC]) >= 5


def test_droid_preset_follows_the_trajectories(tiny_model, tmp_path):
    cfg = config("droid", tiny_model, image_size=256)
    with SimLoop(cfg, log_dir=tmp_path / "logs") as loop:
        loop.wait_chunks(1, STARTUP_S)
        report = loop.measure(20.0)
        sim = loop.close()
    check_loop(report, min_chunks=8)
    assert report["joint_commands"] == 0  # DROID: trajectories only, followed as joint_trajectory_controller does
    assert sim["commands"]["trajectories"] >= report["chunks"], sim["commands"]
    assert not any(k.startswith("rejected") for k in sim["commands"]), sim["commands"]
    assert report["node_counters"]["frames./wrist_camera/image_raw"] > 100  # all three cameras reached the node


def test_pause_holds_and_a_restart_recovers(tiny_model, tmp_path):
    cfg = config("isaac", tiny_model, forecast_every=0)
    with SimLoop(cfg, log_dir=tmp_path / "logs") as loop:
        loop.wait_chunks(2, STARTUP_S)
        # Paused: the clock stops, so the node (on simulated time) sends nothing new and the arm holds still.
        loop.pause_sim(True)
        time.sleep(0.5)
        before = loop.status()
        time.sleep(4.0)
        during = loop.status()
        assert during["clock"] == before["clock"] and during["measured"] == before["measured"], during
        t_pause = before["clock"]
        late = [row for row in loop.commands(before["commands"]) if row[1] > t_pause + 1e-6]
        assert not late, "the node commanded past the paused clock"
        loop.pause_sim(False)
        n = len(loop.chunks())
        loop.wait_for(lambda: len(loop.chunks()) >= n + 2, 300, "chunks after the pause")
        assert loop.node.loop.controller.counters.get("clock_jumps") == 0  # a pause is not a restart
        assert any(row[1] > t_pause for row in loop.commands(before["commands"])), "no commands after the pause"
        # Restarted: a new simulator process, time from 0 again; the node drops what it had and starts over.
        old = loop.restart_sim()
        assert old["returncode"] == 0
        loop.wait_for(lambda: loop.status()["epoch"] == 1, 120, "the new simulator's clock")

        def new_timeline() -> int:  # chunks stamped on the new clock (one of the old run may still arrive late)
            now = loop.sim_time()
            return sum(c.times[-1] < now + 3.0 for c in loop.chunks())

        loop.wait_for(lambda: new_timeline() >= 2, 300, "chunks on the new simulator's clock")
        assert loop.node.loop.controller.counters.get("clock_jumps") >= 1
        report = loop.measure(8.0)
    assert report["chunks"] >= 3 and report["non_finite_commands"] == 0 and report["commands_outside_limits"] == 0
    assert max(report["joint_range_rad"]) > 0.3 and report["moves_toward_reference"]["share"] > 0.6, report
