# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Storage faults for tests: a directory nobody can write, a disk that fills up."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest


def read_only_dir(tmp_path: Path) -> Path:
    """A directory nobody can create files in (as root, chmod does not stop writes: use /sys)."""
    if os.geteuid() != 0:
        ro = tmp_path / "read_only"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    for candidate in (Path("/sys"), Path("/proc")):
        try:
            tempfile.TemporaryFile(dir=candidate).close()
        except OSError:
            return candidate
    pytest.skip("no read-only directory available")


def disk_full_after(monkeypatch: pytest.MonkeyPatch, limit_bytes: int) -> Callable[[], None]:
    """The recorder's writes fail with ENOSPC once ``limit_bytes`` are written; returns a function that frees it."""
    from cosmos3_ros.bags import storage as storage_mod

    real_pwrite = os.pwrite
    budget = {"bytes": limit_bytes}

    def pwrite(fd: int, data, offset: int) -> int:
        if budget["bytes"] <= 0:
            raise OSError(28, "No space left on device")
        n = real_pwrite(fd, bytes(data[: budget["bytes"]]), offset)
        budget["bytes"] -= n
        return n

    monkeypatch.setattr(storage_mod.os, "pwrite", pwrite)
    return lambda: monkeypatch.setattr(storage_mod.os, "pwrite", real_pwrite)
