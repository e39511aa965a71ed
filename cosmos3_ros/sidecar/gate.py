# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Admission of the sidecar server, decided at the HTTP handshake before a websocket exists.

:class:`Gate` refuses a handshake without the right token with HTTP 401, and one more than ``max_connections`` with
HTTP 503; an admitted connection holds a slot until it closes (or its handshake fails after all, e.g. a plain HTTP
request answered 426). Refusals are logged, at most one line per reason every few seconds, and counted.
"""

from __future__ import annotations

import hmac
import http
import logging
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Request as HttpRequest
from websockets.asyncio.server import Response, ServerConnection
from websockets.protocol import State

from cosmos3_ros.sidecar.limits import Throttle

log = logging.getLogger("cosmos3_ros.sidecar.server")

NO_TOKEN = "unauthorized: no token (send 'Authorization: Bearer <token>' or ?token=<token>)"
WRONG_TOKEN = "unauthorized: wrong token"


def token_of(request: HttpRequest) -> str | None:
    """The token of a handshake: ``Authorization: Bearer T`` (openpi-client: ``Api-Key T``) or ``?token=T``."""
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() in ("bearer", "api-key") and value.strip():
            return value.strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


def respond(connection: ServerConnection, status: http.HTTPStatus, body: str, content_type: str) -> Response:
    """An HTTP response with ``body`` of ``content_type``."""
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


def peer(connection: ServerConnection) -> str:
    """``host:port`` of the client."""
    addr = connection.remote_address
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def _gone(connection: ServerConnection) -> bool:
    """Whether ``connection`` no longer needs its slot: closed, or its handshake ended without a websocket."""
    response = connection.response
    refused = response is not None and response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS
    return refused or connection.state is State.CLOSED


class Gate:
    """Token check and connection slots at the handshake (see the module docstring)."""

    def __init__(self, token: str | None, max_connections: int) -> None:
        self.token = token
        self.max_connections = max_connections
        #: Handshakes refused, by HTTP status (401, 503).
        self.refused: dict[int, int] = {}
        self._slots: set[ServerConnection] = set()
        self._throttle = Throttle()

    @property
    def connections(self) -> int:
        """Connections holding a slot now."""
        self._slots = {c for c in self._slots if not _gone(c)}
        return len(self._slots)

    def authorized(self, request: HttpRequest) -> str | None:
        """None when the handshake carries the token (or none is needed), else the refusal reason."""
        if self.token is None:
            return None
        given = token_of(request)
        if given is None:
            return NO_TOKEN
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8")):
            return WRONG_TOKEN
        return None

    def admit(self, connection: ServerConnection, request: HttpRequest, closing: bool) -> Response | None:
        """None (a slot taken) to let the handshake proceed, else the refusal: 401 first, then 503."""
        reason = self.authorized(request)
        if reason is not None:
            return self.refuse(connection, http.HTTPStatus.UNAUTHORIZED, reason)
        if closing:
            return self.refuse(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "unavailable: the server is stopping")
        if self.connections >= self.max_connections:
            reason = f"server full: {self.max_connections} connection(s) open (max_connections); retry later"
            return self.refuse(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, reason)
        self._slots.add(connection)
        return None

    def release(self, connection: ServerConnection) -> None:
        """Free the slot of a connection whose handler ended."""
        self._slots.discard(connection)

    def refuse(self, connection: ServerConnection, status: http.HTTPStatus, reason: str) -> Response:
        """Count, log (throttled) and answer a refused handshake: ``reason`` is the one-line body."""
        self.refused[status.value] = self.refused.get(status.value, 0) + 1
        suppressed = self._throttle.ready(f"{status.value} {reason}")
        if suppressed is not None:
            more = f" (and {suppressed} more like it)" if suppressed else ""
            log.warning("%s refused with HTTP %d: %s%s", peer(connection), status.value, reason, more)
        response = respond(connection, status, reason + "\n", "text/plain; charset=utf-8")
        if status == http.HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Bearer realm="cosmos3_ros sidecar"'
        return response
