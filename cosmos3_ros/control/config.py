# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Node configuration without ROS: from validated setting values to the objects the loop is made of.

The live node and the offline replay build their controller and loop options here, from the same values (see
:mod:`cosmos3_ros.core.schema`), so a parameter file means the same thing in both. :func:`apply_runtime_values`
is how a run-time parameter change reaches a running loop: the next control cycle uses it.
"""

from __future__ import annotations

from typing import Any

from cosmos3_ros.control.controller import ControllerConfig, PolicyController
from cosmos3_ros.control.loop import LoopOptions, PolicyLoop
from cosmos3_ros.core.images import DecodeOptions
from cosmos3_ros.core.schema import SettingsError, resolve_values
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.trajectory import ActionMapping, default_joint_names

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


def controller_config(values: dict[str, Any], settings: PolicySettings | None = None) -> ControllerConfig:
    """The ControllerConfig the values describe (raises ValueError naming a bad value)."""
    settings = settings or PolicySettings.from_values(values)
    names = list(values["joint_names"]) or default_joint_names(settings.domain_name, settings.action_width)
    mapping = ActionMapping.build(
        names,
        scale=values["action_scale"],
        offset=values["action_offset"],
        lower=values["joint_limits.lower"],
        upper=values["joint_limits.upper"],
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
        use_state=bool(values["joint_states_topic"]),
        max_clock_skew=float(values["max_clock_skew"]),
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
    build_controller(values)
    loop_options(values)


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
