# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The run configuration a report shows: enough to run the same thing again.

:func:`run_config` turns the node's setting values into sections (run, model, sampling, controller, monitoring,
topics, versions) plus a complete parameter file (every node setting, secrets left out) that reproduces the run.
Recordings carry it as JSON: :class:`cosmos3_ros.bags.sinks.RecorderSink` writes it once on ``<node>/run_config``
(``std_msgs/String``), and :func:`recording_metadata` gives the bag's ``custom_data`` entry for the same thing.
No ROS, no torch (library versions are read from the installed distributions' metadata).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: ``custom_data`` key of a bag's metadata.yaml holding the run configuration as JSON.
CUSTOM_DATA_KEY = "cosmos3_ros.run_config"
#: Distributions whose versions a report lists (missing ones are left out).
LIBRARIES = (
    "cosmos3_ros",
    "numpy",
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "rosbags",
    "matplotlib",
    "openpi-client",
    "websockets",
)
_SECTIONS = {
    "model": "Model",
    "sampling": "Sampling",
    "controller": "Controller",
    "monitoring": "Monitoring",
    "backend": "Backend",
    "node": "Node",
}
#: Settings shown in the short sections (the full parameter file has all of them).
_SHOWN = {
    "model": ("model", "device", "dtype", "guardrail", "warmup"),
    "sampling": (
        "prompt",
        "negative_prompt",
        "domain_name",
        "action_chunk_size",
        "fps",
        "image_size",
        "num_steps",
        "guidance",
        "shift",
        "seed",
        "view_point",
        "conditioning",
        "use_state",
    ),
    "controller": (
        "camera_layout",
        "replan_every",
        "control_rate",
        "joint_names",
        "action_space",
        "action_stats",
        "action_scale",
        "action_offset",
        "joint_limits.lower",
        "joint_limits.upper",
        "trajectory_stamp",
        "output_mode",
        "max_observation_age",
        "sync_tolerance",
    ),
    "monitoring": ("forecast_every", "forecast_source", "forecast_num_steps", "drift_metric", "drift_threshold"),
    "backend": ("backend", "sidecar_url", "fake_latency"),
}


def versions() -> dict[str, str]:
    """Python, platform, ROS distro (``$ROS_DISTRO``) and the installed versions of :data:`LIBRARIES`."""
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    if os.environ.get("ROS_DISTRO"):
        out["ROS distro"] = os.environ["ROS_DISTRO"]
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def file_digest(path: str | Path, limit: int = 64 * 1024 * 1024) -> str | None:
    """First 12 hex digits of the file's SHA-256 (None when unreadable or larger than ``limit`` bytes)."""
    try:
        p = Path(path).expanduser()
        if not p.is_file() or p.stat().st_size > limit:
            return None
        return hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    except OSError:
        return None


def model_fingerprint(model: str) -> str | None:
    """A short hash of a diffusers checkpoint's configuration files (model_index.json and the components'
    config.json), so two reports can tell whether they ran the same checkpoint; None when there is none."""
    root = Path(model).expanduser() if model else None
    if root is None or not root.is_dir():
        return None
    h = hashlib.sha256()
    files = [root / "model_index.json", *sorted(root.glob("*/config.json"))]
    found = False
    for f in files:
        try:
            h.update(f.name.encode() + f.read_bytes())
            found = True
        except OSError:
            continue
    return h.hexdigest()[:12] if found else None


def params_yaml(values: Mapping[str, Any], node: str = "/**") -> str:
    """A parameter file with every node setting of ``values`` (secrets left out), loadable by the node and replay."""
    from cosmos3_ros.core.schema import NODE_SETTINGS, format_value

    lines = [f"{node}:", "  ros__parameters:"]
    for s in NODE_SETTINGS:
        if s.secret or s.name not in values:
            continue
        value = values[s.name]
        if isinstance(value, tuple):
            value = list(value)
        lines.append(f"    {s.name}: {format_value(value)}")
    return "\n".join(lines) + "\n"


def _shown(values: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {n: values[n] for n in names if n in values}


def run_config(
    values: Mapping[str, Any],
    *,
    kind: str,
    params_file: str | Path | None = None,
    in_bag: str | Path | None = None,
    node: str = "/cosmos3_policy",
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The configuration of a run (``kind``: "replay" or "live") as JSON-able sections plus ``parameter_file``.

    ``values`` are the node's resolved setting values (:func:`cosmos3_ros.control.config.values_from_overrides`).
    """
    from cosmos3_ros.core.schema import BY_NAME

    run: dict[str, Any] = {
        "kind": kind,
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    if params_file:
        run["params_file"] = str(params_file)
        digest = file_digest(params_file)
        if digest:
            run["params_file_sha256"] = digest
    if in_bag:
        run["input_bag"] = str(in_bag)
    sections: dict[str, dict[str, Any]] = {"Run": run}
    for scope, names in _SHOWN.items():
        shown = _shown(values, [n for n in names if n in BY_NAME and not BY_NAME[n].secret])
        if scope == "model" and values.get("model"):
            fp = model_fingerprint(str(values["model"]))
            if fp:
                shown["model_config_sha256"] = fp
        if shown:
            sections[_SECTIONS[scope]] = shown
    inputs = {"cameras": list(values.get("camera_topics", []))}
    for name in ("joint_states_topic", "ee_pose_topic"):
        if values.get(name):
            inputs[name] = values[name]
    outputs = [f"{node}/joint_trajectory"]
    if values.get("output_mode") == "joint_state":
        outputs.append(str(values.get("joint_command_topic", "")))
    outputs += [f"{node}/predicted_image", f"{node}/prediction_error", f"{node}/chunk_timing", "/diagnostics"]
    sections["Topics"] = {**inputs, "outputs": outputs}
    sections["Versions"] = versions()
    return {"sections": sections, "parameter_file": params_yaml(values)}


def recording_metadata(config: Mapping[str, Any]) -> dict[str, str]:
    """``custom_data`` for :class:`cosmos3_ros.bags.recorder.BagRecorder` holding ``config`` (a :func:`run_config`)."""
    return {CUSTOM_DATA_KEY: json.dumps(config, sort_keys=True, default=str)}


def config_from_custom_data(bag: str | Path) -> dict[str, Any] | None:
    """The run configuration stored in a bag directory's metadata.yaml ``custom_data``, if any."""
    import yaml

    meta = Path(bag) / "metadata.yaml"
    try:
        data = yaml.safe_load(meta.read_text())
        text = data["rosbag2_bagfile_information"]["custom_data"][CUSTOM_DATA_KEY]
        config = json.loads(text)
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None
