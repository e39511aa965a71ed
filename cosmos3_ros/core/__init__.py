# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Pure core of cosmos3_ros: no ROS imports, no torch imports."""
