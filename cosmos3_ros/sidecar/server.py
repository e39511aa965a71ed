# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar server: one model, many websocket clients, one model call at a time.

Wire format: openpi's (see :mod:`cosmos3_ros.sidecar.protocol`). On connect the server sends one metadata map; after
that every request gets exactly one reply, in order. A request that cannot be served gets a *text* frame, as openpi's
server sends its traceback (so ``openpi-client`` raises ``RuntimeError``), holding the JSON map ``{"error": type,
"message": text}``; unlike openpi's server (which then closes with 1011) the connection stays open, so a robot loop
keeps its connection and its next request is served. Requests in NVIDIA's DROID keys are read as its released DROID
policy server reads them (:mod:`cosmos3_ros.sidecar.droid`).

Admission, at the HTTP handshake (``process_request``, :mod:`cosmos3_ros.sidecar.gate`): ``/healthz`` needs no
token. With a token set, a handshake without it (``Authorization: Bearer T``, openpi-client's ``Authorization:
Api-Key T``, or ``?token=T``) gets HTTP 401 and a one-line reason (``unauthorized: no token ...`` or ``unauthorized:
wrong token``). Every token failure is this 401 (none is accepted and then closed with 1008 any more), so nothing
unauthenticated ever holds a connection slot. At most ``max_connections`` websocket connections are open; one more
gets HTTP 503 (``server full: ...; retry later``), as does any handshake while stopping.

Timeouts: a connection that sends no complete message for ``idle_timeout`` s (waiting between requests, or stalled
in the middle of one) is closed with 1008 and the reason ``idle timeout: ...``, which frees its receive buffer; the
idle clock does not run while the connection's request waits for the model. A reply the client does not take within
``idle_timeout`` aborts the connection. A request is answered within ``request_timeout`` s of its arrival: still
queued then, it gets ``busy`` (retry later); still running, ``model_error`` (the call finishes on the model thread
and its result is discarded). Handshakes must finish within ``OPEN_TIMEOUT_S``, closing handshakes within
``CLOSE_TIMEOUT_S``.

Memory: a connection holds at most about two messages' worth: the one being received (at most
``max_message_bytes``; a larger one closes the connection with 1009; frames are read only as fast as the handler
takes them) or the last one received (the websockets parser keeps it until the next frame, e.g. a keepalive pong),
and its one request waiting for or in the model (the parsed inputs only: the raw message and its msgpack decoding are
let go once parsed). The worst case is therefore about ``2 x max_connections x max_message_bytes`` (4 GiB at the
defaults, 64 x 32 MiB x 2; plan ``max_connections`` and ``max_message_mb`` to fit the host), and all of a connection's
share is released when it closes (an idle one: ``idle_timeout`` after its last reply).

Scheduling: one model call at a time, on one model thread. Requests wait in one FIFO queue of ``queue_size`` places
shared by all connections; a connection has at most one request queued or running (its next is read after its
reply), so clients are served in turn; a request that finds the queue full gets ``busy`` at once. A request whose
client disconnects leaves the queue at once and is never run; one already running finishes, its result discarded.

Stopping (``stop`` set): handshakes get 503, queued requests get ``unavailable``, the running call gets up to
``stop_timeout`` s to finish and be answered (else its client gets ``unavailable``), then every connection is closed
with 1001. Every wait is bounded, so a stop completes however the requests ended; the model thread is a daemon
thread, so a call that never returns does not keep the process alive.

Secrets: from :meth:`SidecarServer.serve` on, :mod:`cosmos3_ros.sidecar.redact` filters the ``websockets`` and
``cosmos3_ros`` loggers so that no ``token=`` query value, ``Authorization`` header value or the server's token
reaches a log handler, at any level. Tokens are compared in constant time.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

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
from cosmos3_ros.sidecar import redact
from cosmos3_ros.sidecar.gate import Gate, peer, respond, token_of
from cosmos3_ros.sidecar.jobs import ClientGoneError, Job, RequestTimeoutError, UnavailableError, classify, model_call
from cosmos3_ros.sidecar.limits import (
    CLOSE_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    OPEN_TIMEOUT_S,
    JobQueue,
    ModelThread,
    check_options,
    close_server,
)

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_QUEUE_SIZE", "SidecarServer", "check_options", "token_of"]

log = logging.getLogger(__name__)

