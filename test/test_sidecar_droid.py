# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar as NVIDIA's DROID policy server: the real ``openpi-client`` sends RoboArena-format observations (three
cameras, joint and gripper positions, a prompt) and gets ``action`` [32, 8] back; errors come as text frames, which
openpi-client raises, on a connection that stays open. Also our SidecarBackend's ``prefix`` (known first rows).

Fast tier: the request parser on NVIDIA's keys (composite, state row, reply flip; no server), and an in-process
sidecar with the DROID preset's settings on the FakeBackend, checked number for number against the FakeBackend's
direct call. Slow tier: ``cosmos3-ros sidecar --params-file config/droid.yaml`` on the tiny
checkpoint, driven end to end by openpi-client and checked against the in-process runtime.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from sidecar_util import (
    DROID_PRESET,
    HOME_GRIPPER,
    HOME_JOINTS,
    IMG,
    OpenpiStyleServer,
    S,
    ServerThread,
    SidecarProcess,
    ask,
    droid_settings,
    free_port,
    openpi_python,
    raw_connect,
    roboarena_observation,
    run_openpi_plan,
)

from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.core.backend import BackendError
from cosmos3_ros.core.compose import compose
from cosmos3_ros.core.results import NonFiniteOutputError
from cosmos3_ros.sidecar import droid
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar.client import SidecarBackend

CAMS = ["observation/wrist_image_left", "observation/exterior_image_1_left", "observation/exterior_image_2_left"]
PROMPT = "put the cup in the bowl"
OTHER_JOINTS = HOME_JOINTS + np.array([0.3, -0.2, 0.1, 0.25, -0.1, 0.2, -0.3])


def _expected(backend, obs: dict, settings) -> np.ndarray:
    """What NVIDIA's server answers for ``obs``, computed by hand around a direct ``backend.policy`` call: the
    RoboArena composite, the state row ``[q[-1], 1 - g[-1]]`` (float32), the reply's gripper flipped back."""
    image = compose({k: obs[k] for k in CAMS}, CAMS, "droid")
    q = np.asarray(obs["observation/joint_position"], np.float32).reshape(-1, 7)[-1]
    g = np.asarray(obs["observation/gripper_position"], np.float32).reshape(-1)[-1]
    state = np.concatenate([q, [np.float32(1.0) - g]]).astype(np.float32)
    actions = backend.policy(image, settings.replace(prompt=obs["prompt"]), state=state).actions.copy()
    actions[:, -1] = 1.0 - actions[:, -1]
    return actions


def _plan_observations() -> dict[str, dict]:
    home = roboarena_observation(prompt=PROMPT)
    return {
        "home": home,
        "other_state": roboarena_observation(OTHER_JOINTS, gripper=[0.9, 0.75], prompt=PROMPT),
        # [T, 7] history and a [T, 1] gripper (the last rows count); cameras at sizes that must be resized
        "resized": roboarena_observation(
            np.stack([OTHER_JOINTS, HOME_JOINTS]), [[0.1], [0.25]], PROMPT, wrist=(240, 320), exterior=(480, 640)
        ),
        "bad_joints": {**home, "observation/joint_position": np.zeros(6)},
    }


# -- the request parser (no server) --------------------------------------------------------------------------------

DROID = droid_settings()
DROID_CAMS = CAMS
PIC = np.arange(32 * 48 * 3, dtype=np.uint8).reshape(32, 48, 3)


def _req(**extra) -> dict:
    return {"observation/image": PIC, **extra}


def _droid(**extra) -> dict:
    """A request in NVIDIA's DROID keys (an ``observation/image``, the state, a prompt), with ``extra`` over it."""
    msg = {"prompt": "pick", "observation/joint_position": np.zeros(7), "observation/gripper_position": 0.0}
    return _req(**{**msg, **extra})


