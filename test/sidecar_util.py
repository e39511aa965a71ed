# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Shared helpers of the sidecar tests (test_sidecar*.py).

- :class:`ServerThread`: an in-process :class:`~cosmos3_ros.sidecar.server.SidecarServer` (by default serving a
  deterministic :class:`~cosmos3_ros.backends.fake.FakeBackend`) on its own event-loop thread, port 0: the fast tier.
- :class:`SidecarProcess`: a server in its own process, either ``cosmos3-ros sidecar`` on a real checkpoint (the
  slow end-to-end tier) or a small FakeBackend server script (fast; for outages by SIGKILL).
- :func:`raw_connect` / :func:`ask` / :func:`reply_of`: a plain websocket client for hand-made traffic.
- :func:`raw_handshake` / :func:`read_frames`: a websocket spoken by hand over a TCP socket (for clients that stall
  mid-message, or junk that never finishes anything).
- :class:`OpenpiStyleServer`: a foreign openpi-protocol server (NVIDIA's DROID server as documented) that records
  every observation it receives.
- :data:`DROID_PRESET` / :func:`droid_settings` / :func:`roboarena_observation`: the shipped DROID preset and a
  RoboArena-format observation, as NVIDIA's DROID evaluation clients send it.
- :func:`openpi_python` / :func:`run_openpi_plan`: the real ``openpi-client`` from PyPI, in its own venv (it pins
  numpy<2), sending a plan of observations on one connection.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.core.backend import PolicyBackend
from cosmos3_ros.core.params_file import read_params_file
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar.server import SidecarServer

TOKEN = "s3cret-token"
#: The defaults of the in-process test servers (the CLI servers get ``--num-steps 2 --image-size 256``).
SERVER_DEFAULTS = PolicySettings(num_steps=2)
#: Requests in these tests override the server defaults on purpose.
S = PolicySettings(prompt="pick up the red cup", num_steps=3, seed=5)
IMG = np.full((48, 64, 3), 100, np.uint8)
#: The shipped DROID preset (NVIDIA's released DROID contract).
DROID_PRESET = Path(__file__).resolve().parents[1] / "config" / "droid.yaml"
#: A Franka home pose (7 joints, rad) and a gripper position in DROID's convention (0 open .. 1 closed).
HOME_JOINTS = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
HOME_GRIPPER = 0.25


def droid_settings(**over: Any) -> PolicySettings:
    """The sampling settings of config/droid.yaml (what ``cosmos3-ros sidecar --params-file`` serves), then ``over``."""
    report = read_params_file(DROID_PRESET)
    assert report.ok, report.warnings()
    values = {k: v for k, v in report.values.items() if k in PolicySettings.field_names()}
    return PolicySettings(**values).replace(**over)


def roboarena_frames(t: float = 0.0, wrist: tuple[int, int] = (360, 640), exterior: tuple[int, int] = (180, 320)):
    """The three RoboArena camera frames: (wrist, exterior 1, exterior 2), distinct scenes."""
    return (
        moving_scene_frame(t, *wrist),
        moving_scene_frame(t + 0.3, *exterior),
        moving_scene_frame(t + 0.6, *exterior)[:, ::-1].copy(),
    )


def roboarena_observation(
    joints: np.ndarray = HOME_JOINTS, gripper: Any = HOME_GRIPPER, prompt: str = "put the cup in the bowl", **kw: Any
) -> dict[str, Any]:
    """A RoboArena/DROID observation as NVIDIA's clients send it (three cameras, joints, gripper, prompt)."""
    wrist, ext1, ext2 = roboarena_frames(**kw)
    return {
        "observation/wrist_image_left": wrist,
        "observation/exterior_image_1_left": ext1,
        "observation/exterior_image_2_left": ext2,
        "observation/joint_position": np.asarray(joints, np.float64),
        "observation/gripper_position": np.asarray(gripper, np.float64),
        "prompt": prompt,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port: int) -> tuple[int, dict]:
    """``(status, body)`` of ``GET /healthz`` (503 answers included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, period: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(period)


# -- in-process server ------------------------------------------------------------------------------------------


class ServerThread:
    """A :class:`SidecarServer` on loopback, served from its own thread and event loop.

    ``backend`` defaults to a fresh :class:`FakeBackend`; other keyword arguments go to the server (``token``,
    ``queue_size``, ``max_message_bytes``, ``max_connections``, ``idle_timeout``, ``request_timeout``,
    ``stop_timeout``, ``warmup``). ``port`` 0 picks a free port (``.port`` once started).
    """

    def __init__(
        self,
        backend: PolicyBackend | None = None,
        defaults: PolicySettings = SERVER_DEFAULTS,
        *,
        port: int = 0,
        **server_kwargs: Any,
    ) -> None:
        self.backend = FakeBackend() if backend is None else backend
        self.server = SidecarServer(self.backend, defaults, host="127.0.0.1", port=port, **server_kwargs)
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="sidecar-test-server", daemon=True)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.server.serve(self._stop, lambda port: self._ready.set())

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(timeout), "in-process sidecar did not start listening"
        if self.error is not None:
            raise self.error
        return self

    def request_stop(self) -> None:
        """Set the server's stop event (what SIGTERM does in the CLI); returns at once."""
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "in-process sidecar did not stop"
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._thread.is_alive() and self._loop is not None:
            self.request_stop()
        self.join()

    def healthz(self) -> tuple[int, dict]:
        return healthz(self.port)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- servers in their own process -------------------------------------------------------------------------------

#: A FakeBackend sidecar as a process: argv port, warm-up latency (seconds per warm-up call; 0 afterwards).
FAKE_SERVER_SCRIPT = r"""
import asyncio, logging, sys
from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.sidecar.server import SidecarServer

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
port, warm = int(sys.argv[1]), float(sys.argv[2])
backend = FakeBackend(latency_s=warm)
server = SidecarServer(backend, PolicySettings(num_steps=2), port=port)
asyncio.run(server.serve(asyncio.Event(), lambda p: backend.set_latency(0.0)))
"""


class SidecarProcess:
    """One sidecar server process (:meth:`cli`: ``cosmos3-ros sidecar``; :meth:`fake`: FakeBackend) with its log."""

    def __init__(self, cmd: list[str], port: int, log_path: Path) -> None:
        self.cmd, self.port, self.log_path = cmd, port, log_path
        self.proc: subprocess.Popen | None = None
        self.url = f"ws://127.0.0.1:{port}"

    @classmethod
    def cli(cls, model: Path, port: int, log_path: Path, *extra: str) -> SidecarProcess:
        cmd = [sys.executable, "-m", "cosmos3_ros.cli", "sidecar", "--model", str(model), "--port", str(port)]
        return cls([*cmd, "--num-steps", "2", "--image-size", "256", *extra], port, log_path)

    @classmethod
    def fake(cls, port: int, log_path: Path, warmup_latency: float = 0.0) -> SidecarProcess:
        return cls([sys.executable, "-c", FAKE_SERVER_SCRIPT, str(port), str(warmup_latency)], port, log_path)

    def start(self) -> SidecarProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthz(self) -> tuple[int, dict]:
        return healthz(self.port)

    def wait_healthy(self, timeout: float = 180.0) -> SidecarProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"sidecar exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if self.healthz()[0] == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        pytest.fail(f"sidecar not healthy after {timeout} s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no close frames, no clean shutdown."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


# -- raw clients ------------------------------------------------------------------------------------------------


def raw_connect(url: str, **kwargs: Any) -> tuple[ClientConnection, dict]:
    """A plain websocket client: returns (connection, metadata)."""
    ws = connect(url, compression=None, max_size=None, open_timeout=10, **kwargs)
    return ws, proto.unpackb(ws.recv(timeout=10))


def reply_of(frame: bytes | str) -> dict:
    """A server frame as a reply map. Checks the frame type: a reply is binary msgpack, an error is a text frame
    (JSON, returned in the ``{"error": {"type", "message"}, ...}`` shape of :func:`proto.error_reply`)."""
    if isinstance(frame, str):
        out = proto.parse_error_frame(frame)
        assert out is not None, f"text frame that is not our JSON error: {frame!r}"
        return out
    out = proto.unpackb(frame)
    assert isinstance(out, dict) and "error" not in out, f"an error in a binary frame: {out!r}"
    return out


def ask(ws: ClientConnection, payload: bytes | str, timeout: float = 10.0) -> dict:
    """Send one message and return the reply (:func:`reply_of`)."""
    ws.send(payload)
    return reply_of(ws.recv(timeout=timeout))


def raw_handshake(
    port: int, headers: dict[str, str] | None = None, path: str = "/"
) -> tuple[socket.socket, int, bytes]:
    """A TCP connection that sent a websocket upgrade request: ``(socket, HTTP status, bytes after the head)``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, int(head.split()[1]) if head else 0, rest


def frame_header(length: int, opcode: int = 0x2, mask: bytes = b"\x00\x00\x00\x00") -> bytes:
    """The header of one final, masked client frame of ``length`` payload bytes (zero mask: payload as is)."""
    return bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big") + mask


def read_frames(sock: socket.socket, data: bytes = b"", timeout: float = 10.0) -> tuple[list[tuple[int, bytes]], float]:
    """Read server frames until the server closes the TCP connection: ``([(opcode, payload)], seconds to EOF)``."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    frames = []
    while len(data) >= 2:
        opcode, n, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(data[2:10], "big"), 10
        frames.append((opcode, data[at : at + n]))
        data = data[at + n :]
    return frames, time.monotonic() - t0


# -- a foreign openpi-protocol server ---------------------------------------------------------------------------


class OpenpiStyleServer:
    """openpi's server behaviour with NVIDIA's DROID keys, recording every observation it receives (``received``).

    Metadata without ``protocol``; replies ``action`` [32, 8] whose first 7 columns are ``len(prompt)`` and whose
    last column (the gripper, in NVIDIA's convention) is :attr:`REPLY_GRIPPER`. Any error (unknown keys, a missing
    robot state) is sent as a traceback text frame followed by close code 1011, as openpi does. The prompt ``hang``
    is never answered (until the server stops).
    """

    KNOWN = frozenset({"prompt", "observation/image", "observation/joint_position", "observation/gripper_position"})
    REPLY_GRIPPER = 0.25

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.received: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handler(self, ws: Any) -> None:
        assert self._stop is not None
        try:
            await ws.send(proto.packb({"policy": "droid", "action_horizon": 32}))
            while True:
                obs = proto.unpackb(await ws.recv())
                try:
                    self.received.append(obs)
                    unknown = set(obs) - self.KNOWN
                    if unknown:
                        raise KeyError(f"unexpected keys {sorted(unknown)}")
                    missing = [
                        k for k in ("observation/joint_position", "observation/gripper_position") if k not in obs
                    ]
                    if missing:
                        raise KeyError(f"the DROID policy needs the robot state: missing {missing}")
                    if obs["prompt"] == "hang":
                        try:
                            await asyncio.wait_for(self._stop.wait(), 3)
                        except TimeoutError:
                            pass
                    action = np.full((32, 8), len(obs["prompt"]), np.float32)
                    action[:, -1] = self.REPLY_GRIPPER
                    await ws.send(proto.packb({"action": action, "server_timing": {"infer_ms": 1.0}}))
                except ConnectionClosed:
                    raise
                except Exception:
                    await ws.send(traceback.format_exc())
                    await ws.close(1011, "Internal server error. Traceback included in previous frame.")
                    return
        except ConnectionClosed:
            return

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", self.port, compression=None, max_size=None):
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> OpenpiStyleServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


# -- the real openpi-client ---------------------------------------------------------------------------------------

OPENPI_VENV = Path(os.environ.get("COSMOS3_ROS_OPENPI_VENV", "/tmp/cosmos3_ros_openpi_venv"))


@functools.cache
def _openpi_python() -> tuple[Path | None, str]:
    py = OPENPI_VENV / "bin" / "python"
    probe = [str(py), "-c", "import openpi_client.websocket_client_policy"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py, ""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "venv", "--clear", str(OPENPI_VENV)], capture_output=True, text=True)
    if r.returncode == 0:
        # openpi-client 0.1.2 imports typing_extensions without declaring it
        pip = [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "openpi-client",
            "typing_extensions",
        ]
        r = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return None, f"cannot create the openpi-client venv at {OPENPI_VENV} (no network to PyPI?):\n{r.stderr[-2000:]}"
    print(f"openpi-client venv created at {OPENPI_VENV} in {time.monotonic() - t0:.1f} s")
    return py, ""


