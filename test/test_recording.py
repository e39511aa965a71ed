# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""BagRecorder: exact round trip through rosbags in both storages, queue policy, clean close on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from disk_util import disk_full_after
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader

from cosmos3_ros.bags.recorder import BagRecorder, RecorderError, get_ros2_typestore, stamp_to_ns

STORAGES = ["mcap", "sqlite3"]
REPO = Path(__file__).resolve().parents[1]


def read_all(path: Path) -> list[tuple[str, str, int, object]]:
    """(topic, msgtype, log time ns, decoded message) of every message, in log-time order."""
    with AnyReader([path], default_typestore=get_ros2_typestore()) as reader:
        return [
            (conn.topic, conn.msgtype, t, reader.deserialize(raw, conn.msgtype))
            for conn, t, raw in reader.messages(connections=reader.connections)
        ]


def ns_of(stamp: object) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)  # type: ignore[attr-defined]


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_exact_content(tmp_path: Path, storage: str, frame: np.ndarray) -> None:
    path = tmp_path / "bag"
    rng = np.random.default_rng(0)
    points = rng.normal(size=(16, 7))
    vels = rng.normal(size=(16, 7))
    names = [f"joint{i}" for i in range(7)]
    mono = frame[:, :, 0].copy()
    rgba = np.dstack([frame, np.full(frame.shape[:2], 200, np.uint8)])
    float_img = np.linspace(0, 1, 4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    with BagRecorder(path, storage=storage, custom_data={"params": "a: 1"}) as rec:
        assert rec.write_image("/cam", 1700000000.123456, frame, "camera")
        assert rec.write_image("/mono", 1700000000.2, mono)
        assert rec.write_image("/rgba", 1700000000.3, rgba)
        assert rec.write_image("/pred", 1700000000.4, float_img, "camera")
        assert rec.write_trajectory("/traj", 1700000000.5, names, points, 0.1, velocities=vels)
        assert rec.write_trajectory("/traj", 1700000000.6, names, points[:3], 0.05, first_offset_s=0.0)
        assert rec.write_float("/err", 1700000000.7, 0.25)
        assert rec.write_json("/timing", 1700000000.8, {"policy_s": 1.5, "bad": float("nan"), "v": np.arange(2)})
        assert rec.write_joint_state("/js", 1700000000.9, names[:2], [0.1, 0.2], velocities=[1.0, 2.0])
        types = rec.types
        status = types["diagnostic_msgs/msg/DiagnosticStatus"](
            level=b"\x01"[0], name="cosmos3", message="drift", hardware_id="", values=[]
        )
        diag = types["diagnostic_msgs/msg/DiagnosticArray"](
            header=types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=1700000001, nanosec=0), frame_id=""
            ),
            status=[status],
        )
        assert rec.write_message("/diagnostics", 1700000001.0, "diagnostic_msgs/msg/DiagnosticArray", diag)
        raw = get_ros2_typestore().serialize_cdr(types["std_msgs/msg/Float64"](data=3.5), "std_msgs/msg/Float64")
        assert rec.write_raw("/raw", 1700000001.1, "std_msgs/msg/Float64", raw)
    stats = rec.stats()
    assert stats["written"] == stats["accepted"] == 11
    assert stats["dropped"] == stats["failed"] == stats["lost"] == 0 and stats["error"] is None
    assert rec.closed

    msgs = read_all(path)
    by_topic: dict[str, list] = {}
    for topic, msgtype, t, msg in msgs:
        by_topic.setdefault(topic, []).append((msgtype, t, msg))
    assert [t for _, _, t, _ in msgs] == sorted(t for _, _, t, _ in msgs)

    [(mt, t, img)] = by_topic["/cam"]
    assert mt == "sensor_msgs/msg/Image"
    assert t == stamp_to_ns(1700000000.123456) == ns_of(img.header.stamp)
    assert (img.height, img.width, img.encoding, img.step, img.is_bigendian) == (240, 320, "rgb8", 960, 0)
    assert img.header.frame_id == "camera"
    assert img.data.tobytes() == frame.tobytes()
    [(_, _, img)] = by_topic["/mono"]
    assert (img.encoding, img.step) == ("mono8", 320) and img.data.tobytes() == mono.tobytes()
    [(_, _, img)] = by_topic["/rgba"]
    assert (img.encoding, img.step) == ("rgba8", 1280) and img.data.tobytes() == rgba.tobytes()
    [(_, _, img)] = by_topic["/pred"]
    assert img.data.tobytes() == np.rint(float_img * 255).astype(np.uint8).tobytes()

    (_, t1, tr1), (_, _, tr2) = by_topic["/traj"]
    assert tr1.joint_names == names and len(tr1.points) == 16
    np.testing.assert_array_equal(np.stack([p.positions for p in tr1.points]), points)
    np.testing.assert_array_equal(np.stack([p.velocities for p in tr1.points]), vels)
    assert [ns_of(p.time_from_start) for p in tr1.points] == [round((k + 1) * 0.1 * 1e9) for k in range(16)]
    assert [ns_of(p.time_from_start) for p in tr2.points] == [0, 50_000_000, 100_000_000]
    assert ns_of(tr1.header.stamp) == t1 == stamp_to_ns(1700000000.5)

    [(_, t, f)] = by_topic["/err"]
    assert f.data == 0.25 and t == stamp_to_ns(1700000000.7)
    [(_, _, s)] = by_topic["/timing"]
    assert json.loads(s.data) == {"bad": None, "policy_s": 1.5, "v": [0, 1]}
    [(_, _, js)] = by_topic["/js"]
    assert js.name == names[:2] and list(js.position) == [0.1, 0.2] and list(js.velocity) == [1.0, 2.0]
    assert len(js.effort) == 0
    [(_, _, d)] = by_topic["/diagnostics"]
    assert d.status[0].message == "drift"
    [(_, _, r)] = by_topic["/raw"]
    assert r.data == 3.5

    # metadata.yaml as rosbag2 (Kilted) writes it
    with Reader(path) as reader:
        assert reader.message_count == 11
        assert reader.storage.metadata.custom == {"params": "a: 1"}  # type: ignore[attr-defined]
    meta = (path / "metadata.yaml").read_text()
    assert "version: 9" in meta and f"storage_identifier: {storage}" in meta
    assert "RIHS01_" in meta


