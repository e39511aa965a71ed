# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Helpers of the fleet tests: ``cosmos3-ros fleet`` as a process, robots that keep asking and reconnect."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cosmos3_ros.backends import TOKEN_ENV
from cosmos3_ros.core.backend import BackendError
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar.client import SidecarBackend

TOKEN = "fleet-test-token"


def fleet_env() -> dict[str, str]:
    """The environment of a fleet process: the token, no usage stats, never an outside Ray cluster."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env[TOKEN_ENV] = TOKEN
    env.pop("RAY_ADDRESS", None)
    return env


def healthz(port: int) -> tuple[int, dict]:
    """``(status, body)`` of ``GET /healthz``; (0, {}) while nothing answers, the proxy's 404 before the app."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"text": body.decode(errors="replace")}
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


class FleetProcess:
    """``cosmos3-ros fleet`` in its own process (a local Ray instance it starts and stops), with its log."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.port, self.log_path = port, log_path
        self.cmd = [sys.executable, "-m", "cosmos3_ros.cli", "fleet", "--port", str(port), *args]
        self.proc: subprocess.Popen | None = None
        self.url = f"ws://127.0.0.1:{port}"

    def start(self) -> FleetProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=fleet_env())
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 240.0, running: int = 1) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"fleet exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            status, body = healthz(self.port)
            if status == 200 and body.get("replicas", {}).get("RUNNING", 0) >= running:
                return body
            time.sleep(0.25)
        pytest.fail(f"fleet not healthy after {timeout} s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM to the command alone (as a service manager sends it); its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                pytest.fail(f"fleet did not stop within {timeout} s of SIGTERM:\n{self.log()[-4000:]}")
        return self.proc.returncode


def open_ws(url: str, token: str | None = TOKEN) -> tuple[ClientConnection, dict]:
    """A plain websocket client with the token: (connection, metadata)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    ws = connect(url, compression=None, max_size=None, open_timeout=20, additional_headers=headers)
    return ws, proto.unpackb(ws.recv(timeout=30))


def ask(ws: ClientConnection, message: dict, timeout: float = 60.0) -> dict:
    """Send one request; the reply map, or for an error text frame ``{"error": {...}}`` (our error frames)."""
    ws.send(proto.packb(message))
    raw = ws.recv(timeout=timeout)
    if isinstance(raw, str):
        parsed = proto.parse_error_frame(raw)
        assert parsed is not None, raw
        return parsed
    return proto.unpackb(raw)


class Robot(threading.Thread):
    """A robot that asks for chunks until ``stop``, holding while ``pause`` is set (``kind``: ``backend``: our
    SidecarBackend, which reconnects by itself; ``raw``: a plain websocket that reconnects when its connection is
    lost). Every call is bounded."""

    def __init__(
        self, name: str, url: str, frame: np.ndarray, kind: str, stop: threading.Event, pause: threading.Event
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.url, self.frame, self.kind, self.stop, self.pause = url, frame, kind, stop, pause
        self.idle = False  # paused, between two requests
        self.answers: list[dict[str, Any]] = []  # raw: the reply's fleet map; backend: {}
        self.errors: list[str] = []
        self.reconnects = 0
        self.longest_s = 0.0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            if self.kind == "backend":
                self._backend()
            else:
                self._raw()
        except BaseException as exc:  # reported by the test
            self.failure = exc

    def _hold(self) -> None:
        """Wait while paused (between two requests)."""
        while self.pause.is_set() and not self.stop.is_set():
            self.idle = True
            time.sleep(0.02)
        self.idle = False

    def _settings(self, i: int) -> PolicySettings:
        return PolicySettings(prompt=f"{self.name} task", seed=i, num_steps=2, image_size=256)

    def _timed(self, t0: float) -> None:
        self.longest_s = max(self.longest_s, time.monotonic() - t0)

    def _backend(self) -> None:
        backend = SidecarBackend(self.url, token=TOKEN, timeout_s=60, connect_timeout_s=20)
        i = 0
        while not self.stop.is_set():
            self._hold()
            t0 = time.monotonic()
            try:
                backend.policy(self.frame, self._settings(i))
                self.answers.append({})
            except BackendError as exc:
                self.errors.append(str(exc))
                time.sleep(0.2)
            self._timed(t0)
            i += 1
        backend.close()

    def _raw(self) -> None:
        ws: ClientConnection | None = None
        i = 0
        while not self.stop.is_set():
            self._hold()
            t0 = time.monotonic()
            try:
                if ws is None:
                    ws, _ = open_ws(self.url)
                s = self._settings(i)
                settings = {"seed": s.seed, "num_steps": s.num_steps, "image_size": s.image_size}
                reply = ask(ws, {"observation/image": self.frame, "prompt": s.prompt, "settings": settings})
                if "error" in reply:
                    self.errors.append(reply["error"]["message"])
                else:
                    self.answers.append(reply["fleet"])
            except (ConnectionClosed, InvalidStatus, OSError, TimeoutError) as exc:
                self.errors.append(f"connection: {type(exc).__name__}: {exc}")
                ws, self.reconnects = None, self.reconnects + 1
                time.sleep(0.2)
            self._timed(t0)
            i += 1
        if ws is not None:
            ws.close()


#: The real openpi-client as a robot program uses it: infer in a loop (until the stop file exists); an error reply
#: raises RuntimeError (the connection stays usable); a lost connection means a new WebsocketClientPolicy.
OPENPI_ROBOT = r"""
import json, os, sys, time
import numpy as np
from openpi_client import websocket_client_policy as wcp

port, token, frame_path, stop_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
frame = np.load(frame_path, allow_pickle=False)
out = {"answers": [], "errors": [], "reconnects": 0, "longest_s": 0.0}
client, end, i = None, time.monotonic() + 240, 0
while time.monotonic() < end and not os.path.exists(stop_path):
    t0 = time.monotonic()
    try:
        if client is None:
            client = wcp.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key=token)
        r = client.infer({"observation/image": frame, "prompt": "openpi robot task",
                          "settings": {"seed": i, "num_steps": 2, "image_size": 256}})
        assert r["action"].shape == (16, 10), r["action"].shape
        out["answers"].append(time.time())
    except RuntimeError as exc:  # our error text frame: the connection is kept
        out["errors"].append(str(exc)[-300:])
    except Exception as exc:  # the connection is gone: connect again
        out["errors"].append(f"connection: {type(exc).__name__}")
        client, out["reconnects"] = None, out["reconnects"] + 1
        time.sleep(0.3)
    out["longest_s"] = max(out["longest_s"], time.monotonic() - t0)
    i += 1
print(json.dumps(out))
"""
