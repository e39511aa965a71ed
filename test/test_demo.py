# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""README's main command: `cosmos3-ros demo` runs the closed loop and exits 0 with a summary."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_closed_loop_and_summarises():
    r = subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", "demo", "--duration", "10", "--num-steps", "4", "--quiet"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "demo summary" in out and "chunks received" in out
    n = int(out.split("chunks received")[1].split()[0])
    assert n >= 1
    assert "non-finite values    0" in out
