# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Read rosbag2 bags for offline replay, without rclpy.

:func:`open_bag` opens a rosbag2 directory (``metadata.yaml`` + MCAP or sqlite3 storage), a lone ``.mcap`` or ``.db3``
file, or a rosbag2 directory whose ``metadata.yaml`` is missing (a recording that was killed: its single storage file
is opened directly). Messages are decoded with rosbags, using the type definitions stored in the bag (ROS 2 Kilted's
definitions when the bag has none). :func:`frame_from_msg` turns a decoded ``sensor_msgs/msg/Image`` or
``CompressedImage`` into an HxWx3 uint8 RGB array with :mod:`cosmos3_ros.core.images`.

Damaged recordings are read as far as they can be (each time with a warning on the logger ``cosmos3_ros.bags.reader``
and in :attr:`BagSource.note`):

* an MCAP file that rosbags refuses (a recording killed by SIGKILL or a power cut has no summary and no footer, and
  may end inside a record) is read by a sequential record scan (:mod:`cosmos3_ros.bags.mcap_scan`): every complete
  chunk up to the cut; the warning says how many bytes were cut (and how many messages, when they can be counted);
* a sqlite3 bag killed in the middle of a transaction (a hot ``-journal``) is read from a rolled-back temporary copy
  (:func:`cosmos3_ros.bags.tolerant.recovered_sqlite_copy`).

Damaged data is never returned: MCAP chunks are checked against their CRC (by rosbags, and by the scanner), and a chunk
that fails raises :class:`BagError` naming the chunk and its byte offset (``open_bag(..., recover=True)``, used by
``cosmos3-ros bag recover``, skips such chunks instead and says so in the note).

Everything else that goes wrong with the input raises :class:`BagError` (a ``ValueError``) with a message a user can
act on: a missing path, a file that is not a bag or is corrupt, an empty bag, a requested topic that the bag does not
have (the message lists the topics it has).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["IMAGE_TYPES", "BagError", "BagMessage", "BagSource", "TopicInfo", "frame_from_msg", "open_bag"]

#: Message types :func:`frame_from_msg` decodes.
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
_STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}

log = logging.getLogger(__name__)


