# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""ament_python package setup: builds with colcon in a ROS 2 workspace and installs with pip outside one."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "cosmos3_ros"

# Runtime Python dependencies. diffusers is pinned exactly: the runtime relies on the
# Cosmos3OmniPipeline internals of this release (see cosmos3_ros/runtime/pipeline.py).
INSTALL_REQUIRES = [
    "numpy>=1.26,<3",
    "torch>=2.6",
    "diffusers==0.42.1",
    # diffusers loads Cosmos3OmniTransformer (which keeps modules in fp32) only with accelerate present.
    "accelerate>=1.0",
    "transformers>=5.0,<6",
    "tokenizers>=0.22",
    "huggingface_hub>=0.34",
    "safetensors>=0.4",
    "pillow>=10",
    "pyyaml>=6",
    "websockets>=13,<18",
    "msgpack>=1.0,<2",
    "rosbags>=0.11,<0.12",
    "matplotlib>=3.8",
    "tqdm>=4.66",
]

# ROS 2 (Kilted) from PyPI wheels, for machines without a ROS distro. With a sourced ROS 2
# install, do not use this extra: the distro provides rclpy and the messages.
ROS_WHEELS = [
    "ros-rclpy",
    "ros-rmw-fastrtps-cpp",
    "ros-sensor-msgs",
    "ros-geometry-msgs",
    "ros-trajectory-msgs",
    "ros-std-msgs",
    "ros-std-srvs",
    "ros-diagnostic-msgs",
    "ros-builtin-interfaces",
    "ros-lifecycle-msgs",
    "ros-rosgraph-msgs",
]

TEST_REQUIRES = ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6"]

# `cosmos3-ros sim`: the MuJoCo Panda. Pinned exactly: simulated states (and so any recorded run) differ between
# mujoco releases. Offscreen rendering needs EGL (Debian: libegl1, libegl-mesa0, libgl1-mesa-dri) or OSMesa
# (libosmesa6) from the system.
SIM_REQUIRES = ["mujoco==3.17.0"]

# `cosmos3-ros fleet`: Ray Serve replicas behind the sidecar protocol (pinned: the deployment API moves between
# releases). psutil is for the fleet load benchmark's CPU accounting.
FLEET_REQUIRES = ["ray[serve]==2.60.0", "psutil>=5.9"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    package_data={"cosmos3_ros.sim": ["assets/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"ros": ROS_WHEELS, "test": TEST_REQUIRES, "sim": SIM_REQUIRES, "fleet": FLEET_REQUIRES},
    zip_safe=True,
    maintainer="cosmos3_ros maintainers",
    maintainer_email="cosmos3-ros@example.com",
    description="NVIDIA Cosmos 3 world model as a robot policy in a ROS 2 control loop, with forecast monitoring.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "cosmos3-ros = cosmos3_ros.cli:main",
            "policy_node = cosmos3_ros.ros.policy_node:main",
        ],
    },
)
