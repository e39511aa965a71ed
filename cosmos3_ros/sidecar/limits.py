# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar server's limits and their bounded building blocks.

- the defaults (the schema's ``server`` settings) and :func:`check_options`, which the CLI runs before a model loads;
- :class:`JobQueue`: a FIFO of a fixed number of places whose items can be taken out again (a request whose client
  disconnected, or whose ``request_timeout`` passed, leaves the queue at once instead of waiting for its turn).
- :class:`ModelThread`: one daemon thread that runs the model calls one at a time. Unlike a ThreadPoolExecutor's
  worker it is not joined at interpreter exit, so a model call that never returns cannot keep a stopped server's
  process alive.
- :class:`Throttle`: at most one log line per key and period (refused connections must not flood the log);
- :func:`close_server`: a websockets server's close, bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from cosmos3_ros.core.schema import BY_NAME

log = logging.getLogger("cosmos3_ros.sidecar.server")
T = TypeVar("T")

DEFAULT_MAX_MESSAGE_BYTES = int(BY_NAME["max_message_mb"].default * 2**20)
DEFAULT_QUEUE_SIZE: int = BY_NAME["queue"].default
DEFAULT_MAX_CONNECTIONS: int = BY_NAME["max_connections"].default
DEFAULT_IDLE_TIMEOUT: float = BY_NAME["idle_timeout"].default
DEFAULT_REQUEST_TIMEOUT: float = BY_NAME["request_timeout"].default
#: Seconds the running model call gets to finish and be answered once the server is told to stop.
DEFAULT_STOP_TIMEOUT = 30.0
#: Seconds a client has for its HTTP handshake, and for a closing handshake.
OPEN_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 1.0


def check_options(
    *,
    token: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
) -> None:
    """Raise ValueError for the server options :class:`~cosmos3_ros.sidecar.server.SidecarServer` refuses."""
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    if max_message_bytes < 1024:
        raise ValueError(f"max_message_bytes must be >= 1024, got {max_message_bytes}")
    if token is not None and not token:
        raise ValueError("token must be a non-empty string (or None for no authentication)")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    for name, value in (("idle_timeout", idle_timeout), ("request_timeout", request_timeout)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value}")
    if not stop_timeout > 0:
        raise ValueError(f"stop_timeout must be > 0 seconds, got {stop_timeout}")


async def close_server(server: Any) -> None:
    """Close a websockets server (503 to handshakes, 1001 to open connections) and wait for its handlers, at most
    a few seconds; then abort whatever is left."""
    server.close()
    try:
        async with asyncio.timeout(max(OPEN_TIMEOUT_S, CLOSE_TIMEOUT_S) + 1.0):
            await server.wait_closed()
    except TimeoutError:
        log.warning("connections still open after the close timeout: aborting them")
        for connection in list(server.all_connections):
            connection.transport.abort()
        for task in list(server.handler_tasks):
            task.cancel()


class JobQueue(Generic[T]):
    """FIFO with ``maxsize`` places, one consumer, and removal of any item (asyncio; not thread-safe)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._nonempty = asyncio.Event()

    def qsize(self) -> int:
        """Items waiting."""
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        """Append ``item``; raise asyncio.QueueFull when every place is taken."""
        if len(self._items) >= self.maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        self._nonempty.set()

    def remove(self, item: T) -> bool:
        """Take ``item`` out if it is still waiting; return whether it was."""
        if not any(x is item for x in self._items):
            return False
        self._items.remove(item)
        return True

    def drain(self) -> list[T]:
        """Take every waiting item out, oldest first."""
        items = list(self._items)
        self._items.clear()
        return items

    async def get(self) -> T:
        """The oldest item, waiting for one."""
        while not self._items:
            self._nonempty.clear()
            await self._nonempty.wait()
        return self._items.popleft()


class ModelThread:
    """Runs callables one at a time on a single daemon thread; :meth:`run` awaits one from asyncio."""

    def __init__(self, name: str = "cosmos3-model") -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future] | None] = queue.SimpleQueue()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a call is running now."""
        return self._busy.is_set()

    def _loop(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            self._busy.set()
            try:
                result = fn()
            except BaseException as exc:  # delivered to the awaiting coroutine, never lost in this thread
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                del item, fn, future  # the call's inputs and result are not kept alive by an idle thread
                self._busy.clear()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the model thread, after the calls already submitted; return its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((fn, future))
        return await asyncio.wrap_future(future)

    def shutdown(self, timeout: float) -> bool:
        """Stop after the calls submitted so far; wait at most ``timeout`` s. Return whether the thread ended."""
        self._calls.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Throttle:
    """``ready(key)``: the number of events for ``key`` since the last line when one may be logged now, else None."""

    def __init__(self, period_s: float = 5.0) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def ready(self, key: str) -> int | None:
        """Count one event for ``key``; return how many were suppressed before it if it may be logged, else None."""
        now = time.monotonic()
        if now - self._last.get(key, -1e18) >= self.period_s:
            self._last[key] = now
            return self._suppressed.pop(key, 0)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        return None
