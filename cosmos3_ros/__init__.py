# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""cosmos3_ros: NVIDIA Cosmos 3 as a robot policy in a ROS 2 control loop."""

__version__ = "0.1.0"
