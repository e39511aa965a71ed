# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Try it without a robot: the MuJoCo Panda simulator (``cosmos3-ros sim``) and the policy node together.

Usage:
  ros2 launch cosmos3_ros sim.launch.py                                  # Isaac preset, a tiny random-weights model
  ros2 launch cosmos3_ros sim.launch.py preset:=droid                    # wrist + two exterior cameras, trajectories
  ros2 launch cosmos3_ros sim.launch.py model:=/data/cosmos3-policy device:=cuda
  ros2 launch cosmos3_ros sim.launch.py backend:=fake                    # the wiring only, no model
  ros2 launch cosmos3_ros sim.launch.py real_time_factor:=0.5 camera_rate:=10 width:=160 height:=120

The simulator speaks Isaac Sim's bridge interface (/rgb or the DROID camera topics, /clock, /joint_states,
/joint_command) and also follows the node's JointTrajectory (preset droid). The node starts from the preset's
parameter file (config/isaac_sim.yaml or config/droid.yaml) with use_sim_time on, through policy.launch.py. Without
``model`` (and with the in-process backend) a tiny random-weights checkpoint is written once to
``$XDG_CACHE_HOME/cosmos3_ros/tiny`` (about 5 s): its actions are noise, the preset's joint limits clamp them, and
the arm is sent back and forth: the loop runs, a skill needs a real checkpoint.
"""

import os
import shutil
import subprocess

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, LogInfo, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource

PACKAGE = "cosmos3_ros"
PRESETS = {"isaac": "isaac_sim.yaml", "droid": "droid.yaml"}
#: Launch arguments handed to ``cosmos3-ros sim`` as flags when given.
SIM_FLAGS = ("real_time_factor", "camera_rate", "width", "height", "seed", "gl")


def installed_executable(name: str) -> str:
    """The package's executable ``name``: colcon installs it in lib/cosmos3_ros, pip in the environment's bin."""
    candidate = os.path.join(get_package_prefix(PACKAGE), "lib", PACKAGE, name)
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"{name} is neither in {os.path.dirname(candidate)} nor on PATH: is {PACKAGE} installed?")


def tiny_model() -> str:
    """A tiny random-weights checkpoint in the user's cache, written on first use."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(cache, PACKAGE, "tiny")
    if not os.path.isfile(os.path.join(path, "model_index.json")):
        subprocess.run([installed_executable("cosmos3-ros"), "make-tiny-model", path], check=True)
    return path


def _setup(context, *args, **kwargs):
    def arg(name: str) -> str:
        return context.launch_configurations.get(name, "")

    preset = arg("preset")
    if preset not in PRESETS:
        raise RuntimeError(f"preset:={preset!r}: expected one of {sorted(PRESETS)}")
    share = get_package_share_directory(PACKAGE)
    actions = []
    model = arg("model")
    if not model and arg("backend") in ("", "in_process"):
        model = tiny_model()
        actions.append(LogInfo(msg=f"sim.launch.py: no model given, using the tiny random-weights checkpoint {model}"))
    sim = [installed_executable("cosmos3-ros"), "sim", "--preset", preset]
    for name in SIM_FLAGS:
        if arg(name):
            sim += ["--" + name.replace("_", "-"), arg(name)]
    actions.append(ExecuteProcess(cmd=sim, name="cosmos3_sim", output="screen"))
    policy = {
        "params_file": arg("params_file") or os.path.join(share, "config", PRESETS[preset]),
        "use_sim_time": "true",
        "model": model,
        "backend": arg("backend"),
        "device": arg("device"),
    }
    actions.append(
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "policy.launch.py")),
            launch_arguments=[(k, v) for k, v in policy.items() if v],
        )
    )
    return actions


def generate_launch_description() -> LaunchDescription:
    """The launch description: arguments, then the simulator and the node built from their values."""
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "preset",
                default_value="isaac",
                description="isaac (one camera on /rgb, JointState commands on /joint_command; config/isaac_sim.yaml) "
                "or droid (wrist and two exterior cameras, the node's JointTrajectory followed; config/droid.yaml).",
            ),
            DeclareLaunchArgument(
                "model",
                default_value="",
                description="Checkpoint directory or cached HF id (empty: a tiny random-weights checkpoint).",
            ),
            DeclareLaunchArgument(
                "backend", default_value="", description="in_process, sidecar or fake (empty: the file's)."
            ),
            DeclareLaunchArgument(
                "device", default_value="", description="Torch device of the model (empty: the file's)."
            ),
            DeclareLaunchArgument(
                "params_file", default_value="", description="The node's parameter file (empty: the preset's)."
            ),
            DeclareLaunchArgument(
                "real_time_factor",
                default_value="",
                description="Simulated seconds per wall second (empty: 1; lower it when the model is slow).",
            ),
            DeclareLaunchArgument(
                "camera_rate", default_value="", description="Camera frames per simulated second (empty: 15)."
            ),
            DeclareLaunchArgument(
                "width", default_value="", description="Camera width in pixels (empty: the preset's, 320)."
            ),
            DeclareLaunchArgument(
                "height", default_value="", description="Camera height in pixels (empty: the preset's, 240 or 180)."
            ),
            DeclareLaunchArgument("seed", default_value="", description="Seed of the object placement (empty: 0)."),
            DeclareLaunchArgument(
                "gl", default_value="", description="Offscreen OpenGL: egl or osmesa (empty: $MUJOCO_GL or egl)."
            ),
            OpaqueFunction(function=_setup),
        ]
    )
