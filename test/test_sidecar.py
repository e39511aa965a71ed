# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The GPU sidecar as robots use it, over real websockets on loopback.

Fast tier: an in-process ``SidecarServer`` serving the deterministic ``FakeBackend`` (port 0), a FakeBackend server
process (for SIGKILL outages), a foreign openpi-style stub, and clients: our ``SidecarBackend``, raw websocket
connections (for malformed traffic) and the real ``openpi-client`` from PyPI in its own virtual environment (it pins
numpy<2). That venv is created once under ``$COSMOS3_ROS_OPENPI_VENV`` (default /tmp/cosmos3_ros_openpi_venv); when it
cannot be created (no network) the openpi tests fail under CI=... and are skipped otherwise.

Slow tier (``-m slow``): a real ``cosmos3-ros sidecar`` process on the tiny checkpoint, bit for bit against the
in-process runtime.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
from sidecar_util import (
    IMG,
    SERVER_DEFAULTS,
    TOKEN,
    S,
    ServerThread,
    SidecarProcess,
    ask,
    free_port,
    raw_connect,
    reply_of,
    wait_until,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.core.backend import BackendError, PolicyBackend
from cosmos3_ros.core.results import NonFiniteOutputError
from cosmos3_ros.core.schema import BY_NAME
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar.client import SidecarBackend, SidecarBusyError, SidecarRefusedError

SERVER_LOG = "cosmos3_ros.sidecar.server"


def _p(obj) -> bytes:
    return proto.packb(obj)


# -- operations -------------------------------------------------------------------------------------------------


def test_warm_up_precedes_listening_and_healthz_reports_ok(caplog):
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    with ServerThread() as srv:
        calls = list(srv.backend.calls)
        assert [(c.mode, c.warmup, c.settings) for c in calls] == [
            ("policy", True, SERVER_DEFAULTS),
            ("forward_dynamics", True, SERVER_DEFAULTS),
        ]
        assert srv.healthz() == (200, {"status": "ok", "queue": 0, "busy": False, "served": 0})
        ws, _ = raw_connect(srv.url)
        with ws:
            assert "action" in ask(ws, _p({"observation/image": IMG}))
        assert srv.healthz()[1]["served"] == 1
    messages = caplog.messages
    warm = next(i for i, m in enumerate(messages) if m.startswith("warm-up done"))
    listening = next(i for i, m in enumerate(messages) if m.startswith(f"serving on ws://127.0.0.1:{srv.port}"))
    assert warm < listening  # loopback by default, and only after the warm-up
    with ServerThread(warmup=False) as cold:
        assert cold.backend.calls == [] and cold.healthz()[0] == 200


def test_metadata_is_sent_on_connect(server):
    ws, meta = raw_connect(server.url)
    ws.close()
    assert meta["protocol"] == proto.PROTOCOL and meta["model"] == "fake"
    assert (meta["domain"], meta["action_chunk_size"], meta["action_dim"], meta["fps"]) == (
        "bridge_orig_lerobot",
        16,
        10,
        5.0,
    )
    assert meta["model_action_dim"] == 64 and meta["settings"] == SERVER_DEFAULTS.to_dict()
    assert meta["settings"]["num_steps"] == 2 and meta["settings"]["shift"] == 0.0
    assert {"backend", "websockets", "msgpack", "numpy"} <= set(meta["versions"])
    assert meta["auth"] is False and meta["settings_keys"] == list(proto.SETTINGS_KEYS)
    assert meta["modes"] == ["policy", "forward_dynamics"] and meta["camera_keys"] == list(proto.CAMERA_KEYS)
    assert (meta["queue_size"], meta["max_message_bytes"]) == (4, 32 * 2**20)
    assert "bridge_orig_lerobot" in meta["domains"] and (meta["device"], meta["dtype"]) == ("cpu", "float32")


def test_reply_schema_timing_and_per_request_log_line(server, frame, caplog):
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    ws, _ = raw_connect(server.url)
    with ws:
        r1 = ask(ws, _p({"observation/image": frame, "prompt": "x", "observation/timestamp": 42.25}))
        r2 = ask(ws, _p({"observation/image": frame, "prompt": "x", "unknown/key": 1, "return_video": True}))
    assert r1["action"].dtype == np.float32 and r1["action"].shape == (16, 10)
    np.testing.assert_array_equal(
        r1["action"], FakeBackend().policy(frame, SERVER_DEFAULTS.replace(prompt="x")).actions
    )
    assert r1["observation/timestamp"] == 42.25 and r1["settings"]["prompt"] == "x"
    assert r1["mode"] == "policy" and r1["cameras"] == ["observation/image"] and "video" not in r1
    assert {"infer_ms", "queue_ms", "unpack_ms", "model_denoise_ms", "model_decode_ms"} <= set(r1["server_timing"])
    assert r1["server_timing"]["infer_ms"] > 0 and "prev_total_ms" not in r1["server_timing"]
    assert "prev_total_ms" in r2["server_timing"] and r2["ignored_keys"] == ["unknown/key"]
    assert r2["video"].dtype == np.uint8 and r2["video"].shape == (17, 240, 320, 3)
    assert any("policy 240x320 steps 2 -> ok: infer" in m for m in caplog.messages), caplog.messages


def test_control_messages_are_acknowledged(server):
    ws, _ = raw_connect(server.url)
    with ws:
        assert ask(ws, _p({"__ctrl__": "episode_start", "__task__": "t"}))["__ack__"] == "episode_start"
    assert server.backend.policy_calls == []


def test_stop_answers_the_running_call_fails_queued_ones_and_closes_with_1001(frame, caplog):
    """SIGINT/SIGTERM in the CLI set this stop event: queued requests get ``unavailable``, the running call
    finishes and is answered, new requests are refused, connections close with 1001."""
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    srv = ServerThread(FakeBackend(latency_s=0.3)).start()
    request = _p({"observation/image": IMG, "observation/timestamp": 1.5})
    running, queued, late = (raw_connect(srv.url)[0] for _ in range(3))
    try:
        running.send(request)
        wait_until(lambda: srv.healthz()[1]["busy"])
        queued.send(request)
        wait_until(lambda: srv.healthz()[1]["queue"] == 1)
        srv.request_stop()
        assert wait_until(lambda: srv.healthz()[0] == 503) and srv.healthz()[1]["status"] == "stopping"
        refused = ask(late, request)
        assert refused["error"] == {"type": "unavailable", "message": "the server is shutting down"}
        failed = reply_of(queued.recv(timeout=5))
        assert failed["error"]["type"] == "unavailable" and failed["observation/timestamp"] == 1.5
        answered = reply_of(running.recv(timeout=5))
        assert "error" not in answered and answered["action"].shape == (16, 10)
        for ws in (running, queued, late):
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        srv.join()
    finally:
        for ws in (running, queued, late):
            ws.close()
        srv.stop()
    assert len(srv.backend.policy_calls) == 1  # the queued request never reached the model
    assert "stopped after 1 request(s), 2 error(s), 0 dropped for a gone client" in caplog.messages


# -- SidecarBackend <-> server round trips ----------------------------------------------------------------------


def test_sidecar_backend_round_trip_equals_direct_backend_calls(server, frame):
    direct = FakeBackend()
    other = S.replace(
        seed=9,
        shift=3.0,
        domain_name="droid",
        action_chunk_size=8,
        fps=15,
        guidance=2.5,
        view_point="wrist_view",
        negative_prompt="blurry",
        use_system_prompt=True,
    )
    with SidecarBackend(server.url, timeout_s=10) as backend:
        assert isinstance(backend, PolicyBackend)
        for settings in (S, other):
            remote = backend.policy(frame, settings, observation_stamp=3.5)
            assert remote.actions.dtype == np.float32 and remote.observation_stamp == 3.5
            np.testing.assert_array_equal(remote.actions, direct.policy(frame, settings).actions)
            call = server.backend.policy_calls[-1]  # every setting arrived, not the server's defaults
            assert call.settings == settings and call.stamp == 3.5 and call.image_shape == frame.shape
            assert call.state is None and remote.timing.total_s > 0
        assert {"infer_ms", "queue_ms", "unpack_ms"} <= set(backend.last_server_timing)
        assert not np.array_equal(backend.policy(frame, S).actions, backend.policy(frame, S.replace(seed=6)).actions)
        # video and forward_dynamics too
        short = S.replace(action_chunk_size=4)
        remote = backend.policy(frame, short, return_video=True)
        local = direct.policy(frame, short, return_video=True)
        np.testing.assert_array_equal(remote.actions, local.actions)
        np.testing.assert_array_equal(remote.video, local.video)
        assert remote.video.shape == (5, 240, 320, 3) and remote.video.flags.writeable
        remote_fd = backend.forward_dynamics(frame, local.actions, short, observation_stamp=1.0)
        np.testing.assert_array_equal(remote_fd.frames, direct.forward_dynamics(frame, local.actions, short).frames)
        assert remote_fd.frames.shape[0] == 5 and remote_fd.frames.dtype == np.uint8
        assert server.backend.calls[-1].mode == "forward_dynamics" and server.backend.calls[-1].stamp == 1.0
        info = backend.info()
        assert (info.model, info.action_dim, info.dtype) == ("fake", 64, "float32")
        assert "bridge_orig_lerobot" in info.domains and info.device == f"cpu via {server.url}"
        assert info.versions["sidecar_protocol"] == proto.PROTOCOL
        n = len(server.backend.calls)
        assert backend.warmup(S) > 0
        assert [(c.mode, c.settings.num_steps) for c in server.backend.calls[n:]] == [
            ("policy", 2),
            ("forward_dynamics", 2),
        ]
        # the contract: bad input is ValueError (here found by the server), not BackendError
        with pytest.raises(ValueError, match=r"sidecar rejected the request: 'observation/image' is 8x8"):
            backend.policy(np.zeros((8, 8, 3), np.uint8), S)
        assert backend.policy(frame, S).actions.shape == (16, 10)  # connection still good


def test_state_round_trip_through_our_server(server, frame):
    direct = FakeBackend()
    state = np.linspace(-0.6, 0.6, 10, dtype=np.float32)
    su = S.replace(use_state=True)
    with SidecarBackend(server.url) as backend:
        with_state = backend.policy(frame, su, state=state).actions
        np.testing.assert_array_equal(with_state, direct.policy(frame, su, state=state).actions)
        np.testing.assert_array_equal(server.backend.policy_calls[-1].state, state)
        # the actions depend on the state: another one gives other actions; without use_state it is not used
        assert not np.array_equal(with_state, backend.policy(frame, su, state=-state).actions)
        without = backend.policy(frame, S, state=state).actions
        assert server.backend.policy_calls[-1].state is None
        assert not np.array_equal(with_state, without)
        assert np.abs(with_state[0] - state).max() < 0.13  # the fake chunk starts at the state
        with pytest.raises(ValueError, match="use_state is set but no robot state"):
            backend.policy(frame, su)
        # the width follows the domain
        pusht = S.replace(domain_name="pusht")
        np.testing.assert_array_equal(
            backend.policy(frame, pusht, state=[0.1, -0.1]).actions,
            direct.policy(frame, pusht, state=np.array([0.1, -0.1])).actions,
        )
        # a bad state is a ValueError before anything is sent
        n = len(server.backend.calls)
        with pytest.raises(ValueError, match=r"state must be 10 finite values"):
            backend.policy(frame, S, state=np.zeros(7))
        with pytest.raises(ValueError, match=r"state must be 10 finite values"):
            backend.policy(frame, S, state=np.full(10, np.nan))
        assert len(server.backend.calls) == n


def test_model_failures_become_error_replies_and_the_connection_stays_open(server, frame, caplog):
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    ws, _ = raw_connect(server.url)
    with ws:
        server.backend.inject("error")
        reply = ask(ws, _p({"observation/image": IMG, "observation/timestamp": 4.0}))
        assert reply["error"] == {"type": "model_error", "message": "injected fake backend failure"}
        assert reply["observation/timestamp"] == 4.0 and "infer_ms" in reply["server_timing"]
        assert "action" in ask(ws, _p({"observation/image": IMG}))
    with SidecarBackend(server.url) as b:
        server.backend.inject("error")
        with pytest.raises(BackendError, match="sidecar model_error: injected fake backend failure"):
            b.policy(frame, S)
        server.backend.inject("nonfinite")
        with pytest.raises(NonFiniteOutputError, match=r"^sidecar: policy produced non-finite"):
            b.policy(frame, S)
        server.backend.inject("error", exc=ValueError("frame out of focus"))
        with pytest.raises(ValueError, match="sidecar rejected the request: frame out of focus"):
            b.policy(frame, S)
        server.backend.inject("error", exc=RuntimeError("boom"))
        with pytest.raises(BackendError, match="sidecar internal_error: RuntimeError: boom"):
            b.policy(frame, S)
        np.testing.assert_array_equal(b.policy(frame, S).actions, FakeBackend().policy(frame, S).actions)
        assert b.connected
    # error replies never cost the connection: one for the raw client, one for the backend
    assert sum(m.endswith(" connected") for m in caplog.messages) == 2, caplog.messages
    assert server.healthz()[0] == 200


# -- per-request settings: the schema's bounds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "bound"),
    [
        ("num_steps", 300, "[1, 200]"),
        ("action_chunk_size", 129, "[1, 128]"),
        ("seed", 2**31, "[0, 2147483647]"),
        ("fps", 121.0, "[0.5, 120]"),
        ("fps", 0.25, "[0.5, 120]"),
        ("guidance", 0.5, "[1, 20]"),
        ("shift", 60.0, "[0.1, 50]"),
    ],
)
def test_out_of_range_setting_is_a_bad_request_with_the_schema_bound(server, name, value, bound):
    ws, _ = raw_connect(server.url)
    with ws:
        reply = ask(ws, _p({"observation/image": IMG, "settings": {name: value}, "observation/timestamp": 2.0}))
    assert reply["error"]["type"] == "bad_request" and reply["observation/timestamp"] == 2.0
    message = reply["error"]["message"]
    assert f"{name}={value!r} is outside {bound}" in message, message
    assert message == f"settings.{BY_NAME[name].check(value)}"  # the words of the node's parameter check
    assert server.backend.policy_calls == []


