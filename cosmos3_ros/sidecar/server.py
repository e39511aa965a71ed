# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar server: one model, many websocket clients, one GPU job at a time.

Wire format: openpi's (see :mod:`cosmos3_ros.sidecar.protocol`). On connect the server checks
the token, then sends one metadata map; after that every binary request gets exactly one
reply, in order. A request that cannot be served gets ``{"error": {"type", "message"}}``
and the connection stays open (openpi instead sends a traceback as a text frame and closes
with 1011; a robot loop is better served by a reply it can act on and a connection it keeps).

Scheduling: model calls run on a single worker thread. Requests wait in one FIFO queue of
``queue_size`` places shared by all connections; a connection has at most one request in
the queue or running (it waits for its reply before the next is read), so clients are
served in turn. A request that finds the queue full is answered at once with a ``busy``
error. A queued request whose client has disconnected is skipped.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Request as HttpRequest
from websockets.asyncio.server import Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from cosmos3_ros.core.backend import BackendError, PolicyBackend
from cosmos3_ros.core.results import NonFiniteOutputError
from cosmos3_ros.core.schema import BY_NAME
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.sidecar import protocol as proto

log = logging.getLogger(__name__)

DEFAULT_HOST: str = BY_NAME["host"].default
DEFAULT_PORT: int = BY_NAME["port"].default
DEFAULT_MAX_MESSAGE_BYTES = int(BY_NAME["max_message_mb"].default * 2**20)
DEFAULT_QUEUE_SIZE: int = BY_NAME["queue"].default
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class _Job:
    """One model call waiting for (or on) the worker thread."""

    fn: Callable[[], Any]
    future: asyncio.Future
    connection: ServerConnection
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    infer_s: float = 0.0


def token_of(request: HttpRequest) -> str | None:
    """The token of a handshake: ``Authorization: Bearer T`` (openpi-client: ``Api-Key T``) or ``?token=T``."""
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() in ("bearer", "api-key") and value.strip():
            return value.strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


