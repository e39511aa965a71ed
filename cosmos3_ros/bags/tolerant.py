# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Readers for bags that rosbags' own reader refuses: a cut MCAP file, a sqlite3 bag killed mid-transaction.

* :class:`ScanReader` reads an MCAP file through :mod:`cosmos3_ros.bags.mcap_scan` and offers the part of
  ``rosbags.highlevel.AnyReader``'s interface that :class:`cosmos3_ros.bags.reader.BagSource` uses (``connections``,
  ``messages``, ``deserialize``, ``start_time``, ``end_time``, ``typestore``, ``close``).
* :func:`recovered_sqlite_copy`: a ``.db3`` with a hot rollback journal (or a WAL) beside it is a recording killed in
  the middle of a transaction. rosbags opens sqlite files with ``immutable=1``, which ignores the journal and can read
  half-written pages; this copies the database and its journal to a temporary directory and lets sqlite roll the
  unfinished transaction back there (the input is never modified), so the committed messages read consistently.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from cosmos3_ros.bags import mcap_scan

__all__ = ["ScanReader", "describe_scan", "recovered_sqlite_copy", "sqlite_journal"]

_JOURNALS = ("-journal", "-wal")


def _typestore(schemas: list[tuple[str, str, str]], default: Any) -> Any:
    """A typestore with the bag's own definitions ((msgtype, encoding, text) each) over ``default``'s."""
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    types: dict[str, Any] = dict(default.fielddefs) if default is not None else {}
    for msgtype, encoding, text in schemas:
        if not text:
            continue
        try:
            if encoding == "ros2msg":
                types.update(get_types_from_msg(text, msgtype))
            elif encoding in ("ros2idl", "omgidl"):
                sep = "=" * 80 + "\n"
                if text.startswith(f"{sep}IDL: "):  # several IDL files, each after a separator and a header line
                    for part in text.split(sep)[1:]:
                        types.update(get_types_from_idl(part.split("\n", 1)[1]))
                else:
                    types.update(get_types_from_idl(text))
        except Exception:  # keep the default definition of that type
            continue
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    return store


class ScanReader:
    """An MCAP file read through a sequential scan (see the module docstring)."""

    def __init__(self, path: Path, scan: mcap_scan.McapScan, default_typestore: Any) -> None:
        from rosbags.interfaces import (
            Connection,
            ConnectionExtRosbag2,
            MessageDefinition,
            MessageDefinitionFormat,
        )

        self.path = path
        self.scan = scan
        formats = {
            "ros2msg": MessageDefinitionFormat.MSG,
            "ros2idl": MessageDefinitionFormat.IDL,
            "omgidl": MessageDefinitionFormat.IDL,
        }
        self.connections: list[Any] = []
        definitions = []
        for cid, channel in sorted(scan.channels.items()):
            schema = scan.schemas.get(channel.schema_id)
            msgtype = schema.name if schema is not None else "__schemaless__"
            if schema is not None:
                definitions.append((schema.name, schema.encoding, schema.data))
            msgdef = MessageDefinition(
                formats.get(schema.encoding if schema else "", MessageDefinitionFormat.NONE),
                schema.data if schema else "",
            )
            ext = ConnectionExtRosbag2(channel.message_encoding, [])
            count = scan.counts.get(cid, 0)
            self.connections.append(Connection(cid, channel.topic, msgtype, msgdef, "", count, ext, self))
        self.typestore = _typestore(definitions, default_typestore)
        self._file = path.open("rb")

    @property
    def start_time(self) -> int:
        return self.scan.start_time if self.scan.blocks else 2**63 - 1

    @property
    def end_time(self) -> int:
        return self.scan.end_time + 1 if self.scan.blocks else 0

    @property
    def message_count(self) -> int:
        return self.scan.message_count

    def messages(self, connections: Collection[Any] = ()) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log time ns, CDR bytes) in log-time order; raises McapCorruptError for a damaged chunk."""
        by_id = {c.id: c for c in (connections or self.connections)}
        for cid, log_time, data in mcap_scan.iter_messages(self._file, self.scan.blocks, set(by_id)):
            yield by_id[cid], log_time, data

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        self._file.close()


def describe_scan(scan: mcap_scan.McapScan, *, index_failed: bool = True) -> str:
    """One sentence on what a scan recovered and what the file lost (``index_failed``: rosbags could not read it)."""
    name = scan.path.name
    parts = [f"{scan.message_count} messages in {len(scan.blocks)} chunks read by a sequential scan"]
    if not scan.has_footer:
        parts.insert(0, f"{name} has no MCAP summary/footer (the recording was not closed: killed, power loss?)")
    elif index_failed:
        parts.insert(0, f"{name}'s MCAP index is unreadable")
    if scan.cut_bytes:
        lost = f"the last {scan.cut_bytes} bytes (a cut record) are lost"
        if scan.cut_messages:
            lost += f", with at least {scan.cut_messages} messages"
        parts.append(lost)
    elif not scan.complete:
        parts.append("the file ends on a record boundary (nothing cut mid-record)")
    if scan.expected_counts is not None:
        missing = sum(scan.expected_counts.values()) - scan.message_count
        if missing > 0:
            parts.append(f"{missing} of the {sum(scan.expected_counts.values())} indexed messages are missing")
    if scan.corrupt:
        parts.append(f"{len(scan.corrupt)} damaged records skipped (first: {scan.corrupt[0][1]})")
    if scan.chunks_without_crc:
        parts.append(f"{scan.chunks_without_crc} chunks carry no CRC (their data could not be verified)")
    return "; ".join(parts)


def sqlite_journal(db3: Path) -> Path | None:
    """The non-empty rollback journal or WAL next to ``db3``, if any (a recording killed mid-transaction)."""
    for suffix in _JOURNALS:
        candidate = db3.with_name(db3.name + suffix)
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def recovered_sqlite_copy(db3: Path) -> tuple[Path, Path, str]:
    """Copy ``db3`` and its journal to a temporary directory and roll the unfinished transaction back there.

    Returns (the recovered .db3, the temporary directory to remove when done, a note for the user).
    """
    journal = sqlite_journal(db3)
    tmp = Path(tempfile.mkdtemp(prefix="cosmos3_ros_bag_"))
    try:
        copy = tmp / db3.name
        shutil.copy2(db3, copy)
        if journal is not None:
            shutil.copy2(journal, tmp / journal.name)
        conn = sqlite3.connect(str(copy))
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # recovers the hot journal
            if journal is not None and journal.name.endswith("-wal"):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    note = (
        f"{db3.name} has an unfinished transaction ({journal.name if journal else 'journal'}: the recording was "
        "killed); reading the committed messages (the uncommitted ones, at most the last flush interval, are lost)"
    )
    return copy, tmp, note
