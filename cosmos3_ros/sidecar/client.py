# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``SidecarBackend``: the policy runs in another process (or machine) behind a websocket.

Talks openpi's protocol (msgpack-numpy over websockets), so it works with ``cosmos3-ros
sidecar`` and with NVIDIA's Cosmos 3 openpi-protocol policy server. With our server (its
connect metadata says ``protocol: cosmos3_ros/...``) every request carries the full sampling
settings, so results equal the in-process runtime's for the same settings and seed, and
forward_dynamics and ``return_video`` are available; the robot state goes as
``observation/state`` (one action row, model units) and known first rows of the chunk (``prefix``)
as ``observation/prefix`` ([d, width] float32, model units). With another openpi server (NVIDIA's
DROID policy server) only ``prompt``, ``observation/image`` and the robot state in the
DROID/RoboArena keys are sent (``observation/joint_position`` = all but the last state dimension,
``observation/gripper_position`` = 1 - the last, as NVIDIA's server flips it), the reply's last
action column is flipped back into the model's space, and the server's own settings apply; such a
server takes no prefix (BackendError).

Errors: our server answers a request it cannot serve with a text frame holding ``{"error": type,
"message": ...}`` and keeps the connection; it becomes ValueError (a bad request), NonFiniteOutputError,
SidecarBusyError or BackendError, and the connection is kept. Any other text frame (an openpi
server's traceback, after which it closes with 1011) is a BackendError and the connection is dropped.

Connection handling: the constructor does no I/O. The first call connects. A lost connection
(server killed, network down, request timeout) is dropped and the call raises
``BackendError``; the next call reconnects. A connection the server closed while it was idle
(our server's ``idle_timeout``) is replaced before the next request is sent, and a request that
crossed that close on the wire is sent again once on a new connection (the server never read it).
A refused handshake (HTTP 401/403: a missing or wrong token; or a 1008 close before the
metadata, as older servers did) raises :class:`SidecarRefusedError`; a full server (HTTP 503)
is an ordinary, retryable ``BackendError``. Failed connection attempts back off
exponentially (0.2 s doubling to 5 s): a call inside the back-off window raises at once, a
call after it tries exactly once (bounded by ``connect_timeout_s``). No call ever blocks
longer than about ``connect_timeout_s + timeout_s`` (plus the time waiting for another
thread's call on the same backend, itself bounded the same way).

The token never appears in a log line or an error message: it travels in the ``Authorization``
header, the websockets loggers are filtered (:mod:`cosmos3_ros.sidecar.redact`), and a
``?token=`` in the url is masked wherever the url is shown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import CloseCode
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

from cosmos3_ros import __version__
from cosmos3_ros.core.backend import BackendError
from cosmos3_ros.core.results import ActionChunk, Forecast, ModelInfo, NonFiniteOutputError, Timing
from cosmos3_ros.core.settings import PolicySettings, validate_actions, validate_image
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar import redact

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
#: Largest reply accepted (a 640x480 predicted video of 17 frames is about 16 MB).
MAX_REPLY_BYTES = 1 << 30
#: Close reasons of our server's idle timeout start with this (the request was not read: safe to send again).
IDLE_CLOSE_PREFIX = "idle timeout"


class SidecarRefusedError(BackendError):
    """The sidecar answered and refused this client (a wrong or missing token): waiting will not help."""


class SidecarBusyError(BackendError):
    """The sidecar's queue was full; the request was not run. Retrying later may succeed."""


def _close_text(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "connection closed without a close frame"
    return f"close code {int(frame.code)}" + (f": {frame.reason}" if frame.reason else "")


def _closed_idle(exc: ConnectionClosed) -> bool:
    """Whether the server closed the connection for its idle timeout (so it did not read what was sent)."""
    return exc.rcvd is not None and exc.rcvd.reason.startswith(IDLE_CLOSE_PREFIX)


def _refusal_text(exc: InvalidStatus) -> str:
    """``HTTP <status>: <first line of the body>`` of a refused handshake."""
    response = exc.response
    body = bytes(response.body or b"").decode("utf-8", "replace").strip().splitlines()
    return f"HTTP {response.status_code}" + (f": {body[0][:300]}" if body else "")


class SidecarBackend:
    """A :class:`~cosmos3_ros.core.backend.PolicyBackend` served by a websocket policy server.

    ``url`` is ``ws://host:port`` (``host:port`` alone means ``ws://``); ``token`` is sent as
    ``Authorization: Bearer <token>``; ``timeout_s`` bounds the wait for one reply,
    ``connect_timeout_s`` one connection attempt (handshake plus metadata). Thread-safe:
    concurrent calls are sent one after the other on the one connection.
    """

    def __init__(
        self, url: str, *, token: str | None = None, timeout_s: float = 10.0, connect_timeout_s: float = 5.0
    ) -> None:
        if "://" not in url:
            url = "ws://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"sidecar url must look like ws://host:port, got {url!r}")
        if not (timeout_s > 0 and connect_timeout_s > 0):
            raise ValueError(f"timeouts must be > 0, got timeout_s={timeout_s}, connect_timeout_s={connect_timeout_s}")
        self.url = url
        self._shown = redact.redact(url)  # the url as logs and errors show it: a ?token= is masked
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self._token = token
        self._lock = threading.Lock()
        self._ws: ClientConnection | None = None
        self._metadata: dict[str, Any] | None = None
        self._closed = False
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        #: ``server_timing`` of the last reply (ms; ``infer_ms``, ``queue_ms``, ``model_*_ms``, ...).
        self.last_server_timing: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"SidecarBackend({self._shown!r}, connected={self.connected})"

    def __enter__(self) -> SidecarBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (it may still turn out dead on the next call)."""
        return self._ws is not None

    @property
    def server_metadata(self) -> dict[str, Any] | None:
        """The metadata map the server sent on the current (or last) connection."""
        return self._metadata

    def connect(self) -> dict[str, Any]:
        """Connect now if not connected (subject to the back-off); return the server metadata."""
        with self._locked():
            self._connect_locked()
            assert self._metadata is not None
            return dict(self._metadata)

    def wait_ready(
        self,
        timeout_s: float,
        stop: threading.Event | None = None,
        on_wait: Callable[[float, str], None] | None = None,
        poll_s: float = 0.5,
    ) -> None:
        """Connect, retrying every ``poll_s`` until the server answers (a sidecar listens only once warm), or raise
        BackendError after ``timeout_s`` or when ``stop`` is set. ``on_wait(waited_s, why)`` follows each failure."""
        t0 = time.monotonic()
        while True:
            with self._locked():
                self._retry_at = 0.0  # waiting on purpose: no back-off
                try:
                    self._connect_locked()
                    return
                except SidecarRefusedError:
                    raise
                except BackendError as exc:
                    why = str(exc)
            waited = time.monotonic() - t0
            if on_wait is not None:
                on_wait(waited, why)
            if waited >= timeout_s:
                raise BackendError(f"sidecar {self._shown} not ready after {waited:.0f} s: {why}")
            if stop is not None and stop.wait(poll_s):
                raise BackendError(f"stopped while waiting for sidecar {self._shown}")
            if stop is None:
                time.sleep(poll_s)

    def close(self) -> None:
        """Close the connection; later calls raise BackendError."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the call lock, waiting at most as long as one call may take."""
        if not self._lock.acquire(timeout=self.timeout_s + self.connect_timeout_s):
            raise BackendError("another call on this SidecarBackend did not finish in time")
        try:
            yield
        finally:
            self._lock.release()

    def _speaks_cosmos3(self) -> bool:
        return str((self._metadata or {}).get("protocol", "")).startswith("cosmos3_ros/")

    def _connect_locked(self) -> None:
        if self._closed:
            raise BackendError("SidecarBackend is closed")
        if self._ws is not None:
            return
        now = time.monotonic()
        if now < self._retry_at:
            raise BackendError(
                f"sidecar {self._shown} unreachable ({self._last_error}); next attempt in {self._retry_at - now:.1f} s"
            )
        redact.install([self._token])  # websockets logs the handshake (our Authorization header) at debug level
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        ws: ClientConnection | None = None
        try:
            ws = connect(
                self.url,
                open_timeout=self.connect_timeout_s,
                close_timeout=1.0,
                additional_headers=headers,
                compression=None,
                max_size=MAX_REPLY_BYTES,
                user_agent_header=f"cosmos3_ros/{__version__}",
            )
            first = ws.recv(timeout=self.connect_timeout_s)
            if isinstance(first, str):
                raise BackendError(f"server sent text instead of metadata: {first[:300]}")
            metadata = proto.unpackb(first)
            if not isinstance(metadata, dict):
                raise BackendError(f"server metadata is a {type(metadata).__name__}, not a map")
        except ConnectionClosed as exc:
            frame = exc.rcvd or exc.sent
            refused = frame is not None and frame.code == CloseCode.POLICY_VIOLATION  # a wrong or missing token
            self._connect_failed(f"the server closed the connection ({_close_text(exc)})", ws, refused=refused)
        except InvalidStatus as exc:  # refused at the handshake: 401/403 (token; waiting will not help), 503 (full)
            status = exc.response.status_code
            self._connect_failed(
                f"the server refused the connection ({_refusal_text(exc)})", ws, refused=status in (401, 403)
            )
        except TimeoutError:
            self._connect_failed(f"no answer within {self.connect_timeout_s:g} s", ws)
        except Exception as exc:  # refused, DNS, HTTP status, handshake, bad metadata: all mean "not connected"
            self._connect_failed(f"{type(exc).__name__}: {exc}", ws)
        self._ws, self._metadata = ws, metadata
        self._backoff_s, self._retry_at, self._last_error = 0.0, 0.0, ""
        log.info(
            "connected to sidecar %s (%s, model %s)",
            self._shown,
            metadata.get("protocol", "openpi"),
            metadata.get("model"),
        )

    def _connect_failed(self, why: str, ws: ClientConnection | None, *, refused: bool = False) -> None:
        if ws is not None:
            ws.close()
        self._backoff_s = min(max(2 * self._backoff_s, BACKOFF_MIN_S), BACKOFF_MAX_S)
        self._retry_at = time.monotonic() + self._backoff_s
        self._last_error = why
        error = SidecarRefusedError if refused else BackendError
        raise error(f"cannot connect to sidecar {self._shown}: {why}")

    def _drop(self, why: str) -> None:
        """Forget a broken connection; the next call reconnects at once."""
        ws, self._ws = self._ws, None
        self._last_error = why
        self._retry_at = 0.0
        if ws is not None:
            ws.close()
        log.warning("sidecar %s: %s", self._shown, why)

    def _reconnect_if_closed_locked(self) -> None:
        """Forget a connection the server has closed since the last call (e.g. its idle timeout), then connect."""
        ws = self._ws
        if ws is not None and ws.state is not State.OPEN:
            log.info(
                "sidecar %s closed the connection (%s); reconnecting", self._shown, getattr(ws, "close_reason", "")
            )
            self._ws = None
            ws.close()
        self._connect_locked()

    def _exchange(self, build: Callable[[bool], dict[str, Any]]) -> tuple[dict[str, Any], float, bool]:
        """Send ``build(speaks_cosmos3)`` and return (reply, round-trip seconds, speaks_cosmos3)."""
        with self._locked():
            self._reconnect_if_closed_locked()
            assert self._ws is not None
            ours = self._speaks_cosmos3()
            try:
                data = proto.packb(build(ours))
            except TypeError as exc:
                raise ValueError(f"request cannot be encoded: {exc}") from None
            t0 = time.perf_counter()
            try:
                try:
                    self._ws.send(data)
                    raw = self._ws.recv(timeout=self.timeout_s)
                except ConnectionClosed as exc:
                    if not _closed_idle(exc):
                        raise
                    # the server closed this idle connection as the request left: it never read it; send it again
                    log.info("sidecar %s closed the idle connection as a request left; sending it again", self._shown)
                    self._ws = None
                    self._connect_locked()
                    assert self._ws is not None
                    t0 = time.perf_counter()
                    self._ws.send(data)
                    raw = self._ws.recv(timeout=self.timeout_s)
            except TimeoutError:
                self._drop(f"no reply within {self.timeout_s:g} s")
                raise BackendError(
                    f"sidecar {self._shown}: no reply within {self.timeout_s:g} s; connection reset"
                ) from None
            except ConnectionClosed as exc:
                self._drop(f"connection lost ({_close_text(exc)})")
                raise BackendError(f"sidecar {self._shown}: connection lost ({_close_text(exc)})") from None
            except OSError as exc:
                self._drop(f"connection lost ({exc})")
                raise BackendError(f"sidecar {self._shown}: connection lost ({exc})") from None
            rtt = time.perf_counter() - t0
            if isinstance(raw, str):
                error = proto.parse_error_frame(raw)  # ours: a JSON error, the connection stays open
                if error is not None:
                    timing = error.get("server_timing")
                    self.last_server_timing = dict(timing) if isinstance(timing, dict) else {}
                    return error, rtt, ours
                self._drop("server sent an error text frame")  # openpi's traceback, then a close with 1011
                raise BackendError(f"sidecar {self._shown} failed:\n{raw[-2000:]}")
            try:
                reply = proto.unpackb(raw)
            except proto.ProtocolError as exc:
                self._drop(f"undecodable reply ({exc})")
                raise BackendError(f"sidecar {self._shown}: undecodable reply: {exc}") from None
            if not isinstance(reply, dict):
                raise BackendError(f"sidecar {self._shown}: reply is a {type(reply).__name__}, not a map")
            timing = reply.get("server_timing")
            self.last_server_timing = dict(timing) if isinstance(timing, dict) else {}
            return reply, rtt, ours

    # -- PolicyBackend -----------------------------------------------------------------------------

    def info(self) -> ModelInfo:
        """Describe the served model from the connect metadata (connects if needed)."""
        meta = self.connect()
        versions = meta.get("versions")
        versions = {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}
        versions["sidecar_protocol"] = str(meta.get("protocol", "openpi"))
        domains = meta.get("domains")
        action_dim = meta.get("model_action_dim", meta.get("action_dim", 0))
        return ModelInfo(
            model=str(meta.get("model", self._shown)),
            action_dim=int(action_dim) if isinstance(action_dim, (int, np.integer)) else 0,
            domains=tuple(str(d) for d in domains) if isinstance(domains, list) else (),
            device=f"{meta.get('device', 'unknown')} via {self._shown}",
            dtype=str(meta.get("dtype", "unknown")),
            versions=versions,
        )

    def warmup(self, settings: PolicySettings) -> float:
        """One short policy call (and forward_dynamics on our server) through the sidecar; return seconds."""
        t0 = time.perf_counter()
        frame = np.full((240, 320, 3), 127, dtype=np.uint8)
        quick = settings.replace(num_steps=min(settings.num_steps, 2))
        state = np.zeros(settings.action_width, np.float32) if settings.use_state else None
        chunk = self.policy(frame, quick, state=state)
        if self._speaks_cosmos3():
            self.forward_dynamics(frame, chunk.actions, quick)
        return time.perf_counter() - t0

    def policy(
        self,
        image: np.ndarray,
        settings: PolicySettings,
        *,
        observation_stamp: float | None = None,
        return_video: bool = False,
        state: np.ndarray | None = None,
        prefix: np.ndarray | None = None,
    ) -> ActionChunk:
        """Ask the sidecar for an action chunk for ``image`` (HxWx3 uint8), the robot ``state`` and the known first
        rows ``prefix`` ([d, width], model units; our server only), if any."""
        validate_image(image)
        width, chunk_size = settings.action_width, settings.action_chunk_size
        if state is not None:
            state = np.asarray(state, dtype=np.float32).reshape(-1)
            if state.size != width or not np.isfinite(state).all():
                raise ValueError(f"state must be {width} finite values, got {state.shape}")
        if prefix is not None:
            prefix = np.asarray(prefix, dtype=np.float32)
            if prefix.ndim != 2 or prefix.shape[1] != width or not 1 <= len(prefix) < chunk_size:
                raise ValueError(f"prefix must be [d, {width}] with 1 <= d < {chunk_size}, got {prefix.shape}")
            if not np.isfinite(prefix).all():
                raise ValueError("prefix contains non-finite values")

        def build(ours: bool) -> dict[str, Any]:
            if prefix is not None and not ours:
                raise BackendError(
                    f"the server at {self._shown} is not a cosmos3_ros sidecar: it takes no prefix rows "
                    "(real-time chunking needs cosmos3-ros sidecar)"
                )
            obs = self._observation(image, settings, observation_stamp, ours)
            if state is not None:
                obs.update({"observation/state": state} if ours else proto.droid_state_keys(state))
            if prefix is not None:
                obs["observation/prefix"] = np.ascontiguousarray(prefix)
            if ours:
                obs["mode"] = "policy"
                if return_video:
                    obs["return_video"] = True
            return obs

        reply, rtt, ours = self._exchange(build)
        _raise_for_error(reply)
        action = reply.get("action", reply.get("actions"))
        if not isinstance(action, np.ndarray) or action.dtype.kind not in "iuf" or action.ndim != 2:
            raise BackendError(f"sidecar reply has no 'action' [T, D] numeric array (got {type(action).__name__})")
        actions = np.array(action, dtype=np.float32)
        if not np.isfinite(actions).all():
            raise NonFiniteOutputError(f"sidecar returned {int((~np.isfinite(actions)).sum())} non-finite action(s)")
        expected = (settings.action_chunk_size, settings.action_width)
        if ours and actions.shape != expected:
            raise BackendError(f"sidecar returned actions of shape {actions.shape}, expected {expected}")
        if not ours:  # NVIDIA's DROID server answers the gripper as 1 - g: back to the model's space
            actions = proto.droid_actions_to_model(actions)
        video = None
        if return_video:
            video = _video(reply.get("video"), required=ours)
        return ActionChunk(
            actions=actions,
            settings=settings,
            timing=_timing(reply, rtt),
            observation_stamp=observation_stamp,
            video=video,
        )

    def forward_dynamics(
        self,
        image: np.ndarray,
        actions: np.ndarray,
        settings: PolicySettings,
        *,
        observation_stamp: float | None = None,
    ) -> Forecast:
        """Ask the sidecar for the frames that follow ``image`` under ``actions`` (our server only)."""
        validate_image(image)
        acts = validate_actions(actions, settings)

        def build(ours: bool) -> dict[str, Any]:
            if not ours:
                raise BackendError(f"the server at {self._shown} is not a cosmos3_ros sidecar: no forward_dynamics")
            obs = self._observation(image, settings, observation_stamp, ours)
            obs["mode"] = "forward_dynamics"
            obs["actions"] = acts
            return obs

        reply, rtt, _ = self._exchange(build)
        _raise_for_error(reply)
        frames = _video(reply.get("video"), required=True)
        assert frames is not None
        return Forecast(
            frames=frames,
            actions=acts,
            settings=settings,
            timing=_timing(reply, rtt),
            observation_stamp=observation_stamp,
        )

    def _observation(
        self, image: np.ndarray, settings: PolicySettings, stamp: float | None, ours: bool
    ) -> dict[str, Any]:
        obs: dict[str, Any] = {"prompt": settings.prompt, "observation/image": image}
        if ours:
            obs["settings"] = {key: getattr(settings, key) for key in proto.SETTINGS_KEYS}
            if stamp is not None:
                obs["observation/timestamp"] = float(stamp)
        return obs


def _raise_for_error(reply: dict[str, Any]) -> None:
    err = reply.get("error")
    if err is None:
        return
    if isinstance(err, dict):
        kind, message = str(err.get("type", "")), str(err.get("message", ""))
    elif err in proto.ERROR_TYPES:  # {"error": type, "message": text}, as our error frames carry it
        kind, message = str(err), str(reply.get("message", ""))
    else:
        kind, message = "", str(err)
    if kind == proto.ERROR_BAD_REQUEST:
        raise ValueError(f"sidecar rejected the request: {message}")
    if kind == proto.ERROR_NON_FINITE:
        raise NonFiniteOutputError(f"sidecar: {message}")
    if kind == proto.ERROR_BUSY:
        raise SidecarBusyError(f"sidecar: {message}")
    raise BackendError(f"sidecar {kind or 'error'}: {message}")


def _video(value: Any, *, required: bool) -> np.ndarray | None:
    if value is None and not required:
        return None
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 4 or value.shape[-1] != 3:
        shape = getattr(value, "shape", None)
        raise BackendError(
            f"sidecar reply has no 'video' uint8 [T, H, W, 3] array (got {type(value).__name__} {shape})"
        )
    return np.array(value)  # owned and writable


def _timing(reply: dict[str, Any], round_trip_s: float) -> Timing:
    """Model phases from ``server_timing``; ``total_s`` is the client's round trip (what the loop waited)."""
    st = reply.get("server_timing")
    st = st if isinstance(st, dict) else {}

    def seconds(key: str) -> float:
        value = st.get(key, 0.0)
        return float(value) / 1e3 if isinstance(value, (int, float)) else 0.0

    return Timing(
        preprocess_s=seconds("model_preprocess_ms"),
        encode_s=seconds("model_encode_ms"),
        denoise_s=seconds("model_denoise_ms"),
        decode_s=seconds("model_decode_ms"),
        total_s=round_trip_s,
    )
