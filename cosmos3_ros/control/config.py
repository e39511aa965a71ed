# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Node configuration without ROS: parameter files, validated values, and the objects they build.

The live node and the offline replay build their controller, loop options and backend here, from the
same parameter values, so a parameter file means the same thing in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cosmos3_ros.control.controller import ControllerConfig, PolicyController
from cosmos3_ros.control.loop import LoopOptions
from cosmos3_ros.core.backend import PolicyBackend
from cosmos3_ros.core.trajectory import ActionMapping, default_joint_names
from cosmos3_ros.ros.params import PARAMS, SPEC_BY_NAME, check_value, settings_from_values

#: Parameters every rclpy node has; accepted in parameter files, not ours to validate.
BUILTIN_PARAMS = {"use_sim_time"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_params_file(path: str | Path, node_name: str = "cosmos3_policy") -> dict[str, Any]:
    """The node's parameters from a ROS 2 parameter file (``/**`` and ``[/ns/]<node_name>`` sections merged)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"parameter file {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"parameter file {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"parameter file {p}: expected a mapping of node names")
    out: dict[str, Any] = {}
    for key, body in data.items():
        name = str(key).rstrip("/").split("/")[-1]
        if key == "/**" or name in (node_name, "**"):
            if not isinstance(body, dict) or "ros__parameters" not in body:
                raise ValueError(f"parameter file {p}: section {key!r} has no ros__parameters")
            out.update(_flatten(body["ros__parameters"] or {}))
    return out


def resolve_values(overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults of every declared parameter with ``overrides`` applied and checked (unknown keys are errors)."""
    values = {spec.name: spec.default for spec in PARAMS}
    for key, value in overrides.items():
        if key in BUILTIN_PARAMS:
            continue
        spec = SPEC_BY_NAME.get(key)
        if spec is None:
            raise ValueError(f"unknown parameter {key!r}")
        if spec.type_ is not None:
            value = list(value or [])
        elif isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        problem = check_value(spec, value)
        if problem:
            raise ValueError(problem)
        values[key] = value
    return values


def build_controller(values: dict[str, Any]) -> PolicyController:
    """The PolicyController the parameter values describe (raises ValueError naming a bad value)."""
    settings = settings_from_values(values)
    names = list(values["joint_names"]) or default_joint_names(settings.domain_name, settings.action_width)
    mapping = ActionMapping.build(
        names,
        scale=values["action_scale"],
        offset=values["action_offset"],
        lower=values["joint_limits.lower"],
        upper=values["joint_limits.upper"],
    )
    replan = int(values["replan_every"]) or max(1, settings.action_chunk_size // 2)
    config = ControllerConfig(
        cameras=tuple(values["camera_topics"]),
        mapping=mapping,
        camera_layout=values["camera_layout"],
        max_observation_age=float(values["max_observation_age"]),
        sync_tolerance=float(values["sync_tolerance"]),
        replan_every=replan,
        stamp_mode=values["trajectory_stamp"],
    )
    return PolicyController(config, settings)


def loop_options(values: dict[str, Any], topic_prefix: str, *, enforce_budget: bool = True) -> LoopOptions:
    """LoopOptions (forecasting, drift, recording) from parameter values."""
    return LoopOptions(
        forecast_every=int(values["forecast_every"]),
        forecast_source=values["forecast_source"],
        forecast_num_steps=int(values["forecast_num_steps"]),
        drift_metric=values["drift_metric"],
        drift_threshold=float(values["drift_threshold"]),
        disarm_on_drift=bool(values["disarm_on_drift"]),
        enforce_budget=enforce_budget,
        record_image_every=int(values["record_image_every"]),
        topic_prefix=topic_prefix,
    )


def make_backend(values: dict[str, Any]) -> PolicyBackend:
    """The configured backend (heavy imports happen here)."""
    if values["backend"] == "in_process":
        from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

        if not values["model"]:
            raise ValueError("parameter 'model' is empty: set it to a checkpoint directory or a cached HF id")
        return Cosmos3PolicyRuntime(
            values["model"], device=values["device"], dtype=values["dtype"], guardrail=values["guardrail"]
        )
    from cosmos3_ros.sidecar.client import SidecarBackend

    return SidecarBackend(
        values["sidecar_url"], token=values["sidecar_token"] or None, timeout_s=float(values["sidecar_timeout"])
    )
