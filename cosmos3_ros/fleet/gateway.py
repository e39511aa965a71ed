# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The Gateway deployment: the fleet's websocket front, the sidecar's protocol on Ray Serve's HTTP proxy.

What a robot sees is what ``cosmos3-ros sidecar`` shows it (same functions: :mod:`cosmos3_ros.sidecar.protocol`,
:mod:`~cosmos3_ros.sidecar.gate`, :mod:`~cosmos3_ros.sidecar.jobs`): the metadata map on connect (``server``:
``cosmos3_ros fleet``), one reply per request in order, an error as a text frame ``{"error": type, "message": ...}``
with the connection kept, ``GET /healthz`` without a token, and at the handshake HTTP 401 for a missing or wrong
token and HTTP 503 past ``max_connections`` (per gateway replica). The limits are the sidecar's ``server`` settings:
``max_message_mb`` (at most 16 MiB, the proxy's own cap; 1009 past it), ``idle_timeout`` (1008 ``idle timeout:
...``), ``request_timeout`` (``model_error``), ``queue`` (requests this gateway lets wait once every replica holds
its ``max_ongoing_requests``; past it ``busy``).

Each request is routed on its own to a Policy replica (Ray Serve: the less loaded of two), so consecutive requests
of one robot may run on different replicas; the policy keeps no state between requests. A replica that dies while it
runs a request makes Ray raise here at once: the robot gets ``model_error`` (``the model replica serving this request
failed ...; retry``) and keeps its connection; its next request goes to a live replica (or waits for the restarted
one). A robot that disconnects while its request waits or runs has the request cancelled.

A reply carries ``fleet``: which replica served it, the size of the model call it was part of (``batch_size``,
``batched``: one batched call) and the replica's batch number and time (``batch``, ``batch_ms``, ``wait_ms``).
"""

import asyncio
import http
import logging
import os
import socket
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from ray import serve
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.responses import JSONResponse, PlainTextResponse

from cosmos3_ros.core.backend import BackendError
from cosmos3_ros.core.results import ModelInfo, NonFiniteOutputError
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.fleet.batching import Outcome
from cosmos3_ros.fleet.config import GatewayLimits
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar import redact
from cosmos3_ros.sidecar.gate import Gate
from cosmos3_ros.sidecar.jobs import classify
from cosmos3_ros.sidecar.limits import Throttle
from cosmos3_ros.sidecar.server import SidecarServer

log = logging.getLogger("cosmos3_ros.fleet.gateway")

#: Seconds a new connection waits for a model replica to describe the model before it is refused with 503.
METADATA_TIMEOUT_S = 30.0
#: Seconds ``/healthz`` keeps the replica states it read from the Serve controller.
STATUS_TTL_S = 1.0
POLICY_DEPLOYMENT = "Policy"

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


class _QuietBackpressure(logging.Filter):
    """Drops Ray Serve's line per request refused for backpressure: the gateway answers ``busy`` and logs it itself,
    at most one line per reason every few seconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "dropped due to backpressure" not in record.getMessage()


class _RobotGoneError(Exception):
    """The robot disconnected."""


def _request_view(websocket: WebSocket) -> SimpleNamespace:
    """What :meth:`Gate.authorized` reads of a handshake: the headers and the path with its query."""
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    return SimpleNamespace(headers=websocket.headers, path=quote(websocket.url.path) + (f"?{query}" if query else ""))