def test_droid_preset_is_nvidias_serving_config():
    d = DROID
    assert (d.domain_name, d.action_chunk_size, d.action_width, d.fps) == ("droid_lerobot", 32, 8, 15.0)
    assert (d.num_steps, d.guidance, d.shift, d.view_point) == (4, 3.0, 5.0, "concat_view")
    assert d.use_state and d.conditioning == "cosmos_framework" and d.image_size == 480


def test_roboarena_cameras_are_composed_as_nvidia_composes_them():
    obs = roboarena_observation()
    wrist, ext1, ext2 = (obs[k] for k in DROID_CAMS)
    r = proto.parse_message(obs, DROID)
    assert r.cameras == tuple(DROID_CAMS) and r.droid and r.ignored_keys == ()
    # native sizes (360x640 wrist, 180x320 exteriors): no resize anywhere, every pixel where NVIDIA puts it
    assert r.image.shape == (540, 640, 3) and r.image.flags.writeable
    np.testing.assert_array_equal(r.image[:360], wrist)
    np.testing.assert_array_equal(r.image[360:, :320], ext1)
    np.testing.assert_array_equal(r.image[360:, 320:], ext2)
    # other sizes: core.compose's droid layout (bit-compatible with NVIDIA's torch resize, tested there)
    obs = roboarena_observation(wrist=(240, 320), exterior=(480, 640))
    r = proto.parse_message(obs, DROID)
    np.testing.assert_array_equal(r.image, compose({k: obs[k] for k in DROID_CAMS}, DROID_CAMS, "droid"))
    assert r.image.shape == (540, 640, 3)


def test_observation_image_wins_and_is_resized_to_540x640_for_droid_requests():
    obs = roboarena_observation()
    composed = proto.parse_message(obs, DROID).image
    r = proto.parse_message({**obs, "observation/image": composed}, DROID)  # NVIDIA's rule: the composed frame wins
    np.testing.assert_array_equal(r.image, composed)
    assert r.cameras == ("observation/image",) and r.ignored_keys == tuple(sorted(DROID_CAMS))
    small = compose({k: obs[k][::2, ::2] for k in DROID_CAMS}, DROID_CAMS, "side_by_side")
    r = proto.parse_message({**obs, "observation/image": small}, DROID)
    np.testing.assert_array_equal(r.image, droid.resize_to_droid(small))  # NVIDIA's final resize
    assert r.image.shape == (540, 640, 3)
    # not cosmos_framework (the diffusers path, e.g. bridge) or our own protocol: the frame as sent
    r = proto.parse_message({**obs, "observation/image": small, "settings": {"conditioning": "diffusers"}}, DROID)
    assert r.image.shape == small.shape
    r = proto.parse_message({"observation/image": small, "observation/state": np.zeros(8)}, DROID)
    assert r.image.shape == small.shape and not r.droid
    # without concat_view the first camera by priority, as before
    r = proto.parse_message({**obs, "settings": {"view_point": "ego_view"}}, DROID)
    assert r.cameras == ("observation/exterior_image_1_left",)
    np.testing.assert_array_equal(r.image, droid.resize_to_droid(obs["observation/exterior_image_1_left"]))


@pytest.mark.parametrize(
    ("joints", "gripper"),
    [
        (np.arange(7) / 10, 0.25),  # [7] and a scalar
        (np.arange(7).tolist(), [0.25]),  # lists, [T]
        (np.stack([np.zeros(7), np.arange(7) / 10]), np.array([[0.9], [0.25]], np.float32)),  # [T, 7], [T, 1]
        (np.arange(7, dtype=np.int64), np.float32(0.25)),
    ],
)
def test_droid_state_row_is_the_last_joints_and_one_minus_the_gripper(joints, gripper):
    r = proto.parse_message(
        _droid(**{"observation/joint_position": joints, "observation/gripper_position": gripper}), DROID
    )
    q = np.asarray(joints, np.float32).reshape(-1, 7)[-1]
    assert r.state.dtype == np.float32 and r.state.shape == (8,)
    np.testing.assert_array_equal(r.state[:7], q)
    assert r.state[7] == np.float32(1.0) - np.float32(0.25)  # float32, as NVIDIA computes it
    assert r.joint_position.shape[1] == 7 and r.gripper_position.shape[1] == 1 and r.droid
    # without use_state the keys are checked but the model gets no state; the reply still flips
    r = proto.parse_message(_droid(**{"observation/joint_position": joints}, settings={"use_state": False}), DROID)
    assert r.state is None and r.droid


