# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Clients of the sidecar other than a raw socket: our SidecarBackend against a foreign openpi-style server (NVIDIA's
DROID policy server, as documented), the real ``openpi-client`` from PyPI, and (slow) a real ``cosmos3-ros sidecar``
process on the tiny checkpoint, bit for bit against the in-process runtime."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sidecar_util
from sidecar_util import (
    IMG,
    SERVER_DEFAULTS,
    TOKEN,
    OpenpiStyleServer,
    S,
    SidecarProcess,
    free_port,
)

from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.core.backend import BackendError
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar.client import SidecarBackend

SERVER_LOG = "cosmos3_ros.sidecar.server"


# -- an openpi-protocol server that is not ours (NVIDIA's DROID policy server, as documented) --------------------

STATE = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, -0.1, -0.2, 0.8], np.float32)  # gripper last


def test_state_goes_to_foreign_servers_in_droid_keys_and_the_gripper_flips_back():
    with OpenpiStyleServer() as srv, SidecarBackend(srv.url, timeout_s=5) as b:
        chunk = b.policy(IMG, S, state=STATE, observation_stamp=2.0)
        obs = srv.received[-1]
        assert sorted(obs) == sorted(OpenpiStyleServer.KNOWN)  # no settings, mode, timestamp or observation/state
        assert obs["prompt"] == S.prompt and np.array_equal(obs["observation/image"], IMG)
        joints, gripper = obs["observation/joint_position"], obs["observation/gripper_position"]
        assert joints.shape == (9,) and gripper.shape == (1,)
        np.testing.assert_array_equal(joints, STATE[:-1].astype(np.float64))  # all but the last value
        np.testing.assert_allclose(gripper, [0.2], atol=1e-6)  # 1 - g, NVIDIA's convention
        # the reply's last column comes back into the model's space (1 - g), the others unchanged
        assert chunk.actions.shape == (32, 8) and chunk.observation_stamp == 2.0
        np.testing.assert_array_equal(chunk.actions[:, -1], np.full(32, 1 - OpenpiStyleServer.REPLY_GRIPPER))
        np.testing.assert_array_equal(chunk.actions[:, :-1], np.full((32, 7), len(S.prompt), np.float32))
        # the state is per call: a new state, new keys
        b.policy(IMG, S, state=np.zeros(10, np.float32))
        assert srv.received[-1]["observation/gripper_position"].tolist() == [1.0]


def test_sidecar_backend_speaks_plain_openpi_to_foreign_servers():
    with OpenpiStyleServer() as srv, SidecarBackend(srv.url, timeout_s=0.5) as b:
        info = b.info()
        assert info.versions["sidecar_protocol"] == "openpi" and info.action_dim == 0
        # no robot state: that server fails, sends its traceback and closes; we see a BackendError
        with pytest.raises(BackendError, match="joint_position"):
            b.policy(IMG, S)
        assert not b.connected
        chunk = b.policy(IMG, S, state=STATE)  # reconnects by itself
        assert chunk.actions.shape == (32, 8) and (chunk.actions[:, :-1] == len(S.prompt)).all()
        with pytest.raises(BackendError, match="not a cosmos3_ros sidecar"):
            b.forward_dynamics(IMG, np.zeros((4, 10), np.float32), S)
        # a reply that never comes: BackendError after timeout_s, and the next call works again
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"no reply within 0\.5 s"):
            b.policy(IMG, S.replace(prompt="hang"), state=STATE)
        assert time.monotonic() - t0 < 1.5
        assert b.policy(IMG, S, state=STATE).actions.shape == (32, 8)
    assert all(sorted(obs) == sorted(OpenpiStyleServer.KNOWN) for obs in srv.received[1:])


def test_one_backend_shared_by_threads_keeps_replies_matched():
    with OpenpiStyleServer() as srv, SidecarBackend(srv.url, timeout_s=10) as b:
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for _ in range(10):
                    actions = b.policy(IMG, S.replace(prompt="x" * n), state=STATE).actions
                    assert (actions[:, :-1] == n).all()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(srv.received) == 40


# -- the real openpi-client ---------------------------------------------------------------------------------------

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
    close, response = getattr(exc, "rcvd", None), getattr(exc, "response", None)
    out["connect_error"] = {"type": type(exc).__name__, "code": getattr(close, "code", None),
                            "reason": getattr(close, "reason", None),
                            "status": getattr(response, "status_code", None),
                            "body": bytes(getattr(response, "body", b"") or b"").decode()}
    print(json.dumps(out)); sys.exit(0)
meta = client.get_server_metadata()
out["metadata"] = {k: meta[k] for k in ("protocol", "action_chunk_size", "action_dim", "domain")}
obs = {"observation/image": frame, "prompt": "pick up the red cup",
       "observation/joint_position": np.zeros(7), "observation/gripper_position": np.zeros(1)}
r = client.infer(obs)
out["action"] = r["action"].tolist()
out["action_dtype"] = str(r["action"].dtype)
out["server_timing"] = sorted(r["server_timing"])
try:
    client.infer({"prompt": "no image"})
except RuntimeError as exc:  # our error text frame; the connection stays open
    out["bad"] = str(exc)