def test_settings_at_the_schema_bounds_are_served(server):
    ws, _ = raw_connect(server.url)
    with ws:
        reply = ask(
            ws, _p({"observation/image": IMG, "settings": {"num_steps": 200, "shift": 5.0, "action_chunk_size": 128}})
        )
        assert reply["action"].shape == (128, 10) and reply["settings"]["num_steps"] == 200
        reply = ask(ws, _p({"observation/image": IMG, "prompt": "p" * 4096, "settings": {"seed": 2**31 - 1}}))
        assert "action" in reply and reply["settings"]["seed"] == 2**31 - 1
        reply = ask(ws, _p({"observation/image": IMG, "prompt": "p" * 4097}))
        assert reply["error"]["type"] == "bad_request"
        assert reply["error"]["message"] == "'prompt': prompt has 4097 characters; the limit is 4096"


# -- malformed traffic ------------------------------------------------------------------------------------------


def _arr(**fields) -> dict:
    d = {b"__ndarray__": True, b"data": b"\x00" * 12, b"dtype": "|u1", b"shape": [2, 2, 3]}
    d.update({k.encode(): v for k, v in fields.items()})
    return d


def _droid_p(**over) -> bytes:
    """A request in NVIDIA's DROID keys with ``over`` on top (a None value leaves that key out), packed."""
    msg = {"observation/image": IMG, "prompt": "p", "observation/joint_position": np.zeros(7)}
    msg.update({"observation/gripper_position": 0.0, **over})
    return _p({k: v for k, v in msg.items() if v is not None})


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
    "fractional float for an int setting": _p({"observation/image": IMG, "settings": {"num_steps": 3.5}}),
    "bad setting value": _p({"observation/image": IMG, "settings": {"image_size": 333}}),
    "negative seed": _p({"observation/image": IMG, "settings": {"seed": -1}}),
    "guidance below 1": _p({"observation/image": IMG, "settings": {"guidance": 0.5}}),
    "nil shift": _p({"observation/image": IMG, "settings": {"shift": None}}),
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
    "joint_position with nan": _droid_p(**{"observation/joint_position": np.array([0.0] * 6 + [np.nan])}),
    "gripper_position as dict": _droid_p(**{"observation/gripper_position": {"x": 1}}),
    "gripper_position without joint_position": _droid_p(**{"observation/joint_position": None}),
    "DROID keys without a prompt": _droid_p(prompt=None),
    "prefix of the wrong width": _p({"observation/image": IMG, "observation/prefix": np.zeros((2, 7), np.float32)}),
    "state of the wrong width": _p({"observation/image": IMG, "observation/state": np.zeros(7)}),
    "state with inf": _p({"observation/image": IMG, "observation/state": np.full(10, np.inf)}),
    "control with non-string name": _p({"__ctrl__": [1]}),
}


