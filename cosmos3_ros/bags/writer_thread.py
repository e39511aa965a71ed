# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The writer thread of :class:`cosmos3_ros.bags.recorder.BagRecorder`: drain the queue, write, flush, finalize.

Split from the recorder module to keep both readable; :class:`WriterThreadMixin` is only meant as a base of
``BagRecorder`` and works on its attributes (the queue deques, ``_closing``, ``_wakeq``, the writer-side counters).
Failure handling (log, ``on_error``, salvage) is described in the recorder's module docstring.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from typing import Any

from cosmos3_ros.bags.msgbuild import get_ros2_typestore

__all__ = ["WriterThreadMixin", "describe_error"]

#: Same logger as the recorder module: the failure is the recorder's.
log = logging.getLogger("cosmos3_ros.bags.recorder")


def describe_error(exc: BaseException) -> str:
    """``exc`` for a log line: ``File too large (EFBIG)`` for an OSError, else ``Type: message``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror or os.strerror(exc.errno)} ({name})"
    code = getattr(exc, "sqlite_errorname", None)  # sqlite3.Error: e.g. SQLITE_FULL, SQLITE_IOERR_WRITE
    if code:
        return f"{type(exc).__name__}: {exc} ({code})"
    return f"{type(exc).__name__}: {exc}"


class WriterThreadMixin:
    """``_run`` is the body of the recorder's writer thread."""

    # Provided by BagRecorder (declared for readers and type checkers).
    path: Any
    poll_s: float
    flush_every_s: float
    on_error: Any
    _images: Any
    _others: Any
    _wakeq: Any
    _wake_pending: bool
    _closing: bool
    _done: threading.Event
    _writer: Any
    _written: int
    _written_by_topic: dict[str, int]
    _failed: int
    _last_failure: str | None
    _lost: int
    _flushes: int
    _error: BaseException | None
    _open_error: BaseException | None

    def _next_item(self) -> Any:
        images, others = self._images, self._others
        while images or others:
            a = images[0] if images else None
            b = others[0] if others else None
            try:
                if b is None or (a is not None and a.seq < b.seq):
                    return images.popleft()
                return others.popleft()
            except IndexError:  # a producer dropped it meanwhile
                continue
        return None

    def _run(self, opened: threading.Event) -> None:
        writer = self._writer
        try:
            writer.open()
        except BaseException as exc:
            self._open_error = exc
            opened.set()
            return
        opened.set()
        connections: dict[str, Any] = {}
        main = threading.main_thread()
        inflight = 0  # 1 while a message is being handed to the storage
        unflushed_since: float | None = None  # when the oldest message not yet durable was written
        what = "opening the bag"
        try:
            while True:
                if unflushed_since is not None and time.monotonic() - unflushed_since >= self.flush_every_s:
                    what = "flushing the bag to disk"
                    writer.flush()
                    self._flushes += 1
                    unflushed_since = None
                item = self._next_item()
                if item is None:
                    if self._closing or not main.is_alive():
                        self._closing = True
                        item = self._next_item()  # a last producer may have raced the flag
                        if item is None:
                            break
                    else:
                        try:
                            self._wakeq.get(timeout=self.poll_s)
                        except queue.Empty:
                            pass
                        self._wake_pending = False
                        continue
                try:
                    data = item.build()
                except Exception as exc:  # a bad message: skip it, keep recording
                    self._failed += 1
                    self._last_failure = f"{item.topic}: {exc!r}"
                    continue
                what = f"writing a {item.msgtype} message on {item.topic}"
                conn = connections.get(item.topic)
                if conn is None:
                    conn = writer.add_connection(item.topic, item.msgtype, typestore=get_ros2_typestore())
                    connections[item.topic] = conn
                inflight = 1
                writer.write(conn, item.ns, data)
                inflight = 0
                if unflushed_since is None:
                    unflushed_since = time.monotonic()
                self._written += 1
                self._written_by_topic[item.topic] = self._written_by_topic.get(item.topic, 0) + 1
            what = "finalizing the bag (index, metadata.yaml)"
            writer.close()
        except BaseException as exc:  # keep what was written: salvage and finalize
            self._lost += inflight
            self._fail(exc, what)
            self._salvage(writer, connections)
        finally:
            self._lost += len(self._images) + len(self._others)
            self._images.clear()
            self._others.clear()
            self._done.set()

    def _fail(self, exc: BaseException, what: str) -> None:
        """The first write failure: record it, stop accepting messages, say it (log + on_error)."""
        self._error = exc
        self._closing = True
        log.error(
            "bag recording to %s failed while %s: %s; recording stopped, later messages are rejected",
            self.path,
            what,
            describe_error(exc),
        )
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("on_error callback of the bag recorder %s failed", self.path)

    def _salvage(self, writer: Any, connections: dict[str, Any]) -> None:
        """After a failure: keep what the file holds, try to finalize it, fix the counters."""
        if writer.storage is None:  # storage closed, only metadata.yaml failed: the MCAP file is complete
            log.warning("bag %s has no metadata.yaml; open_bag reads its storage file directly", self.path)
            return
        try:
            counts = writer.salvage()
        except Exception:
            counts = None
        if counts is not None:
            written = sum(counts.values())
            self._lost += max(0, self._written - written)
            self._written = written
            by_id = {conn.id: topic for topic, conn in connections.items()}
            self._written_by_topic = {by_id[c]: n for c, n in counts.items() if n and c in by_id}
        try:
            writer.close()
        except BaseException as exc:
            try:
                writer.abort()
            except Exception:
                pass
            log.warning(
                "bag %s: could not write its index after the failure (%s): it holds %d messages without an index; "
                "open_bag reads it tolerantly and `cosmos3-ros bag recover` rewrites it",
                self.path,
                describe_error(exc),
                self._written,
            )
        else:
            log.warning("bag %s closed after the failure: it holds %d messages", self.path, self._written)
