# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros bag info`` and ``cosmos3-ros bag recover`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from disk_util import read_only_dir
from rosbags.rosbag2 import Reader

from cosmos3_ros.bags import mcap_scan
from cosmos3_ros.bags.recorder import BagRecorder


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", "bag", *args], capture_output=True, text=True, timeout=120
    )


def _record(path: Path, n: int = 40) -> Path:
    img = np.zeros((16, 16, 3), np.uint8)
    with BagRecorder(path, chunk_bytes=4000) as rec:
        for i in range(n):
            img[:] = i
            rec.write_image("/cam", 100 + i * 0.1, img, "cam")
            rec.write_float("/seq", 100 + i * 0.1, float(i))
    return path


def _cut(bag: Path, dst: Path) -> tuple[Path, int]:
    """A copy of ``bag`` as a SIGKILL leaves it: no metadata.yaml, the MCAP cut in its last chunks."""
    shutil.copytree(bag, dst)
    (dst / "metadata.yaml").unlink()
    mcap = next(dst.glob("*.mcap"))
    scan = mcap_scan.scan(mcap)
    size = scan.blocks[-3].offset + 100
    mcap.write_bytes(mcap.read_bytes()[:size])
    return dst, mcap_scan.scan(mcap).message_count


def test_bag_info_on_complete_and_cut_bags(tmp_path):
    bag = _record(tmp_path / "bag")
    r = _cli("info", str(bag))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Files:             bag.mcap" in out and "Storage id:        mcap" in out
    assert "Duration:          3.900000000s" in out and "(100.000000000)" in out and "(103.900000000)" in out
    assert "Messages:          80" in out
    assert "Topic: /cam | Type: sensor_msgs/msg/Image | Count: 40 | Serialization Format: cdr" in out
    assert "Topic: /seq | Type: std_msgs/msg/Float64 | Count: 40" in out
    assert "Status:            complete" in out

    cut, kept = _cut(bag, tmp_path / "cut")
    r = _cli("info", str(cut))
    assert r.returncode == 0, r.stderr
    assert f"Messages:          {kept}" in r.stdout and kept < 80
    assert "Status:            NOT COMPLETE" in r.stdout and "the last 100 bytes (a cut record) are lost" in r.stdout

    r = _cli("info", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.strip() == f"cosmos3-ros bag: error: bag not found: {tmp_path / 'missing'}"


def test_bag_recover_cli(tmp_path):
    bag = _record(tmp_path / "bag")
    cut, kept = _cut(bag, tmp_path / "cut")
    out = tmp_path / "out"
    r = _cli("recover", str(cut), str(out))
    assert r.returncode == 0, r.stderr
    assert f"recovered {kept} messages from {cut} into {out}:" in r.stdout
    assert "/cam" in r.stdout and "(sensor_msgs/msg/Image)" in r.stdout and "lost:" in r.stdout
    assert "the last 100 bytes of bag.mcap are a cut record" in r.stdout
    with Reader(out) as reader:
        assert reader.message_count == kept
    assert not (cut / "metadata.yaml").exists()  # the input is left as it was

    r = _cli("recover", str(cut), str(out))  # OUT exists
    assert r.returncode == 2 and "exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("recover", str(bag), str(read_only_dir(tmp_path) / "out"))
    assert r.returncode == 2 and "not writable" in r.stderr and "Traceback" not in r.stderr
    r = _cli("recover")
    assert r.returncode == 2 and "usage" in r.stderr
