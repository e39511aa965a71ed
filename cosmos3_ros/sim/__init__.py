# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A MuJoCo Franka Panda behind Isaac Sim's ROS 2 bridge interface (``cosmos3-ros sim``).

Pure modules (no ROS, no MuJoCo): :mod:`~cosmos3_ros.sim.trajectory` (joint_trajectory_controller's following),
:mod:`~cosmos3_ros.sim.drive` (the articulation controller's command semantics), :mod:`~cosmos3_ros.sim.metrics`,
:mod:`~cosmos3_ros.sim.options`. MuJoCo: :mod:`~cosmos3_ros.sim.world`. ROS: :mod:`~cosmos3_ros.sim.bridge` (the
node), :mod:`~cosmos3_ros.sim.harness` (simulator + policy node + recorder, for the bench, the demo and tests).
"""
