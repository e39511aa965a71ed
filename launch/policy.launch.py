# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Launch the Cosmos 3 policy node (and optionally its GPU sidecar).

Usage:
  ros2 launch cosmos3_ros policy.launch.py model:=/path/to/checkpoint
  ros2 launch cosmos3_ros policy.launch.py model:=<ckpt> camera_topic:=/front/image_raw namespace:=arm
  ros2 launch cosmos3_ros policy.launch.py params_file:=<share>/config/isaac_sim.yaml model:=<ckpt>
  ros2 launch cosmos3_ros policy.launch.py backend:=sidecar start_sidecar:=true model:=<ckpt>

A preset (``params_file``) means what it says: an argument left empty keeps the file's value (``use_sim_time`` of
``config/isaac_sim.yaml``, its ``model``, ``backend``, ``device``); a given argument overrides it. The node is a
lifecycle node with autostart on: it configures (loads and warms up the model) and activates itself. With
``start_sidecar:=true`` the sidecar and the node share a token through the environment (``$COSMOS3_ROS_SIDECAR_TOKEN``
if you set one, else a fresh random one), never on a command line, and the node waits for the sidecar to serve.
"""

import os
import secrets
import shutil

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch_ros.actions import LifecycleNode

PACKAGE = "cosmos3_ros"
TOKEN_ENV = "COSMOS3_ROS_SIDECAR_TOKEN"
#: Seconds the node waits for a sidecar started by this launch (a first model load can take minutes).
SIDECAR_START_WAIT_S = 900.0


def installed_executable(name: str) -> str:
    """The package's executable ``name``: colcon installs it in lib/cosmos3_ros, pip in the environment's bin."""
    candidate = os.path.join(get_package_prefix(PACKAGE), "lib", PACKAGE, name)
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"{name} is neither in {os.path.dirname(candidate)} nor on PATH: is {PACKAGE} installed?")


def _setup(context, *args, **kwargs):
    def arg(name: str) -> str:
        return context.launch_configurations.get(name, "")

    overrides: dict = {}
    for name in ("model", "backend", "device"):
        if arg(name):
            overrides[name] = arg(name)
    if arg("use_sim_time"):
        overrides["use_sim_time"] = arg("use_sim_time").lower() in ("true", "1", "yes")
    if arg("camera_topic"):
        overrides["camera_topics"] = [arg("camera_topic")]
    actions = []
    env = {}
    if arg("start_sidecar").lower() in ("true", "1", "yes"):
        env[TOKEN_ENV] = os.environ.get(TOKEN_ENV) or secrets.token_hex(16)
        overrides.update(
            backend="sidecar", sidecar_url=f"ws://127.0.0.1:{arg('sidecar_port')}", sidecar_wait=SIDECAR_START_WAIT_S
        )
        cmd = [installed_executable("cosmos3-ros"), "sidecar", "--params-file", arg("params_file")]
        cmd += ["--port", arg("sidecar_port")]
        for name in ("model", "device"):
            if arg(name):
                cmd += [f"--{name}", arg(name)]
        actions.append(ExecuteProcess(cmd=cmd, name="cosmos3_sidecar", output="screen", additional_env=env))
    elif arg("sidecar_port") != "8000":
        overrides["sidecar_url"] = f"ws://127.0.0.1:{arg('sidecar_port')}"
    actions.append(
        LifecycleNode(
            executable=installed_executable("policy_node"),
            name="cosmos3_policy",
            namespace=arg("namespace"),
            output="screen",
            parameters=[arg("params_file"), overrides] if overrides else [arg("params_file")],
            additional_env=env,
        )
    )
    return actions


def generate_launch_description() -> LaunchDescription:
    """The launch description: arguments, then the node (and the sidecar) built from their values."""
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "policy.yaml"),
                description="Parameter file of the node: config/policy.yaml (defaults), config/isaac_sim.yaml, "
                "config/droid.yaml, config/bridge.yaml, or yours.",
            ),
            DeclareLaunchArgument(
                "model", default_value="", description="Checkpoint directory or cached HF id (empty: the file's)."
            ),
            DeclareLaunchArgument(
                "backend", default_value="", description="in_process, sidecar or fake (empty: the file's)."
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="", description="true or false: use /clock (empty: the file's)."
            ),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node."),
            DeclareLaunchArgument(
                "camera_topic", default_value="", description="One camera topic; replaces the file's camera_topics."
            ),
            DeclareLaunchArgument(
                "start_sidecar",
                default_value="false",
                description="Also start `cosmos3-ros sidecar` with the same parameter file, and use it.",
            ),
            DeclareLaunchArgument(
                "sidecar_port", default_value="8000", description="Port of the sidecar (started or not) on 127.0.0.1."
            ),
            DeclareLaunchArgument(
                "device", default_value="", description="Torch device of the model (empty: the file's)."
            ),
            OpaqueFunction(function=_setup),
        ]
    )
