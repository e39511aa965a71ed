# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""README's "Try it without a robot" for users without a ROS distro: ``cosmos3-ros demo --sim`` writes a tiny
checkpoint, runs the node against the MuJoCo Panda and exits 0 with a summary of how the arm followed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

if importlib.util.find_spec("mujoco") is None:  # not imported here: MUJOCO_GL is chosen by the command
    pytest.skip("mujoco is not installed (the sim extra)", allow_module_level=True)


@pytest.mark.slow
def test_demo_sim_runs_the_loop_on_the_simulator():
    r = subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", "demo", "--sim", "--duration", "8", "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "demo summary (simulator)" in out and "moves towards its commands" in out, out[-3000:]
    assert int(out.split("chunks received")[1].split()[0].rstrip(",")) >= 1
    assert "non-finite values    0, outside the joint limits 0" in out
