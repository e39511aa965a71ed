# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Record what the node sees and does to a rosbag2 bag (MCAP or sqlite3), without rclpy.

Messages are built with the ``rosbags`` typestore of ROS 2 Kilted (same RIHS01 type hashes as the ROS messages, checked
in the tests; see :mod:`cosmos3_ros.bags.msgbuild`), serialized to CDR and written by
:class:`cosmos3_ros.bags.storage.DurableWriter` (a :class:`rosbags.rosbag2.Writer`), so the bag opens with
``ros2 bag info`` / ``ros2 bag play``, in Foxglove and with rosbags' Reader.

:class:`BagRecorder` never blocks its caller: ``write_*`` copy the data, put it on a bounded queue and return; a writer
thread builds, serializes and writes the messages. When the queue is full the oldest queued *image* is dropped (and
counted); trajectories and the other small messages are never dropped. Each message's bag (log) time is its own stamp,
which also goes in its header where the type has one, so live, sim-time and replayed recordings line up.

Shutdown: :meth:`BagRecorder.close` flushes everything queued, finalizes the bag (MCAP summary, ``metadata.yaml``)
and is idempotent. It takes no lock a producer holds (producers and the writer thread share only atomic deque
operations), so it is safe to call from a SIGINT/SIGTERM handler that interrupted a ``write_*`` call on the same
thread, as well as from a ``finally`` block. The recorder registers no signal handler or atexit hook itself; as a
last resort its (non-daemon) writer thread drains and finalizes the bag on its own when the main thread has ended
without calling ``close()``.

Durability (a SIGKILL, a power cut): the writer thread makes the bag durable at least every ``flush_every_s``
seconds (default 1 s; checked every ``poll_s`` when idle) and at close. For MCAP such a flush closes the current chunk,
writes it with its CRC in one write, and fsyncs the file; a chunk is also written (not fsynced) as soon as it holds
``chunk_bytes`` (default 256 KiB). For sqlite3 a flush commits the transaction (sqlite fsyncs). Loss bounds, besides
whatever was still queued in memory (normally nothing: the writer keeps up):

* SIGKILL (the kernel keeps what was written): MCAP loses at most its last, unwritten chunk: the messages handed to
  the writer in the last ``flush_every_s`` (+ ``poll_s``) seconds, fewer when they add up to more than ``chunk_bytes``
  (measured: 0.13 s of 100 Hz 9 KiB images, 0.99 s of 100 Hz Float64); sqlite3 loses the last ``flush_every_s``.
* power cut: the last ``flush_every_s`` (+ ``poll_s``) seconds, in both storages (plus what the drive's own cache
  loses).

A killed MCAP file has no summary and no ``metadata.yaml``; :func:`cosmos3_ros.bags.reader.open_bag` reads it with a
sequential scan (with a warning) and ``cosmos3-ros bag recover`` rewrites it as a complete bag. A killed sqlite3 bag
keeps every committed transaction (``open_bag`` reads it past the hot journal).

Write failures (disk full, EIO, a file size limit): at the first failure the recorder logs an ERROR (logger
``cosmos3_ros.bags.recorder``) naming the bag and the cause, sets :attr:`BagRecorder.error`, calls ``on_error(exc)``
once from the writer thread, then stops: later ``write_*`` calls return False (counted in ``rejected``), never raise.
What was committed stays in the file, which is truncated back to its last complete chunk; the recorder then tries to
write the index and ``metadata.yaml`` for it, and if the disk is still full leaves a cut MCAP for the tolerant reader.

Message types:

========================  ==========================================  ========================================
method                    type                                        notes
========================  ==========================================  ========================================
``write_image``           ``sensor_msgs/msg/Image``                   rgb8 (HxWx3), rgba8 (HxWx4) or mono8 (HxW)
``write_trajectory``      ``trajectory_msgs/msg/JointTrajectory``     ``time_from_start`` = first_offset + k*dt
``write_joint_state``     ``sensor_msgs/msg/JointState``
``write_float``           ``std_msgs/msg/Float64``                    the stamp is the bag time (Float64 has no
                                                                      header); plots directly in Foxglove
