# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""rosbag2 storage writers that survive a kill, a power cut and a full disk (on top of ``rosbags`` 0.11).

:class:`DurableWriter` is a :class:`rosbags.rosbag2.Writer` whose storages commit data in units that a reader can
always use:

* **MCAP** (:class:`DurableMcapWriter`): messages collect in an in-memory chunk; a chunk is closed when it holds
  ``chunk_bytes`` (at most rosbags' 1 MiB) or when :meth:`DurableWriter.flush` is called, and is then written to the
  file in one go together with its message indexes, with a CRC-32 of its data (``uncompressed_crc``, which rosbags'
  own writer leaves 0) and optionally lz4 or zstd compressed. The file therefore always ends at a record boundary
  after a complete chunk, except when the process dies in the middle of that one write (the tolerant reader,
  :mod:`cosmos3_ros.bags.mcap_scan`, then stops at the cut record). A failed write (ENOSPC, EFBIG, EIO...) truncates
  the file back to its last complete chunk. ``flush(sync=True)`` also fsyncs the file, so a power cut loses at most
  what came after the last flush.
* **sqlite3** (:class:`DurableSqlite3Writer`): rosbags keeps every message in one transaction until ``close``, so a
  killed recording loses *everything* (sqlite rolls the hot journal back). Here each ``flush`` commits.

After a write failure, :meth:`DurableWriter.salvage` drops what was not committed and makes the counters agree with
the file, so that ``close()`` can still try to write the MCAP summary and ``metadata.yaml`` for the committed data
(which fails again when the disk is still full: the file is then a cut MCAP that :func:`cosmos3_ros.bags.reader.
open_bag` reads tolerantly).
"""

from __future__ import annotations

import errno
import os
import tempfile
from binascii import crc32
from collections import defaultdict
from collections.abc import Callable
from contextlib import suppress
from io import BytesIO
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionMode
from rosbags.rosbag2.errors import WriterError
from rosbags.rosbag2.storage_mcap import (
    McapWriter,
    PendingChunk,
    write_record,
    write_string,
    write_uint32,
    write_uint64,
)
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

__all__ = ["COMPRESSIONS", "DurableMcapWriter", "DurableSqlite3Writer", "DurableWriter", "check_output_path"]

MAGIC = b"\x89MCAP0\r\n"
#: Chunk compressions the MCAP writer supports ("" or "none": uncompressed).
COMPRESSIONS = ("none", "lz4", "zstd")
#: rosbags closes a chunk past this size whatever ``chunk_bytes`` says.
MAX_CHUNK_BYTES = 1 << 20
_NO_TIME = 2**63 - 1


def _compressor(name: str) -> Callable[[bytes], bytes]:
    if name == "lz4":
        import lz4.frame

        return lz4.frame.compress
    if name == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return zstd.compress
    return bytes


class AppendFile:
    """A write-behind file for the MCAP writer: ``write``/``tell`` buffer in memory, :meth:`commit` writes the
    buffer with ``pwrite`` (all of it, or the file is truncated back to what it held before and the error raised)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        self.size = 0  # bytes committed to the file
        self.buf = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.buf += data
        return len(data)

    def tell(self) -> int:
        return self.size + len(self.buf)

    def commit(self, sync: bool = False) -> None:
        """Write the buffer to the file (and fsync it with ``sync``)."""
        if self.fd < 0:
            raise OSError(errno.EBADF, "bag file is closed", str(self.path))
        data, self.buf = bytes(self.buf), bytearray()
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                n = os.pwrite(self.fd, view[done:], self.size + done)
                if n <= 0:
                    raise OSError(errno.EIO, "write made no progress", str(self.path))
                done += n
            if sync:
                os.fsync(self.fd)
        except BaseException:
            with suppress(OSError):
                os.ftruncate(self.fd, self.size)  # back to the last record boundary
            raise
        self.size += done

    def discard(self) -> None:
        """Drop what is buffered."""
        self.buf = bytearray()

    def close(self) -> None:
        """Commit (with fsync) and close; the descriptor is closed even when the commit fails."""
        if self.fd < 0:
            return
        try:
            self.commit(sync=True)
        finally:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def abort(self) -> None:
        """Close without writing what is buffered."""
        self.discard()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with suppress(OSError):
                os.close(fd)


class _Committed:
    """Messages the file holds for sure: per channel counts and the time range."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = defaultdict(int)
        self.start = _NO_TIME
        self.end = 0

    def add(self, counts: dict[int, int], start: int, end: int) -> None:
        for cid, n in counts.items():
            self.counts[cid] += n
        if any(counts.values()):
            self.start = min(self.start, start)
            self.end = max(self.end, end)


class DurableMcapWriter(McapWriter):
    """rosbags' MCAP storage with chunk CRCs, chunk compression, small/time-bounded chunks and atomic chunk writes."""

    def __init__(self, path: Path, *, chunk_bytes: int = MAX_CHUNK_BYTES, compression: str = "none") -> None:
        # Not calling McapWriter.__init__: it opens a buffered file; the attributes below are the ones it sets.
        if compression not in COMPRESSIONS:
            raise WriterError(f"MCAP chunk compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.path = path / f"{path.name}.mcap"
        self.bio: AppendFile = AppendFile(self.path)  # type: ignore[assignment]
        self.chunk_bytes = max(1, min(int(chunk_bytes), MAX_CHUNK_BYTES))
        self.compression = "" if compression == "none" else compression
        self.compressor = _compressor(self.compression)
        self.schemas = []
        self.channels = []
        self.chunks = []
        self.chunk = PendingChunk(_NO_TIME, 0, BytesIO(), defaultdict(list))
        self.message_start_time = _NO_TIME
        self.message_end_time = 0
        self.channel_stats = {}
        self.committed = _Committed()
        try:
            from importlib.metadata import version

            library = f"rosbags-{version('rosbags')}; cosmos3_ros"
        except Exception:
            library = "cosmos3_ros"
        self.bio.write(MAGIC)
        rec = BytesIO()
        write_string(rec, "ros2")
        write_string(rec, library)
        write_record(self.bio, 0x01, rec)  # type: ignore[arg-type]
        try:
            self.bio.commit(sync=True)
            _fsync_dir(self.path.parent)
        except BaseException:
            self.bio.abort()
            raise

    def write(self, connection: Connection, timestamp: int, data: bytes | memoryview) -> None:
        super().write(connection, timestamp, data)  # closes the chunk past 1 MiB
        if self.chunk.bio.tell() >= self.chunk_bytes:
            self.close_chunk()

    def close_chunk(self) -> None:
        """Write the pending chunk (with its CRC) and its message indexes to the file in one commit."""
        pending = self.chunk
        raw = pending.bio.getvalue()
        if not raw:
            return
        compressed = self.compressor(raw)
        rec = BytesIO()
        write_uint64(rec, pending.message_start_time)
        write_uint64(rec, pending.message_end_time)
        write_uint64(rec, len(raw))
        write_uint32(rec, crc32(raw))
        write_string(rec, self.compression)
        write_uint64(rec, len(compressed))
        rec.write(compressed)

        bio = self.bio
        chunk_start = bio.tell()
        write_record(bio, 0x06, rec)  # type: ignore[arg-type]
        chunk_end = bio.tell()
        offsets: list[tuple[int, int]] = []
        for cid, msgs in pending.msgs.items():
            offsets.append((cid, bio.tell()))
            rec = BytesIO()
            rec.write(cid.to_bytes(2, "little"))
            write_uint32(rec, len(msgs) * 16)
            for ts, offset in msgs:
                write_uint64(rec, ts)
                write_uint64(rec, offset)
            write_record(bio, 0x07, rec)  # type: ignore[arg-type]
        index = BytesIO()
        write_uint64(index, pending.message_start_time)
        write_uint64(index, pending.message_end_time)
        write_uint64(index, chunk_start)
        write_uint64(index, chunk_end - chunk_start)
        write_uint32(index, len(offsets) * 10)
        for cid, offset in offsets:
            index.write(cid.to_bytes(2, "little"))
            write_uint64(index, offset)
        write_uint64(index, bio.tell() - chunk_end)
        write_string(index, self.compression)
        write_uint64(index, len(compressed))
        write_uint64(index, len(raw))
        try:
            bio.commit()
        except BaseException:
            bio.discard()
            raise
        # committed: only now does the chunk count
        self.chunks.append(index)
        self.committed.add(
            {cid: len(msgs) for cid, msgs in pending.msgs.items()},
            pending.message_start_time,
            pending.message_end_time,
        )
        self.chunk = PendingChunk(_NO_TIME, 0, BytesIO(), defaultdict(list))

    def flush(self, sync: bool = True) -> None:
        """Close the pending chunk (if any) and write it; fsync with ``sync``."""
        self.close_chunk()
        self.bio.commit(sync=sync)

    def salvage(self) -> _Committed:
        """After a failed write: forget what was not committed so the summary describes the file."""
        self.chunk = PendingChunk(_NO_TIME, 0, BytesIO(), defaultdict(list))
        self.bio.discard()
        self.channel_stats = {cid: self.committed.counts.get(cid, 0) for cid in self.channel_stats}
        self.message_start_time = self.committed.start
        self.message_end_time = self.committed.end
        return self.committed

    def close(self, version: int, metadata: str) -> None:
        """Close the last chunk, write the summary and footer, fsync."""
        try:
            super().close(version, metadata)  # writes through self.bio; its close() commits
        except BaseException:
            self.bio.abort()
            raise

    def abort(self) -> None:
        """Close without the summary: the file ends after the last committed chunk."""
        self.bio.abort()


class DurableSqlite3Writer(Sqlite3Writer):
    """rosbags' sqlite3 storage, committing at each :meth:`flush` instead of only at close."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, CompressionMode.NONE)
        self.committed = _Committed()
        self._pending: dict[int, int] = defaultdict(int)
        self._start = _NO_TIME
        self._end = 0

    def write(self, connection: Connection, timestamp: int, data: bytes | memoryview) -> None:
        super().write(connection, timestamp, data)
        self._pending[connection.id] += 1
        self._start = min(self._start, timestamp)
        self._end = max(self._end, timestamp)

    def _committed_now(self) -> None:
        self.committed.add(dict(self._pending), self._start, self._end)
        self._pending.clear()
        self._start, self._end = _NO_TIME, 0

    def flush(self, sync: bool = True) -> None:
        """Commit the open transaction (sqlite syncs on commit)."""
        self.conn.commit()
        self._committed_now()

    def salvage(self) -> _Committed:
        """After a failed write: roll the open transaction back."""
        with suppress(Exception):
            self.conn.rollback()
        self._pending.clear()
        self._start, self._end = _NO_TIME, 0
        return self.committed

    def close(self, version: int, metadata: str) -> None:
        super().close(version, metadata)
        self._committed_now()


class DurableWriter(Writer):
    """:class:`rosbags.rosbag2.Writer` (rosbag2 version 9) over the durable storages above."""

    def __init__(
        self,
        path: Path | str,
        *,
        storage: str = "mcap",
        chunk_bytes: int = MAX_CHUNK_BYTES,
        compression: str = "none",
    ) -> None:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        super().__init__(path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        if storage == "sqlite3" and compression not in ("none", ""):
            raise WriterError("the sqlite3 storage does not compress; use compression='none'")
        if compression not in COMPRESSIONS:
            raise WriterError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.chunk_bytes = chunk_bytes
        self.chunk_compression = compression

    def open(self) -> None:
        """Create the bag directory and the storage file."""
        try:
            self.path.mkdir(mode=0o755, parents=True)
        except FileExistsError:
            raise WriterError(f"{self.path} exists already, not overwriting.") from None
        if self.storage_plugin == StoragePlugin.MCAP:
            self.storage = DurableMcapWriter(  # type: ignore[assignment]
                self.path, chunk_bytes=self.chunk_bytes, compression=self.chunk_compression
            )
        else:
            self.storage = DurableSqlite3Writer(self.path)  # type: ignore[assignment]

    def flush(self, sync: bool = True) -> None:
        """Make everything written so far durable (MCAP: close the chunk, write, fsync; sqlite3: commit)."""
        if self.storage is not None:
            self.storage.flush(sync)  # type: ignore[attr-defined]

    def salvage(self) -> dict[int, int]:
        """After a failed write: drop the uncommitted messages; returns the committed count per connection id."""
        storage: Any = self.storage
        if storage is None:
            return {}
        committed = storage.salvage()
        self.counts = {cid: committed.counts.get(cid, 0) for cid in self.counts}
        self.min_timestamp = committed.start
        self.max_timestamp = committed.end
        tmp = self.metapath.with_suffix(".yaml.tmp")
        with suppress(OSError):
            tmp.unlink()
        return dict(self.counts)

    def close(self) -> None:
        """Finalize; a leftover ``metadata.yaml.tmp`` from a failed metadata write is removed."""
        try:
            super().close()
        except BaseException:
            with suppress(OSError):
                self.metapath.with_suffix(".yaml.tmp").unlink()
            raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_path(path: str | Path, what: str = "output bag", *, must_not_exist: bool = True) -> None:
    """Raise ValueError unless a new bag (or file) can be created at ``path``: the nearest existing directory above it
    must be writable (probed by creating a temporary file there, which also catches a read-only file system and works
    as root). FileExistsError when it exists and ``must_not_exist``."""
    path = Path(path)
    if must_not_exist and path.exists():
        raise FileExistsError(f"{what} {path} exists; pick a new path")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"can not create the {what} {path}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        from cosmos3_ros.bags.writer_thread import describe_error

        raise ValueError(f"can not create the {what} {path}: {parent} is not writable ({describe_error(exc)})") from exc
