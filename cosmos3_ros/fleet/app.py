# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Start or join a Ray cluster, deploy the fleet application, watch it, stop it.

:class:`Fleet` is what ``cosmos3-ros fleet`` and ``bench/fleet_load.py`` drive::

    fleet = Fleet(spec, FleetConfig(num_replicas=2), limits, PolicySettings(), host="127.0.0.1", port=8000)
    fleet.start()        # ray.init (local, or ray_address), serve.start on host:port, deploy, wait until warm
    ...                  # robots connect to ws://host:port
    fleet.stop()         # local Ray: Serve and Ray shut down; a joined cluster: only this application is deleted

A redeploy (:meth:`Fleet.deploy` with another :class:`FleetConfig`) that changes only the replica count,
autoscaling or batching updates the running replicas in place (Ray Serve "lightweight" updates: no restart, no new
warm-up); one that changes the model, its defaults or the limits replaces the replicas (new ones warm up first).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from typing import Any

from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.fleet.config import FleetConfig, GatewayLimits, ReplicaSpec, code_version

log = logging.getLogger("cosmos3_ros.fleet")

APP_NAME = "cosmos3_ros_fleet"
#: Object store of a local Ray instance (requests and replies in transit; Ray spills to disk beyond it).
LOCAL_OBJECT_STORE_BYTES = 1 << 30
#: Serve's own log lines (per-request access lines off: one line per robot request would flood the console).
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}
#: Seconds Serve gets to stop the replicas gracefully (in-flight model calls finish) before Ray is shut down.
STOP_TIMEOUT_S = 15.0


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket() as sock:
        sock.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
        return sock.getsockname()[1]