def test_malformed_requests_get_error_replies_and_the_server_keeps_serving(server):
    """Every case gets a bad_request reply on a connection that stays open and keeps serving.

    After each case an openpi control message must be answered on the same connection (cheap proof that the handler
    still serves); every 8th case and at the end a full model request must succeed.
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
    assert len(server.backend.policy_calls) == len(MALFORMED) // 8 + 1  # no malformed request reached the model
    assert server.healthz()[0] == 200 and server.server.errors == len(MALFORMED)


def test_error_reply_echoes_the_timestamp(server):
    ws, _ = raw_connect(server.url)
    with ws:
        reply = ask(ws, _p({"observation/timestamp": 7.5, "prompt": "no image"}))
    assert reply["error"]["type"] == "bad_request" and "no image" in reply["error"]["message"]
    assert reply["observation/timestamp"] == 7.5


# -- concurrency ------------------------------------------------------------------------------------------------


def test_two_clients_at_once_are_both_served_in_turn(frame):
    results: dict[int, list[np.ndarray]] = {1: [], 2: []}
    waits: dict[int, list[float]] = {1: [], 2: []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)
    with ServerThread(FakeBackend(latency_s=0.1)) as srv:

        def client(seed: int) -> None:
            try:
                with SidecarBackend(srv.url, timeout_s=10) as b:
                    b.connect()
                    for _ in range(3):
                        start.wait(10)  # both ask at the same moment, every round
                        results[seed].append(b.policy(frame, S.replace(seed=seed)).actions)
                        waits[seed].append(b.last_server_timing["queue_ms"])
            except BaseException as exc:
                errors.append(exc)
                start.abort()

        threads = [threading.Thread(target=client, args=(seed,)) for seed in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert len(srv.backend.policy_calls) == 6
    for seed in (1, 2):  # no mixed-up replies
        expected = FakeBackend().policy(frame, S.replace(seed=seed)).actions
        assert len(results[seed]) == 3 and all(np.array_equal(a, expected) for a in results[seed])
    assert not np.array_equal(results[1][0], results[2][0])
    for k in range(3):  # in every round one client waited for the other's model call (one call at a time)
        assert max(waits[1][k], waits[2][k]) > 50.0, (waits, k)


def test_full_queue_answers_busy_at_once_and_the_connection_survives():
    with ServerThread(FakeBackend(latency_s=0.25), queue_size=1) as srv:
        conns = [raw_connect(srv.url)[0] for _ in range(3)]
        request = _p({"observation/image": IMG, "observation/timestamp": 5.0})

        def fill() -> None:
            conns[0].send(request)
            wait_until(lambda: srv.healthz()[1]["busy"])  # one running
            conns[1].send(request)
            wait_until(lambda: srv.healthz()[1]["queue"] == 1)  # one waiting: the queue is full

        try:
            fill()
            t0 = time.monotonic()
            busy = ask(conns[2], request)
            assert time.monotonic() - t0 < 0.2  # at once, not after the model call
            assert busy["error"]["type"] == "busy" and busy["observation/timestamp"] == 5.0
            assert busy["error"]["message"] == "busy: 1 request(s) already waiting for the model; retry later"
            first, second = (reply_of(ws.recv(timeout=5)) for ws in conns[:2])
            assert "action" in first and "action" in second
            assert second["server_timing"]["queue_ms"] > 100  # it waited for the first call
            assert "action" in ask(conns[2], request)  # the same connection is served once there is room
            # what a robot sees through the backend: SidecarBusyError, a BackendError
            fill()
            with SidecarBackend(srv.url) as b, pytest.raises(SidecarBusyError, match="retry later"):
                b.policy(IMG, S)
            assert all("action" in reply_of(ws.recv(timeout=5)) for ws in conns[:2])
        finally:
            for ws in conns:
                ws.close()
        assert len(srv.backend.policy_calls) == 5


# -- security ---------------------------------------------------------------------------------------------------


def _refusal(url: str, **kwargs) -> InvalidStatus:
    """The HTTP refusal of a websocket handshake."""
    with pytest.raises(InvalidStatus) as info:
        connect(url, compression=None, open_timeout=10, **kwargs)
    return info.value


def test_missing_or_wrong_token_is_refused_at_the_handshake_with_http_401(strict_server, caplog):
    """Every token failure is an HTTP 401 with a one-line reason, before a websocket exists (no slot taken)."""
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    exc = _refusal(strict_server.url)
    body = exc.response.body.decode()
    assert exc.response.status_code == 401 and "no token" in body and "Bearer" in body, body
    assert exc.response.headers["WWW-Authenticate"].startswith("Bearer")
    for kwargs, url in (
        ({"additional_headers": {"Authorization": "Bearer wrong"}}, strict_server.url),
        ({"additional_headers": {"Authorization": "Api-Key wrong"}}, strict_server.url),
        ({}, strict_server.url + "/?token=wrong"),
    ):
        exc = _refusal(url, **kwargs)
        assert (exc.response.status_code, exc.response.body) == (401, b"unauthorized: wrong token\n")
    assert strict_server.server.gate.refused == {401: 4} and strict_server.server.connections == 0
    # the right token, three ways (openpi-client sends "Api-Key <key>")
    for kwargs, url in (
        ({"additional_headers": {"Authorization": f"Bearer {TOKEN}"}}, strict_server.url),
        ({"additional_headers": {"Authorization": f"Api-Key {TOKEN}"}}, strict_server.url),
        ({}, f"{strict_server.url}/?token={TOKEN}"),
    ):
        ws, meta = raw_connect(url, **kwargs)
        ws.close()
        assert meta["auth"] is True
    # what a robot sees: SidecarRefusedError (waiting will not help), naming the status and the reason, at once
    with SidecarBackend(strict_server.url, token="wrong", connect_timeout_s=5) as b:
        t0 = time.monotonic()
        with pytest.raises(SidecarRefusedError) as info:
            b.wait_ready(30)
        assert time.monotonic() - t0 < 2
    assert "HTTP 401: unauthorized: wrong token" in str(info.value)
    with SidecarBackend(strict_server.url, token=TOKEN) as b:
        assert b.policy(IMG, S).actions.shape == (16, 10)
    assert any("refused with HTTP 401: unauthorized: wrong token" in m for m in caplog.messages), caplog.messages
    assert TOKEN not in caplog.text
    assert strict_server.healthz()[0] == 200  # /healthz needs no token


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
    assert len(strict_server.backend.policy_calls) == 1


# -- outage -----------------------------------------------------------------------------------------------------


def test_backend_fails_fast_during_an_outage_and_recovers_after_restart(tmp_path, frame):
    port = free_port()
    first = SidecarProcess.fake(port, tmp_path / "first.log").start().wait_healthy(30)
    second = SidecarProcess.fake(port, tmp_path / "second.log", warmup_latency=0.2)
    backend = SidecarBackend(first.url, timeout_s=10, connect_timeout_s=2)
    try:
        before = backend.policy(frame, S).actions
        first.kill()  # SIGKILL: no close frame
        for _ in range(4):
            t0 = time.monotonic()
            with pytest.raises(BackendError):
                backend.policy(frame, S)
            assert time.monotonic() - t0 < 1.0
        second.start()
        with pytest.raises(BackendError):  # still starting and warming up: refused at once
            backend.policy(frame, S)
        second.wait_healthy(30)
        (after,) = wait_until(lambda: _try_policy(backend, frame), timeout=10, period=0.05)
        np.testing.assert_array_equal(after, before)  # the same backend object, no new one
        assert backend.connected
    finally:
        backend.close()
        first.stop()
        second.stop()
    assert "policy 240x320 steps 3 -> ok" in second.log()


def _try_policy(backend: SidecarBackend, frame: np.ndarray) -> tuple[np.ndarray] | None:
    try:
        return (backend.policy(frame, S).actions,)
    except BackendError:
        return None


def test_closed_backend_and_bad_urls():
    with pytest.raises(ValueError):
        SidecarBackend("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        SidecarBackend("ws://127.0.0.1:1", timeout_s=0)
    b = SidecarBackend(f"127.0.0.1:{free_port()}", connect_timeout_s=1)
    assert b.url.startswith("ws://127.0.0.1:") and not b.connected
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="cannot connect"):
        b.policy(IMG, S)
    with pytest.raises(BackendError, match="next attempt"):  # inside the back-off window: no new attempt
        b.policy(IMG, S)
    assert time.monotonic() - t0 < 2.0
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.info()


def test_cli_refuses_a_busy_port_before_loading_the_model(tmp_path):
    missing = tmp_path / "no-such-checkpoint"  # never loaded: the port is checked first
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "cosmos3_ros.cli", "sidecar", "--model", str(missing), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr
