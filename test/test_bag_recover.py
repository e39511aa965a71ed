# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Damaged bags: cut MCAP files (SIGKILL, power loss) read tolerantly, CRC-checked chunks, sqlite3 bags killed
mid-transaction, ``bag recover``; a full disk while recording (real write failures in a subprocess); and the loss
of a real SIGKILLed recording, measured (slow)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from cosmos3_ros.bags import mcap_scan
from cosmos3_ros.bags.reader import BagError, open_bag
from cosmos3_ros.bags.recorder import BagRecorder
from cosmos3_ros.commands.bag import recover_bag

REPO = Path(__file__).resolve().parents[1]
STORAGES = ["mcap", "sqlite3"]
N = 60  # ticks; each writes an image (/cam) and a float (/seq)


def record(path: Path, storage: str = "mcap", compression: str = "none", n: int = N) -> Path:
    """A bag of small chunks (about 3 ticks each) written by our recorder."""
    img = np.zeros((24, 32, 3), np.uint8)
    with BagRecorder(path, storage=storage, compression=compression, chunk_bytes=6000) as rec:
        for i in range(n):
            img[:] = i
            rec.write_image("/cam", 100 + i * 0.1, img, "cam")
            rec.write_float("/seq", 100 + i * 0.1 + 0.01, float(i))
    return path


def mcap_of(bag: Path) -> Path:
    return next(bag.glob("*.mcap"))


def cut_copy(src: Path, dst: Path, size: int, keep_metadata: bool = False) -> Path:
    """``src`` bag with its storage file cut to ``size`` bytes and (by default) no metadata.yaml, as a kill leaves
    it."""
    shutil.copytree(src, dst)
    f = mcap_of(dst)
    f.write_bytes(f.read_bytes()[:size])
    if not keep_metadata:
        (dst / "metadata.yaml").unlink()
    return dst


def seqs(src) -> list[int]:
    return [int(m.msg.data) for m in src.messages(["/seq"])]


def kept(full: mcap_scan.McapScan, blocks: list[mcap_scan.Block]) -> dict[str, int]:
    """Messages per topic in ``blocks``."""
    out = {c.topic: 0 for c in full.channels.values()}
    for b in blocks:
        for cid, n in b.counts.items():
            out[full.channels[cid].topic] += n
    return out


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_every_cut_keeps_every_complete_chunk(tmp_path: Path, compression: str) -> None:
    bag = record(tmp_path / "bag", compression=compression)
    data = mcap_of(bag).read_bytes()
    full = mcap_scan.scan(mcap_of(bag))
    assert full.complete and full.has_footer and full.message_count == 2 * N and len(full.blocks) > 10
    cut_file = tmp_path / "cut.mcap"
    previous = 0
    for size in range(8, len(data) + 1, 211):
        cut_file.write_bytes(data[:size])
        scan = mcap_scan.scan(cut_file)  # never raises for a cut
        whole = [b for b in full.blocks if b.offset + b.length <= size]
        assert scan.message_count == sum(sum(b.counts.values()) for b in whole), size
        assert scan.message_count >= previous
        previous = scan.message_count
        assert scan.data_end + scan.cut_bytes == size or scan.complete
        with cut_file.open("rb") as f:
            got = [(cid, t) for cid, t, _ in mcap_scan.iter_messages(f, scan.blocks)]
        assert got == sorted(got, key=lambda m: m[1]) and len(got) == scan.message_count