class SidecarServer:
    """Serve ``backend`` (any :class:`PolicyBackend`, normally the in-process runtime) over websockets.

    ``defaults`` are the sampling settings a request gets unless it overrides keys under
    ``settings``. ``token`` ``None`` disables authentication (only sensible on loopback).
    """

    def __init__(
        self,
        backend: PolicyBackend,
        defaults: PolicySettings,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        warmup: bool = True,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {max_message_bytes}")
        if token is not None and not token:
            raise ValueError("token must be a non-empty string (or None for no authentication)")
        self.backend = backend
        self.defaults = defaults
        self.host = host
        self.port = port
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.queue_size = queue_size
        self.warmup = warmup
        self.warm = False
        self.closing = False
        self.served = 0
        self.errors = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running: _Job | None = None
        self._metadata: dict[str, Any] = {}
        self._next_id = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The map sent to every client right after it connects."""
        import msgpack
        import numpy
        import websockets

        info = self.backend.info()
        d = self.defaults
        versions = dict(info.versions)
        versions.update(
            numpy=numpy.__version__,
            msgpack=".".join(map(str, msgpack.version)),
            websockets=websockets.__version__,
        )
        return {
            "protocol": proto.PROTOCOL,
            "server": "cosmos3_ros sidecar",
            "model": info.model,
            "domain": d.domain_name,
            "action_chunk_size": d.action_chunk_size,
            "action_dim": d.action_width,
            "model_action_dim": info.action_dim,
            "fps": d.fps,
            "image_size": d.image_size,
            "settings": d.to_dict(),
            "settings_keys": list(proto.SETTINGS_KEYS),
            "modes": list(proto.MODES),
            "domains": list(info.domains),
            "camera_keys": list(proto.CAMERA_KEYS),
            "device": info.device,
            "dtype": info.dtype,
            "versions": versions,
            "max_message_bytes": self.max_message_bytes,
            "queue_size": self.queue_size,
            "auth": self.token is not None,
        }

    async def serve(self, stop: asyncio.Event, ready: Callable[[int], None] | None = None) -> None:
        """Warm up, listen until ``stop`` is set, then drain and close. ``ready(port)`` runs once listening."""
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosmos3-model")
        try:
            self._metadata = self.metadata()
            if self.warmup:
                log.info("warming up (%s) before accepting connections", self.defaults.domain_name)
                warm_s = await loop.run_in_executor(self._executor, self.backend.warmup, self.defaults)
                log.info("warm-up done in %.2f s", warm_s)
            self.warm = True
            if stop.is_set():
                return
            worker = asyncio.create_task(self._worker(), name="cosmos3-sidecar-worker")
            async with serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                max_size=self.max_message_bytes,
                compression=None,
                server_header="cosmos3_ros-sidecar",
            ) as server:
                sockets = list(server.sockets)
                self.port = sockets[0].getsockname()[1] if sockets else self.port
                where = f"{self.host}:{self.port}"
                log.info(
                    "serving on ws://%s (health: http://%s/healthz)%s",
                    where,
                    where,
                    ", token required" * bool(self.token),
                )
                if self.host not in LOOPBACK_HOSTS and self.token is None:
                    log.warning(
                        "listening on %s without a token: anyone who can reach this port can use the model", self.host
                    )
                if ready is not None:
                    ready(self.port)
                await stop.wait()
                log.info("stopping: refusing new requests, finishing the running one")
                self.closing = True
                self._fail_queued()
                while self._running is not None:
                    await asyncio.sleep(0.01)
                worker.cancel()
            log.info("stopped after %d request(s), %d error(s)", self.served, self.errors)
        finally:
            self._executor.shutdown(wait=True)

    def _fail_queued(self) -> None:
        assert self._queue is not None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(_UnavailableError("the server is shutting down"))

    async def _worker(self) -> None:
        """Run queued jobs one at a time on the model thread, in arrival order."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            if job.future.done() or job.connection.state is not State.OPEN:
                continue  # client gone: do not spend the GPU on it
            job.started = time.perf_counter()
            self._running = job
            try:
                result = await loop.run_in_executor(self._executor, _timed, job)
            except Exception as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                self._running = None

    # -- HTTP and handshake -----------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: HttpRequest) -> Response | None:
        if urlsplit(request.path).path == "/healthz":
            ok = self.warm and not self.closing
            body = {
                "status": "ok" if ok else ("stopping" if self.closing else "warming"),
                "queue": self._queue.qsize() if self._queue is not None else 0,
                "busy": self._running is not None,
                "served": self.served,
            }
            status = http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE
            response = connection.respond(status, json.dumps(body) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    def _authorized(self, request: HttpRequest | None) -> str | None:
        """None when the connection may proceed, else the close reason (at most 123 bytes)."""
        if self.token is None:
            return None
        given = token_of(request) if request is not None else None
        if given is None:
            return "unauthorized: no token (send 'Authorization: Bearer <token>' or ?token=<token>)"
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8")):
            return "unauthorized: wrong token"
        return None

    # -- connections ---------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        peer = _peer(ws)
        reason = self._authorized(ws.request)
        if reason is not None:
            log.warning("%s rejected: %s", peer, reason)
            await ws.close(CloseCode.POLICY_VIOLATION, reason)
            return
        log.info("%s connected", peer)
        prev_total_ms: float | None = None
        try:
            await ws.send(proto.packb(self._metadata))
            while True:
                message = await ws.recv()
                t0 = time.perf_counter()
                self._next_id += 1
                rid = self._next_id
                try:
                    reply, what = await self._serve_one(message, ws)
                except Exception as exc:  # a bug in this server: answer, log, and keep serving
                    log.exception("%s #%d: unexpected error", peer, rid)
                    self.errors += 1
                    reply = proto.error_reply(proto.ERROR_INTERNAL, f"{type(exc).__name__}: {exc}")
                    what = "internal_error"
                if prev_total_ms is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total_ms
                t_pack = time.perf_counter()
                try:
                    data = proto.packb(reply)
                except Exception as exc:  # a reply we cannot encode is our bug, not the client's
                    log.exception("%s #%d: cannot encode reply", peer, rid)
                    data = proto.packb(proto.error_reply(proto.ERROR_INTERNAL, f"cannot encode reply: {exc}"))
                    what = "internal_error"
                pack_ms = (time.perf_counter() - t_pack) * 1e3
                await ws.send(data)
                prev_total_ms = (time.perf_counter() - t0) * 1e3
                st = reply.get("server_timing", {})
                log.info(
                    "%s #%d %s: infer %.1f ms, queue %.1f ms, unpack %.1f ms, pack %.1f ms, total %.1f ms, %d B out",
                    peer,
                    rid,
                    what,
                    st.get("infer_ms", 0.0),
                    st.get("queue_ms", 0.0),
                    st.get("unpack_ms", 0.0),
                    pack_ms,
                    prev_total_ms,
                    len(data),
                )
        except ConnectionClosed as exc:
            frame = exc.rcvd or exc.sent
            log.info("%s disconnected (%s)", peer, f"close code {int(frame.code)}" if frame else "no close frame")

    async def _serve_one(self, message: Any, ws: ServerConnection) -> tuple[dict[str, Any], str]:
        """Turn one message into one reply; never raises (except for a closed connection)."""
        t0 = time.perf_counter()
        timing: dict[str, float] = {"infer_ms": 0.0, "queue_ms": 0.0, "unpack_ms": 0.0}
        decoded: Any = None
        try:
            if isinstance(message, str):
                raise proto.ProtocolError("text frames are not accepted: send msgpack maps as binary frames")
            decoded = proto.unpackb(message)
            request = proto.parse_message(decoded, self.defaults)
        except proto.ProtocolError as exc:
            timing["unpack_ms"] = (time.perf_counter() - t0) * 1e3
            self.errors += 1
            return proto.error_reply(
                proto.ERROR_BAD_REQUEST, str(exc), timing, proto.timestamp_of(decoded)
            ), f"bad_request ({exc})"
        timing["unpack_ms"] = (time.perf_counter() - t0) * 1e3
        if isinstance(request, proto.Control):
            return {"__ack__": request.name, "server_timing": timing}, f"control {request.name}"

        what = f"{request.mode} {request.image.shape[0]}x{request.image.shape[1]} steps {request.settings.num_steps}"
        if self.closing:
            self.errors += 1
            return proto.error_reply(
                proto.ERROR_UNAVAILABLE, "the server is shutting down", timing, request.timestamp
            ), what
        job = _Job(fn=self._call(request), future=asyncio.get_running_loop().create_future(), connection=ws)
        assert self._queue is not None
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.errors += 1
            message = f"busy: {self.queue_size} request(s) already waiting for the model; retry later"
            return proto.error_reply(proto.ERROR_BUSY, message, timing, request.timestamp), what + " -> busy"
        try:
            result = await job.future
        except Exception as exc:
            timing.update(_job_timing(job))
            kind, text = _classify(exc)
            if kind == proto.ERROR_INTERNAL:
                log.error("model call failed unexpectedly", exc_info=exc)
            self.errors += 1
            return proto.error_reply(kind, text, timing, request.timestamp), f"{what} -> {kind} ({text})"
        finally:
            if not job.future.done():
                job.future.cancel()
        timing.update(_job_timing(job))
        timing.update(proto.model_timing_ms(result.timing))
        self.served += 1
        if request.mode == "policy":
            return proto.policy_reply(request, result, timing), what + " -> ok"
        return proto.forward_dynamics_reply(request, result, timing), what + " -> ok"

    def _call(self, request: proto.Request) -> Callable[[], Any]:
        backend = self.backend
        if request.mode == "policy":
            return lambda: backend.policy(
                request.image,
                request.settings,
                observation_stamp=request.timestamp,
                return_video=request.return_video,
                state=request.state,
            )
        return lambda: backend.forward_dynamics(
            request.image, request.actions, request.settings, observation_stamp=request.timestamp
        )


class _UnavailableError(RuntimeError):
    """The server is stopping."""


def _timed(job: _Job) -> Any:
    t0 = time.perf_counter()
    try:
        return job.fn()
    finally:
        job.infer_s = time.perf_counter() - t0


def _job_timing(job: _Job) -> dict[str, float]:
    queue_s = (job.started - job.enqueued) if job.started else (time.perf_counter() - job.enqueued)
    return {"infer_ms": job.infer_s * 1e3, "queue_ms": max(queue_s, 0.0) * 1e3}


def _classify(exc: BaseException) -> tuple[str, str]:
    """Error reply type and message for an exception raised by a model call."""
    text = f"{exc}" or type(exc).__name__
    if isinstance(exc, _UnavailableError):
        return proto.ERROR_UNAVAILABLE, text
    if isinstance(exc, NonFiniteOutputError):
        return proto.ERROR_NON_FINITE, text
    if isinstance(exc, ValueError):
        return proto.ERROR_BAD_REQUEST, text
    if isinstance(exc, BackendError):
        return proto.ERROR_MODEL, text
    return proto.ERROR_INTERNAL, f"{type(exc).__name__}: {text}"


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)
