# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A real ROS 2 workspace for tests: ``colcon build`` of this checkout, ``ros2 launch`` in its own process group.

Uses the distro's colcon and ros2 when a ROS 2 install is sourced, else the vendored pure-Python launch sources
installed next to the PyPI wheels (``.ci/run`` installs them); tests skip, saying why, when neither is there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tools_missing() -> str:
    """Why the real colcon + ros2 launch cannot run here ("" when they can)."""
    missing = [tool for tool in ("colcon", "ros2") if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not found: source a ROS 2 install, or install colcon and the vendored "
            "launch sources as .ci/run does (../shared/vendor/ros2-launch/README.md)"
        )
    return ""


def _sources() -> list[str]:
    """The checkout's files (tracked or not ignored, when this is a git checkout)."""
    try:
        cmd = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [f for f in out.splitlines() if (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".venv-ci", "build", "install", "log"}
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for ROS tools: this Python's prefix as the underlay (ament index), bytecode allowed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if "AMENT_PREFIX_PATH" not in env:  # no distro sourced: the venv plays /opt/ros/<distro>
        env["AMENT_PREFIX_PATH"] = sys.prefix
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def copy_sources(dst: Path) -> Path:
    """A copy of the checkout's files at ``dst`` (builds write into their source tree)."""
    for rel in _sources():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return dst


def build_workspace(ws: Path) -> subprocess.CompletedProcess:
    """Copy the checkout to ``ws/src/cosmos3_ros`` and ``colcon build`` it, as a ROS user does."""
    copy_sources(ws / "src" / "cosmos3_ros")
    return subprocess.run(
        ["colcon", "build", "--packages-select", "cosmos3_ros"],
        cwd=ws,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


class Launch:
    """``ros2 launch cosmos3_ros <file> <args>`` in a new process group, with its output kept."""

    def __init__(self, ws: Path, args: list[str], domain_id: int, log: Path, launch_file: str = "policy.launch.py"):
        self.log_path = log
        setup = ws / "install" / "setup.bash"
        cmd = f"source {shlex.quote(str(setup))} && exec ros2 launch cosmos3_ros {launch_file} " + " ".join(
            shlex.quote(a) for a in args
        )
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            ["bash", "-c", cmd],
            cwd=ws,
            env=clean_env(ROS_DOMAIN_ID=str(domain_id)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.pgid = self.proc.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the launch output:\n{self.output()[-4000:]}")

    def sigint(self, group: bool) -> None:
        """Ctrl-C: to the launch process alone, or (a terminal's Ctrl-C) to the whole process group."""
        if group:
            os.killpg(self.pgid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def leftovers(self) -> list[str]:
        """Processes still alive in the launch's process group (from /proc: no ps needed)."""
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and fields[2] == str(self.pgid):  # state, ppid, pgrp
                alive.append(stat.parent.name)
        return alive

    def kill(self) -> None:
        if self.proc.poll() is None or self.leftovers():
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()


def built_workspace(ws: Path) -> Path:
    """``ws`` with the package built by colcon (the calling test skips, saying why, without colcon or ros2): the build
    succeeds, prints nothing on stderr and installs the node's executable."""
    require_tools()
    r = build_workspace(ws)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "had stderr output" not in r.stdout + r.stderr, r.stdout + r.stderr  # no setuptools warnings
    assert (ws / "install" / "cosmos3_ros" / "lib" / "cosmos3_ros" / "policy_node").is_file()
    return ws


def require_tools() -> None:
    """Skip the calling test, saying why, when colcon or ros2 is missing."""
    why = tools_missing()
    if why:
        pytest.skip(why)
