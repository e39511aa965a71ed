# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Node configuration without ROS: from validated setting values to the objects the loop is made of.

The live node and the offline replay build their controller and loop options here, from the same values (see
:mod:`cosmos3_ros.core.schema`), so a parameter file means the same thing in both. :func:`apply_runtime_values`
is how a run-time parameter change reaches a running loop: the next control cycle uses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.control.controller import POSE_DIMS, ControllerConfig, PolicyController
from cosmos3_ros.control.loop import LoopOptions, PolicyLoop
from cosmos3_ros.core.images import DecodeOptions
from cosmos3_ros.core.schema import SettingsError, resolve_values
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.trajectory import ActionMapping, RateLimits, default_joint_names

__all__ = [
    "SettingsError",
    "apply_runtime_values",
    "build_controller",
    "check_values",
    "controller_config",
    "decode_options",
    "loop_options",
    "resolve_values",
]


def load_action_stats(path: str | Path, width: int) -> tuple[list[float], list[float]]:
    """(scale, offset) that de-normalize actions with the statistics in ``path`` (cosmos-framework's JSON format:
    ``mean``/``std``, or ``q01``/``q99``, or ``min``/``max`` per dimension, optionally under ``global``).

    mean/std: ``a * std + mean``; quantiles and min/max map [-1, 1] onto [low, high]: ``a * (high - low) / 2 +
    (high + low) / 2``. Raises ValueError naming what is wrong.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"action_stats {p}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("global"), dict):
        data = data["global"]
    if not isinstance(data, dict):
        raise ValueError(f"action_stats {p}: expected a JSON object")
    for low_key, high_key, kind in (("mean", "std", "meanstd"), ("q01", "q99", "range"), ("min", "max", "range")):
        if low_key in data and high_key in data:
            low, high = (np.asarray(data[k], dtype=np.float64).reshape(-1)[:width] for k in (low_key, high_key))
            if low.shape != (width,) or high.shape != (width,) or not np.isfinite([*low, *high]).all():
                raise ValueError(f"action_stats {p}: {low_key}/{high_key} need {width} finite values")
            if kind == "meanstd":
                return high.tolist(), low.tolist()
            return ((high - low) / 2).tolist(), ((high + low) / 2).tolist()
    raise ValueError(f"action_stats {p}: no mean/std, q01/q99 or min/max in {sorted(data)}")


def _stats_path(values: dict[str, Any]) -> Path | None:
    if values["action_stats"] != "auto":
        return Path(values["action_stats"]).expanduser() if values["action_stats"] else None
    candidate = Path(values["model"]).expanduser() / "action_stats.json" if values["model"] else None
    return candidate if candidate is not None and candidate.is_file() else None


def controller_config(values: dict[str, Any], settings: PolicySettings | None = None) -> ControllerConfig:
    """The ControllerConfig the values describe (raises ValueError naming a bad value)."""
    settings = settings or PolicySettings.from_values(values)
    names = list(values["joint_names"]) or default_joint_names(settings.domain_name, settings.action_width)
    scale, offset = values["action_scale"], values["action_offset"]
    stats = _stats_path(values)
    if stats is not None:
        if scale or offset:
            raise ValueError("action_stats replaces action_scale/action_offset: set one or the other")
        scale, offset = load_action_stats(stats, settings.action_width)
    mapping = ActionMapping.build(
        names, scale=scale, offset=offset, lower=values["joint_limits.lower"], upper=values["joint_limits.upper"]
    )
    replan = int(values["replan_every"]) or max(1, settings.action_chunk_size // 2)
    return ControllerConfig(
        cameras=tuple(values["camera_topics"]),
        mapping=mapping,
        camera_layout=values["camera_layout"],
        max_observation_age=float(values["max_observation_age"]),
        sync_tolerance=float(values["sync_tolerance"]),
        replan_every=replan,
        stamp_mode=values["trajectory_stamp"],
        max_clock_skew=float(values["max_clock_skew"]),
        action_space=values["action_space"],
        state_joints=tuple(values["state_joint_names"]),
        rtc=bool(values["rtc"]),
        rtc_delay=int(values["rtc_delay"]),
        execution_horizon=int(values["execution_horizon"]),
        rate_limits=RateLimits.build(mapping.width, values["max_velocity"], values["max_acceleration"]),
        accelerations=bool(values["trajectory_accelerations"]),
    )


def decode_options(values: dict[str, Any]) -> DecodeOptions:
    """How camera frames are decoded: the size cap, and the size they are kept at for the resolution tier."""
    return DecodeOptions.for_tier(
        int(values["image_size"]), max_depth_mm=int(values["max_depth_mm"]), max_pixels=int(values["max_image_pixels"])
    )


def build_controller(values: dict[str, Any]) -> PolicyController:
    """The PolicyController the values describe (raises ValueError naming a bad value)."""
    settings = PolicySettings.from_values(values)
    return PolicyController(controller_config(values, settings), settings)


def loop_options(values: dict[str, Any]) -> LoopOptions:
    """LoopOptions (forecasting and drift) from the values."""
    return LoopOptions(
        forecast_every=int(values["forecast_every"]),
        forecast_source=values["forecast_source"],
        forecast_num_steps=int(values["forecast_num_steps"]),
        drift_metric=values["drift_metric"],
        drift_threshold=float(values["drift_threshold"]),
        disarm_on_drift=bool(values["disarm_on_drift"]),
    )


def check_values(values: dict[str, Any]) -> None:
    """Every rule that involves more than one setting; raises ValueError naming the problem."""
    settings = build_controller(values).settings
    loop_options(values)
    if values["forecast_num_steps"]:
        settings.replace(num_steps=int(values["forecast_num_steps"]))  # the forecasts' settings must be valid too
    if values["use_state"] and not values["joint_states_topic"]:
        raise ValueError("use_state needs the robot state: set joint_states_topic (sensor_msgs/JointState)")
    chunk, replan = int(values["action_chunk_size"]), controller_config(values).replan_every
    horizon = int(values["execution_horizon"]) or chunk - replan
    if values["rtc"]:
        if horizon < 1 or horizon >= chunk:
            raise ValueError(
                f"rtc: execution_horizon {horizon} must be in [1, action_chunk_size - 1 = {chunk - 1}] (replan_every "
                f"{replan} leaves {chunk - replan} rows of a chunk to give to the next)"
            )
        if int(values["rtc_delay"]) > horizon:
            raise ValueError(
                f"rtc: rtc_delay {values['rtc_delay']} exceeds execution_horizon {horizon}: the chunk cannot cover the "
                "inference delay (raise action_chunk_size, lower replan_every, or leave rtc_delay at 0 to estimate)"
            )
    if values["action_space"] == "ee_pose" and values["use_state"]:
        raise ValueError("use_state with action_space ee_pose: no released checkpoint takes a pose state row")
    if values["action_space"] == "ee_pose":
        width = PolicySettings.from_values(values).action_width
        if width < POSE_DIMS:
            raise ValueError(
                f"action_space ee_pose needs at least {POSE_DIMS} action dimensions, the domain has {width}"
            )
        if not values["ee_pose_topic"]:
            raise ValueError("action_space ee_pose needs the current end-effector pose: set ee_pose_topic")
        if values["use_state"]:
            raise ValueError("action_space ee_pose with use_state is not supported (no released checkpoint uses it)")


def apply_runtime_values(loop: PolicyLoop, values: dict[str, Any]) -> None:
    """Apply a full set of (already checked) values to a running loop; effective from the next control cycle.

    Read-only settings cannot have changed, so rebuilding every derived object from ``values`` changes exactly the
    run-time settings.
    """
    settings = PolicySettings.from_values(values)
    loop.controller.reconfigure(controller_config(values, settings), settings)
    loop.set_options(loop_options(values))


def values_from_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Every node value: defaults with ``overrides`` (builtin ROS parameters dropped) applied and fully checked."""
    from cosmos3_ros.core.params_file import is_builtin

    values = resolve_values({k: v for k, v in overrides.items() if not is_builtin(k)})
    check_values(values)
    return values