DEFAULT_HOST: str = BY_NAME["host"].default
DEFAULT_PORT: int = BY_NAME["port"].default
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class SidecarServer:
    """Serve ``backend`` (any :class:`PolicyBackend`, normally the in-process runtime) over websockets.

    ``defaults`` are the sampling settings a request gets unless it overrides keys under ``settings``. ``token``
    ``None`` disables authentication (only sensible on loopback). The limits and timeouts (seconds) are described in
    the module docstring; their defaults are the schema's (``max_connections``, ``idle_timeout``,
    ``request_timeout``, ``max_message_mb``, ``queue``).
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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        warmup: bool = True,
    ) -> None:
        check_options(
            token=token,
            max_message_bytes=max_message_bytes,
            queue_size=queue_size,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            request_timeout=request_timeout,
            stop_timeout=stop_timeout,
        )
        self.backend = backend
        self.defaults = defaults
        self.host = host
        self.port = port
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.queue_size = queue_size
        self.max_connections = max_connections
        self.idle_timeout, self.request_timeout = float(idle_timeout), float(request_timeout)
        self.stop_timeout = float(stop_timeout)
        self.warmup = warmup
        self.warm = self.closing = False
        #: Requests answered, errors answered, requests dropped because their client left before they ran.
        self.served = self.errors = self.dropped = 0
        self.gate = Gate(token, max_connections)
        self._queue: JobQueue[Job] | None = None
        self._model: ModelThread | None = None
        self._running: Job | None = None
        self._jobs: weakref.WeakSet[Job] = weakref.WeakSet()
        self._answering = 0  # handlers between a request received and its reply sent
        self._metadata: dict[str, Any] = {}
        self._next_id = 0

    @property
    def connections(self) -> int:
        """Websocket connections holding a slot now (admitted at the handshake and not yet closed)."""
        return self.gate.connections

    @property
    def busy(self) -> bool:
        """Whether a model call is running for a request now."""
        return self._running is not None

    @property
    def requests_held(self) -> int:
        """Requests (with their decoded inputs) this server holds in memory: queued, running or being answered."""
        return len(self._jobs)

    @property
    def queued(self) -> int:
        """Requests waiting for the model now."""
        return self._queue.qsize() if self._queue is not None else 0

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
        redact.install([self.token])
        self._queue = JobQueue(self.queue_size)
        self._model = ModelThread()
        try:
            self._metadata = self.metadata()
            if self.warmup:
                log.info("warming up (%s) before accepting connections", self.defaults.domain_name)
                warm_s = await self._model.run(lambda: self.backend.warmup(self.defaults))
                log.info("warm-up done in %.2f s", warm_s)
            self.warm = True
            if stop.is_set():
                return
            worker = asyncio.create_task(self._worker(), name="cosmos3-sidecar-worker")
            server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                max_size=self.max_message_bytes,
                max_queue=0,  # read a connection's next frame only once its handler takes the last one
                open_timeout=OPEN_TIMEOUT_S,
                close_timeout=CLOSE_TIMEOUT_S,
                compression=None,
                server_header="cosmos3_ros-sidecar",
            )
            try:
                sockets = list(server.sockets)
                self.port = sockets[0].getsockname()[1] if sockets else self.port
                self._announce()
                if ready is not None:
                    ready(self.port)
                await stop.wait()
                log.info("stopping: refusing new requests, finishing the running one")
                self.closing = True
                self._fail_queued()
                await self._settle(time.perf_counter() + self.stop_timeout)
                worker.cancel()
            finally:
                await close_server(server)
            counts = (self.served, self.errors, self.dropped)
            log.info("stopped after %d request(s), %d error(s), %d dropped for a gone client", *counts)
        finally:
            if not self._model.shutdown(timeout=0.0 if self._model.busy else 1.0):
                log.warning("the model call still running is abandoned (the model thread does not block exit)")

    def _announce(self) -> None:
        where = f"{self.host}:{self.port}"
        limits = (self.max_connections, self.max_message_bytes / 2**20)
        log.info(
            "serving on ws://%s (health: http://%s/healthz)%s; at most %d connection(s), %.0f MiB a message",
            *(where, where, ", token required" * bool(self.token), *limits),
        )
        d = self.defaults
        log.info(
            "request defaults: domain %s, chunk %d x %d, %g fps, %d steps, guidance %g, shift %g, %s, %s, use_state %s",
            *(d.domain_name, d.action_chunk_size, d.action_width, d.fps, d.num_steps, d.guidance, d.shift),
            *(d.view_point, d.conditioning, d.use_state),
        )
        if self.host not in LOOPBACK_HOSTS and self.token is None:
            log.warning("listening on %s without a token: anyone who can reach this port can use the model", self.host)

    async def _settle(self, deadline: float) -> None:
        """Let the running call finish and every pending reply go out, until ``deadline`` (perf_counter)."""
        while (self._running is not None or self._answering) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        running = self._running
        if running is not None and not running.future.done():
            log.warning("the running model call did not finish within %g s; answering 'unavailable'", self.stop_timeout)
            text = f"the server is shutting down; the model call did not finish in {self.stop_timeout:g} s"
            running.future.set_exception(UnavailableError(text))
            end = time.perf_counter() + 1.0
            while self._answering and time.perf_counter() < end:
                await asyncio.sleep(0.01)

    def _fail_queued(self) -> None:
        assert self._queue is not None
        for job in self._queue.drain():
            if not job.future.done():
                job.future.set_exception(UnavailableError("the server is shutting down"))

    async def _worker(self) -> None:
        """Run queued jobs one at a time on the model thread, in arrival order."""
        assert self._queue is not None and self._model is not None
        while True:
            job = await self._queue.get()
            if job.future.done():
                continue
            if job.connection.state is not State.OPEN:  # client gone: do not spend the GPU on it; free its waiter
                job.future.set_exception(ClientGoneError("disconnected while its request waited; request dropped"))
                self.dropped += 1
                continue
            job.started = time.perf_counter()
            self._running = job
            try:
                result = await self._model.run(job.run)
            except Exception as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                self._running = None
                del job

    # -- HTTP and handshake -----------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: HttpRequest) -> Response | None:
        if urlsplit(request.path).path == "/healthz":
            ok = self.warm and not self.closing
            status = "ok" if ok else ("stopping" if self.closing else "warming")
            body = {"status": status, "queue": self.queued, "busy": self.busy, "served": self.served}
            code = http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE
            return respond(connection, code, json.dumps(body) + "\n", "application/json")
        return self.gate.admit(connection, request, self.closing)

    # -- connections ---------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        client = peer(ws)
        log.info("%s connected", client)
        closed = asyncio.ensure_future(ws.wait_closed())
        prev_total_ms: float | None = None
        try:
            await self._send(ws, proto.packb(self._metadata))
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        message = await ws.recv()
                except TimeoutError:
                    reason = f"idle timeout: no complete message in {self.idle_timeout:g} s"
                    log.info("%s closed: %s", client, reason)
                    await ws.close(CloseCode.POLICY_VIOLATION, reason)
                    return
                inbox = [message]  # _serve_one lets the raw message go once it is decoded
                del message
                self._answering += 1
                try:
                    prev_total_ms = await self._answer(ws, client, inbox, closed, prev_total_ms)
                finally:
                    self._answering -= 1
        except ConnectionClosed as exc:
            frame = exc.rcvd or exc.sent
            log.info("%s disconnected (%s)", client, f"close code {int(frame.code)}" if frame else "no close frame")
        except ClientGoneError as exc:
            log.info("%s %s", client, exc)
        finally:
            closed.cancel()
            self.gate.release(ws)

    async def _answer(
        self, ws: ServerConnection, client: str, inbox: list, closed: asyncio.Future, prev_total_ms: float | None
    ) -> float:
        """Serve one message and send its reply; return the total milliseconds (the next reply's prev_total_ms)."""
        t0 = time.perf_counter()
        self._next_id += 1
        rid = self._next_id
        try:
            reply, what = await self._serve_one(inbox, ws, closed)
        except ClientGoneError:
            raise
        except Exception as exc:  # a bug in this server: answer, log, and keep serving
            log.exception("%s #%d: unexpected error", client, rid)
            self.errors += 1
            reply = proto.error_reply(proto.ERROR_INTERNAL, f"{type(exc).__name__}: {exc}")
            what = "internal_error"
        if prev_total_ms is not None:
            reply["server_timing"]["prev_total_ms"] = prev_total_ms
        t_pack = time.perf_counter()
        data: bytes | str
        try:
            data = proto.error_frame(reply) if "error" in reply else proto.packb(reply)
        except Exception as exc:  # a reply we cannot encode is our bug, not the client's
            log.exception("%s #%d: cannot encode reply", client, rid)
            data = proto.error_frame(proto.error_reply(proto.ERROR_INTERNAL, f"cannot encode reply: {exc}"))
            what = "internal_error"
        pack_ms = (time.perf_counter() - t_pack) * 1e3
        st = reply.get("server_timing", {})
        del reply
        await self._send(ws, data)
        total_ms = (time.perf_counter() - t0) * 1e3
        phases = [st.get(key, 0.0) for key in ("infer_ms", "queue_ms", "unpack_ms")]
        log.info(
            "%s #%d %s: infer %.1f ms, queue %.1f ms, unpack %.1f ms, pack %.1f ms, total %.1f ms, %d B out",
            *(client, rid, what, *phases, pack_ms, total_ms, len(data)),
        )
        return total_ms

    async def _send(self, ws: ServerConnection, data: bytes | str) -> None:
        """Send ``data``; a client that does not take it within ``idle_timeout`` loses the connection."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                await ws.send(data)
        except TimeoutError:
            log.warning("%s did not take its reply within %g s: connection aborted", peer(ws), self.idle_timeout)
            ws.transport.abort()
            raise ClientGoneError("connection aborted: the reply was not taken") from None

    async def _serve_one(self, inbox: list, ws: ServerConnection, closed: asyncio.Future) -> tuple[dict, str]:
        """Turn the message in ``inbox`` into one reply; never raises (except ClientGoneError for a gone client).

        Once decoded, neither the raw message nor its msgpack decoding is kept: a request waiting for the model holds
        only its parsed inputs (one owned copy of the image).
        """
        message = inbox.pop()
        request, timing, refusal = proto.parse_frame(message, self.defaults)
        del message
        if refusal is not None:
            self.errors += 1
            return refusal, f"bad_request ({refusal['error']['message']})"
        if isinstance(request, proto.Control):
            return {"__ack__": request.name, "server_timing": timing}, f"control {request.name}"

        what = f"{request.mode} {request.image.shape[0]}x{request.image.shape[1]} steps {request.settings.num_steps}"
        if self.closing:
            self.errors += 1
            return proto.error_reply(
                proto.ERROR_UNAVAILABLE, "the server is shutting down", timing, request.timestamp
            ), what
        future = asyncio.get_running_loop().create_future()
        job = Job(fn=model_call(self.backend, request), future=future, connection=ws)
        self._jobs.add(job)
        assert self._queue is not None
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.errors += 1
            message = f"busy: {self.queue_size} request(s) already waiting for the model; retry later"
            return proto.error_reply(proto.ERROR_BUSY, message, timing, request.timestamp), what + " -> busy"
        try:
            result = await self._wait(job, closed)
        except ClientGoneError:
            raise
        except Exception as exc:
            timing.update(job.timing_ms())
            kind, text = classify(exc)
            if kind == proto.ERROR_INTERNAL:
                log.error("model call failed unexpectedly", exc_info=exc)
            self.errors += 1
            return proto.error_reply(kind, text, timing, request.timestamp), f"{what} -> {kind} ({text})"
        timing.update(job.timing_ms())
        timing.update(proto.model_timing_ms(result.timing))
        if request.mode == "policy":
            try:
                reply = proto.policy_reply(request, result, timing)
            except (BackendError, NonFiniteOutputError) as exc:  # checked before it is sent: nothing goes out
                kind, text = classify(exc)
                log.error("%s", text)
                self.errors += 1
                return proto.error_reply(kind, text, timing, request.timestamp), f"{what} -> {kind} ({text})"
        else:
            reply = proto.forward_dynamics_reply(request, result, timing)
        self.served += 1
        return reply, what + " -> ok"

    async def _wait(self, job: Job, closed: asyncio.Future) -> Any:
        """The result, within ``request_timeout`` of its arrival; ClientGoneError when the client leaves first.

        Both ends come as the job's exception (set by a callback), so the common case is a plain await."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()

        def end(exc: Exception) -> None:
            if not job.future.done():
                job.future.set_exception(exc)

        def gone(_: object) -> None:
            end(ClientGoneError("disconnected while its request waited; request dropped"))

        def late() -> None:
            if not job.started:
                text = f"busy: waited {self.request_timeout:g} s in the queue (request_timeout); retry later"
                end(RequestTimeoutError(proto.ERROR_BUSY, text))
            else:
                text = f"the model call did not finish within request_timeout ({self.request_timeout:g} s)"
                end(RequestTimeoutError(proto.ERROR_MODEL, text + "; result discarded"))

        closed.add_done_callback(gone)
        timer = loop.call_at(loop.time() + job.enqueued + self.request_timeout - time.perf_counter(), late)
        try:
            return await job.future
        except ClientGoneError:
            self.dropped += self._queue.remove(job)
            raise
        finally:
            timer.cancel()
            closed.remove_done_callback(gone)
            self._queue.remove(job)  # leaves the queue at once: never run, its memory released
            if not job.future.done():
                job.future.cancel()
