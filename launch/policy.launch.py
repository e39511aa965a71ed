# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Launch the Cosmos 3 policy node (and optionally its GPU sidecar).

Usage:
  ros2 launch cosmos3_ros policy.launch.py model:=/path/to/checkpoint
  ros2 launch cosmos3_ros policy.launch.py model:=<ckpt> camera_topic:=/front/image_raw namespace:=arm
  ros2 launch cosmos3_ros policy.launch.py params_file:=<share>/config/isaac_sim.yaml model:=<ckpt> use_sim_time:=true
  ros2 launch cosmos3_ros policy.launch.py backend:=sidecar start_sidecar:=true model:=<ckpt>

The node is a lifecycle node with autostart on: it configures (loads and warms up the model) and activates
itself. Set autostart:=false in the params file to drive transitions with `ros2 lifecycle set`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode


def generate_launch_description() -> LaunchDescription:
    """The launch description: arguments, the policy node, the optional sidecar."""
    share = get_package_share_directory("cosmos3_ros")
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "policy.yaml"),
            description="Parameter file of the policy node (config/policy.yaml, config/isaac_sim.yaml, or yours).",
        ),
        DeclareLaunchArgument("model", default_value="", description="Checkpoint directory or cached HF id."),
        DeclareLaunchArgument("backend", default_value="in_process", description="in_process or sidecar."),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag play, Isaac Sim)."),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node."),
        DeclareLaunchArgument(
            "camera_topic",
            default_value="",
            description="Single camera topic; overrides camera_topics of the params file when set.",
        ),
        DeclareLaunchArgument(
            "start_sidecar", default_value="false", description="Also start `cosmos3-ros sidecar` for backend:=sidecar."
        ),
        DeclareLaunchArgument(
            "sidecar_port", default_value="8000", description="Port of the sidecar (started or not) on 127.0.0.1."
        ),
        DeclareLaunchArgument("device", default_value="auto", description="Torch device of the model."),
    ]
    overrides = {
        "model": LaunchConfiguration("model"),
        "backend": LaunchConfiguration("backend"),
        "use_sim_time": PythonExpression(["'", LaunchConfiguration("use_sim_time"), "'.lower() == 'true'"]),
        "device": LaunchConfiguration("device"),
        "sidecar_url": ["ws://127.0.0.1:", LaunchConfiguration("sidecar_port")],
    }
    camera = LaunchConfiguration("camera_topic")

    def policy_node(extra: list, when: PythonExpression) -> LifecycleNode:
        return LifecycleNode(
            package="cosmos3_ros",
            executable="policy_node",
            name="cosmos3_policy",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"), overrides, *extra],
            condition=IfCondition(when),
        )

    # camera_topic:=X replaces the params file's camera_topics with [X].
    node = policy_node([], PythonExpression(["'", camera, "' == ''"]))
    node_with_camera = policy_node(
        [{"camera_topics": PythonExpression(["['", camera, "']"])}], PythonExpression(["'", camera, "' != ''"])
    )
    sidecar = ExecuteProcess(
        cmd=[
            "cosmos3-ros",
            "sidecar",
            "--model",
            LaunchConfiguration("model"),
            "--port",
            LaunchConfiguration("sidecar_port"),
            "--device",
            LaunchConfiguration("device"),
        ],
        output="screen",
        condition=IfCondition(LaunchConfiguration("start_sidecar")),
    )
    return LaunchDescription([*args, sidecar, node, node_with_camera])