``write_json``            ``std_msgs/msg/String``                     JSON object, e.g. per-chunk timing
``write_message``         any type of the typestore                   a message object built with :attr:`types`
``write_raw``             any type of the typestore                   already serialized CDR bytes (e.g. from
                                                                      ``rclpy.serialization.serialize_message``)
========================  ==========================================  ========================================
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cosmos3_ros.bags import msgbuild
from cosmos3_ros.bags.msgbuild import get_ros2_typestore, stamp_to_ns
from cosmos3_ros.bags.writer_thread import WriterThreadMixin

__all__ = ["BagRecorder", "RecorderError", "get_ros2_typestore", "stamp_to_ns"]

log = logging.getLogger(__name__)

#: Storage names accepted by :class:`BagRecorder`.
STORAGES = ("mcap", "sqlite3")


class RecorderError(RuntimeError):
    """The recorder can not do what was asked (bad path, not started, mixed types on one topic...)."""


class _Item(NamedTuple):
    seq: int
    topic: str
    msgtype: str
    ns: int
    build: Callable[[], bytes]


class BagRecorder(WriterThreadMixin):
    """Background rosbag2 writer with a bounded queue.

    Args:
        path: bag directory to create (rosbag2 layout: ``path/metadata.yaml`` + ``path/<name>.mcap`` or ``.db3``).
        storage: "mcap" (default) or "sqlite3".
        max_queue: most messages waiting for the writer. When full, the oldest queued image is dropped to make room;
            an image arriving with no image queued to drop is itself dropped; other messages are always accepted
            (they are small), so memory is bounded by about ``max_queue`` images.
        image_every_n: keep only every n-th image per topic (for ``write_image(..., downsample=True)``).
        image_scale: scale factor in (0, 1] applied to those images (area average) before writing.
        overwrite: remove an existing bag directory at ``path`` first (refused unless it holds a ``metadata.yaml``
            or is empty).
        custom_data: string key/values stored in ``metadata.yaml`` (``custom_data``), e.g. the parameters used.
        poll_s: how often an idle writer thread checks for shutdown.
        on_error: called once, from the writer thread, with the exception of the first write failure (e.g. an
            ``OSError`` "No space left on device"); it must not block. See the module docstring.
        flush_every_s: longest time a message handed to the writer waits before it is durable (MCAP chunk written
            and fsynced, sqlite3 transaction committed): the loss bound of a killed recording.
        chunk_bytes: MCAP: a chunk is written once it holds this many bytes (at most 1 MiB).
        compression: MCAP chunk compression, "none" (default), "lz4" or "zstd".
    """

    def __init__(
        self,
        path: str | Path,
        *,
        storage: str = "mcap",
        max_queue: int = 256,
        image_every_n: int = 1,
        image_scale: float = 1.0,
        overwrite: bool = False,
        custom_data: Mapping[str, str] | None = None,
        poll_s: float = 0.05,
        on_error: Callable[[BaseException], None] | None = None,
        flush_every_s: float = 1.0,
        chunk_bytes: int = 256 * 1024,
        compression: str = "none",
    ) -> None:
        from cosmos3_ros.bags.storage import COMPRESSIONS

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if image_every_n < 1:
            raise ValueError(f"image_every_n must be >= 1, got {image_every_n}")
        if not (0.0 < image_scale <= 1.0):
            raise ValueError(f"image_scale must be in (0, 1], got {image_scale}")
        if not (flush_every_s > 0 and math.isfinite(flush_every_s)):
            raise ValueError(f"flush_every_s must be positive, got {flush_every_s}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        if compression not in COMPRESSIONS or (storage == "sqlite3" and compression != "none"):
            raise ValueError(f"compression must be one of {COMPRESSIONS} (mcap only), got {compression!r}")
        self.path = Path(path)
        self.storage = storage
        self.max_queue = int(max_queue)
        self.image_every_n = int(image_every_n)
        self.image_scale = float(image_scale)
        self.overwrite = overwrite
        self.custom_data = {str(k): str(v) for k, v in (custom_data or {}).items()}
        self.poll_s = float(poll_s)
        self.on_error = on_error
        self.flush_every_s = float(flush_every_s)
        self.chunk_bytes = int(chunk_bytes)
        self.compression = compression

        self._images: deque[_Item] = deque()  # droppable
        self._others: deque[_Item] = deque()  # never dropped
        self._seq = itertools.count()
        self._plock = threading.Lock()  # producers only; never taken by the writer thread or close()
        self._wakeq: queue.SimpleQueue[None] = queue.SimpleQueue()  # reentrant put: signal-handler safe
        self._wake_pending = False
        self._closing = False
        self._started = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: Any = None
        self._topic_types: dict[str, str] = {}
        self._image_counts: dict[str, int] = {}
        # producer-side counters (under _plock)
        self._accepted = 0
        self._dropped = 0
        self._dropped_by_topic: dict[str, int] = {}
        self._skipped = 0
        self._rejected = 0
        # writer-side counters (writer thread only)
        self._written = 0
        self._written_by_topic: dict[str, int] = {}
        self._failed = 0
        self._last_failure: str | None = None
        self._lost = 0
        self._flushes = 0
        self._error: BaseException | None = None
        self._open_error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> BagRecorder:
        """Create the bag and start the writer thread; returns self. Raises RecorderError if the path is taken."""
        from cosmos3_ros.bags.storage import DurableWriter

        if self._started:
            raise RecorderError("recorder already started")
        if self.path.exists():
            if not self.overwrite:
                raise RecorderError(f"{self.path} exists already; choose another path or pass overwrite=True")
            if self.path.is_dir() and ((self.path / "metadata.yaml").exists() or not any(self.path.iterdir())):
                shutil.rmtree(self.path)
            else:
                raise RecorderError(f"refusing to overwrite {self.path}: not a rosbag2 directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecorderError(f"can not create bag {self.path}: {exc}") from exc
        writer = DurableWriter(
            self.path, storage=self.storage, chunk_bytes=self.chunk_bytes, compression=self.compression
        )
        for key, value in self.custom_data.items():
            writer.set_custom_data(key, value)
        get_ros2_typestore()  # build it before the thread needs it
        self._writer = writer
        # The storage is opened on the writer thread (sqlite3 connections are bound to their thread); wait for it so
        # that a failure surfaces here.
        opened = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(opened,), name=f"bag-recorder:{self.path.name}", daemon=False
        )
        self._thread.start()
        opened.wait()
        if self._open_error is not None:
            self._thread.join()
            raise RecorderError(f"can not create bag {self.path}: {self._open_error}") from self._open_error
        self._started = True
        return self

    def close(self, timeout: float | None = None) -> bool:
        """Flush everything queued, finalize the bag and stop the writer thread; idempotent.

        Returns True once the bag is closed, False if ``timeout`` (seconds) passed first (the writer keeps going and
        a later ``close()`` waits again). Messages submitted after ``close()`` are rejected (counted in ``rejected``).
        Safe in a signal handler and in ``finally`` blocks; see the module docstring. A write failure does not make
        it raise: check :attr:`error` afterwards.
        """
        self._closing = True
        if not self._started:
            self._done.set()
            return True
        self._wakeq.put(None)
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return self._done.is_set()
        thread.join(timeout)
        return not thread.is_alive()

    def __enter__(self) -> BagRecorder:
        return self if self._started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once the bag has been finalized (or the writer gave up after an error)."""
        return self._done.is_set()

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the writer thread (the first write failure), if any; later messages are
        rejected."""
        return self._error

    @property
    def types(self) -> Any:
        """The typestore's message classes by name, for :meth:`write_message`
        (e.g. ``rec.types["diagnostic_msgs/msg/DiagnosticArray"]``)."""
        return get_ros2_typestore().types

    def stats(self) -> dict[str, Any]:
        """Counters.

        ``accepted`` (queued by ``write_*``), ``written`` (in the bag; after a write failure: what the file kept),
        ``queued`` (waiting now), ``dropped`` (images dropped because the queue was full, also ``dropped_by_topic``),
        ``skipped`` (by ``image_every_n``), ``rejected`` (submitted after close or after a fatal error), ``failed``
        (messages that could not be serialized, skipped; ``last_failure`` says why), ``lost`` (accepted but not in
        the bag: left in the queue or in the unwritten chunk when a write failed, or a write racing ``close()`` from
        another thread), ``flushes`` (times the bag was made durable), ``error`` (fatal writer error).
        """
        return {
            "accepted": self._accepted,
            "written": self._written,
            "queued": len(self._images) + len(self._others),
            "dropped": self._dropped,
            "dropped_by_topic": dict(self._dropped_by_topic),
            "skipped": self._skipped,
            "rejected": self._rejected,
            "failed": self._failed,
            "last_failure": self._last_failure,
            "lost": self._lost,
            "written_by_topic": dict(self._written_by_topic),
            "flushes": self._flushes,
            "error": None if self._error is None else repr(self._error),
            "closed": self.closed,
        }

    # -- producers --------------------------------------------------------------------------------------------------

    def write_image(
        self,
        topic: str,
        stamp_s: float,
        rgb: np.ndarray,
        frame_id: str = "",
        *,
        downsample: bool = True,
    ) -> bool:
        """Queue a ``sensor_msgs/msg/Image``: HxWx3 rgb8, HxWx4 rgba8 or HxW mono8 (uint8; float in [0, 1] is
        converted). With ``downsample`` the recorder's ``image_every_n`` / ``image_scale`` apply. Returns True when
        queued (False: skipped, dropped or rejected)."""
        arr = np.asarray(rgb)
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape:
            raise ValueError(f"image must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
        ns = stamp_to_ns(stamp_s)
        scale = 1.0
        if downsample:
            if self.image_every_n > 1:
                with self._plock:
                    n = self._image_counts.get(topic, 0)
                    self._image_counts[topic] = n + 1
                    if n % self.image_every_n:
                        self._skipped += 1
                        return False
            scale = self.image_scale
        data = np.array(arr, copy=True)  # the caller may reuse its buffer
        build = msgbuild.image_builder(data, scale, ns, frame_id)
        return self._put(topic, "sensor_msgs/msg/Image", ns, build, droppable=True)

    def write_trajectory(
        self,
        topic: str,
        stamp_s: float,
        joint_names: Sequence[str],
        points: np.ndarray,
        dt_s: float,
        *,
        first_offset_s: float | None = None,
        velocities: np.ndarray | None = None,
        frame_id: str = "",
    ) -> bool:
        """Queue a ``trajectory_msgs/msg/JointTrajectory``: ``points`` is [T, N] positions for N joints,
        point k has ``time_from_start`` = first_offset_s + k * dt_s (first_offset_s defaults to dt_s, i.e. the
        first point is one period ahead; pass 0.0 to start at the stamp). Never dropped."""
        pts = np.array(points, dtype=np.float64, copy=True)
        if pts.ndim != 2:
            raise ValueError(f"points must be [T, N], got shape {pts.shape}")
        names = [str(n) for n in joint_names]
        if len(names) != pts.shape[1]:
            raise ValueError(f"{len(names)} joint names for {pts.shape[1]} columns")
        vel = None
        if velocities is not None:
            vel = np.array(velocities, dtype=np.float64, copy=True)
            if vel.shape != pts.shape:
                raise ValueError(f"velocities shape {vel.shape} != points shape {pts.shape}")
        dt = float(dt_s)
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt_s must be positive, got {dt_s}")
        offset = dt if first_offset_s is None else float(first_offset_s)
        ns = stamp_to_ns(stamp_s)
        build = msgbuild.trajectory_builder(pts, vel, names, dt, offset, ns, frame_id)
        return self._put(topic, "trajectory_msgs/msg/JointTrajectory", ns, build, droppable=False)

    def write_joint_state(
        self,
        topic: str,
        stamp_s: float,
        names: Sequence[str],
        positions: Sequence[float] | np.ndarray,
        velocities: Sequence[float] | np.ndarray | None = None,
        efforts: Sequence[float] | np.ndarray | None = None,
        frame_id: str = "",
    ) -> bool:
        """Queue a ``sensor_msgs/msg/JointState`` (empty velocity/effort arrays when not given)."""
        name_list = [str(n) for n in names]
        pos = np.array(positions, dtype=np.float64, copy=True).reshape(-1)
        vel = np.zeros(0) if velocities is None else np.array(velocities, dtype=np.float64, copy=True).reshape(-1)
        eff = np.zeros(0) if efforts is None else np.array(efforts, dtype=np.float64, copy=True).reshape(-1)
        for label, arr in (("positions", pos), ("velocities", vel), ("efforts", eff)):
            if arr.size and arr.size != len(name_list):
                raise ValueError(f"{label} has {arr.size} values for {len(name_list)} names")
        ns = stamp_to_ns(stamp_s)
        build = msgbuild.joint_state_builder(name_list, pos, vel, eff, ns, frame_id)
        return self._put(topic, "sensor_msgs/msg/JointState", ns, build, droppable=False)

    def write_float(self, topic: str, stamp_s: float, value: float) -> bool:
        """Queue a ``std_msgs/msg/Float64`` at bag time ``stamp_s``."""
        build = msgbuild.float_builder(float(value))
        return self._put(topic, "std_msgs/msg/Float64", stamp_to_ns(stamp_s), build, droppable=False)

    def write_json(self, topic: str, stamp_s: float, data: Mapping[str, Any]) -> bool:
        """Queue a ``std_msgs/msg/String`` holding ``json.dumps(data)`` (NaN written as null; numpy scalars and
        arrays converted)."""
        text = json.dumps(msgbuild.jsonable(data), allow_nan=False, sort_keys=True)
        build = msgbuild.string_builder(text)
        return self._put(topic, "std_msgs/msg/String", stamp_to_ns(stamp_s), build, droppable=False)

    def write_message(self, topic: str, stamp_s: float, msgtype: str, msg: Any, *, droppable: bool = False) -> bool:
        """Queue a message object built from :attr:`types` (the caller must not modify it afterwards)."""
        if msgtype not in get_ros2_typestore().types:
            raise RecorderError(f"unknown message type {msgtype!r}")
        build = msgbuild.message_builder(msg, msgtype)
        return self._put(topic, msgtype, stamp_to_ns(stamp_s), build, droppable=droppable)

    def write_raw(self, topic: str, stamp_s: float, msgtype: str, cdr: bytes, *, droppable: bool = False) -> bool:
        """Queue an already CDR-serialized message of ``msgtype`` (e.g. ``rclpy.serialization.serialize_message``)."""
        if msgtype not in get_ros2_typestore().types:
            raise RecorderError(f"unknown message type {msgtype!r}")
        data = bytes(cdr)
        return self._put(topic, msgtype, stamp_to_ns(stamp_s), lambda: data, droppable=droppable)

    # -- internals --------------------------------------------------------------------------------------------------

    def _put(self, topic: str, msgtype: str, ns: int, build: Callable[[], bytes], *, droppable: bool) -> bool:
        if not self._started:
            raise RecorderError("recorder not started: call start() first")
        with self._plock:
            if self._closing or self._error is not None:
                self._rejected += 1
                return False
            known = self._topic_types.setdefault(topic, msgtype)
            if known != msgtype:
                raise RecorderError(f"topic {topic!r} already recorded as {known}, can not also write {msgtype}")
            if len(self._images) + len(self._others) >= self.max_queue:
                try:
                    victim = self._images.popleft()
                except IndexError:
                    victim = None
                if victim is not None:
                    self._count_drop(victim.topic)
                elif droppable:
                    self._count_drop(topic)
                    return False
            item = _Item(next(self._seq), topic, msgtype, ns, build)
            (self._images if droppable else self._others).append(item)
            self._accepted += 1
        if not self._wake_pending:
            self._wake_pending = True
            self._wakeq.put(None)
        return True

    def _count_drop(self, topic: str) -> None:
        self._dropped += 1
        self._dropped_by_topic[topic] = self._dropped_by_topic.get(topic, 0) + 1
