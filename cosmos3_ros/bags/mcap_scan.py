# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A tolerant, sequential MCAP scanner: read what a cut or damaged ``.mcap`` file still holds.

An MCAP file is a magic, then a stream of records (``opcode u8, length u64, body``), then a summary and a footer. A
recording that was killed (SIGKILL, power cut, full disk) has no summary and no footer, and may end in the middle of a
record; rosbags' reader then refuses the file ("File end magic is invalid"). :func:`scan` walks the records from the
start instead and collects schemas, channels and, per chunk, the message counts and time range, until:

* the end of the data section (a complete file), or
* a record that runs past the end of the file (a cut file: the scan stops there; ``cut_bytes`` says how much of the
  file was lost, and ``cut_messages`` how many complete messages a cut *uncompressed* chunk held, a lower bound of
  the messages lost), or
* a damaged record: a chunk whose data does not match its CRC (``uncompressed_crc``, checked whenever it is not 0), does
  not decompress, or whose records do not parse; or an unknown opcode. With ``skip_corrupt=False`` (the default,
  what replay uses) :class:`McapCorruptError` is raised naming the chunk and its byte offset; with ``skip_corrupt=True``
  (``cosmos3-ros bag recover``) the chunk is skipped and recorded in ``corrupt``, and the scan goes on with the next
  record (or, when the record framing itself is broken, with the next chunk the file's summary lists, if it has one).

Chunks may be uncompressed, lz4 or zstd compressed. :func:`iter_messages` then yields the messages of the good chunks
in log-time order (chunks are read one at a time, merged lazily), checking each chunk's CRC again.
"""

from __future__ import annotations

import heapq
import struct
from binascii import crc32
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = ["Block", "Channel", "McapCorruptError", "McapScan", "Schema", "iter_messages", "read_block", "scan"]

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_CHUNK_INDEX, OP_STATISTICS, OP_DATA_END = 0x08, 0x0B, 0x0F
_KNOWN_OPS = frozenset(range(0x01, 0x10))
#: Loose (unchunked) message records are read in blocks of about this many bytes.
LOOSE_BLOCK_BYTES = 4 << 20
_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_MSG_HEAD = struct.Struct("<HIQQ")
_CHUNK_HEAD = struct.Struct("<QQQI")


class McapCorruptError(ValueError):
    """A damaged record: ``offset`` is its byte offset in the file."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class _MalformedError(Exception):
    """A record body that does not parse (internal)."""


@dataclass(frozen=True)
class Schema:
    id: int
    name: str
    encoding: str
    data: str


@dataclass(frozen=True)
class Channel:
    id: int
    schema_id: int
    topic: str
    message_encoding: str
    metadata: dict[str, str]


@dataclass
class Block:
    """A chunk (``kind="chunk"``) or a run of loose records (``kind="records"``) with at least one message."""

    kind: str
    number: int  # chunk number in the file (0-based), or -1 for loose records
    offset: int  # file offset of the chunk record / of the first loose record
    length: int  # bytes from offset
    start_time: int
    end_time: int
    counts: dict[int, int]


@dataclass
class McapScan:
    """What :func:`scan` found. Times are nanoseconds."""

    path: Path
    file_size: int
    library: str = ""
    schemas: dict[int, Schema] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)  # messages per channel id in the good blocks
    start_time: int = 0
    end_time: int = 0
    data_end: int = 0  # offset just after the last record read
    complete: bool = False  # the data section ended normally (DataEnd or footer reached)
    has_footer: bool = False  # a valid footer and end magic are at the end of the file
    cut_bytes: int = 0  # bytes of the cut record at the end (0 when the file ends on a record boundary)
    cut_messages: int = 0  # complete messages seen in a cut uncompressed chunk (lost: no CRC to check them)
    cut_reason: str = ""
    corrupt: list[tuple[int, str]] = field(default_factory=list)  # (offset, why) of skipped damaged records
    expected_counts: dict[int, int] | None = None  # per channel, from the file's Statistics record
    chunks: int = 0  # good chunks
    chunks_without_crc: int = 0

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    @property
    def truncated(self) -> bool:
        """The file was cut: no summary/footer (or the scan stopped at a record past the end of the file)."""
        return not self.complete


