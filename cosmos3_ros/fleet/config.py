# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""What a fleet deploys, as plain values (no Ray import): the ``fleet`` settings, what each model replica loads,
the gateway's limits, and the Ray Serve deployment options they give.

Placement: with a GPU device each model replica reserves one GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` for it, so the
replica's ``cuda`` is its own GPU) and ``replica_cpus`` CPUs; with ``device cpu`` only the CPUs. ``num_replicas``
0 means one replica per GPU of the cluster. The gateway reserves no CPU or GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cosmos3_ros.core.backend import PolicyBackend
from cosmos3_ros.core.schema import BY_NAME, settings_in

#: The ``fleet`` settings of the schema, by name.
FLEET_NAMES: tuple[str, ...] = tuple(s.name for s in settings_in("fleet"))
#: Largest websocket message Ray Serve's HTTP proxy takes (uvicorn's default ``ws_max_size``; not configurable).
PROXY_MAX_MESSAGE_MB = 16.0
#: Replica backends: the checkpoint (``in_process``), the deterministic fake, random weights built in memory (bench).
REPLICA_KINDS = ("in_process", "fake", "random")


@dataclass(frozen=True)
class ReplicaSpec:
    """What every model replica loads. ``kind``: one of :data:`REPLICA_KINDS`; ``model``/``dtype``/``guardrail``
    as for the sidecar; ``fake_latency`` for ``fake``; ``size`` and ``seed`` for ``random`` (``tiny``/``nano``);
    ``device`` is set per replica by :meth:`FleetConfig.placement`."""

    kind: str = "in_process"
    model: str = ""
    device: str = "auto"
    dtype: str = "auto"
    guardrail: bool = False
    warmup: bool = True
    fake_latency: float = 0.0
    size: str = "nano"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in REPLICA_KINDS:
            raise ValueError(f"replica backend {self.kind!r} unknown; expected one of {list(REPLICA_KINDS)}")
        if self.kind == "in_process" and not self.model:
            raise ValueError("--model is required (or a parameter file that sets model)")
        if self.device.startswith("cuda:"):
            raise ValueError(f"--device {self.device}: the fleet gives each replica its own GPU; use auto or cuda")

    def describe(self) -> str:
        """Short text for logs."""
        if self.kind == "fake":
            return f"fake backend ({self.fake_latency:g} s a call)"
        if self.kind == "random":
            return f"random {self.size} weights"
        return self.model


def make_backend(spec: ReplicaSpec) -> PolicyBackend:
    """The backend one replica serves (heavy imports here, in the replica's process)."""
    if spec.kind == "fake":
        from cosmos3_ros.backends.fake import FakeBackend

        return FakeBackend(latency_s=spec.fake_latency)
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    if spec.kind == "in_process":
        return Cosmos3PolicyRuntime(spec.model, device=spec.device, dtype=spec.dtype, guardrail=spec.guardrail)
    from cosmos3_ros.bench.nano import build_random_components, make_pipeline
    from cosmos3_ros.model.pipeline import Cosmos3ActionPipeline

    device = "cuda" if spec.device == "auto" else spec.device
    dtype = spec.dtype if spec.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    components = build_random_components(spec.size, device=device, dtype=dtype, seed=spec.seed)
    pipe = make_pipeline(components, cls=Cosmos3ActionPipeline)
    return Cosmos3PolicyRuntime.from_pipeline(pipe, model_name=f"random-{spec.size}")


@dataclass(frozen=True)
class GatewayLimits:
    """The sidecar's ``server`` limits, as the gateway applies them (bytes and seconds)."""

    token: str | None = None
    max_message_bytes: int = int(PROXY_MAX_MESSAGE_MB * 2**20)
    queue: int = BY_NAME["queue"].default
    max_connections: int = BY_NAME["max_connections"].default
    idle_timeout: float = BY_NAME["idle_timeout"].default
    request_timeout: float = BY_NAME["request_timeout"].default

    @classmethod
    def from_values(cls, values: dict[str, Any], token: str | None) -> GatewayLimits:
        """From resolved ``server`` settings; ValueError for a message limit above the proxy's."""
        if values["max_message_mb"] > PROXY_MAX_MESSAGE_MB:
            raise ValueError(
                f"--max_message_mb {values['max_message_mb']:g}: Ray Serve's proxy takes websocket messages of at "
                f"most {PROXY_MAX_MESSAGE_MB:g} MiB (larger ones close with 1009); use {PROXY_MAX_MESSAGE_MB:g} or "
                "less, or cosmos3-ros sidecar for larger requests"
            )
        return cls(
            token=token,
            max_message_bytes=int(values["max_message_mb"] * 2**20),
            queue=values["queue"],
            max_connections=values["max_connections"],
            idle_timeout=float(values["idle_timeout"]),
            request_timeout=float(values["request_timeout"]),
        )

    def public(self) -> dict[str, Any]:
        """The limits without the token (for logs and metadata)."""
        d = dataclasses.asdict(self)
        d["auth"] = d.pop("token") is not None
        return d


@dataclass(frozen=True)
class FleetConfig:
    """The ``fleet`` settings (see the schema for each one's meaning)."""

    num_replicas: int = 0
    autoscaling: bool = False
    min_replicas: int = 1
    max_replicas: int = 0
    target_ongoing_requests: float = 0.0
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01
    replica_cpus: float = 1.0
    gateway_replicas: int = 1
    ray_address: str = ""

    def __post_init__(self) -> None:
        for name in FLEET_NAMES:
            BY_NAME[name].validate(getattr(self, name))  # SettingsError (a ValueError) naming it
        if self.autoscaling and self.max_replicas and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> FleetConfig:
        """From resolved settings (extra keys are ignored)."""
        return cls(**{name: values[name] for name in FLEET_NAMES if name in values})

    def user_config(self) -> dict[str, Any]:
        """What a replica may change without a restart (Ray Serve ``user_config``): the batching."""
        return {"max_batch_size": self.max_batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_s}

    def placement(self, spec: ReplicaSpec, cluster_gpus: float) -> tuple[ReplicaSpec, int]:
        """(the spec with each replica's device, GPUs per replica) on a cluster with ``cluster_gpus`` GPUs."""
        gpus = int(cluster_gpus)
        if spec.kind == "fake" or spec.device == "cpu" or (spec.device == "auto" and gpus == 0):
            return dataclasses.replace(spec, device="cpu"), 0
        if gpus == 0:
            raise ValueError(f"--device {spec.device}: the Ray cluster has no GPU (use --device cpu or auto)")
        return dataclasses.replace(spec, device="cuda"), 1

    def replicas(self, cluster_gpus: float, per_replica_gpus: int) -> tuple[int, int, int]:
        """(fixed or initial replicas, min, max): 0 settings become one per GPU of the cluster (one without)."""
        per_gpu = max(1, int(cluster_gpus) // per_replica_gpus) if per_replica_gpus else 1
        fixed = self.num_replicas or per_gpu
        high = self.max_replicas or max(per_gpu, self.min_replicas)
        return fixed, self.min_replicas, high

    def policy_options(self, cluster_gpus: float, per_replica_gpus: int, queue: int) -> dict[str, Any]:
        """Ray Serve options of the Policy deployment."""
        fixed, low, high = self.replicas(cluster_gpus, per_replica_gpus)
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.replica_cpus, "num_gpus": per_replica_gpus},
            # one batch running and one filling; below max_batch_size a batch could never fill
            "max_ongoing_requests": max(2, 2 * self.max_batch_size),
            "max_queued_requests": queue,
            "user_config": self.user_config(),
            "health_check_period_s": 5.0,
            "health_check_timeout_s": 30.0,
            "graceful_shutdown_timeout_s": 10.0,
            "graceful_shutdown_wait_loop_s": 0.5,
            "max_constructor_retry_count": 3,  # a model that cannot load is not retried for ever
        }
        if self.autoscaling:
            target = self.target_ongoing_requests or float(self.max_batch_size)
            options["num_replicas"] = "auto"
            options["autoscaling_config"] = {
                "min_replicas": low,
                "initial_replicas": low,
                "max_replicas": high,
                "target_ongoing_requests": target,
                "upscale_delay_s": 10.0,
                "downscale_delay_s": 300.0,
            }
        else:
            options["num_replicas"] = fixed
        return options

    def gateway_options(self, max_connections: int) -> dict[str, Any]:
        """Ray Serve options of the Gateway deployment (an open websocket is one ongoing request)."""
        return {
            "num_replicas": self.gateway_replicas,
            "ray_actor_options": {"num_cpus": 0},
            "max_ongoing_requests": max_connections + 32,  # the gateway refuses past max_connections itself (503)
            "health_check_period_s": 5.0,
            "graceful_shutdown_timeout_s": 5.0,
            "graceful_shutdown_wait_loop_s": 0.5,
        }


def code_version(*parts: Any) -> str:
    """A version for the deployments that changes with what they load and serve, not with the replica count or the
    batching: redeploying with only those changed updates the replicas in place (no restart, no new warm-up)."""
    from cosmos3_ros import __version__

    text = json.dumps([__version__, *parts], sort_keys=True, default=lambda o: dataclasses.asdict(o))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
