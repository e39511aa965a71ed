# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""bag_io: reading rosbag2 bags (MCAP and sqlite3) for replay, image decoding, and clear errors for bad input."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from rosbags.rosbag2 import StoragePlugin, Writer

from cosmos3_ros.bags.reader import BagError, BagMessage, frame_from_msg, open_bag
from cosmos3_ros.bags.recorder import BagRecorder, get_ros2_typestore

STORAGES = ["mcap", "sqlite3"]
SUFFIX = {"mcap": ".mcap", "sqlite3": ".db3"}
T0 = 1_700_000_000


def types() -> Any:
    return get_ros2_typestore().types


def header(sec: int, nanosec: int = 0, frame_id: str = "cam") -> Any:
    return types()["std_msgs/msg/Header"](
        stamp=types()["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def raw_image(img: np.ndarray, encoding: str, sec: int, nanosec: int = 0) -> Any:
    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else img.shape[2]
    return types()["sensor_msgs/msg/Image"](
        header=header(sec, nanosec),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * ch,
        data=np.ascontiguousarray(img).reshape(-1),
    )


def compressed(img: np.ndarray, fmt: str, sec: int) -> Any:
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format="JPEG" if fmt == "jpeg" else "PNG")
    return types()["sensor_msgs/msg/CompressedImage"](
        header=header(sec), format=fmt, data=np.frombuffer(buf.getvalue(), np.uint8)
    )


def write_bag(path: Path, storage: str, messages: list[tuple[str, str, int, Any]]) -> Path:
    """Write (topic, msgtype, log time ns, message) with rosbags directly (not through our recorder)."""
    ts = get_ros2_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns: dict[str, Any] = {}
        for topic, msgtype, t, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))
    return path


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def sample_bag(path: Path, storage: str, rgb: np.ndarray) -> Path:
    ns = 1_000_000_000
    msgs: list[tuple[str, str, int, Any]] = []
    for i in range(10):
        # header stamps 0.5 s behind the log time: the reader must report the header stamp
        msgs.append(("/cam", "sensor_msgs/msg/Image", (T0 + i) * ns, raw_image(rgb, "rgb8", T0 + i, 500_000_000)))
    msgs.append(("/bgr", "sensor_msgs/msg/Image", T0 * ns + 1, raw_image(rgb[:, :, ::-1], "bgr8", T0)))
    msgs.append(("/mono", "sensor_msgs/msg/Image", T0 * ns + 2, raw_image(rgb[:, :, 1], "mono8", T0)))
    msgs.append(("/png", "sensor_msgs/msg/CompressedImage", T0 * ns + 3, compressed(rgb, "png", T0)))
    msgs.append(("/jpeg", "sensor_msgs/msg/CompressedImage", T0 * ns + 4, compressed(rgb, "jpeg", T0)))
    msgs.append(("/zero_stamp", "sensor_msgs/msg/Image", T0 * ns + 5, raw_image(rgb, "rgb8", 0, 0)))
    msgs.append(("/value", "std_msgs/msg/Float64", (T0 + 3) * ns, types()["std_msgs/msg/Float64"](data=2.5)))
    return write_bag(path, storage, msgs)