@pytest.mark.parametrize("storage", STORAGES)
def test_bytes_deserialize_with_rclpy(tmp_path: Path, storage: str, frame: np.ndarray) -> None:
    """The recorded CDR is what ROS itself reads (the rclpy message classes of the installed distro)."""
    ser = pytest.importorskip("rclpy.serialization")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    trajectory_msgs = pytest.importorskip("trajectory_msgs.msg")
    path = tmp_path / "bag"
    with BagRecorder(path, storage=storage) as rec:
        rec.write_image("/cam", 12.5, frame, "cam")
        rec.write_trajectory("/traj", 12.5, ["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]), 0.2)
    with Reader(path) as reader:
        got = {c.topic: raw for c, _, raw in reader.messages()}
    img = ser.deserialize_message(got["/cam"], sensor_msgs.Image)
    assert (img.width, img.height, img.encoding) == (320, 240, "rgb8")
    assert (img.header.stamp.sec, img.header.stamp.nanosec) == (12, 500_000_000)
    assert bytes(img.data) == frame.tobytes()
    tr = ser.deserialize_message(got["/traj"], trajectory_msgs.JointTrajectory)
    assert list(tr.points[1].positions) == [3.0, 4.0]
    assert (tr.points[1].time_from_start.sec, tr.points[1].time_from_start.nanosec) == (0, 400_000_000)


def test_type_hashes_match_ros_definitions(tmp_path: Path) -> None:
    """metadata.yaml carries the same RIHS01 hashes the installed ROS message packages declare."""
    share = Path(sys.prefix) / "share"
    candidates = [share] + [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(":") if p]
    found = 0
    ts = get_ros2_typestore()
    for name in ("sensor_msgs/msg/Image", "trajectory_msgs/msg/JointTrajectory", "std_msgs/msg/Float64"):
        pkg, _, msg = name.split("/")
        for base in candidates:
            desc = base / pkg / "msg" / f"{msg}.json"
            if desc.exists():
                hashes = json.loads(desc.read_text())["type_hashes"]
                want = next(h["hash_string"] for h in hashes if h["type_name"] == name)
                assert ts.hash_rihs01(name) == want
                found += 1
                break
    if not found:
        pytest.skip("no ROS 2 message type descriptions installed")


def gate_writer(rec: BagRecorder) -> tuple[threading.Event, threading.Event]:
    """Stall the writer thread on a message whose build waits for ``release`` (uses the private queue entry)."""
    entered, release = threading.Event(), threading.Event()
    data = bytes(
        get_ros2_typestore().serialize_cdr(rec.types["std_msgs/msg/Float64"](data=0.0), "std_msgs/msg/Float64")
    )

    def build() -> bytes:
        entered.set()
        release.wait(30)
        return data

    rec._put("/gate", "std_msgs/msg/Float64", 1, build, droppable=False)  # noqa: SLF001 (white-box queue test)
    assert entered.wait(10)
    return entered, release


def test_queue_overflow_drops_oldest_images_never_trajectories(tmp_path: Path) -> None:
    rec = BagRecorder(tmp_path / "bag", max_queue=10).start()
    img = np.zeros((8, 8, 3), np.uint8)
    _, release = gate_writer(rec)
    names = ["j0", "j1"]
    worst = 0.0
    for i in range(5):
        rec.write_trajectory("/traj", 10 + i, names, np.full((2, 2), i, float), 0.1)
    for i in range(20):
        img[:] = i
        t0 = time.perf_counter()
        assert rec.write_image("/cam", 20 + i, img)  # room is made by dropping the oldest image
        worst = max(worst, time.perf_counter() - t0)
    for i in range(5, 10):
        assert rec.write_trajectory("/traj", 10 + i, names, np.full((2, 2), i, float), 0.1)
    assert not rec.write_image("/cam", 50, img)  # full of trajectories: the new image is dropped
    assert rec.write_trajectory("/traj", 60, names, np.zeros((2, 2)), 0.1)  # never dropped, even past max_queue
    st = rec.stats()
    assert st["dropped"] == 21 and st["dropped_by_topic"] == {"/cam": 21}
    assert st["queued"] == 11
    assert worst < 0.05  # never blocked by the stalled writer
    release.set()
    assert rec.close(timeout=30)
    msgs = read_all(tmp_path / "bag")
    traj = [m for topic, _, _, m in msgs if topic == "/traj"]
    assert len(traj) == 11
    assert [float(m.points[0].positions[0]) for m in traj] == [*map(float, range(10)), 0.0]
    assert [topic for topic, *_ in msgs if topic == "/cam"] == []
    assert rec.stats()["written"] == 12  # gate + 11 trajectories


def test_queue_keeps_newest_images(tmp_path: Path) -> None:
    rec = BagRecorder(tmp_path / "bag", max_queue=4).start()
    _, release = gate_writer(rec)
    for i in range(10):
        rec.write_image("/cam", 100 + i, np.full((4, 4, 3), i, np.uint8))
    release.set()
    rec.close()
    vals = [int(m.data[0]) for topic, _, _, m in read_all(tmp_path / "bag") if topic == "/cam"]
    assert vals == [6, 7, 8, 9]
    assert rec.stats()["dropped"] == 6


def test_image_every_n_and_scale(tmp_path: Path, frame: np.ndarray) -> None:
    with BagRecorder(tmp_path / "bag", image_every_n=3, image_scale=0.5) as rec:
        for i in range(7):
            rec.write_image("/cam", 1 + i, frame)
            rec.write_image("/pred", 1 + i, frame, downsample=False)
    assert rec.stats()["skipped"] == 4
    msgs = read_all(tmp_path / "bag")
    cam = [(t, m) for topic, _, t, m in msgs if topic == "/cam"]
    assert [t // 1_000_000_000 for t, _ in cam] == [1, 4, 7]
    assert {(m.width, m.height, m.step) for _, m in cam} == {(160, 120, 480)}
    small = cam[0][1].data.reshape(120, 160, 3).astype(int)
    expected = frame.reshape(120, 2, 160, 2, 3).mean(axis=(1, 3))
    assert np.abs(small - expected).max() <= 1
    pred = [m for topic, _, _, m in msgs if topic == "/pred"]
    assert len(pred) == 7 and {(m.width, m.height) for m in pred} == {(320, 240)}


def test_close_is_idempotent_and_rejects_late_writes(tmp_path: Path) -> None:
    rec = BagRecorder(tmp_path / "bag")
    assert rec.close()  # never started: nothing to do
    rec = BagRecorder(tmp_path / "bag2").start()
    rec.write_float("/x", 1.0, 1.0)
    assert rec.close() and rec.close() and rec.closed
    assert not rec.write_float("/x", 2.0, 2.0)
    assert rec.stats()["rejected"] == 1
    with Reader(tmp_path / "bag2") as reader:
        assert reader.message_count == 1


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        BagRecorder(tmp_path / "b", storage="rosbag1")
    with pytest.raises(ValueError):
        BagRecorder(tmp_path / "b", image_scale=2.0)
    rec = BagRecorder(tmp_path / "b")
    with pytest.raises(RecorderError, match="not started"):
        rec.write_float("/x", 1.0, 1.0)
    rec.start()
    with pytest.raises(RecorderError):
        rec.start()
    rec.write_float("/x", 1.0, 1.0)
    with pytest.raises(RecorderError, match="already recorded as"):
        rec.write_json("/x", 1.0, {})
    with pytest.raises(ValueError):
        rec.write_float("/x", -1.0, 1.0)
    with pytest.raises(ValueError):
        rec.write_trajectory("/t", 1.0, ["a"], np.zeros((3, 2)), 0.1)
    with pytest.raises(ValueError):
        rec.write_image("/c", 1.0, np.zeros((4, 4, 2), np.uint8))
    # a message that can not be serialized is skipped, the recording goes on
    assert rec.write_message("/bad", 1.0, "std_msgs/msg/Float64", object())
    rec.write_float("/x", 2.0, 2.0)
    rec.close()
    st = rec.stats()
    assert st["failed"] == 1 and st["error"] is None and st["written"] == 2
    with pytest.raises(RecorderError, match="exists already"):
        BagRecorder(tmp_path / "b").start()
    again = BagRecorder(tmp_path / "b", overwrite=True).start()
    again.close()
    (tmp_path / "not_a_bag").mkdir()
    (tmp_path / "not_a_bag" / "precious.txt").write_text("keep me")
    with pytest.raises(RecorderError, match="refusing"):
        BagRecorder(tmp_path / "not_a_bag", overwrite=True).start()
    assert (tmp_path / "not_a_bag" / "precious.txt").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Shutdown by signal, in a real process
# ---------------------------------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    from cosmos3_ros.bags.recorder import BagRecorder

    path, storage, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    rec = BagRecorder(path, storage=storage, max_queue=100000).start()
    ok = 0  # write_* calls that returned True

    def report():
        st = rec.stats()
        counts = " ".join(f"{k.upper()} {st[k]}" for k in ("accepted", "written", "dropped", "lost"))
        print(f"OK {ok} {counts}", flush=True)

    if mode == "handler":
        def on_term(signum, frame):
            rec.close()  # straight from the handler, possibly interrupting a write_* call
            report()
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)

    img = np.zeros((48, 64, 3), np.uint8)
    try:
        i = 0
        while True:
            img[:] = i % 256
            ok += rec.write_image("/cam", 1000 + i * 0.01, img, "cam")
            if i % 5 == 0:
                ok += rec.write_trajectory("/traj", 1000 + i * 0.01, ["a", "b"], np.full((4, 2), float(i)), 0.01)
            if i == 50:
                print("READY", flush=True)
            if mode == "exit" and i == 300:
                report()
                break  # main thread ends without close(): the writer thread finalizes the bag
            i += 1
            time.sleep(0.0005)
    finally:
        if mode == "finally":
            rec.close()
            report()
    """
)


def run_child(tmp_path: Path, storage: str, mode: str, sig: int | None) -> tuple[dict[str, int], Path]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    bag = tmp_path / "bag"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(bag), storage, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", line + (proc.stderr.read() if proc.stderr else "")
        if sig is not None:
            time.sleep(0.3)
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = [ln for ln in out.splitlines() if ln.startswith("OK ")]
    assert report, f"no report; rc={proc.returncode}\nstdout:{out}\nstderr:{err}"
    parts = report[-1].split()
    return {parts[i].lower(): int(parts[i + 1]) for i in range(0, len(parts), 2)}, bag


@pytest.mark.parametrize(
    ("storage", "mode", "sig"),
    [
        ("mcap", "handler", signal.SIGTERM),
        ("sqlite3", "handler", signal.SIGTERM),
        ("mcap", "finally", signal.SIGINT),
        ("mcap", "exit", None),
    ],
)
def test_recording_survives_shutdown(tmp_path: Path, storage: str, mode: str, sig: int | None) -> None:
    counts, bag = run_child(tmp_path, storage, mode, sig)
    assert counts["ok"] > 50
    assert counts["dropped"] == counts["lost"] == 0
    msgs = read_all(bag)
    # Everything whose write_* returned before the signal is in the bag; a write the signal interrupted (or whose
    # return value the signal kept from being counted) may or may not be.
    assert len(msgs) - counts["ok"] in (0, 1)
    if mode != "exit":  # in "exit" mode the report comes before the writer thread finishes
        assert counts["written"] == len(msgs)
        assert abs(counts["accepted"] - counts["written"]) <= 1
    with Reader(bag) as reader:  # metadata.yaml agrees with the storage
        assert reader.message_count == len(msgs)
    cams = [m for topic, _, _, m in msgs if topic == "/cam"]
    stamps = [ns_of(m.header.stamp) for m in cams]
    # every image from the first up to the signal, none missing
    assert stamps == [stamp_to_ns(1000 + i * 0.01) for i in range(len(cams))]
    assert all(int(m.data[0]) == i % 256 for i, m in enumerate(cams))
    trajs = [m for topic, _, _, m in msgs if topic == "/traj"]
    # the signal may land between an image and its trajectory
    assert len(trajs) in (math.ceil(len(cams) / 5), math.ceil(len(cams) / 5) - 1)
    assert [float(m.points[0].positions[0]) for m in trajs] == [5.0 * k for k in range(len(trajs))]


# ---------------------------------------------------------------------------------------------------------------------
# Write failures: on_error, the ERROR log, rejected writes (a real full disk in a subprocess: test_bag_recover.py)
# ---------------------------------------------------------------------------------------------------------------------


def test_write_failure_in_process_never_raises_into_producers(tmp_path: Path, monkeypatch, caplog) -> None:
    free_disk = disk_full_after(monkeypatch, 150_000)  # a disk that fills up after 150 kB
    seen: list[BaseException] = []

    def on_error(exc: BaseException) -> None:
        seen.append(exc)
        raise RuntimeError("a broken callback must not break the recorder")

    img = np.zeros((32, 32, 3), np.uint8)
    with caplog.at_level("ERROR", logger="cosmos3_ros.bags.recorder"):
        rec = BagRecorder(tmp_path / "bag", on_error=on_error, chunk_bytes=16 * 1024).start()
        for i in range(200):
            img[:] = i
            rec.write_image("/cam", 10 + i * 0.01, img)
        assert rec.close(timeout=30)
        for i in range(3):
            assert not rec.write_float("/late", 20 + i, 1.0)  # rejected, never raises
    free_disk()
    assert len(seen) == 1 and isinstance(seen[0], OSError) and rec.error is seen[0]
    st = rec.stats()
    assert st["accepted"] == st["written"] + st["lost"] and st["rejected"] >= 3 and st["error"]
    records = [r.getMessage() for r in caplog.records if r.name == "cosmos3_ros.bags.recorder"]
    failures = [m for m in records if "failed while" in m]
    assert len(failures) == 1 and "No space left on device (ENOSPC)" in failures[0] and str(tmp_path) in failures[0]
    assert any("on_error callback" in m for m in records)
    from cosmos3_ros.bags.reader import open_bag

    assert not (tmp_path / "bag" / "metadata.yaml").exists()  # the disk stayed full: no index, no metadata
    with open_bag(tmp_path / "bag") as src:  # read tolerantly (a sequential scan)
        assert src.scan is not None and src.scan.cut_bytes == 0  # truncated back to its last complete chunk
        cams = [int(m.msg.data[0]) for m in src.messages()]
    assert cams == list(range(st["written"])) and 0 < st["written"] < 200