class Fleet:
    """One fleet application on a Ray cluster (see the module docstring)."""

    def __init__(
        self,
        spec: ReplicaSpec,
        config: FleetConfig,
        limits: GatewayLimits,
        defaults: PolicySettings,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        local_cpus: int | None = None,
    ) -> None:
        self.spec, self.config, self.limits, self.defaults = spec, config, limits, defaults
        self.host = host
        self.port = port or free_port(host)
        self.local_cpus = local_cpus
        self.started_ray = False
        self.cluster: dict[str, float] = {}
        self.summary: dict[str, Any] = {}

    @property
    def url(self) -> str:
        """``ws://`` address robots connect to (loopback when bound to all interfaces)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"ws://{host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def connect(self) -> None:
        """``ray.init``: a local instance (``ray_address`` empty; it stops with :meth:`stop`) or the given cluster."""
        import ray

        t0 = time.perf_counter()
        common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        if self.config.ray_address:
            try:
                ray.init(address=self.config.ray_address, **common)
            except (ConnectionError, RuntimeError) as exc:  # no cluster there, or its token (RAY_AUTH_TOKEN) differs
                raise RuntimeError(f"cannot join the Ray cluster at {self.config.ray_address}: {exc}") from None
        else:
            ray.init(
                address="local",
                num_cpus=self.local_cpus,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                **common,
            )
            self.started_ray = True
        self.cluster = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}
        where = self.config.ray_address or "a local Ray instance"
        log.info(
            "joined %s in %.1f s: %g CPU(s), %g GPU(s)",
            *(where, time.perf_counter() - t0, self.cluster.get("CPU", 0), self.cluster.get("GPU", 0)),
        )

    def application(self, config: FleetConfig | None = None) -> Any:
        """The Ray Serve application (Gateway bound to the Policy deployment) for ``config`` on this cluster."""
        from ray import serve

        from cosmos3_ros.fleet.gateway import Gateway
        from cosmos3_ros.fleet.replica import PolicyReplica

        config = config or self.config
        gpus = self.cluster.get("GPU", 0.0)
        spec, per_replica_gpus = config.placement(self.spec, gpus)
        defaults = self.defaults.to_dict()
        version = code_version(spec, defaults, self.limits.public())
        policy = serve.deployment(PolicyReplica, name="Policy").options(
            **config.policy_options(gpus, per_replica_gpus, self.limits.queue)
        )
        gateway = serve.deployment(Gateway, name="Gateway").options(
            **config.gateway_options(self.limits.max_connections)
        )
        for deployment in (policy, gateway):
            if hasattr(deployment, "_version"):  # Ray Serve keeps replicas across redeploys of the same version
                deployment._version = version  # noqa: SLF001  (Ray 2.60 removed the public option)
        fixed, low, high = config.replicas(gpus, per_replica_gpus)
        self.summary = {
            "replicas": f"{low}..{high} (autoscaling)" if config.autoscaling else fixed,
            "gpus_per_replica": per_replica_gpus,
            "cpus_per_replica": config.replica_cpus,
            "device": spec.device,
            "max_batch_size": config.max_batch_size,
            "batch_wait_timeout_s": config.batch_wait_timeout_s,
            "gateways": config.gateway_replicas,
        }
        stuck_after_s = self.limits.request_timeout
        return gateway.bind(policy.bind(spec, defaults, stuck_after_s), defaults, self.limits)

    def start(self) -> None:
        """Join or start Ray, start Serve's HTTP proxy on host:port, deploy and wait until every replica is warm."""
        self.connect()
        from ray import serve

        serve.start(http_options={"host": self.host, "port": self.port}, logging_config=SERVE_LOGGING)
        self._check_port()
        self.deploy(self.config)

    def deploy(self, config: FleetConfig) -> float:
        """Deploy (or update) the application with ``config``; return the seconds until it was RUNNING."""
        from ray import serve

        app = self.application(config)
        log.info("deploying %s: %s", self.spec.describe(), ", ".join(f"{k} {v}" for k, v in self.summary.items()))
        t0 = time.perf_counter()
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False, logging_config=SERVE_LOGGING)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} {self.failure_message()}".strip()) from None
        self.config = config
        took = time.perf_counter() - t0
        log.info("serving on %s (health: http://%s:%d/healthz) after %.1f s", self.url, self.host, self.port, took)
        return took

    def stop(self) -> None:
        """Local Ray: shut Serve and Ray down. A joined cluster: delete this application, leave the cluster."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        t0 = time.perf_counter()
        # Replicas get their graceful shutdown (a running model call finishes). Bounded: if Ray's own processes are
        # already gone (a SIGTERM to the whole process group), Serve would wait 30 s for a controller that is dead.
        done = threading.Event()

        def graceful() -> None:
            try:
                if self.started_ray:
                    serve.shutdown()
                else:
                    serve.delete(APP_NAME)
            except Exception as exc:
                log.warning("Serve did not shut down cleanly: %s", exc)
            finally:
                done.set()

        threading.Thread(target=graceful, name="fleet-stop", daemon=True).start()
        if not done.wait(STOP_TIMEOUT_S):
            log.warning("Serve did not shut down within %g s; stopping Ray anyway", STOP_TIMEOUT_S)
        ray.shutdown()
        log.info("stopped in %.1f s", time.perf_counter() - t0)

    # -- state ----------------------------------------------------------------------------------------------------

    def replica_states(self) -> dict[str, dict[str, int]]:
        """``{deployment: {state: count}}`` from the Serve controller (RUNNING, STARTING, UNHEALTHY, ...)."""
        from ray import serve

        application = serve.status().applications.get(APP_NAME)
        if application is None:
            return {}
        return {
            name: {str(k): int(v) for k, v in d.replica_states.items()} for name, d in application.deployments.items()
        }

    def failure_message(self) -> str:
        """What the Serve controller says about a failed deployment ("" when nothing)."""
        try:
            from ray import serve

            application = serve.status().applications.get(APP_NAME)
        except Exception:
            return ""
        if application is None:
            return ""
        parts = [application.message] + [f"{n}: {d.message}" for n, d in application.deployments.items() if d.message]
        return " ".join(p for p in parts if p)[-3000:]

    def _check_port(self) -> None:
        """A Serve instance already running on a joined cluster keeps its own host and port: say so."""
        try:
            from ray.serve.context import _get_global_client

            http = _get_global_client().http_config
        except Exception:
            return
        if http is not None and (http.port, http.host) != (self.port, self.host):
            log.warning(
                "Serve already runs on this cluster at %s:%d; --host/--port %s:%d are not applied",
                *(http.host, http.port, self.host, self.port),
            )
            self.host, self.port = http.host, http.port


def with_batching(config: FleetConfig, max_batch_size: int, batch_wait_timeout_s: float | None = None) -> FleetConfig:
    """``config`` with other batching settings."""
    wait = config.batch_wait_timeout_s if batch_wait_timeout_s is None else batch_wait_timeout_s
    return dataclasses.replace(config, max_batch_size=max_batch_size, batch_wait_timeout_s=wait)