def test_reply_actions_are_checked_and_flipped_for_droid_requests():
    chunk = np.linspace(-1, 1, 32 * 8, dtype=np.float32).reshape(32, 8)
    original = chunk.copy()
    req = proto.parse_message(_droid(), DROID)
    out = proto.reply_actions(req, chunk)
    np.testing.assert_array_equal(out[:, :7], chunk[:, :7])
    np.testing.assert_array_equal(out[:, 7], 1.0 - chunk[:, 7])
    assert out.dtype == np.float32 and np.array_equal(chunk, original)  # the model's array is not modified
    ours = proto.parse_message(_req(**{"observation/state": np.zeros(8)}), DROID)
    np.testing.assert_array_equal(proto.reply_actions(ours, chunk), chunk)  # our protocol: model units
    with pytest.raises(BackendError, match=r"invalid action output: shape \(31, 8\), expected \(32, 8\); not sent"):
        proto.reply_actions(req, chunk[:31])
    bad = chunk.copy()
    bad[3, :2] = [np.nan, np.inf]
    with pytest.raises(NonFiniteOutputError, match="2 non-finite value"):
        proto.reply_actions(req, bad)
    with pytest.raises(BackendError, match="shape None"):
        proto.reply_actions(req, chunk.tolist())


# -- the real openpi-client and our SidecarBackend against an in-process sidecar ----------------------------------


@pytest.fixture(scope="module")
def droid_server():
    """An in-process sidecar whose defaults are config/droid.yaml's sampling settings, on a FakeBackend."""
    with ServerThread(defaults=droid_settings()) as srv:
        yield srv


def test_real_openpi_client_drives_a_droid_sidecar(droid_server, tmp_path):
    py = openpi_python()
    observations = _plan_observations()
    plan = ["home", "home", "other_state", "bad_joints", "home", "resized"]
    out = run_openpi_plan(py, droid_server.port, observations, plan, tmp_path)
    assert out["metadata"] == {
        "protocol": proto.PROTOCOL,
        "action_chunk_size": 32,
        "action_dim": 8,
        "domain": "droid_lerobot",
    }
    home, again, other, bad, after, resized = out["replies"]
    # action [32, 8] float32, NVIDIA's timing map next to ours
    assert home["dtype"] == "float32" and home["action"].shape == (32, 8)
    assert {"action", "timing", "server_timing"} <= set(home["keys"])
    assert set(home["timing"]) == {
        "server_preprocess_ms",
        "server_policy_inference_ms",
        "server_postprocess_ms",
        "server_total_ms",
    }
    # number for number what NVIDIA's server computes around the model call (here the FakeBackend's)
    direct, settings = FakeBackend(), droid_settings()
    np.testing.assert_array_equal(home["action"], _expected(direct, observations["home"], settings))
    np.testing.assert_array_equal(again["action"], home["action"])  # same observation, same actions
    np.testing.assert_array_equal(other["action"], _expected(direct, observations["other_state"], settings))
    assert np.abs(other["action"] - home["action"]).max() > 0.05  # another joint state, other actions
    np.testing.assert_array_equal(resized["action"], _expected(direct, observations["resized"], settings))
    calls = droid_server.backend.policy_calls[-5:]
    assert [c.image_shape for c in calls] == [(540, 640, 3)] * 5
    np.testing.assert_array_equal(calls[0].state[:7], HOME_JOINTS.astype(np.float32))
    assert calls[0].state[7] == np.float32(0.75)  # 1 - 0.25: NVIDIA's gripper flip on the way in
    # a malformed request raises in openpi-client, naming the key; the next request on the connection succeeds
    assert bad["raised"] == "RuntimeError"
    header, _, text = bad["text"].partition("\n")
    error = json.loads(text)
    assert header == "Error in inference server:" and error["error"] == "bad_request"
    assert error["message"] == "'observation/joint_position' must have shape [7] or [T, 7] (radians), got (1, 6)"
    np.testing.assert_array_equal(after["action"], home["action"])


