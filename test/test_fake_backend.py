# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The fake backend: deterministic, input-dependent, and its injected faults, latency and close."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cosmos3_ros.backends import make_backend, read_token
from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.control.config import values_from_overrides
from cosmos3_ros.core.backend import BackendError, PolicyBackend
from cosmos3_ros.core.results import NonFiniteOutputError
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.synthetic import moving_scene_frame

S = PolicySettings(action_chunk_size=8)
IMG = moving_scene_frame(0.0, 48, 64)


def test_is_a_policy_backend_and_deterministic():
    fake = FakeBackend()
    assert isinstance(fake, PolicyBackend)
    a = fake.policy(IMG, S).actions
    assert a.shape == (8, 10) and a.dtype == np.float32 and np.abs(a).max() <= 1.0
    np.testing.assert_array_equal(a, FakeBackend().policy(IMG, S).actions)


@pytest.mark.parametrize("change", [{"seed": 1}, {"prompt": "other"}, {"num_steps": 4}, {"guidance": 2.0}])
def test_settings_change_the_actions(change):
    fake = FakeBackend()
    assert not np.allclose(fake.policy(IMG, S).actions, fake.policy(IMG, S.replace(**change)).actions)


def test_frame_and_state_change_the_actions_and_the_chunk_starts_near_the_state():
    fake = FakeBackend()
    assert not np.allclose(fake.policy(IMG, S).actions, fake.policy(moving_scene_frame(5.0, 48, 64), S).actions)
    with_state = S.replace(use_state=True)
    state = np.full(10, 0.8, np.float32)
    a = fake.policy(IMG, with_state, state=state).actions
    assert np.abs(a[0] - state).max() < np.abs(a[-1] - state).max()
    assert not np.allclose(a, fake.policy(IMG, with_state, state=np.zeros(10, np.float32)).actions)
    with pytest.raises(ValueError, match="state"):
        fake.policy(IMG, with_state, state=np.zeros(3))
    with pytest.raises(ValueError, match="use_state is set but no robot state"):
        fake.policy(IMG, with_state)
    # Without use_state the state is ignored, as the real runtime ignores it.
    np.testing.assert_array_equal(fake.policy(IMG, S, state=state).actions, fake.policy(IMG, S).actions)


def test_prefix_rows_come_back_unchanged_and_shape_the_rest():
    fake = FakeBackend()
    prefix = np.linspace(-0.5, 0.5, 30, dtype=np.float32).reshape(3, 10)
    a = fake.policy(IMG, S, prefix=prefix).actions
    np.testing.assert_array_equal(a[:3], prefix)
    b = fake.policy(IMG, S, prefix=prefix + 0.1).actions
    assert not np.allclose(a[3:], b[3:])
    for bad in (np.zeros((8, 10)), np.zeros((2, 9)), np.full((2, 10), np.nan)):
        with pytest.raises(ValueError, match="prefix"):
            fake.policy(IMG, S, prefix=bad)


def test_video_and_forward_dynamics_frames_move():
    fake = FakeBackend()
    chunk = fake.policy(IMG, S, return_video=True)
    assert chunk.video.shape == (9, 48, 64, 3) and np.array_equal(chunk.video[0], IMG)
    fc = fake.forward_dynamics(IMG, chunk.actions, S)
    assert fc.frames.shape == (9, 48, 64, 3) and not np.array_equal(fc.frames[1], fc.frames[0])


def test_injected_faults_apply_to_the_next_calls_of_their_mode():
    fake = FakeBackend()
    fake.inject("error", count=2, exc=RuntimeError("boom"))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            fake.policy(IMG, S)
    fake.policy(IMG, S)
    fake.inject("nonfinite", mode="forward_dynamics")
    a = fake.policy(IMG, S).actions  # not a forward_dynamics call: unaffected
    with pytest.raises(NonFiniteOutputError):
        fake.forward_dynamics(IMG, a, S)
    fake.inject("nonfinite")
    with pytest.raises(NonFiniteOutputError):
        fake.policy(IMG, S)


def test_warmup_is_recorded_apart_and_never_failed():
    fake = FakeBackend()
    fake.inject("error")
    assert fake.warmup(S) >= 0
    assert [c.warmup for c in fake.calls] == [True, True] and fake.policy_calls == []
    with pytest.raises(BackendError):
        fake.policy(IMG, S)


def test_latency_and_close_interrupts_a_waiting_call():
    fake = FakeBackend(latency_s=5.0)
    errors = []

    def call():
        try:
            fake.policy(IMG, S)
        except BackendError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.1)
    fake.close()
    t.join(2)
    assert not t.is_alive() and errors and time.monotonic() - t0 < 2
    with pytest.raises(BackendError, match="closed"):
        fake.policy(IMG, S)


def test_factory_builds_each_backend_and_reads_the_token(tmp_path, monkeypatch):
    assert isinstance(make_backend(values_from_overrides({"backend": "fake", "fake_latency": 0.5})), FakeBackend)
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert read_token(str(token_file)) == "from-file"
    monkeypatch.setenv("COSMOS3_ROS_SIDECAR_TOKEN", "from-env")
    assert read_token("") == "from-env" and read_token(str(token_file)) == "from-file"
    monkeypatch.delenv("COSMOS3_ROS_SIDECAR_TOKEN")
    assert read_token("") is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_token(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="No such file"):
        read_token(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="model' is empty"):
        make_backend(values_from_overrides({"backend": "in_process"}))


def test_node_side_sidecar_backend_sends_the_token_from_the_environment(monkeypatch):
    """backend: sidecar with $COSMOS3_ROS_SIDECAR_TOKEN reaches a token-protected server; without it, refused."""
    import asyncio

    from cosmos3_ros.sidecar.server import SidecarServer

    server = SidecarServer(FakeBackend(), S, port=0, token="s3cret", warmup=False)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(server.serve(stop, ready=lambda port: ready.set())), daemon=True
    )
    thread.start()
    assert ready.wait(10)
    url = f"ws://127.0.0.1:{server.port}"
    try:
        monkeypatch.setenv("COSMOS3_ROS_SIDECAR_TOKEN", "s3cret")
        backend = make_backend(values_from_overrides({"backend": "sidecar", "sidecar_url": url}))
        assert backend.policy(IMG, S).actions.shape == (8, 10)
        backend.close()
        monkeypatch.delenv("COSMOS3_ROS_SIDECAR_TOKEN")
        backend = make_backend(values_from_overrides({"backend": "sidecar", "sidecar_url": url}))
        with pytest.raises(BackendError, match="unauthorized"):
            backend.policy(IMG, S)
        backend.close()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_policy_batch_is_exact_per_sample_and_refuses_incompatible_calls(frame):
    from cosmos3_ros.core.backend import PolicyCall, run_batch

    fake = FakeBackend(latency_s=0.05)
    s = PolicySettings(num_steps=2)
    calls = [PolicyCall(frame, s.replace(prompt=f"task {i}", seed=i)) for i in range(3)]
    t0 = time.perf_counter()
    batched = run_batch(fake, calls)
    elapsed = time.perf_counter() - t0
    assert fake.batches == [3] and elapsed < 0.14  # one latency for the batch
    for call, chunk in zip(calls, batched, strict=True):
        np.testing.assert_array_equal(chunk.actions, FakeBackend().policy(frame, call.settings).actions)
    with pytest.raises(ValueError, match="call 1 cannot share a batch"):
        fake.policy_batch([calls[0], PolicyCall(frame, s.replace(num_steps=3))])