class BagError(ValueError):
    """A bag that can not be used: missing, corrupt, empty, or without a requested topic."""


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its message type and number of messages."""

    name: str
    msgtype: str
    count: int


class BagMessage(NamedTuple):
    """A decoded message.

    ``stamp`` is the header stamp in seconds when the message has a header with a non-zero stamp, else the bag's log
    time; ``log_time`` is always the bag's log (receive) time in seconds. ``msg`` is the rosbags message object (fields
    as in the ROS message; arrays are numpy arrays).
    """

    topic: str
    stamp: float
    msgtype: str
    msg: Any
    log_time: float


def _default_typestore() -> Any:
    from cosmos3_ros.bags.recorder import get_ros2_typestore

    return get_ros2_typestore()


def _storage_file_in(directory: Path) -> Path | None:
    files = sorted(p for p in directory.iterdir() if p.suffix in _STORAGE_SUFFIXES and p.is_file())
    return files[0] if len(files) == 1 else None


class BagSource:
    """An open bag. Use :func:`open_bag` to create one; close it (or use ``with``) when done."""

    def __init__(
        self,
        path: Path,
        reader: Any,
        storage: str,
        note: str | None = None,
        *,
        file: Path | None = None,
        scan: Any = None,
        cleanup: Path | None = None,
    ) -> None:
        self.path = path
        self.storage = storage
        #: Set when the bag was opened in a degraded way (e.g. no metadata.yaml, a cut file): say it to the user.
        self.note = note
        #: The storage file read (None when rosbags reads a multi-file bag from its metadata.yaml).
        self.file = file
        #: The :class:`cosmos3_ros.bags.mcap_scan.McapScan` when the MCAP file was read by a sequential scan.
        self.scan = scan
        self._cleanup = cleanup
        self._reader = reader
        self._topics: dict[str, TopicInfo] = {}
        for conn in reader.connections:
            info = self._topics.get(conn.topic)
            count = int(conn.msgcount or 0)
            if info is None:
                self._topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count)
            else:
                self._topics[conn.topic] = TopicInfo(conn.topic, info.msgtype, info.count + count)

    # -- metadata ---------------------------------------------------------------------------------------------------

    def topics(self) -> dict[str, TopicInfo]:
        """Topics by name."""
        return dict(self._topics)

    def describe_topics(self) -> str:
        """One line per topic: ``name (type, N messages)``."""
        if not self._topics:
            return "(no topics)"
        return ", ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in sorted(self._topics.values(), key=_name))

    def require_topics(self, topics: Iterable[str]) -> None:
        """Raise :class:`BagError` naming the missing topics and listing the bag's topics if any is absent."""
        missing = [t for t in topics if t not in self._topics]
        if missing:
            raise BagError(
                f"topic{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not in bag {self.path}; "
                f"it has: {self.describe_topics()}"
            )

    def message_count(self, topics: Iterable[str] | None = None) -> int:
        """Messages on ``topics`` (all topics when None), from the bag's index."""
        if topics is None:
            return sum(t.count for t in self._topics.values())
        names = list(topics)
        self.require_topics(names)
        return sum(self._topics[t].count for t in set(names))

    @property
    def start_time(self) -> float:
        """Log time of the first message, seconds."""
        return self._reader.start_time / 1e9

    @property
    def end_time(self) -> float:
        """Log time of the last message, seconds."""
        return max(self._reader.start_time, self._reader.end_time - 1) / 1e9

    @property
    def duration(self) -> float:
        """Seconds between the first and the last message's log time."""
        return max(0.0, self.end_time - self.start_time)

    # -- messages ---------------------------------------------------------------------------------------------------

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Decoded messages on ``topics`` (all when None) in log-time order.

        Raises :class:`BagError` up front for a missing topic, and while iterating for a corrupt message or chunk.
        """
        reader = self._reader
        n = 0
        for conn, log_ns, raw in self.raw_messages(topics):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:
                raise BagError(
                    f"bag {self.path}: message {n} on {conn.topic} ({conn.msgtype}) can not be decoded: {exc}"
                ) from exc
            n += 1
            log_time = log_ns / 1e9
            yield BagMessage(conn.topic, header_stamp(msg, log_time), conn.msgtype, msg, log_time)

    def raw_messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log time ns, serialized bytes) on ``topics`` (all when None) in log-time order, undecoded.

        ``connection`` has ``topic``, ``msgtype``, ``msgdef`` and ``ext.serialization_format``; :attr:`typestore`
        knows its type. Raises :class:`BagError` like :meth:`messages`.
        """
        if self._reader is None:
            raise BagError(f"bag {self.path} is closed")
        names = None if topics is None else list(topics)
        if names is not None:
            self.require_topics(names)
        conns = [c for c in self._reader.connections if names is None or c.topic in names]
        if conns:
            yield from self._raw(conns)

    @property
    def connections(self) -> list[Any]:
        """The reader's connections (rosbags ``Connection``: ``id``, ``topic``, ``msgtype``, ``msgcount``...)."""
        return list(self._reader.connections) if self._reader is not None else []

    @property
    def typestore(self) -> Any:
        """The typestore that decodes this bag's messages (its own definitions where it has them)."""
        return self._reader.typestore

    def _raw(self, conns: list[Any]) -> Iterator[tuple[Any, int, bytes]]:
        n = 0
        it = self._reader.messages(connections=conns)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise BagError(f"bag {self.path} is corrupt after {n} messages: {self._damage(exc)}") from exc
            n += 1
            yield item

    def _damage(self, exc: Exception) -> str:
        """What is damaged: the scanner's account (chunk, byte offset) when it can tell, else the reader's error."""
        from cosmos3_ros.bags.mcap_scan import McapCorruptError, scan

        if isinstance(exc, McapCorruptError) or self.storage != "mcap" or self.file is None or self.scan is not None:
            return str(exc)
        try:
            scan(self.file)
        except McapCorruptError as located:
            return f"{located} ({exc})"
        except Exception:
            pass
        return f"{exc} (rosbags)"

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the bag; idempotent."""
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:
                pass
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BagSource({str(self.path)!r}, storage={self.storage!r}, topics={sorted(self._topics)})"


def _name(t: TopicInfo) -> str:
    return t.name


def header_stamp(msg: Any, default: float) -> float:
    """``msg.header.stamp`` in seconds, or ``default`` when the message has no header or a zero stamp."""
    header = getattr(msg, "header", None)
    stamp = getattr(header, "stamp", None)
    if stamp is None:
        return default
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if sec == 0 and nanosec == 0:
        return default
    return sec + nanosec * 1e-9


def open_bag(path: str | Path, *, allow_empty: bool = False, recover: bool = False) -> BagSource:
    """Open a rosbag2 bag for reading (see the module docstring for what is accepted).

    Raises :class:`BagError` for a missing path, something that is not a bag, a corrupt bag (a damaged MCAP chunk: at
    open when the file is read by a scan, else while iterating), a cut bag with no complete message, or (unless
    ``allow_empty``) a bag without messages. With ``recover`` an MCAP file is always read by a sequential scan that
    skips damaged chunks (listed in :attr:`BagSource.note`) instead of failing.
    """
    from rosbags.highlevel import AnyReader

    from cosmos3_ros.bags import tolerant

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    notes: list[str] = []
    target = path
    single = None
    if path.is_dir():
        single = _storage_file_in(path)
        if not (path / "metadata.yaml").exists():
            if single is None:
                raise BagError(
                    f"{path} is not a rosbag2 bag: no metadata.yaml and not exactly one .mcap or .db3 file in it"
                )
            target = single
            notes.append(
                f"{path} has no metadata.yaml (the recording was not closed cleanly?); reading {single.name} directly"
            )
        storage = _dir_storage(path) if target is path else _STORAGE_SUFFIXES[target.suffix]
    elif path.suffix in _STORAGE_SUFFIXES:
        storage = _STORAGE_SUFFIXES[path.suffix]
        single = path
    else:
        raise BagError(f"{path} is not a rosbag2 bag: expected a bag directory, a .mcap file or a .db3 file")
    if target.is_file() and target.stat().st_size == 0:
        raise BagError(f"bag {path} is corrupt: {target.name} is an empty file")

    cleanup = None
    if storage == "sqlite3" and single is not None and tolerant.sqlite_journal(single) is not None:
        try:
            target, cleanup, note = tolerant.recovered_sqlite_copy(single)
        except Exception as exc:
            raise BagError(f"bag {path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from exc
        log.warning("bag %s: %s", path, note)
        notes.append(note)
    if storage == "mcap" and recover and single is not None:
        return _open_scanned(path, single, notes, recover=True, allow_empty=allow_empty)
    try:
        reader = AnyReader([target], default_typestore=_default_typestore())
        reader.open()
    except Exception as exc:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        if storage == "mcap" and single is not None:
            return _open_scanned(path, single, notes, recover=recover, allow_empty=allow_empty, failure=exc)
        raise BagError(f"bag {path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from exc
    source = BagSource(path, reader, storage, "; ".join(notes) or None, file=single, cleanup=cleanup)
    if not allow_empty and source.message_count() == 0:
        source.close()
        raise BagError(f"bag {path} is empty: no messages (topics: {source.describe_topics()})")
    return source


def _open_scanned(
    path: Path, file: Path, notes: list[str], *, recover: bool, allow_empty: bool, failure: Exception | None = None
) -> BagSource:
    """Open ``file`` (MCAP) with the tolerant scanner; ``failure`` is why rosbags could not."""
    from cosmos3_ros.bags import tolerant
    from cosmos3_ros.bags.mcap_scan import McapCorruptError, scan

    why = f" (rosbags: {failure})" if failure is not None else ""
    try:
        result = scan(file, skip_corrupt=recover)
    except McapCorruptError as exc:
        raise BagError(f"bag {path} is corrupt: {exc}{why}") from exc
    except OSError as exc:
        raise BagError(f"bag {path} is unreadable: {exc}") from exc
    text = tolerant.describe_scan(result, index_failed=failure is not None)
    if result.message_count == 0 and (result.truncated or result.corrupt) and not allow_empty:
        raise BagError(f"bag {path} is corrupt or truncated: no complete message could be read ({text}){why}")
    if result.truncated or result.corrupt or failure is not None:
        log.warning("bag %s: %s", path, text)
        notes.append(text)
    source = BagSource(
        path,
        tolerant.ScanReader(file, result, _default_typestore()),
        "mcap",
        "; ".join(notes) or None,
        file=file,
        scan=result,
    )
    if not allow_empty and source.message_count() == 0:
        source.close()
        raise BagError(f"bag {path} is empty: no messages (topics: {source.describe_topics()})")
    return source


def _dir_storage(path: Path) -> str:
    try:
        text = (path / "metadata.yaml").read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("storage_identifier:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def frame_from_msg(msgtype: str, msg: Any, options: Any = None) -> np.ndarray:
    """HxWx3 uint8 RGB from a decoded ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``.

    ``options`` (a :class:`cosmos3_ros.core.images.DecodeOptions`; the node's, for a replay) caps and downscales
    frames exactly as the node does. The result may be a read-only view of the message's buffer (raw rgb8); copy
    before writing to it. Raises :class:`BagError` for other types and
    :class:`cosmos3_ros.core.images.ImageDecodeError` (a ``ValueError`` with a ``reason``) for a malformed image.
    """
    from cosmos3_ros.core.images import DecodeOptions, decode_compressed, decode_raw_with

    opts = options or DecodeOptions()
    if msgtype == "sensor_msgs/msg/Image":
        return decode_raw_with(msg.data, msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian, opts)
    if msgtype == "sensor_msgs/msg/CompressedImage":
        return decode_compressed(msg.data, msg.format, max_pixels=opts.max_pixels, max_side=opts.max_side)
    raise BagError(f"{msgtype} is not an image type; expected one of {IMAGE_TYPES}")