r2 = client.infer({"observation/exterior_image_1_left": frame, "observation/wrist_image_left": frame[:120],
                   "prompt": "pick up the red cup", "settings": {"seed": 5, "num_steps": 3}})
out["multi_camera_action"] = r2["action"].tolist()
out["cameras"] = r2["cameras"]
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def openpi_python() -> Path:
    """Python of a venv with the real openpi-client from PyPI (created once, reused)."""
    return sidecar_util.openpi_python()


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


def test_real_openpi_client_gets_a_chunk(openpi_python, server, frame, tmp_path):
    out = _run_openpi(openpi_python, server.port, "", frame, tmp_path)
    assert out["numpy"].startswith("1.")  # the client's own numpy<2 world
    assert out["metadata"] == {
        "protocol": proto.PROTOCOL,
        "action_chunk_size": 16,
        "action_dim": 10,
        "domain": "bridge_orig_lerobot",
    }
    assert out["action_dtype"] == "float32"
    direct = FakeBackend()
    expected = direct.policy(frame, SERVER_DEFAULTS.replace(prompt="pick up the red cup")).actions
    np.testing.assert_array_equal(np.asarray(out["action"], np.float32), proto.droid_actions_to_model(expected))
    assert {"infer_ms", "queue_ms", "unpack_ms"} <= set(out["server_timing"])
    # openpi-client raises on our error text frame, with our JSON error in its message; the connection stays usable
    header, _, text = out["bad"].partition("\n")
    assert header == "Error in inference server:"
    error = json.loads(text)
    assert error["error"] == "bad_request" and error["message"].startswith("no image"), error
    np.testing.assert_array_equal(np.asarray(out["multi_camera_action"], np.float32), direct.policy(frame, S).actions)
    assert out["cameras"] == ["observation/exterior_image_1_left"]
    # the DROID keys without use_state: not the model's state, but the reply's gripper is NVIDIA's 1 - g
    assert [c.state for c in server.backend.policy_calls] == [None, None]


def test_real_openpi_client_with_api_key(openpi_python, strict_server, tmp_path):
    out = _run_openpi(openpi_python, strict_server.port, TOKEN, IMG, tmp_path)
    assert len(out["action"]) == 16
    out = _run_openpi(openpi_python, strict_server.port, "wrong", IMG, tmp_path)
    error = out["connect_error"]  # refused at the handshake: openpi-client raises InvalidStatus from its constructor
    assert (error["type"], error["status"], error["body"]) == ("InvalidStatus", 401, "unauthorized: wrong token\n")


# -- end to end: the real checkpoint in a real `cosmos3-ros sidecar` process (slow) -------------------------------


@pytest.fixture(scope="module")
def real_server(tiny_model, tmp_path_factory):
    """``cosmos3-ros sidecar`` on the tiny checkpoint (defaults num_steps 2, tier 256); SIGTERM stops it cleanly."""
    srv = SidecarProcess.cli(tiny_model, free_port(), tmp_path_factory.mktemp("sidecar") / "server.log")
    srv.start().wait_healthy()
    yield srv
    rc = srv.stop(signal.SIGTERM)
    log = srv.log()
    assert rc == 0, log[-3000:]
    assert "stopping: refusing new requests" in log and "stopped after" in log


@pytest.fixture(scope="module")
def runtime(tiny_model):
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu")


@pytest.mark.slow
def test_real_sidecar_equals_in_process_runtime_bit_for_bit(real_server, runtime, frame):
    status, body = real_server.healthz()
    assert status == 200 and body["status"] == "ok"
    log = real_server.log()
    assert log.index("warm-up done") < log.index("serving on ws://127.0.0.1:")  # loopback by default
    backend = SidecarBackend(real_server.url, timeout_s=120)
    with backend:
        meta = backend.connect()
        assert {"cosmos3_ros", "diffusers", "torch", "websockets", "msgpack"} <= set(meta["versions"])
        assert meta["model_action_dim"] == 64 and (meta["settings"]["num_steps"], meta["image_size"]) == (2, 256)
        state = np.linspace(-0.5, 0.5, 10, dtype=np.float32)  # travels, and the Cosmos 3 runtime ignores it
        r = S.replace(image_size=256)  # the smallest tier: the CPU model is the slow part here
        for settings in (r, r.replace(seed=9, shift=3.0, domain_name="droid", action_chunk_size=8, fps=15)):
            remote = backend.policy(frame, settings, observation_stamp=3.5)
            local = runtime.policy(frame, settings)
            assert remote.actions.dtype == np.float32 and remote.observation_stamp == 3.5
            np.testing.assert_array_equal(remote.actions, local.actions)
        np.testing.assert_array_equal(backend.policy(frame, r, state=state).actions, runtime.policy(frame, r).actions)
        # video and forward_dynamics too (short chunk: decoding is the slow part on CPU)
        short, small = r.replace(action_chunk_size=4), frame[::4, ::4]
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
        # the contract: bad input is ValueError (here found by the server), not BackendError
        with pytest.raises(ValueError, match="sidecar rejected the request"):
            backend.policy(np.zeros((8, 8, 3), np.uint8), r)
        assert backend.policy(frame, r).actions.shape == (16, 10)  # connection still good
    assert "policy 240x320 steps 3 -> ok: infer" in real_server.log()