def test_open_bag_reads_a_cut_recording_and_warns(tmp_path: Path, caplog) -> None:
    bag = record(tmp_path / "bag")
    full = mcap_scan.scan(mcap_of(bag))
    block = full.blocks[len(full.blocks) // 2]
    size = block.offset + block.length // 2  # in the middle of a chunk
    cut = cut_copy(bag, tmp_path / "cut", size)
    per_topic = kept(full, [b for b in full.blocks if b.offset + b.length <= size])
    keep = sum(per_topic.values())
    with caplog.at_level(logging.WARNING, logger="cosmos3_ros.bags.reader"):
        with open_bag(cut) as src:
            assert src.message_count() == keep and src.scan is not None
            assert seqs(src) == list(range(per_topic["/seq"]))
            assert src.start_time == pytest.approx(100) and src.topics()["/cam"].count == per_topic["/cam"]
            assert "no metadata.yaml" in src.note and "no MCAP summary/footer" in src.note
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"the last {size - block.offset} bytes (a cut record) are lost" in warning
    assert f"{keep} messages in" in warning
    # the lone file, and a directory whose metadata.yaml survived, read the same
    with open_bag(mcap_of(cut)) as src:
        assert src.message_count() == keep
    cut2 = cut_copy(bag, tmp_path / "cut2", size, keep_metadata=True)
    with open_bag(cut2) as src:
        assert src.message_count() == keep


def test_zero_filled_tail_is_a_cut_not_corruption(tmp_path: Path) -> None:
    """After a power cut a file can end in blocks that were allocated but never written (zeros)."""
    bag = record(tmp_path / "bag")
    full = mcap_scan.scan(mcap_of(bag))
    end = full.blocks[-3].offset + full.blocks[-3].length
    cut = cut_copy(bag, tmp_path / "cut", end)
    with mcap_of(cut).open("ab") as f:
        f.write(bytes(5000))
    with open_bag(cut) as src:
        assert src.scan.cut_bytes == 5000 and "zero-filled" in src.scan.cut_reason
        assert src.message_count() == full.message_count - sum(sum(b.counts.values()) for b in full.blocks[-2:])


def test_a_cut_with_nothing_complete_is_a_clear_error(tmp_path: Path) -> None:
    bag = record(tmp_path / "bag")
    first = mcap_scan.scan(mcap_of(bag)).blocks[0]
    cut = cut_copy(bag, tmp_path / "cut", first.offset + first.length - 10)
    with pytest.raises(BagError, match=r"corrupt or truncated: no complete message .*at least \d+ messages"):
        open_bag(cut)
    with open_bag(cut, allow_empty=True) as src:  # bag info still works
        assert src.message_count() == 0 and "cut record" in src.note


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_bit_flip_fails_naming_the_chunk(tmp_path: Path) -> None:
    bag = record(tmp_path / "bag")
    full = mcap_scan.scan(mcap_of(bag))
    bad = full.blocks[len(full.blocks) // 2]
    n_bad = sum(bad.counts.values())

    flipped = tmp_path / "flipped"
    shutil.copytree(bag, flipped)
    flip(mcap_of(flipped), bad.offset + bad.length // 2)  # inside the chunk's message data
    with open_bag(flipped) as src:  # complete file: rosbags reads it and checks the CRC chunk by chunk
        with pytest.raises(BagError) as err:
            list(src.messages())
    text = str(err.value)
    assert f"chunk {bad.number} at byte {bad.offset} is corrupt: CRC mismatch" in text, text

    cut = cut_copy(flipped, tmp_path / "cut", full.blocks[-1].offset)  # a cut file is scanned, at open
    with pytest.raises(BagError, match=f"chunk {bad.number} at byte {bad.offset} is corrupt: CRC mismatch"):
        open_bag(cut)

    with open_bag(flipped, recover=True) as src:  # recover: skip the damaged chunk, say so
        assert src.message_count() == full.message_count - n_bad
        assert f"skipped (first: chunk {bad.number} at byte {bad.offset}" in src.note
        assert len(list(src.messages())) == full.message_count - n_bad


def test_damaged_record_framing_resyncs_from_the_index(tmp_path: Path) -> None:
    """A flipped bit in a chunk's length field: recover goes on at the next chunk the file's summary lists."""
    bag = record(tmp_path / "bag")
    full = mcap_scan.scan(mcap_of(bag))
    bad = full.blocks[3]
    flip(mcap_of(bag), bad.offset + 8)  # the top byte of the record length
    with pytest.raises(mcap_scan.McapCorruptError, match=f"at byte {bad.offset}"):
        mcap_scan.scan(mcap_of(bag))
    scan = mcap_scan.scan(mcap_of(bag), skip_corrupt=True)
    assert scan.message_count == full.message_count - sum(bad.counts.values()) and len(scan.corrupt) == 1


def test_rosbags_bag_without_crcs_cut(tmp_path: Path) -> None:
    """A bag from another writer (rosbags: one 1 MiB chunk, no CRC): a cut there loses the chunk, and says how many
    messages it held up to the cut."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from cosmos3_ros.bags.recorder import get_ros2_typestore

    ts = get_ros2_typestore()
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/seq", "std_msgs/msg/Float64", typestore=ts)
        for i in range(100):
            writer.write(conn, 10**9 + i, ts.serialize_cdr(ts.types["std_msgs/msg/Float64"](data=i), conn.msgtype))
    size = mcap_scan.scan(mcap_of(bag)).blocks[0]
    cut = cut_copy(bag, tmp_path / "cut", size.offset + size.length - 100)
    scan = mcap_scan.scan(mcap_of(cut))
    assert scan.message_count == 0 and 90 <= scan.cut_messages < 100
    assert mcap_scan.scan(mcap_of(bag)).chunks_without_crc == 1


def test_sqlite3_killed_mid_transaction(tmp_path: Path) -> None:
    """A .db3 with a hot rollback journal: read the committed messages from a rolled-back copy, input untouched."""
    bag = record(tmp_path / "bag", storage="sqlite3", n=10)
    (bag / "metadata.yaml").unlink()
    db3 = bag / "bag.db3"
    killer = textwrap.dedent(
        f"""
        import os, sqlite3
        conn = sqlite3.connect({str(db3)!r})
        conn.execute("PRAGMA cache_size=1")  # spill changed pages into the database file before the commit
        for i in range(2000):
            conn.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES (1, ?, ?)", (i, os.urandom(2000)))
        conn.execute("DELETE FROM messages WHERE id < 5")
        os._exit(0)  # killed: no commit, no rollback
        """
    )
    subprocess.run([sys.executable, "-c", killer], check=True, timeout=60)
    journal = bag / "bag.db3-journal"
    assert journal.stat().st_size > 0
    before = (db3.read_bytes(), journal.read_bytes())
    with open_bag(bag) as src:
        assert seqs(src) == list(range(10)) and src.message_count() == 20
        assert "unfinished transaction" in src.note
    assert (db3.read_bytes(), journal.read_bytes()) == before


def test_recover_writes_a_complete_bag(tmp_path: Path) -> None:
    bag = record(tmp_path / "bag")
    full = mcap_scan.scan(mcap_of(bag))
    block = full.blocks[-4]
    cut = cut_copy(bag, tmp_path / "cut", block.offset + 40)
    per_topic = kept(full, full.blocks[:-4])
    keep = sum(per_topic.values())
    result = recover_bag(cut, tmp_path / "out")
    assert result["messages"] == keep and result["recovered"] == per_topic
    assert any("the last 40 bytes" in item for item in result["lost"])
    with Reader(tmp_path / "out") as reader:  # complete: metadata.yaml + indexed MCAP
        assert reader.message_count == keep
        assert {c.topic: c.msgtype for c in reader.connections} == {
            "/cam": "sensor_msgs/msg/Image",
            "/seq": "std_msgs/msg/Float64",
        }
    with open_bag(tmp_path / "out") as src:
        assert src.note is None and seqs(src) == list(range(per_topic["/seq"]))

    # a bit flip in a complete bag: the damaged chunk is skipped, and counted against the index
    flipped = tmp_path / "flipped"
    shutil.copytree(bag, flipped)
    bad = full.blocks[2]
    flip(mcap_of(flipped), bad.offset + bad.length - 20)
    result = recover_bag(flipped, tmp_path / "out2")
    assert result["messages"] == full.message_count - sum(bad.counts.values())
    assert result["expected"] == {"/cam": N, "/seq": N}
    assert any(f"byte {bad.offset}" in item for item in result["lost"])
    assert any("of 60 indexed messages missing" in item for item in result["lost"])

    # sqlite3 in, sqlite3 out
    sq = record(tmp_path / "sq", storage="sqlite3", n=5)
    result = recover_bag(sq, tmp_path / "out3", storage="sqlite3")
    assert result["messages"] == 10 and result["lost"] == [] and result["complete_input"]
    with pytest.raises(FileExistsError):
        recover_bag(sq, tmp_path / "out3")


# ---------------------------------------------------------------------------------------------------------------------
# A full disk while recording (real write failures in a subprocess): reported once, the bag stays readable
# ---------------------------------------------------------------------------------------------------------------------

FULL_CHILD = textwrap.dedent(
    """
    import json, logging, resource, signal, sys, threading, time
    import numpy as np
    from cosmos3_ros.bags.recorder import BagRecorder

    path, storage, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    calls = []
    rec = BagRecorder(
        path, storage=storage, chunk_bytes=32 * 1024, flush_every_s=0.1,
        on_error=lambda exc: calls.append((repr(exc), getattr(exc, "errno", None), threading.current_thread().name)),
    ).start()
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    img = np.zeros((48, 64, 3), np.uint8)
    ok = raised = 0
    for i in range(600):
        img[:] = i % 256
        try:
            ok += rec.write_image("/cam", 1000 + i * 0.01, img, "cam")
            ok += rec.write_float("/seq", 1000 + i * 0.01, float(i))
        except Exception:
            raised += 1
        time.sleep(0.001)
    closed = rec.close(timeout=30)
    st = rec.stats()
    print("RESULT " + json.dumps({"calls": calls, "ok": ok, "raised": raised, "closed": closed, "stats": st,
                                  "error": repr(rec.error)}), flush=True)
    """
)


def run_full_child(tmp_path: Path, storage: str, limit: int, wrap: list[str] | None = None) -> tuple[dict, str, Path]:
    script = tmp_path / "full_child.py"
    script.write_text(FULL_CHILD)
    bag = tmp_path / "bag"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [*(wrap or []), sys.executable, str(script), str(bag), storage, str(limit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(lines[-1][7:]), r.stderr, bag


def check_kept_prefix(bag: Path, written: int) -> None:
    """The bag opens with open_bag and holds exactly the first ``written`` messages, in order, without a gap."""
    from cosmos3_ros.bags.reader import open_bag

    with open_bag(bag) as src:
        msgs = list(src.messages())
    assert len(msgs) == written > 0
    seq = [int(m.msg.data) for m in msgs if m.topic == "/seq"]
    cams = [int(m.msg.data[0]) for m in msgs if m.topic == "/cam"]
    assert seq == list(range(len(seq))) and cams == [i % 256 for i in range(len(cams))]
    assert len(cams) - len(seq) in (0, 1)
    if (bag / "metadata.yaml").exists():  # finalized after the failure: the index agrees with the data
        with Reader(bag) as reader:
            assert reader.message_count == written


@pytest.mark.parametrize("storage", STORAGES)
def test_disk_full_is_reported_once_and_the_bag_stays_readable(tmp_path: Path, storage: str) -> None:
    """A real write failure (RLIMIT_FSIZE: EFBIG "File too large", as a full disk fails the same write calls)."""
    result, stderr, bag = run_full_child(tmp_path, storage, 600_000 if storage == "mcap" else 2_000_000)
    st = result["stats"]
    # on_error: exactly once, from the writer thread, with the write's error
    assert len(result["calls"]) == 1, result
    text, err_no, thread = result["calls"][0]
    assert thread.startswith("bag-recorder:")
    if storage == "mcap":
        assert err_no == 27 and "File too large" in text  # EFBIG
    assert result["error"] == text and st["error"] == text
    # producers never saw an exception; everything after the failure was rejected and counted
    assert result["raised"] == 0 and result["closed"] and st["closed"]
    assert st["rejected"] > 0 and result["ok"] == st["accepted"] == st["written"] + st["lost"]
    # the ERROR log line names the bag and the cause, once
    errors = [ln for ln in stderr.splitlines() if ln.startswith("ERROR cosmos3_ros.bags.recorder")]
    assert len(errors) == 1, stderr
    assert str(bag) in errors[0] and "failed while" in errors[0]
    assert ("File too large (EFBIG)" if storage == "mcap" else "SQLITE_") in errors[0]
    assert "Traceback" not in stderr
    check_kept_prefix(bag, st["written"])
    assert sum(st["written_by_topic"].values()) == st["written"]


def test_disk_full_on_a_real_full_file_system(tmp_path: Path) -> None:
    """ENOSPC "No space left on device" on a 512 KiB tmpfs, in a private mount namespace (needs unshare + root)."""
    unshare = shutil.which("unshare")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if unshare is None or subprocess.run([unshare, "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare -m (root / CAP_SYS_ADMIN)")
    script = tmp_path / "full_child.py"
    script.write_text(FULL_CHILD)
    keep = tmp_path / "kept"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    shell = (
        f"mount -t tmpfs -o size=512k tmpfs {mnt} && "
        f"{sys.executable} {script} {mnt / 'bag'} mcap 0; rc=$?; cp -r {mnt / 'bag'} {keep}; exit $rc"
    )
    r = subprocess.run([unshare, "-m", "sh", "-c", shell], capture_output=True, text=True, env=env, timeout=120)
    if "mount" in r.stderr and r.returncode != 0 and not keep.exists():
        pytest.skip(f"can not mount a tmpfs: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    result = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert len(result["calls"]) == 1 and result["calls"][0][1] == 28  # ENOSPC
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR cosmos3_ros.bags.recorder")]
    assert len(errors) == 1 and "No space left on device (ENOSPC)" in errors[0]
    check_kept_prefix(keep, result["stats"]["written"])


# ---------------------------------------------------------------------------------------------------------------------
# SIGKILL: how much a killed recording loses (real process, real kill)
# ---------------------------------------------------------------------------------------------------------------------

KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from cosmos3_ros.bags.recorder import BagRecorder

    path, storage, rate, images = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
    rec = BagRecorder(path, storage=storage).start()  # default durability: flush every 1 s, 256 KiB chunks
    img = np.zeros((48, 64, 3), np.uint8)
    t0 = time.monotonic()
    i = 0
    while True:
        if images:
            img[:] = i % 256
            rec.write_image("/cam", 1000 + i / rate, img, "cam")
        rec.write_float("/seq", 1000 + i / rate, float(i))
        print(i, flush=True)
        i += 1
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    """
)


def kill_recording(tmp_path: Path, storage: str, rate: float, images: bool, seconds: float) -> dict[str, float]:
    """Record in a subprocess at ``rate`` ticks/s, SIGKILL it after ``seconds``; messages written vs recovered."""
    script = tmp_path / "kill_child.py"
    script.write_text(KILL_CHILD)
    bag = tmp_path / f"killed_{storage}_{int(images)}"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(bag), storage, str(rate), "1" if images else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.strip() == "0", first + proc.stderr.read()
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    ticks = int([first, *out.split()][-1]) + 1  # ticks whose write_* calls all returned
    with open_bag(bag) as src:
        got = seqs(src)
        n_read = src.message_count()
    assert got == list(range(len(got)))  # a gap-free prefix
    result = recover_bag(bag, tmp_path / f"recovered_{storage}_{int(images)}")
    assert result["recovered"]["/seq"] == len(got) and result["messages"] == n_read
    per_tick = 2 if images else 1
    numbers = {
        "ticks_written": ticks,
        "messages_written": ticks * per_tick,
        "messages_recovered": n_read,
        "lost_s": (ticks - len(got)) / rate,
    }
    print(f"SIGKILL {storage} images={images} rate={rate}/s: {numbers}")
    return numbers


@pytest.mark.slow
@pytest.mark.parametrize(("storage", "images"), [("mcap", True), ("mcap", False), ("sqlite3", True)])
def test_sigkill_loses_at_most_the_last_chunk(tmp_path: Path, storage: str, images: bool) -> None:
    rate = 100.0
    numbers = kill_recording(tmp_path, storage, rate, images, seconds=3.0)
    assert numbers["ticks_written"] >= 200
    # the bound of the recorder's docstring: the last flush interval (1 s) or the last chunk (256 KiB, about 27 of
    # these image ticks), plus the writer's idle poll (50 ms) and a little scheduling slack
    assert 0 <= numbers["lost_s"] <= 1.25, numbers
    if images and storage == "mcap":
        assert numbers["lost_s"] <= 0.3 + 5 / rate, numbers  # 256 KiB chunks fill in about 0.27 s here