def openpi_python() -> Path:
    """Python of a venv with the real openpi-client from PyPI (created once, reused; ``$COSMOS3_ROS_OPENPI_VENV``).
    When it cannot be created (no network) the test fails under CI=... and is skipped otherwise."""
    py, why = _openpi_python()
    if py is None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return py


#: Sends observations with openpi-client's WebsocketClientPolicy, all on one connection, in the order of the plan;
#: argv: port, npz of observations (``label|key`` with ``~`` for ``/``), plan (JSON list of labels).
OPENPI_PLAN_SCRIPT = r"""
import json, sys
import numpy as np
from openpi_client import websocket_client_policy as wcp

port, path, plan = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
observations = {}
with np.load(path, allow_pickle=False) as data:
    for name in data.files:
        label, key = name.split("|", 1)
        value = data[name]
        observations.setdefault(label, {})[key.replace("~", "/")] = str(value) if value.dtype.kind == "U" else value
client = wcp.WebsocketClientPolicy(host="127.0.0.1", port=port)
meta = client.get_server_metadata()
out = {"metadata": {k: meta.get(k) for k in ("protocol", "action_chunk_size", "action_dim", "domain")}, "replies": []}
for label in plan:
    try:
        r = client.infer(observations[label])
    except RuntimeError as exc:
        out["replies"].append({"raised": type(exc).__name__, "text": str(exc)})
        continue
    a = r["action"]
    out["replies"].append({"action": a.tolist(), "dtype": str(a.dtype), "keys": sorted(r), "timing": r.get("timing")})
print(json.dumps(out))
"""


def run_openpi_plan(
    py: Path, port: int, observations: dict[str, dict[str, Any]], plan: list[str], tmp_path: Path
) -> dict[str, Any]:
    """Run :data:`OPENPI_PLAN_SCRIPT`: ``{"metadata": {...}, "replies": [{"action", "dtype", "keys", "timing"} or
    {"raised", "text"} per plan entry]}``; actions come back as float32 arrays."""
    script, data = tmp_path / "openpi_plan.py", tmp_path / "observations.npz"
    script.write_text(OPENPI_PLAN_SCRIPT)
    arrays = {
        f"{label}|{key.replace('/', '~')}": np.asarray(value)
        for label, obs in observations.items()
        for key, value in obs.items()
    }
    np.savez(data, **arrays)
    r = subprocess.run(
        [str(py), str(script), str(port), str(data), json.dumps(plan)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for reply in out["replies"]:
        if "action" in reply:
            reply["action"] = np.asarray(reply["action"], np.float32)
    return out
