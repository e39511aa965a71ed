# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Linters as tests: ruff, and the copyright/licence header on every source file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("# Copyright 2026 The cosmos3_ros Authors", "# SPDX-License-Identifier: Apache-2.0")
SOURCE_DIRS = ("cosmos3_ros", "test", "launch", "bench")


def _sources() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py")]
    files += [ROOT / "setup.py"]
    return sorted(f for f in files if "__pycache__" not in f.parts)


def test_every_source_file_has_the_licence_header():
    missing = []
    for path in _sources():
        lines = path.read_text().splitlines()[:3]
        if lines[:1] and lines[0].startswith("#!"):
            lines = lines[1:]
        if tuple(lines[:2]) != HEADER:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"missing Apache-2.0 header: {missing}"
    for extra in ("run",):
        text = (ROOT / ".ci" / extra).read_text()
        assert "SPDX-License-Identifier: Apache-2.0" in text


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    return [exe] if exe else [sys.executable, "-m", "ruff"]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    r = subprocess.run([*_ruff(), *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_core_and_the_loop_import_neither_ros_nor_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "import cosmos3_ros.core, cosmos3_ros.control\n"
        "for pkg in (cosmos3_ros.core, cosmos3_ros.control):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('rclpy', 'torch', 'diffusers', 'sensor_msgs'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_source_file_is_much_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > 650}
    assert not long, long