@pytest.mark.parametrize("storage", STORAGES)
def test_read_bag(tmp_path: Path, storage: str, rgb: np.ndarray) -> None:
    bag = sample_bag(tmp_path / "in", storage, rgb)
    with open_bag(bag) as src:
        assert src.storage == storage and src.note is None
        topics = src.topics()
        assert set(topics) == {"/cam", "/bgr", "/mono", "/png", "/jpeg", "/zero_stamp", "/value"}
        assert topics["/cam"].msgtype == "sensor_msgs/msg/Image" and topics["/cam"].count == 10
        assert src.message_count() == 16
        assert src.message_count(["/cam", "/value"]) == 11
        assert src.start_time == pytest.approx(T0)
        assert src.duration == pytest.approx(9.0)

        cams = list(src.messages(["/cam"]))
        assert len(cams) == 10 and all(isinstance(m, BagMessage) for m in cams)
        assert [m.stamp for m in cams] == pytest.approx([T0 + i + 0.5 for i in range(10)])
        assert [m.log_time for m in cams] == pytest.approx([T0 + i for i in range(10)])
        np.testing.assert_array_equal(frame_from_msg(cams[0].msgtype, cams[0].msg), rgb)

        every = list(src.messages())
        assert len(every) == 16
        assert [m.log_time for m in every] == sorted(m.log_time for m in every)
        by = {m.topic: m for m in every}
        for topic in ("/bgr", "/png"):
            np.testing.assert_array_equal(frame_from_msg(by[topic].msgtype, by[topic].msg), rgb)
        mono = frame_from_msg(by["/mono"].msgtype, by["/mono"].msg)
        np.testing.assert_array_equal(mono, np.repeat(rgb[:, :, 1:2], 3, axis=2))
        jpeg = frame_from_msg(by["/jpeg"].msgtype, by["/jpeg"].msg)
        assert jpeg.shape == rgb.shape and jpeg.dtype == np.uint8
        # zero header stamp: falls back to the log time; no header at all: log time
        assert by["/zero_stamp"].stamp == pytest.approx(T0 + 5e-9)
        assert by["/value"].stamp == pytest.approx(T0 + 3) and by["/value"].msg.data == 2.5
        with pytest.raises(BagError, match="not an image type"):
            frame_from_msg(by["/value"].msgtype, by["/value"].msg)


@pytest.mark.parametrize("storage", STORAGES)
def test_reads_recorder_output_and_lone_storage_file(tmp_path: Path, storage: str, rgb: np.ndarray) -> None:
    bag = tmp_path / "rec"
    with BagRecorder(bag, storage=storage) as rec:
        for i in range(5):
            rec.write_image("/cam", 10 + 0.1 * i, rgb, "cam")
            rec.write_trajectory("/traj", 10 + 0.1 * i, ["a", "b", "c"], np.full((4, 3), i, float), 0.1)
    lone = next(bag.glob(f"*{SUFFIX[storage]}"))
    for path in (bag, lone):
        with open_bag(path) as src:
            assert src.message_count(["/cam"]) == 5
            msgs = list(src.messages(["/cam", "/traj"]))
            assert [m.topic for m in msgs] == ["/cam", "/traj"] * 5
            np.testing.assert_array_equal(frame_from_msg(msgs[0].msgtype, msgs[0].msg), rgb)
            assert list(msgs[-1].msg.points[0].positions) == [4.0, 4.0, 4.0]


@pytest.mark.parametrize("storage", STORAGES)
def test_directory_without_metadata_is_read_with_a_note(tmp_path: Path, storage: str, rgb: np.ndarray) -> None:
    bag = sample_bag(tmp_path / "in", storage, rgb)
    (bag / "metadata.yaml").unlink()
    with open_bag(bag) as src:
        assert src.note and "metadata.yaml" in src.note
        assert src.message_count(["/cam"]) == 10


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="not found"):
        open_bag(tmp_path / "nope")
    assert issubclass(BagError, ValueError)


@pytest.mark.parametrize("storage", STORAGES)
def test_corrupt_bags(tmp_path: Path, storage: str, rgb: np.ndarray) -> None:
    good = sample_bag(tmp_path / "good", storage, rgb)
    name = next(good.glob(f"*{SUFFIX[storage]}")).name

    garbage = tmp_path / "garbage"
    shutil.copytree(good, garbage)
    (garbage / name).write_bytes(os.urandom(4096))
    with pytest.raises(BagError, match="corrupt"):
        open_bag(garbage)
    with pytest.raises(BagError, match="corrupt"):
        open_bag(garbage / name)

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    data = (truncated / name).read_bytes()
    (truncated / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match="corrupt"):
        with open_bag(truncated) as src:
            list(src.messages())

    zero = tmp_path / "zero"
    shutil.copytree(good, zero)
    (zero / name).write_bytes(b"")
    with pytest.raises(BagError, match="corrupt"):
        open_bag(zero)

    bad_yaml = tmp_path / "bad_yaml"
    shutil.copytree(good, bad_yaml)
    (bad_yaml / "metadata.yaml").write_text("rosbag2_bagfile_information: [[[")
    with pytest.raises(BagError, match="corrupt"):
        open_bag(bad_yaml)

    lone = tmp_path / f"lone{SUFFIX[storage]}"
    lone.write_bytes(b"not a bag at all" * 100)
    with pytest.raises(BagError, match="corrupt"):
        open_bag(lone)


