# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros fleet`` without Ray running (fast): the settings and their checks before anything starts, the Ray
Serve options they give, and one replica's batch of requests from several robots (batched where compatible, each
answered exactly as alone; a failing batch never costs a batch-mate its answer)."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.core.schema import settings_in
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.fleet.batching import groups, serve_requests
from cosmos3_ros.fleet.config import FleetConfig, GatewayLimits, ReplicaSpec
from cosmos3_ros.sidecar import protocol as proto

DEFAULTS = PolicySettings(num_steps=2)
IMG = np.full((48, 64, 3), 100, np.uint8)


def _request(**message) -> proto.Request:
    message.setdefault("observation/image", IMG)
    request = proto.parse_message(message, DEFAULTS)
    assert isinstance(request, proto.Request)
    return request


def _alone(backend: FakeBackend, request: proto.Request):
    if request.mode == "forward_dynamics":
        return backend.forward_dynamics(request.image, request.actions, request.settings)
    return backend.policy(request.image, request.settings, return_video=request.return_video, state=request.state)


# -- settings and arguments ---------------------------------------------------------------------------------------


def test_fleet_flags_come_from_the_schema_with_the_proxy_message_cap():
    from cosmos3_ros.cli import build_parser
    from cosmos3_ros.commands.fleet import resolve

    names = [s.name for s in settings_in("fleet")]
    assert {"num_replicas", "autoscaling", "max_batch_size", "batch_wait_timeout_s", "ray_address"} <= set(names)
    args = build_parser().parse_args(["fleet", "--backend", "fake", "--num-replicas", "2", "--max-batch-size", "4"])
    spec, config, limits, defaults, _ = resolve(args)
    assert (spec.kind, config.num_replicas, config.max_batch_size, config.autoscaling) == ("fake", 2, 4, False)
    assert limits.max_message_bytes == 16 * 2**20  # Ray Serve's proxy takes no more; the sidecar's default is 32
    assert defaults == PolicySettings()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend", "fake", "--max_message_mb", "32"], "Ray Serve's proxy takes websocket messages of at most 16"),
        (["--backend", "fake", "--num-replicas", "2", "--autoscaling"], "--num-replicas N or --autoscaling"),
        (["--backend", "sidecar"], "a fleet replica runs the model itself"),
        ([], "--model is required"),
        (["--model", "/x", "--device", "cuda:1"], "gives each replica its own GPU"),
        (["--backend", "fake", "--max-batch-size", "0"], "max_batch_size=0 is outside [1, 256]"),
        (["--backend", "fake", "--autoscaling", "--min-replicas", "3", "--max-replicas", "2"], "min_replicas 3 >"),
        (["--backend", "fake", "--token", ""], "--token is empty"),
    ],
)
def test_bad_arguments_fail_before_ray_starts(argv, message, capsys):
    from cosmos3_ros.cli import main

    try:
        code = main(["fleet", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err[-2000:]
    assert "Traceback" not in err


def test_serve_options_one_replica_per_gpu_or_autoscaling():
    gpu = ReplicaSpec(model="/ckpt")
    spec, per_gpu = FleetConfig().placement(gpu, cluster_gpus=4)
    assert (spec.device, per_gpu) == ("cuda", 1)
    options = FleetConfig(max_batch_size=8).policy_options(4, per_gpu, queue=4)
    assert options["num_replicas"] == 4 and options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    assert options["max_ongoing_requests"] >= 8  # else batches could never fill (Serve's default is 5)
    assert options["user_config"] == {"max_batch_size": 8, "batch_wait_timeout_s": 0.01}
    auto = FleetConfig(autoscaling=True, min_replicas=2, max_batch_size=4).policy_options(8, 1, queue=4)
    assert auto["num_replicas"] == "auto"
    assert {k: auto["autoscaling_config"][k] for k in ("min_replicas", "max_replicas", "target_ongoing_requests")} == {
        "min_replicas": 2,
        "max_replicas": 8,
        "target_ongoing_requests": 4.0,
    }
    cpu, none = FleetConfig().placement(gpu, cluster_gpus=0)  # device auto without GPUs: CPU replicas
    assert (cpu.device, none) == ("cpu", 0) and FleetConfig().replicas(0, 0)[0] == 1
    with pytest.raises(ValueError, match="no GPU"):
        FleetConfig().placement(ReplicaSpec(model="/ckpt", device="cuda"), cluster_gpus=0)
    assert GatewayLimits(token="t").public()["auth"] is True and "token" not in GatewayLimits(token="t").public()


# -- one replica's batch ------------------------------------------------------------------------------------------


def test_compatible_requests_share_one_batched_call_and_get_their_own_answers():
    backend = FakeBackend()
    requests = [
        _request(prompt="robot a", settings={"seed": 1}),
        _request(prompt="robot b", settings={"seed": 2}),
        _request(prompt="robot c", settings={"num_steps": 5}),
        _request(prompt="robot d", settings={"seed": 4}, **{"observation/image": IMG[::2, ::2].copy()}),
        _request(prompt="robot e", settings={"seed": 5}),
        _request(prompt="video", return_video=True),
        _request(mode="forward_dynamics", actions=np.zeros((16, 10), np.float32)),
    ]
    together, alone = groups(requests)
    assert together[0] == [0, 1, 4] and sorted(alone) == [5, 6]  # num_steps and the image shape split groups
    outcomes = serve_requests(backend, requests)
    assert backend.batches == [3]  # one batched model call, the backend's own policy_batch
    reference = FakeBackend()
    for request, outcome in zip(requests, outcomes, strict=True):
        assert outcome.error is None
        alone_result = _alone(reference, request)
        if request.mode == "policy":
            np.testing.assert_array_equal(outcome.result.actions, alone_result.actions)  # exact per sample
        else:
            np.testing.assert_array_equal(outcome.result.frames, alone_result.frames)
    assert [o.batch_size for o in outcomes] == [3, 3, 1, 1, 3, 1, 1]
    assert [o.batched for o in outcomes] == [True, True, False, False, True, False, False]


def test_a_failing_batch_is_run_again_one_by_one():
    backend = FakeBackend()
    backend.inject("error", count=2)  # the batched call fails, then the first request alone
    requests = [_request(prompt=f"robot {k}", settings={"seed": k}) for k in range(3)]
    outcomes = serve_requests(backend, requests)
    assert outcomes[0].error == (proto.ERROR_MODEL, "injected fake backend failure")
    reference = FakeBackend()
    for request, outcome in zip(requests[1:], outcomes[1:], strict=True):
        np.testing.assert_array_equal(outcome.result.actions, _alone(reference, request).actions)
    bad = _request(settings={"domain_name": "galbot"})  # 30 wide: more than this backend's 16
    out = serve_requests(FakeBackend(action_dim=16), [bad, _request()])
    assert out[0].error[0] == proto.ERROR_BAD_REQUEST and out[1].error is None


def test_a_backend_without_policy_batch_answers_one_after_the_other():
    class Plain:  # a PolicyBackend without policy_batch (the runtime before it grows one)
        def __init__(self) -> None:
            self.fake = FakeBackend()

        def policy(self, *args, **kwargs):
            return self.fake.policy(*args, **kwargs)

    backend = Plain()
    requests = [_request(prompt=f"robot {k}", settings={"seed": k}) for k in range(3)]
    outcomes = serve_requests(backend, requests)  # type: ignore[arg-type]
    assert [(o.batch_size, o.batched) for o in outcomes] == [(3, False)] * 3
    assert len(backend.fake.policy_calls) == 3 and backend.fake.batches == []
    for request, outcome in zip(requests, outcomes, strict=True):
        np.testing.assert_array_equal(outcome.result.actions, _alone(FakeBackend(), request).actions)
