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