def test_not_a_bag(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        open_bag(tmp_path / "notes.txt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        open_bag(tmp_path / "dir")


@pytest.mark.parametrize("storage", STORAGES)
def test_empty_bag(tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "empty"
    BagRecorder(bag, storage=storage).start().close()
    with pytest.raises(BagError, match="empty"):
        open_bag(bag)
    with open_bag(bag, allow_empty=True) as src:
        assert src.message_count() == 0 and list(src.messages()) == []


@pytest.mark.parametrize("storage", STORAGES)
def test_missing_topic_lists_what_exists(tmp_path: Path, storage: str, rgb: np.ndarray) -> None:
    bag = sample_bag(tmp_path / "in", storage, rgb)
    with open_bag(bag) as src:
        with pytest.raises(BagError) as err:
            list(src.messages(["/camera/image_raw", "/cam"]))
        text = str(err.value)
        assert "'/camera/image_raw'" in text and "/cam (sensor_msgs/msg/Image, 10 msgs)" in text
        assert "/value (std_msgs/msg/Float64, 1 msgs)" in text
        with pytest.raises(BagError, match="/nope"):
            src.message_count(["/nope"])
        with pytest.raises(BagError):
            src.require_topics(["/nope"])
        src.require_topics(["/cam"])
    with pytest.raises(BagError, match="closed"):
        list(src.messages())


# ---------------------------------------------------------------------------------------------------------------------
# What the recorder puts on disk: flushed while recording, CRC-checked (optionally compressed) MCAP chunks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_flushed_while_recording(tmp_path: Path, storage: str) -> None:
    """Messages are durable within flush_every_s, without close(): a killed recorder would keep them."""
    from cosmos3_ros.bags import mcap_scan

    rec = BagRecorder(tmp_path / "bag", storage=storage, flush_every_s=0.1).start()
    for i in range(20):
        rec.write_float("/x", 1 + i * 0.01, float(i))
    deadline = time.monotonic() + 5
    while rec.stats()["flushes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rec.stats()["flushes"] >= 1
    if storage == "mcap":
        scan = mcap_scan.scan(tmp_path / "bag" / "bag.mcap")
        assert scan.message_count == 20 and not scan.has_footer and scan.chunks_without_crc == 0
    else:
        import sqlite3

        conn = sqlite3.connect(f"file:{tmp_path / 'bag' / 'bag.db3'}?mode=ro", uri=True)
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (20,)
        conn.close()
    assert rec.close()
    with open_bag(tmp_path / "bag") as src:
        assert [m.msg.data for m in src.messages()] == [float(i) for i in range(20)]


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_mcap_chunks_carry_crcs_and_compress(tmp_path: Path, compression: str, frame: np.ndarray) -> None:
    from cosmos3_ros.bags import mcap_scan

    with BagRecorder(tmp_path / "bag", compression=compression, chunk_bytes=64 * 1024) as rec:
        for i in range(12):
            rec.write_image("/cam", 1 + i * 0.1, frame)
            rec.write_float("/x", 1 + i * 0.1, float(i))
    scan = mcap_scan.scan(tmp_path / "bag" / "bag.mcap")
    assert scan.chunks >= 12 and scan.chunks_without_crc == 0 and scan.complete and scan.has_footer
    assert scan.message_count == 24
    with open_bag(tmp_path / "bag") as src:  # rosbags reads (and CRC-checks) them too
        assert src.scan is None
        cams = [m.msg.data.tobytes() == frame.tobytes() for m in src.messages(["/cam"])]
    assert cams == [True] * 12
    size = (tmp_path / "bag" / "bag.mcap").stat().st_size
    assert (size < 12 * frame.nbytes) == (compression != "none")