def ray_error(exc: BaseException) -> tuple[str, str]:
    """Error type and text for a failure of the call to a replica (not of the model call itself)."""
    if isinstance(exc, TimeoutError):
        return proto.ERROR_MODEL, str(exc)
    if isinstance(exc, BackPressureError):
        return proto.ERROR_BUSY, "busy: every model replica is full and the gateway's queue too; retry later"
    if isinstance(exc, RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        return proto.ERROR_INTERNAL, f"{type(cause).__name__}: {cause}"
    if isinstance(exc, RayActorError):
        return proto.ERROR_MODEL, (
            f"the model replica serving this request failed ({type(exc).__name__}); Ray Serve replaces it; retry"
        )
    if isinstance(exc, RayError):
        return proto.ERROR_MODEL, f"the fleet could not run this request ({type(exc).__name__}: {exc}); retry"
    return classify(exc)


@serve.ingress(app)
class Gateway:
    """Websocket front of the fleet (wrapped by ``serve.deployment`` in :mod:`cosmos3_ros.fleet.app`)."""

    def __init__(self, policy: DeploymentHandle, defaults: dict[str, Any], limits: GatewayLimits) -> None:
        self.policy = policy
        self.defaults = PolicySettings.from_dict(defaults)
        self.limits = limits
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        redact.install([limits.token])
        logging.getLogger("ray.serve").addFilter(_QuietBackpressure())
        self.gate = Gate(limits.token, limits.max_connections)
        self.connections = self.in_flight = 0
        #: Requests answered, errors answered, handshakes refused (by HTTP status).
        self.served = self.errors = 0
        self.refused: dict[int, int] = {}
        self._throttle = Throttle()
        self._metadata: dict[str, Any] | None = None
        self._metadata_lock = asyncio.Lock()
        self._status: tuple[float, dict[str, int]] = (0.0, {})

    # -- HTTP ---------------------------------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """200 with ``status: ok`` while at least one model replica is RUNNING (warm), else 503 ``warming``."""
        states = await self._replica_states()
        ok = states.get("RUNNING", 0) > 0
        body = {
            "status": "ok" if ok else "warming",
            "replicas": states,
            "connections": self.connections,
            "in_flight": self.in_flight,
            "served": self.served,
            "errors": self.errors,
            "gateway": self.name,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def _replica_states(self) -> dict[str, int]:
        at, states = self._status
        if time.monotonic() - at < STATUS_TTL_S:
            return states
        app_name = serve.get_replica_context().app_name

        def read() -> dict[str, int]:
            application = serve.status().applications.get(app_name)
            deployment = application.deployments.get(POLICY_DEPLOYMENT) if application else None
            return {str(k): int(v) for k, v in (deployment.replica_states if deployment else {}).items()}

        try:
            states = await asyncio.to_thread(read)
        except Exception as exc:  # the controller is restarting: say so, do not fail the probe's HTTP
            log.warning("cannot read the replica states: %s", exc)
            states = {}
        self._status = (time.monotonic(), states)
        return states

    async def _model_metadata(self) -> dict[str, Any]:
        """The sidecar's metadata map for the served model (asked of a replica once, then kept)."""
        async with self._metadata_lock:
            if self._metadata is None:
                info = await asyncio.wait_for(self.policy.info.remote(), METADATA_TIMEOUT_S)
                model: ModelInfo = info["model"]
                server = SimpleNamespace(
                    backend=SimpleNamespace(info=lambda: model),
                    defaults=self.defaults,
                    max_message_bytes=self.limits.max_message_bytes,
                    queue_size=self.limits.queue,
                    token=self.limits.token,
                )
                metadata = SidecarServer.metadata(server)  # type: ignore[arg-type]  # the sidecar's own map
                metadata["server"] = "cosmos3_ros fleet"
                self._metadata = metadata
            return self._metadata

    async def _refuse(self, websocket: WebSocket, status: http.HTTPStatus, reason: str) -> None:
        self.refused[status.value] = self.refused.get(status.value, 0) + 1
        suppressed = self._throttle.ready(f"{status.value} {reason}")
        if suppressed is not None:
            more = f" (and {suppressed} more like it)" if suppressed else ""
            client = websocket.client
            who = f"{client.host}:{client.port}" if client else "?"
            log.warning("%s refused with HTTP %d: %s%s", who, status.value, reason, more)
        headers = {"WWW-Authenticate": 'Bearer realm="cosmos3_ros fleet"'} if status == 401 else None
        await websocket.send_denial_response(PlainTextResponse(reason + "\n", status.value, headers=headers))

    # -- websocket ----------------------------------------------------------------------------------------------

    @app.websocket("/{path:path}")
    async def robot(self, websocket: WebSocket, path: str = "") -> None:
        """One robot's connection: admission at the handshake, then one reply per request."""
        reason = self.gate.authorized(_request_view(websocket))
        if reason is not None:
            await self._refuse(websocket, http.HTTPStatus.UNAUTHORIZED, reason)
            return
        if self.connections >= self.limits.max_connections:
            text = f"server full: {self.limits.max_connections} connection(s) open (max_connections); retry later"
            await self._refuse(websocket, http.HTTPStatus.SERVICE_UNAVAILABLE, text)
            return
        self.connections += 1
        try:
            try:
                metadata = await self._model_metadata()
            except Exception as exc:
                text = f"unavailable: no model replica answered ({type(exc).__name__}); retry later"
                await self._refuse(websocket, http.HTTPStatus.SERVICE_UNAVAILABLE, text)
                return
            await websocket.accept()
            await websocket.send_bytes(proto.packb(metadata))
            await self._serve(websocket)
        except (_RobotGoneError, WebSocketDisconnect):
            pass
        except (RuntimeError, OSError, RayError) as exc:  # the robot or the proxy (shutting down) is gone
            log.debug("connection ended: %s", exc)
        finally:
            self.connections -= 1

    async def _serve(self, websocket: WebSocket) -> None:
        rx: asyncio.Task | None = None
        prev_total_ms: float | None = None
        try:
            while True:
                if rx is None:
                    rx = asyncio.ensure_future(websocket.receive())
                try:
                    message = await asyncio.wait_for(asyncio.shield(rx), self.limits.idle_timeout)
                except TimeoutError:
                    reason = f"idle timeout: no complete message in {self.limits.idle_timeout:g} s"
                    await websocket.close(1008, reason)
                    return
                rx = None
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is not None and len(data) > self.limits.max_message_bytes:
                    limit = self.limits.max_message_bytes
                    await websocket.close(1009, f"message of {len(data)} bytes; the limit is {limit}")
                    return
                t0 = time.perf_counter()
                rx = asyncio.ensure_future(websocket.receive())  # a disconnect while this request runs cancels it
                reply = await self._answer(data, message.get("text"), rx)
                if prev_total_ms is not None:
                    reply.setdefault("server_timing", {})["prev_total_ms"] = prev_total_ms
                try:
                    out: bytes | str = proto.error_frame(reply) if "error" in reply else proto.packb(reply)
                except Exception as exc:  # a reply we cannot encode is our bug, not the robot's
                    log.exception("cannot encode a reply")
                    out = proto.error_frame(proto.error_reply(proto.ERROR_INTERNAL, f"cannot encode reply: {exc}"))
                del reply
                if isinstance(out, str):
                    await websocket.send_text(out)
                else:
                    await websocket.send_bytes(out)
                prev_total_ms = (time.perf_counter() - t0) * 1e3
        finally:
            if rx is not None and not rx.done():
                rx.cancel()

    async def _answer(self, data: bytes | None, text: str | None, rx: asyncio.Task) -> dict[str, Any]:
        """The reply map for one message (an error reply for anything that cannot be served)."""
        request, timing, refusal = proto.parse_frame(data if data is not None else text or "", self.defaults)
        del data
        if refusal is not None:
            self.errors += 1
            return refusal
        if isinstance(request, proto.Control):
            return {"__ack__": request.name, "server_timing": timing}
        t_sent = time.perf_counter()
        self.in_flight += 1
        try:
            outcome = await self._call(request, rx)
        except _RobotGoneError:
            raise
        except Exception as exc:
            kind, message = ray_error(exc)
            if kind == proto.ERROR_INTERNAL:
                log.error("request failed in the fleet: %s", message)
            else:
                suppressed = self._throttle.ready(kind)
                if suppressed is not None:
                    more = f" (and {suppressed} more like it)" if suppressed else ""
                    log.warning("answered %s: %s%s", kind, message, more)
            self.errors += 1
            timing["queue_ms"] = (time.perf_counter() - t_sent) * 1e3
            return proto.error_reply(kind, message, timing, request.timestamp)
        finally:
            self.in_flight -= 1
        timing["infer_ms"] = outcome.infer_s * 1e3
        timing["queue_ms"] = max((time.perf_counter() - t_sent) * 1e3 - timing["infer_ms"], 0.0)
        fleet = dict(outcome.fleet, batch_size=outcome.batch_size, batched=outcome.batched)
        if outcome.error is not None:
            self.errors += 1
            reply = proto.error_reply(*outcome.error, timing, request.timestamp)
            reply["fleet"] = fleet
            return reply
        timing.update(proto.model_timing_ms(outcome.result.timing))
        try:
            if request.mode == "policy":
                reply = proto.policy_reply(request, outcome.result, timing)
            else:
                reply = proto.forward_dynamics_reply(request, outcome.result, timing)
        except (BackendError, NonFiniteOutputError) as exc:  # checked before it is sent, as the sidecar does
            kind, message = classify(exc)
            self.errors += 1
            return proto.error_reply(kind, message, timing, request.timestamp)
        reply["fleet"] = fleet
        self.served += 1
        return reply

    async def _call(self, request: proto.Request, rx: asyncio.Task) -> Outcome:
        """The replica's outcome within ``request_timeout``; _RobotGoneError when the robot disconnects first (the
        request is cancelled). A message that arrives meanwhile stays in ``rx`` for the next turn."""
        response = self.policy.infer.remote(request)
        call = asyncio.ensure_future(self._await(response))
        deadline = time.perf_counter() + self.limits.request_timeout
        try:
            while True:
                waits = {call} if rx.done() else {call, rx}
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                done, _ = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if call in done:
                    return call.result()
                if rx in done and rx.result()["type"] == "websocket.disconnect":
                    raise _RobotGoneError
            timeout = self.limits.request_timeout
            raise TimeoutError(f"no answer within request_timeout ({timeout:g} s); the request was cancelled")
        finally:
            if not call.done():
                response.cancel()
                call.cancel()

    @staticmethod
    async def _await(response: Any) -> Outcome:
        return await response