def _string(buf: bytes | memoryview, pos: int) -> tuple[str, int]:
    (n,) = _U32.unpack_from(buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise _MalformedError("string runs past its record")
    return bytes(buf[pos + 4 : end]).decode("utf-8", "replace"), end


def _string_map(buf: bytes | memoryview, pos: int) -> tuple[dict[str, str], int]:
    (n,) = _U32.unpack_from(buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise _MalformedError("map runs past its record")
    out: dict[str, str] = {}
    p = pos + 4
    while p < end:
        key, p = _string(buf, p)
        value, p = _string(buf, p)
        out[key] = value
    return out, end


def _parse_schema(body: bytes | memoryview) -> Schema:
    (sid,) = _U16.unpack_from(body, 0)
    name, p = _string(body, 2)
    encoding, p = _string(body, p)
    data, _ = _string(body, p)
    return Schema(sid, name, encoding, data)


def _parse_channel(body: bytes | memoryview) -> Channel:
    cid, sid = struct.unpack_from("<HH", body, 0)
    topic, p = _string(body, 4)
    encoding, p = _string(body, p)
    metadata, _ = _string_map(body, p)
    return Channel(cid, sid, topic, encoding, metadata)


def _records(buf: bytes | memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """(opcode, offset, body) of the records in ``buf``, which must hold whole records."""
    view = memoryview(buf)
    pos, size = 0, len(view)
    while pos < size:
        if pos + 9 > size:
            raise _MalformedError(f"record header cut at byte {pos} of {size}")
        op = view[pos]
        (length,) = _U64.unpack_from(view, pos + 1)
        if pos + 9 + length > size:
            raise _MalformedError(f"record at byte {pos} runs past the end ({length} bytes)")
        yield op, pos, view[pos + 9 : pos + 9 + length]
        pos += 9 + length


def _decompress(data: bytes | memoryview, compression: str, size: int) -> bytes:
    if compression == "":
        return bytes(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(bytes(data))
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return zstd.decompress(bytes(data))
    raise _MalformedError(f"unsupported chunk compression {compression!r}")


def _chunk_records(body: bytes | memoryview) -> tuple[bytes, int, int, str]:
    """Decompressed, CRC-checked records of a chunk body; also (crc, start time, compression)."""
    start, _end, usize, crc = _CHUNK_HEAD.unpack_from(body, 0)
    compression, p = _string(body, 28)
    (csize,) = _U64.unpack_from(body, p)
    p += 8
    if p + csize > len(body):
        raise _MalformedError(f"compressed data ({csize} bytes) runs past the chunk record")
    try:
        raw = _decompress(body[p : p + csize], compression, usize)
    except _MalformedError:
        raise
    except Exception as exc:
        raise _MalformedError(f"{compression} data does not decompress ({exc})") from None
    if len(raw) != usize:
        raise _MalformedError(f"uncompressed size {len(raw)} != {usize} in the chunk header")
    if crc and crc32(raw) != crc:
        raise _MalformedError(f"CRC mismatch (stored {crc:#010x}, data has {crc32(raw):#010x})")
    return raw, crc, start, compression


def _messages_in(records: bytes | memoryview, scan: McapScan | None) -> list[tuple[int, int, int, bytes]]:
    """(log_time, channel id, position, data) of the messages in ``records``; schemas/channels go to ``scan``."""
    out = []
    for op, pos, body in _records(records):
        try:
            if op == OP_MESSAGE:
                cid, _seq, log_time, _pub = _MSG_HEAD.unpack_from(body, 0)
                out.append((log_time, cid, pos, bytes(body[_MSG_HEAD.size :])))
            elif op == OP_SCHEMA and scan is not None:
                schema = _parse_schema(body)
                scan.schemas.setdefault(schema.id, schema)
            elif op == OP_CHANNEL and scan is not None:
                channel = _parse_channel(body)
                scan.channels.setdefault(channel.id, channel)
        except struct.error:
            raise _MalformedError(f"record (opcode {op:#04x}) at byte {pos} is too short") from None
    return out


def _count_cut_messages(body: bytes) -> int:
    """Complete message records at the start of a cut, uncompressed chunk body."""
    try:
        _CHUNK_HEAD.unpack_from(body, 0)
        compression, p = _string(body, 28)
    except (struct.error, _MalformedError):
        return 0
    if compression:
        return 0
    p += 8
    n = 0
    while p + 9 <= len(body):
        op = body[p]
        (length,) = _U64.unpack_from(body, p + 1)
        if p + 9 + length > len(body):
            break
        n += op == OP_MESSAGE
        p += 9 + length
    return n


def _read_footer(f: BinaryIO, size: int) -> int | None:
    """The summary start offset from a valid footer (0: no summary), or None without a valid footer."""
    if size < 8 + 9 + 37:
        return None
    f.seek(size - 37)
    tail = f.read(37)
    if tail[-8:] != MAGIC or tail[0] != OP_FOOTER or _U64.unpack_from(tail, 1)[0] != 20:
        return None
    (summary_start,) = _U64.unpack_from(tail, 9)
    return summary_start if summary_start < size - 37 else None


def _read_summary(f: BinaryIO, size: int, summary_start: int, scan: McapScan) -> list[int]:
    """Schemas, channels, statistics and chunk offsets from the summary section (best effort)."""
    chunk_offsets: list[int] = []
    f.seek(summary_start)
    try:
        data = f.read(size - 37 - summary_start)
        for op, _pos, body in _records(data):
            if op == OP_SCHEMA:
                schema = _parse_schema(body)
                scan.schemas.setdefault(schema.id, schema)
            elif op == OP_CHANNEL:
                channel = _parse_channel(body)
                scan.channels.setdefault(channel.id, channel)
            elif op == OP_CHUNK_INDEX:
                chunk_offsets.append(_U64.unpack_from(body, 16)[0])
            elif op == OP_STATISTICS:
                (nbytes,) = _U32.unpack_from(body, 42)
                scan.expected_counts = {cid: n for cid, n in struct.iter_unpack("<HQ", bytes(body[46 : 46 + nbytes]))}
    except (_MalformedError, struct.error, ValueError):
        pass
    return sorted(chunk_offsets)


def scan(path: str | Path, *, skip_corrupt: bool = False) -> McapScan:
    """Scan ``path`` (see the module docstring). Raises :class:`McapCorruptError` for a file that is not MCAP, or for a
    damaged record unless ``skip_corrupt``; never for a cut file."""
    path = Path(path)
    size = path.stat().st_size
    result = McapScan(path, size)
    with path.open("rb") as f:
        if f.read(8) != MAGIC:
            raise McapCorruptError(f"{path.name} is not an MCAP file (bad magic)", 0)
        summary_start = _read_footer(f, size)
        result.has_footer = summary_start is not None
        resync: list[int] = []
        if summary_start:
            resync = _read_summary(f, size, summary_start, result)
        end = summary_start if summary_start else size
        f.seek(8)
        _scan_records(f, result, end, resync, skip_corrupt)
    if result.blocks:
        result.start_time = min(b.start_time for b in result.blocks)
        result.end_time = max(b.end_time for b in result.blocks)
    return result


def _scan_records(f: BinaryIO, result: McapScan, end: int, resync: list[int], skip_corrupt: bool) -> None:
    pos = result.data_end = 8
    chunk_number = 0
    loose: Block | None = None
    first = True

    def damaged(offset: int, why: str, next_pos: int | None) -> int | None:
        """Raise, or record and return where to go on (None: stop)."""
        if not skip_corrupt:
            raise McapCorruptError(f"{result.path.name}: {why}", offset)
        result.corrupt.append((offset, why))
        if next_pos is None:
            later = [o for o in resync if o > offset]
            return later[0] if later else None
        return next_pos

    while pos < end:
        f.seek(pos)
        head = f.read(9)
        if len(head) < 9:
            result.cut_bytes, result.cut_reason = len(head), f"record header cut at byte {pos}"
            break
        op = head[0]
        (length,) = _U64.unpack_from(head, 1)
        if first and op != OP_HEADER:
            raise McapCorruptError(f"{result.path.name} is not an MCAP file (no header record)", pos)
        first = False
        if op not in _KNOWN_OPS:
            if not result.has_footer and _zeros_from(f, pos, end):
                result.cut_bytes, result.cut_reason = end - pos, f"zero-filled tail from byte {pos} (power loss?)"
                break
            nxt = damaged(pos, f"unknown record opcode {op:#04x} at byte {pos} (damaged record framing)", None)
            if nxt is None:
                break
            pos = nxt
            continue
        if pos + 9 + length > end:
            if result.has_footer:  # the file is whole: this length field is damaged
                nxt = damaged(pos, f"record at byte {pos} has a length ({length}) past the data section", None)
                if nxt is None:
                    break
                pos = nxt
                continue
            result.cut_bytes = end - pos
            result.cut_reason = f"record (opcode {op:#04x}) at byte {pos} cut: {length} bytes announced"
            if op == OP_CHUNK:
                result.cut_messages = _count_cut_messages(f.read(min(length, end - pos - 9)))
            elif op == OP_MESSAGE:
                result.cut_messages = 1
            break
        nxt_pos = pos + 9 + length
        if op in (OP_FOOTER, OP_DATA_END):
            result.complete = True
            result.data_end = nxt_pos
            break
        if op in (OP_CHUNK, OP_MESSAGE, OP_SCHEMA, OP_CHANNEL):
            body = f.read(length)
            if len(body) < length:  # the file shrank under us
                result.cut_bytes, result.cut_reason = end - pos, f"record at byte {pos} cut"
                break
        if op == OP_CHUNK:
            loose = None
            try:
                raw, crc, _start, _comp = _chunk_records(body)
                msgs = _messages_in(raw, result)
            except (_MalformedError, struct.error) as exc:
                why = exc if isinstance(exc, _MalformedError) else "header too short"
                damaged(pos, f"chunk {chunk_number} at byte {pos} is corrupt: {why}", nxt_pos)
            else:
                result.chunks += 1
                result.chunks_without_crc += not crc
                if msgs:
                    result.blocks.append(_block("chunk", chunk_number, pos, length + 9, msgs))
            chunk_number += 1
        elif op in (OP_MESSAGE, OP_SCHEMA, OP_CHANNEL):
            try:
                msgs = _messages_in(head + body, result)
            except (_MalformedError, struct.error) as exc:
                damaged(pos, f"record (opcode {op:#04x}) at byte {pos} is corrupt: {exc}", nxt_pos)
                msgs = []
            if msgs:
                if loose is None or loose.length > LOOSE_BLOCK_BYTES:
                    loose = _block("records", -1, pos, 0, [])
                    result.blocks.append(loose)
                loose.length = nxt_pos - loose.offset
                for log_time, cid, _p, _d in msgs:
                    loose.counts[cid] = loose.counts.get(cid, 0) + 1
                    loose.start_time = min(loose.start_time, log_time)
                    loose.end_time = max(loose.end_time, log_time)
        pos = nxt_pos
        result.data_end = pos
    for block in result.blocks:
        for cid, n in block.counts.items():
            result.counts[cid] = result.counts.get(cid, 0) + n


def _zeros_from(f: BinaryIO, pos: int, end: int) -> bool:
    """True when the file holds only zero bytes from ``pos`` to ``end`` (a tail allocated but never written)."""
    f.seek(pos)
    while pos < end:
        data = f.read(min(1 << 20, end - pos))
        if not data or data.count(0) != len(data):
            return False
        pos += len(data)
    return True


def _block(kind: str, number: int, offset: int, length: int, msgs: list[tuple[int, int, int, bytes]]) -> Block:
    counts: dict[int, int] = {}
    for _t, cid, _p, _d in msgs:
        counts[cid] = counts.get(cid, 0) + 1
    times = [m[0] for m in msgs]
    return Block(kind, number, offset, length, min(times, default=2**63 - 1), max(times, default=0), counts)


def read_block(f: BinaryIO, block: Block) -> list[tuple[int, int, int, bytes]]:
    """(log_time, channel id, position, data) of the messages of ``block``, in log-time order (CRC checked)."""
    f.seek(block.offset)
    data = f.read(block.length)
    try:
        if len(data) < block.length:
            raise _MalformedError("the file is shorter than when it was scanned")
        if block.kind == "chunk":
            raw, _crc, _start, _comp = _chunk_records(memoryview(data)[9:])
            msgs = _messages_in(raw, None)
        else:
            msgs = _messages_in(data, None)
    except (_MalformedError, struct.error) as exc:
        what = f"chunk {block.number}" if block.kind == "chunk" else "message record"
        raise McapCorruptError(f"{what} at byte {block.offset} is corrupt: {exc}", block.offset) from None
    msgs.sort(key=lambda m: (m[0], m[2]))
    return msgs


def iter_messages(
    f: BinaryIO, blocks: list[Block], channel_ids: set[int] | None = None
) -> Iterator[tuple[int, int, bytes]]:
    """(channel id, log_time, data) of the messages in ``blocks`` (on ``channel_ids``), in log-time order.

    A block is read only when the merge reaches its start time, so memory holds a few blocks at a time.
    """
    wanted = [b for b in blocks if channel_ids is None or any(b.counts.get(cid, 0) for cid in channel_ids)]
    # (time, kind, block index, position in block, channel id, data); kind -1: open the block, 0: a message
    heap: list[tuple[int, int, int, int, int, bytes]] = [(b.start_time, -1, i, 0, 0, b"") for i, b in enumerate(wanted)]
    heapq.heapify(heap)
    pending: dict[int, Iterator[tuple[int, int, int, bytes]]] = {}
    while heap:
        t, kind, i, _position, cid, data = heapq.heappop(heap)
        if kind < 0:
            pending[i] = iter([m for m in read_block(f, wanted[i]) if channel_ids is None or m[1] in channel_ids])
        else:
            yield cid, t, data
        nxt = next(pending[i], None)
        if nxt is None:
            del pending[i]
            continue
        heapq.heappush(heap, (nxt[0], 0, i, nxt[2], nxt[1], nxt[3]))