def test_sidecar_backend_maps_error_frames_to_the_same_exceptions_and_keeps_the_connection(droid_server):
    with SidecarBackend(droid_server.url, timeout_s=10) as b:
        settings = droid_settings(prompt=PROMPT)
        frame = compose({k: v for k, v in roboarena_observation().items() if k in CAMS}, CAMS, "droid")
        state = np.concatenate([HOME_JOINTS, [0.75]]).astype(np.float32)
        actions = b.policy(frame, settings, state=state).actions  # our protocol: model units, no flip
        np.testing.assert_array_equal(actions, FakeBackend().policy(frame, settings, state=state).actions)
        with pytest.raises(ValueError, match="sidecar rejected the request: use_state is set but no robot state"):
            b.policy(frame, settings)
        droid_server.backend.inject("nonfinite")
        with pytest.raises(NonFiniteOutputError, match=r"^sidecar: policy produced non-finite"):
            b.policy(frame, settings, state=state)
        droid_server.backend.inject("error")
        with pytest.raises(BackendError, match="sidecar model_error: injected fake backend failure"):
            b.policy(frame, settings, state=state)
        assert b.connected
        np.testing.assert_array_equal(b.policy(frame, settings, state=state).actions, actions)


class _BrokenBackend(FakeBackend):
    """A backend that breaks its contract: the next policy results are cut short or hold a NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.breaks: list[str] = []

    def policy(self, image, settings, **kwargs):
        chunk = super().policy(image, settings, **kwargs)
        if self.breaks and not self._warming:
            if self.breaks.pop(0) == "short":
                chunk = dataclasses.replace(chunk, actions=chunk.actions[:-1])
            else:  # changed after the chunk checked itself
                chunk.actions[3, :2] = np.nan
        return chunk


def test_a_reply_is_checked_before_it_is_sent():
    backend = _BrokenBackend()
    obs = roboarena_observation(prompt=PROMPT)
    with ServerThread(backend, defaults=droid_settings()) as srv:
        ws, _ = raw_connect(srv.url)
        with ws:
            backend.breaks[:] = ["short", "nan"]
            short, nan = ask(ws, proto.packb(obs)), ask(ws, proto.packb(obs))
            assert short["error"] == {
                "type": "model_error",
                "message": "invalid action output: shape (31, 8), expected (32, 8); not sent",
            }
            assert nan["error"] == {
                "type": "non_finite_output",
                "message": "invalid action output: 2 non-finite value(s); not sent",
            }
            assert ask(ws, proto.packb(obs))["action"].shape == (32, 8)  # the same connection serves on
    assert srv.server.errors == 2 and srv.server.served == 1


def test_prefix_round_trip_through_our_server(server, frame):
    direct = FakeBackend()
    prefix = np.linspace(-0.4, 0.4, 30, dtype=np.float32).reshape(3, 10)
    state = np.linspace(0.5, -0.5, 10, dtype=np.float32)
    with SidecarBackend(server.url) as backend:
        chunk = backend.policy(frame, S, prefix=prefix).actions
        np.testing.assert_array_equal(chunk, direct.policy(frame, S, prefix=prefix).actions)
        np.testing.assert_array_equal(chunk[:3], prefix)  # the given rows come back unchanged
        np.testing.assert_array_equal(server.backend.policy_calls[-1].prefix, prefix)
        assert not np.array_equal(chunk, backend.policy(frame, S, prefix=prefix[:2]).actions)
        # with the robot state (use_state) too
        su = S.replace(use_state=True)
        both = backend.policy(frame, su, state=state, prefix=prefix).actions
        np.testing.assert_array_equal(both, direct.policy(frame, su, state=state, prefix=prefix).actions)
        call = server.backend.policy_calls[-1]
        np.testing.assert_array_equal(call.state, state)
        np.testing.assert_array_equal(call.prefix, prefix)
        # a bad prefix is a ValueError before anything is sent
        n = len(server.backend.calls)
        for bad in (prefix[:, :7], np.zeros((16, 10)), np.full((2, 10), np.nan), np.zeros(10)):
            with pytest.raises(ValueError, match="prefix"):
                backend.policy(frame, S, prefix=bad)
        assert len(server.backend.calls) == n


def test_prefix_is_refused_by_a_foreign_openpi_server():
    with OpenpiStyleServer() as srv, SidecarBackend(srv.url, timeout_s=5) as b:
        state = np.zeros(10, np.float32)
        with pytest.raises(BackendError, match="not a cosmos3_ros sidecar: it takes no prefix rows"):
            b.policy(IMG, S, state=state, prefix=np.zeros((2, 10), np.float32))
        assert srv.received == [] and b.connected  # nothing was sent; the connection is fine
        assert b.policy(IMG, S, state=state).actions.shape == (32, 8)


# -- end to end: `cosmos3-ros sidecar --params-file config/droid.yaml` on the tiny checkpoint (slow) --------------


def test_cli_with_the_droid_preset_serves_nvidias_contract_to_openpi_client(tiny_model: Path, tmp_path: Path):
    py = openpi_python()
    port = free_port()
    cmd = ["-m", "cosmos3_ros.cli", "sidecar", "--model", str(tiny_model), "--params-file", str(DROID_PRESET)]
    srv = SidecarProcess([sys.executable, *cmd, "--port", str(port)], port, tmp_path / "server.log")
    observations = _plan_observations()
    try:
        srv.start().wait_healthy(timeout=300)
        out = run_openpi_plan(py, port, observations, ["home", "bad_joints", "home", "other_state"], tmp_path)
    finally:
        rc = srv.stop(signal.SIGTERM)
    log = srv.log()
    assert rc == 0, log[-3000:]
    assert out["metadata"]["action_chunk_size"] == 32 and out["metadata"]["domain"] == "droid_lerobot"
    home, bad, again, other = out["replies"]
    assert home["action"].shape == (32, 8) and home["dtype"] == "float32" and np.isfinite(home["action"]).all()
    assert bad["raised"] == "RuntimeError" and "'observation/joint_position' must have shape [7]" in bad["text"]
    np.testing.assert_array_equal(again["action"], home["action"])  # fixed seed: deterministic
    assert not np.array_equal(other["action"], home["action"])  # another joint state, other actions
    # the served numbers are the in-process runtime's on NVIDIA's composite, state row and reply flip. Bit for bit
    # in a fresh process; after other tests in this process CPU BLAS has been seen to differ by up to ~3e-6, so
    # within tol, while the gripper convention of the state row moves this random-weights model's actions by ~2e-4
    # (checked here: the test can tell a wrong state row from the right one)
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    runtime = Cosmos3PolicyRuntime(str(tiny_model), device="cpu")
    try:
        expected = _expected(runtime, observations["home"], droid_settings())
        wrong_gripper = {**observations["home"], "observation/gripper_position": np.asarray(1.0 - HOME_GRIPPER)}
        unflipped = _expected(runtime, wrong_gripper, droid_settings())  # the state row with g, not 1 - g
    finally:
        runtime.close()
    tol = 2e-5
    assert np.abs(home["action"] - expected).max() <= tol, np.abs(home["action"] - expected).max()
    assert np.abs(home["action"] - unflipped).max() > 5 * tol
    assert "policy 540x640 steps 4 -> ok" in log and "stopped after 3 request(s), 1 error(s)" in log
