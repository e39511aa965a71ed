# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Model backends behind :class:`cosmos3_ros.core.backend.PolicyBackend`, and the factory that picks one.

- ``in_process``: :class:`cosmos3_ros.model.runtime.Cosmos3PolicyRuntime` (torch, diffusers);
- ``sidecar``: :class:`cosmos3_ros.sidecar.client.SidecarBackend` (a websocket client, no torch);
- ``fake``: :class:`cosmos3_ros.backends.fake.FakeBackend` (deterministic, no model; for tests and wiring checks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cosmos3_ros.core.backend import PolicyBackend

#: Environment variable holding the sidecar token (never put a token on a command line: `ps` shows it).
TOKEN_ENV = "COSMOS3_ROS_SIDECAR_TOKEN"


def read_token(token_file: str = "", env: dict[str, str] | None = None) -> str | None:
    """The sidecar token: the first line of ``token_file`` when set, else ``$COSMOS3_ROS_SIDECAR_TOKEN``, else None.

    Raises ValueError for an unreadable or empty token file (a configured token that is not there is an error).
    """
    env = os.environ if env is None else env
    if token_file:
        path = Path(token_file).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"token file {path}: {exc.strerror or exc}") from None
        if not token:
            raise ValueError(f"token file {path} is empty")
        return token
    return env.get(TOKEN_ENV) or None


def make_backend(values: dict[str, Any]) -> PolicyBackend:
    """The backend the values select (heavy imports happen here, not at import time)."""
    kind = values["backend"]
    if kind == "fake":
        from cosmos3_ros.backends.fake import FakeBackend

        return FakeBackend(latency_s=float(values["fake_latency"]))
    if kind == "sidecar":
        from cosmos3_ros.sidecar.client import SidecarBackend

        return SidecarBackend(
            values["sidecar_url"],
            token=read_token(values["sidecar_token_file"]),
            timeout_s=float(values["sidecar_timeout"]),
        )
    return make_runtime(values)


def make_runtime(values: dict[str, Any]) -> PolicyBackend:
    """The in-process Cosmos 3 runtime the model settings describe (node, sidecar, fleet replicas, predict)."""
    if not values["model"]:
        raise ValueError("parameter 'model' is empty: set it to a checkpoint directory or a cached HF id")
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    return Cosmos3PolicyRuntime(
        values["model"],
        device=values["device"],
        dtype=values["dtype"],
        guardrail=values["guardrail"],
        fp8=bool(values.get("fp8", False)),
    )
