# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The GPU sidecar as robots use it: real ``cosmos3-ros sidecar`` processes on loopback, the tiny checkpoint.

Clients: our ``SidecarBackend``, raw websocket connections (for malformed traffic) and the real
``openpi-client`` from PyPI in its own virtual environment (it pins numpy<2). That venv is
created once under ``$COSMOS3_ROS_OPENPI_VENV`` (default /tmp/cosmos3_ros_openpi_venv); when it
cannot be created (no network) the openpi tests fail under CI=... and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
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
from pathlib import Path

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cosmos3_ros.core.backend import BackendError, PolicyBackend
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar.client import SidecarBackend

TOKEN = "s3cret-token"
#: Requests in these tests override the server defaults (num_steps 2) on purpose.
S = PolicySettings(prompt="pick up the red cup", num_steps=3, seed=5)


# -- helpers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SidecarProcess:
    """One ``cosmos3-ros sidecar`` subprocess with its log in a file."""

    def __init__(self, model: Path, port: int, log_path: Path, *extra: str) -> None:
        self.model, self.port, self.log_path, self.extra = model, port, log_path, extra
        self.proc: subprocess.Popen | None = None
        self.url = f"ws://127.0.0.1:{port}"

    def start(self) -> SidecarProcess:
        cmd = [sys.executable, "-m", "cosmos3_ros.cli", "sidecar", "--model", str(self.model)]
        cmd += ["--port", str(self.port), "--num-steps", "2", *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthz(self) -> tuple[int, dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
            return r.status, json.loads(r.read())

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
            time.sleep(0.2)
        pytest.fail(f"sidecar not healthy after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def raw_connect(url: str, **kwargs):
    """A plain websocket client: returns (connection, metadata)."""
    ws = connect(url, compression=None, max_size=None, open_timeout=10, **kwargs)
    return ws, proto.unpackb(ws.recv(timeout=10))


def ask(ws, payload: bytes | str, timeout: float = 120.0) -> dict:
    ws.send(payload)
    reply = ws.recv(timeout=timeout)
    assert isinstance(reply, bytes), f"text frame from server: {reply!r}"
    out = proto.unpackb(reply)
    assert isinstance(out, dict)
    return out


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """The default sidecar: no token, queue 2, server defaults num_steps 2."""
    srv = SidecarProcess(tiny_model, free_port(), tmp_path_factory.mktemp("sidecar") / "server.log", "--queue", "2")
    srv.start().wait_healthy()
    yield srv
    rc = srv.stop()
    assert rc == 0, srv.log()[-3000:]


@pytest.fixture(scope="module")
def strict_server(tiny_model, tmp_path_factory):
    """A sidecar with a token, a 1 MiB message limit and a queue of 1."""
    srv = SidecarProcess(
        tiny_model,
        free_port(),
        tmp_path_factory.mktemp("sidecar-strict") / "server.log",
        "--token",
        TOKEN,
        "--max-message-mb",
        "1",
        "--queue",
        "1",
    )
    srv.start().wait_healthy()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def runtime(tiny_model):
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu")


# -- operations -----------------------------------------------------------------------------------


def test_healthz_is_200_once_warm_and_warmup_precedes_listening(server):
    status, body = server.healthz()
    assert status == 200 and body["status"] == "ok"
    log = server.log()
    assert log.index("warm-up done") < log.index("serving on ws://127.0.0.1:")  # loopback by default


def test_metadata_is_sent_on_connect(server):
    ws, meta = raw_connect(server.url)
    ws.close()
    assert meta["protocol"] == proto.PROTOCOL
    assert (meta["domain"], meta["action_chunk_size"], meta["action_dim"], meta["fps"]) == (
        "bridge_orig_lerobot",
        16,
        10,
        5.0,
    )
    assert meta["model_action_dim"] == 64 and meta["settings"]["num_steps"] == 2
    assert {"cosmos3_ros", "diffusers", "torch", "websockets", "msgpack"} <= set(meta["versions"])
    assert meta["auth"] is False and meta["settings_keys"] == list(proto.SETTINGS_KEYS)


def test_reply_schema_timing_and_per_request_log_line(server, frame):
    ws, _ = raw_connect(server.url)
    with ws:
        r1 = ask(ws, proto.packb({"observation/image": frame, "prompt": "x", "observation/timestamp": 42.25}))
        r2 = ask(ws, proto.packb({"observation/image": frame, "prompt": "x", "unknown/key": 1}))
    assert r1["action"].dtype == np.float32 and r1["action"].shape == (16, 10)
    assert r1["observation/timestamp"] == 42.25 and r1["settings"]["prompt"] == "x"
    assert {"infer_ms", "queue_ms", "unpack_ms", "model_denoise_ms"} <= set(r1["server_timing"])
    assert r1["server_timing"]["infer_ms"] > 0 and "video" not in r1
    assert "prev_total_ms" in r2["server_timing"] and r2["ignored_keys"] == ["unknown/key"]
    assert "policy 240x320 steps 2 -> ok: infer" in server.log()


def test_control_messages_are_acknowledged(server):
    ws, _ = raw_connect(server.url)
    with ws:
        assert ask(ws, proto.packb({"__ctrl__": "episode_start", "__task__": "t"}))["__ack__"] == "episode_start"


# -- parity with the in-process runtime -----------------------------------------------------------------


def test_sidecar_backend_equals_in_process_runtime(server, runtime, frame):
    backend = SidecarBackend(server.url, timeout_s=120)
    assert isinstance(backend, PolicyBackend)
    with backend:
        for settings in (S, S.replace(seed=9, shift=3.0, domain_name="droid", action_chunk_size=8, fps=15)):
            remote = backend.policy(frame, settings, observation_stamp=3.5)
            local = runtime.policy(frame, settings)
            assert remote.actions.dtype == np.float32 and remote.observation_stamp == 3.5
            np.testing.assert_array_equal(remote.actions, local.actions)
        # video and forward_dynamics too (short chunk: decoding is the slow part on CPU)
        short, small = S.replace(action_chunk_size=4), frame[::4, ::4]
        remote = backend.policy(small, short, return_video=True)
        local = runtime.policy(small, short, return_video=True)
        np.testing.assert_array_equal(remote.actions, local.actions)
        np.testing.assert_array_equal(remote.video, local.video)
        remote_fd = backend.forward_dynamics(small, local.actions, short)
        local_fd = runtime.forward_dynamics(small, local.actions, short)
        np.testing.assert_array_equal(remote_fd.frames, local_fd.frames)
        assert remote_fd.frames.shape[0] == 5 and remote_fd.frames.dtype == np.uint8
        info = backend.info()
        assert info.action_dim == 64 and "bridge_orig_lerobot" in info.domains
        assert backend.warmup(S) > 0
        # the contract: bad input is ValueError (checked locally or by the server), not BackendError
        with pytest.raises(ValueError, match="server limit"):
            backend.policy(frame, S.replace(num_steps=10_000))
        assert backend.policy(frame, S).actions.shape == (16, 10)  # connection still good


# -- malformed traffic ----------------------------------------------------------------------------------

IMG = np.full((48, 64, 3), 100, np.uint8)


def _p(obj) -> bytes:
    return proto.packb(obj)


def _arr(**fields) -> dict:
    d = {b"__ndarray__": True, b"data": b"\x00" * 12, b"dtype": "|u1", b"shape": [2, 2, 3]}
    d.update({k.encode(): v for k, v in fields.items()})
    return d


MALFORMED: dict[str, bytes | str] = {
    "text frame": "hello",
    "text frame with json": json.dumps({"observation/image": [[0, 0, 0]]}),
    "binary garbage": b"\xc1\x00\xffgarbage",
    "empty binary": b"",
    "truncated request": _p({"observation/image": IMG})[:500],
    "trailing bytes": _p({"observation/image": IMG}) + b"\x00\x01",
    "msgpack list": _p([1, 2, 3]),
    "msgpack int": _p(42),
    "msgpack nil": _p(None),
    "int map keys": msgpack.packb({1: 2}),
    "bytes map keys": msgpack.packb({b"observation/image": b"x"}),
    "invalid utf-8 key": b"\x81\xa2\xff\xfe\x01",
    "missing image": _p({"prompt": "no image"}),
    "image float32": _p({"observation/image": IMG.astype(np.float32)}),
    "image 2-D": _p({"observation/image": IMG[:, :, 0]}),
    "image 4-D": _p({"observation/image": IMG[None]}),
    "image RGBA": _p({"observation/image": np.zeros((48, 64, 4), np.uint8)}),
    "image CHW": _p({"observation/image": np.zeros((3, 48, 64), np.uint8)}),
    "image 2x2": _p({"observation/image": np.zeros((2, 2, 3), np.uint8)}),
    "image as list": _p({"observation/image": [[[0, 0, 0]]]}),
    "image as string": _p({"observation/image": "frame.png"}),
    "image as ext type": msgpack.packb({"observation/image": msgpack.ExtType(7, b"\x00" * 12)}),
    "giant shape header": msgpack.packb({"observation/image": _arr(shape=[2**30, 2**30, 3])}),
    "shape beyond int32": msgpack.packb({"observation/image": _arr(shape=[2**62, 2**62, 3])}),
    "shape/byte mismatch": msgpack.packb({"observation/image": _arr(shape=[4, 4, 3])}),
    "negative shape": msgpack.packb({"observation/image": _arr(shape=[-2, -2, 3])}),
    "object dtype": msgpack.packb({"observation/image": _arr(dtype="|O")}),
    "void dtype": msgpack.packb({"observation/image": _arr(dtype="|V12", shape=[1])}),
    "dtype string injection": msgpack.packb({"observation/image": _arr(dtype="u1,O")}),
    "array data as string": msgpack.packb({"observation/image": _arr(data="x" * 12)}),
    "numpy scalar overflow": msgpack.packb({"prompt": {b"__npgeneric__": True, b"data": 300, b"dtype": "|u1"}}),
    "deep nesting": b"\x81\xa1a" + b"\x91" * 3000 + b"\xc0",
    "nested garbage in settings": _p({"observation/image": IMG, "settings": {"seed": [[[{"a": [None]}]]]}}),
    "huge map header": b"\xdf\xff\xff\xff\xff",
    "huge bin header": b"\x81\xa1a\xc6\x7f\xff\xff\xff",
    "unknown settings key": _p({"observation/image": IMG, "settings": {"temperature": 0.5}}),
    "settings not a map": _p({"observation/image": IMG, "settings": "fast"}),
    "bad setting type": _p({"observation/image": IMG, "settings": {"num_steps": "ten"}}),
    "bad setting value": _p({"observation/image": IMG, "settings": {"image_size": 333}}),
    "negative seed": _p({"observation/image": IMG, "settings": {"seed": -1}}),
    "guidance below 1": _p({"observation/image": IMG, "settings": {"guidance": 0.5}}),
    "nan fps": _p({"observation/image": IMG, "settings": {"fps": float("nan")}}),
    "num_steps over limit": _p({"observation/image": IMG, "settings": {"num_steps": 10**9}}),
    "chunk over limit": _p({"observation/image": IMG, "settings": {"action_chunk_size": 10**6}}),
    "unknown domain": _p({"observation/image": IMG, "settings": {"domain_name": "mars"}}),
    "unknown mode": _p({"observation/image": IMG, "mode": "inverse_dynamics"}),
    "forward_dynamics without actions": _p({"observation/image": IMG, "mode": "forward_dynamics"}),
    "non-finite actions": _p(
        {"observation/image": IMG, "mode": "forward_dynamics", "actions": np.full((4, 10), np.inf, np.float32)}
    ),
    "wrong action width": _p({"observation/image": IMG, "mode": "forward_dynamics", "actions": np.zeros((4, 7))}),
    "1-D actions": _p({"observation/image": IMG, "mode": "forward_dynamics", "actions": np.zeros(10)}),
    "ragged action list": _p({"observation/image": IMG, "mode": "forward_dynamics", "actions": [[0.0] * 10, [1]]}),
    "actions with policy mode": _p({"observation/image": IMG, "actions": np.zeros((4, 10))}),
    "prompt not a string": _p({"observation/image": IMG, "prompt": {"text": "x"}}),
    "return_video not bool": _p({"observation/image": IMG, "return_video": "yes"}),
    "timestamp not a number": _p({"observation/image": IMG, "observation/timestamp": "now"}),
    "joint_position with nan": _p({"observation/image": IMG, "observation/joint_position": np.array([0, np.nan])}),
    "gripper_position as dict": _p({"observation/image": IMG, "observation/gripper_position": {"x": 1}}),
    "control with non-string name": _p({"__ctrl__": [1]}),
}


def test_malformed_requests_get_error_replies_and_the_server_keeps_serving(server):
    """Every case gets a bad_request reply on a connection that stays open and keeps serving.

    After each case an openpi control message must be answered on the same connection (cheap proof
    that the handler still serves); every 8th case and at the end a full model request must succeed.
    """
    valid = _p({"observation/image": IMG, "prompt": "ok", "observation/timestamp": 1.0})
    ping = _p({"__ctrl__": "episode_start"})
    ws, _ = raw_connect(server.url)
    with ws:
        for i, (name, payload) in enumerate(MALFORMED.items()):
            reply = ask(ws, payload)
            assert set(reply) >= {"error", "server_timing"}, (name, reply)
            assert reply["error"]["type"] == "bad_request", (name, reply)
            assert isinstance(reply["error"]["message"], str) and reply["error"]["message"], name
            assert ask(ws, ping)["__ack__"] == "episode_start", name
            if i % 8 == 7:
                ok = ask(ws, valid)
                assert "error" not in ok and ok["action"].shape == (16, 10), (name, ok)
        ok = ask(ws, valid)
        assert "error" not in ok and ok["action"].shape == (16, 10)
    assert server.proc.poll() is None
    assert server.healthz()[0] == 200


def test_error_reply_echoes_the_timestamp(server):
    ws, _ = raw_connect(server.url)
    with ws:
        reply = ask(ws, _p({"observation/timestamp": 7.5, "prompt": "no image"}))
    assert reply["error"]["type"] == "bad_request" and "no image" in reply["error"]["message"]
    assert reply["observation/timestamp"] == 7.5


# -- concurrency -------------------------------------------------------------------------------------


def test_two_clients_at_once_are_both_served_in_turn(server, frame):
    results: dict[int, list[np.ndarray]] = {}
    waits: dict[int, list[float]] = {}
    errors: list[BaseException] = []

    def client(seed: int) -> None:
        try:
            with SidecarBackend(server.url, timeout_s=120) as b:
                results[seed], waits[seed] = [], []
                for _ in range(3):
                    results[seed].append(b.policy(frame, S.replace(seed=seed)).actions)
                    waits[seed].append(b.last_server_timing["queue_ms"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for seed in (1, 2):
        assert len(results[seed]) == 3
        assert all(np.array_equal(a, results[seed][0]) for a in results[seed])  # no mixed-up replies
    assert not np.array_equal(results[1][0], results[2][0])
    assert max(waits[1] + waits[2]) > 10.0  # somebody waited for the other's GPU job


def test_full_queue_answers_busy_and_connection_survives(strict_server, frame):
    heavy = _p({"observation/image": frame, "settings": {"num_steps": 12}})
    conns = [
        raw_connect(strict_server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})[0] for _ in range(4)
    ]
    try:
        for ws in conns:
            ws.send(heavy)
        replies = [proto.unpackb(ws.recv(timeout=120)) for ws in conns]
        kinds = ["ok" if "action" in r else r["error"]["type"] for r in replies]
        assert kinds.count("busy") >= 1 and kinds.count("ok") >= 1 and set(kinds) <= {"ok", "busy"}, kinds
        busy = kinds.index("busy")
        assert "retry later" in replies[busy]["error"]["message"]
        assert "action" in ask(conns[busy], _p({"observation/image": IMG}))
    finally:
        for ws in conns:
            ws.close()


# -- security -------------------------------------------------------------------------------------------


def _rejection(url: str, **kwargs) -> ConnectionClosed:
    ws = connect(url, compression=None, open_timeout=10, **kwargs)
    with ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    return info.value


def test_missing_or_wrong_token_is_rejected_with_1008_and_a_clear_reason(strict_server):
    exc = _rejection(strict_server.url)
    assert exc.rcvd.code == 1008 and "no token" in exc.rcvd.reason and "Bearer" in exc.rcvd.reason
    exc = _rejection(strict_server.url, additional_headers={"Authorization": "Bearer wrong"})
    assert exc.rcvd.code == 1008 and exc.rcvd.reason == "unauthorized: wrong token"
    exc = _rejection(strict_server.url + "/?token=wrong")
    assert exc.rcvd.code == 1008
    # the right token, three ways (openpi-client sends "Api-Key <key>")
    for kwargs, url in (
        ({"additional_headers": {"Authorization": f"Bearer {TOKEN}"}}, strict_server.url),
        ({"additional_headers": {"Authorization": f"Api-Key {TOKEN}"}}, strict_server.url),
        ({}, f"{strict_server.url}/?token={TOKEN}"),
    ):
        ws, meta = raw_connect(url, **kwargs)
        ws.close()
        assert meta["auth"] is True
    with (
        SidecarBackend(strict_server.url, token="wrong", connect_timeout_s=5) as b,
        pytest.raises(BackendError) as info,
    ):
        b.info()
    assert "1008" in str(info.value) and "wrong token" in str(info.value)
    assert "rejected: unauthorized: wrong token" in strict_server.log()
    assert TOKEN not in strict_server.log()
    assert strict_server.healthz()[0] == 200


def test_oversize_message_is_rejected_with_1009(strict_server):
    ws, meta = raw_connect(strict_server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    assert meta["max_message_bytes"] == 2**20
    with ws, pytest.raises(ConnectionClosed) as info:
        ask(ws, _p({"observation/image": np.zeros((600, 800, 3), np.uint8)}))  # 1.44 MB > 1 MiB
    assert info.value.rcvd.code == 1009
    # what a robot sees through the backend: a BackendError naming the close code
    with SidecarBackend(strict_server.url, token=TOKEN) as b:
        with pytest.raises(BackendError, match="1009"):
            b.policy(np.zeros((600, 800, 3), np.uint8), S)
        assert b.policy(IMG, S).actions.shape == (16, 10)  # reconnects, smaller frames still fine


# -- outage -------------------------------------------------------------------------------------------


def test_backend_fails_fast_during_an_outage_and_recovers_after_restart(tiny_model, tmp_path, frame):
    port = free_port()
    first = SidecarProcess(tiny_model, port, tmp_path / "first.log").start().wait_healthy()
    second = SidecarProcess(tiny_model, port, tmp_path / "second.log")
    backend = SidecarBackend(first.url, timeout_s=60, connect_timeout_s=2)
    try:
        before = backend.policy(frame, S).actions
        first.stop(signal.SIGKILL)
        for _ in range(4):
            t0 = time.monotonic()
            with pytest.raises(BackendError):
                backend.policy(frame, S)
            assert time.monotonic() - t0 < 3.0
        second.start()
        with pytest.raises(BackendError):  # still loading: refused at once
            backend.policy(frame, S)
        second.wait_healthy()
        deadline = time.monotonic() + 30
        while True:
            try:
                after = backend.policy(frame, S).actions  # the same backend object, no new one
                break
            except BackendError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        np.testing.assert_array_equal(after, before)
        assert backend.connected
    finally:
        backend.close()
        first.stop()
        rc = second.stop()
    assert rc == 0 and "stopped after 1 request(s)" in second.log()


def test_closed_backend_and_bad_urls():
    with pytest.raises(ValueError):
        SidecarBackend("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        SidecarBackend("ws://127.0.0.1:1", timeout_s=0)
    b = SidecarBackend(f"127.0.0.1:{free_port()}", connect_timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="cannot connect"):
        b.policy(IMG, S)
    with pytest.raises(BackendError, match="next attempt"):  # inside the back-off window: no new attempt
        b.policy(IMG, S)
    assert time.monotonic() - t0 < 2.0
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.info()


# -- an openpi-protocol server that is not ours (NVIDIA's DROID policy server, as documented) -------------


class OpenpiStyleServer:
    """openpi's server behaviour with NVIDIA's DROID keys: metadata without ``protocol``, ``action`` [32, 8],
    and on any error the traceback as a text frame followed by close code 1011. Unknown keys are errors here,
    so the test also proves that SidecarBackend sends only the openpi keys to a foreign server."""

    KNOWN = frozenset({"prompt", "observation/image", "observation/joint_position", "observation/gripper_position"})

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.keys: list[list[str]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handler(self, ws) -> None:
        await ws.send(proto.packb({"policy": "droid", "action_horizon": 32}))
        while True:
            try:
                obs = proto.unpackb(await ws.recv())
            except ConnectionClosed:
                return
            try:
                self.keys.append(sorted(obs))
                unknown = set(obs) - self.KNOWN
                if unknown:
                    raise KeyError(f"unexpected keys {sorted(unknown)}")
                assert obs["observation/joint_position"].shape == (7,), "joint_position must be [7]"
                if obs["prompt"] == "hang":
                    await asyncio.sleep(3)
                action = np.full((32, 8), len(obs["prompt"]), np.float32)
                await ws.send(proto.packb({"action": action, "server_timing": {"infer_ms": 1.0}}))
            except Exception:
                await ws.send(traceback.format_exc())
                await ws.close(1011, "Internal server error. Traceback included in previous frame.")
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
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_sidecar_backend_speaks_plain_openpi_to_foreign_servers():
    with OpenpiStyleServer() as srv, SidecarBackend(srv.url, timeout_s=1.0) as b:
        info = b.info()
        assert info.versions["sidecar_protocol"] == "openpi" and info.action_dim == 0
        # no robot state yet: that server fails, sends its traceback and closes; we see a BackendError
        with pytest.raises(BackendError, match="joint_position"):
            b.policy(IMG, S)
        b.set_robot_state(np.zeros(7), 0.5)
        chunk = b.policy(IMG, S, observation_stamp=2.0)  # reconnects by itself
        assert chunk.actions.shape == (32, 8) and (chunk.actions == len(S.prompt)).all()
        assert srv.keys[-1] == sorted(OpenpiStyleServer.KNOWN)  # none of our extra keys
        with pytest.raises(BackendError, match="not a cosmos3_ros sidecar"):
            b.forward_dynamics(IMG, np.zeros((4, 10), np.float32), S)
        # a reply that never comes: BackendError after timeout_s, and the next call works again
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="no reply within 1 s"):
            b.policy(IMG, S.replace(prompt="hang"))
        assert time.monotonic() - t0 < 2.5
        assert b.policy(IMG, S).actions.shape == (32, 8)


def test_one_backend_shared_by_threads_keeps_replies_matched():
    with OpenpiStyleServer() as srv, SidecarBackend(srv.url, timeout_s=10) as b:
        b.set_robot_state(np.zeros(7), 0.0)
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for _ in range(10):
                    assert (b.policy(IMG, S.replace(prompt="x" * n)).actions == n).all()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors


def test_cli_refuses_a_busy_port_before_loading_the_model(tiny_model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "cosmos3_ros.cli", "sidecar", "--model", str(tiny_model), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr


# -- the real openpi-client ------------------------------------------------------------------------------

OPENPI_SCRIPT = r"""
import json, sys
import numpy as np
from openpi_client import websocket_client_policy as wcp

port, api_key, frame_path = int(sys.argv[1]), sys.argv[2] or None, sys.argv[3]
frame = np.load(frame_path, allow_pickle=False)
out = {"numpy": np.__version__}
try:
    client = wcp.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key=api_key)
except Exception as exc:
    close = getattr(exc, "rcvd", None)
    out["connect_error"] = {"type": type(exc).__name__, "code": getattr(close, "code", None),
                            "reason": getattr(close, "reason", None)}
    print(json.dumps(out)); sys.exit(0)
meta = client.get_server_metadata()
out["metadata"] = {k: meta[k] for k in ("protocol", "action_chunk_size", "action_dim", "domain")}
obs = {"observation/image": frame, "prompt": "pick up the red cup",
       "observation/joint_position": np.zeros(7), "observation/gripper_position": np.zeros(1)}
r = client.infer(obs)
out["action"] = r["action"].tolist()
out["action_dtype"] = str(r["action"].dtype)
out["server_timing"] = sorted(r["server_timing"])
bad = client.infer({"prompt": "no image"})
out["bad"] = bad.get("error")
r2 = client.infer({"observation/exterior_image_1_left": frame, "observation/wrist_image_left": frame[:120],
                   "prompt": "pick up the red cup", "settings": {"seed": 5, "num_steps": 3}})
out["multi_camera_action"] = r2["action"].tolist()
out["cameras"] = r2["cameras"]
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def openpi_python() -> Path:
    """Python of a venv with the real openpi-client from PyPI (created once, reused)."""
    venv = Path(os.environ.get("COSMOS3_ROS_OPENPI_VENV", "/tmp/cosmos3_ros_openpi_venv"))
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import openpi_client.websocket_client_policy"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
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
        why = f"cannot create the openpi-client venv at {venv} (no network to PyPI?):\n{r.stderr[-2000:]}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    print(f"openpi-client venv created at {venv} in {time.monotonic() - t0:.1f} s")
    return py


def _run_openpi(py: Path, port: int, api_key: str, frame: np.ndarray, tmp_path: Path) -> dict:
    script = tmp_path / "openpi_client_check.py"
    script.write_text(OPENPI_SCRIPT)
    frame_path = tmp_path / "frame.npy"
    np.save(frame_path, frame)
    r = subprocess.run(
        [str(py), str(script), str(port), api_key, str(frame_path)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_real_openpi_client_gets_a_chunk(openpi_python, server, runtime, frame, tmp_path):
    out = _run_openpi(openpi_python, server.port, "", frame, tmp_path)
    assert out["numpy"].startswith("1.")  # the client's own numpy<2 world
    assert out["metadata"] == {
        "protocol": proto.PROTOCOL,
        "action_chunk_size": 16,
        "action_dim": 10,
        "domain": "bridge_orig_lerobot",
    }
    assert out["action_dtype"] == "float32"
    defaults = PolicySettings(num_steps=2)  # the server's defaults, as started
    local = runtime.policy(frame, defaults.replace(prompt="pick up the red cup"))
    np.testing.assert_array_equal(np.asarray(out["action"], np.float32), local.actions)
    assert {"infer_ms", "queue_ms", "unpack_ms"} <= set(out["server_timing"])
    # openpi-client returns our structured error as an ordinary reply dict and the connection stays usable
    assert out["bad"]["type"] == "bad_request" and "no image" in out["bad"]["message"]
    np.testing.assert_array_equal(np.asarray(out["multi_camera_action"], np.float32), runtime.policy(frame, S).actions)
    assert out["cameras"] == ["observation/exterior_image_1_left"]


def test_real_openpi_client_with_api_key(openpi_python, strict_server, frame, tmp_path):
    out = _run_openpi(openpi_python, strict_server.port, TOKEN, IMG, tmp_path)
    assert len(out["action"]) == 16
    out = _run_openpi(openpi_python, strict_server.port, "wrong", IMG, tmp_path)
    assert out["connect_error"]["code"] == 1008 and "wrong token" in out["connect_error"]["reason"]
