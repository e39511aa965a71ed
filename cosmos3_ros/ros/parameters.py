# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Node parameters from the settings schema: declaration, descriptors, validation, current values.

Every parameter of the node is a :class:`~cosmos3_ros.core.schema.Setting` of a node scope; nothing is declared
here by hand. Run-time settings are writable, all others ``read_only`` (rclpy refuses to set them after start).
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from cosmos3_ros.core.schema import NODE_SCOPES, NODE_SETTINGS, Setting, settings_in


def descriptor(spec: Setting) -> ParameterDescriptor:
    """The rcl ParameterDescriptor of ``spec``: description with bounds and default, range, read-only.

    List parameters are declared with dynamic typing: an empty list (their usual default, and ``[]`` in YAML) has no
    element type in rclpy; their element types are checked by the schema on set.
    """
    d = ParameterDescriptor(name=spec.name, description=spec.help_text(), read_only=not spec.runtime)
    if spec.kind.endswith("_list"):
        d.dynamic_typing = True
    if spec.kind == "int" and not spec.choices and spec.minimum is not None and spec.maximum is not None:
        lo = 0 if spec.zero else int(spec.minimum)
        d.integer_range = [IntegerRange(from_value=lo, to_value=int(spec.maximum), step=1)]
    if spec.kind == "float" and spec.minimum is not None and spec.maximum is not None:
        lo = 0.0 if spec.zero else float(spec.minimum)
        d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=float(spec.maximum), step=0.0)]
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(str(c) for c in spec.choices)
    return d


def declare_all(node: Node) -> list[str]:
    """Declare every node setting on ``node`` with its default and descriptor; returns the problems found.

    A parameter file or ``-p`` value that rclpy refuses (wrong type, out of range) does not crash the node: the
    parameter keeps its default and the problem is returned, so the node can report it and refuse to configure.
    """
    problems = []
    for spec in NODE_SETTINGS:
        try:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            problems.append(f"parameter {spec.name}: {exc}; using the default {spec.default!r}")
            node.declare_parameter(spec.name, spec.default, descriptor(spec), ignore_override=True)
    return problems


def current_values(node: Node) -> dict[str, Any]:
    """The current value of every node setting (lists as Python lists, coerced by the schema)."""
    return {spec.name: spec.coerce(node.get_parameter(spec.name).value) for spec in NODE_SETTINGS}


def usage_text() -> str:
    """What ``policy_node --help`` prints."""
    lines = [
        "policy_node: the cosmos3_policy lifecycle node (NVIDIA Cosmos 3 as the robot's policy).",
        "",
        "usage: policy_node [--ros-args [--params-file FILE] [-p NAME:=VALUE ...] [-r __ns:=/NS]]",
        "       ros2 run cosmos3_ros policy_node --ros-args ...   (in a ROS 2 install)",
        "",
        "Subscribes to camera_topics, publishes ~/joint_trajectory (and a JointState stream in joint_state mode),",
        "~/predicted_image, ~/prediction_error and /diagnostics; services ~/enable; topic ~/instruction.",
        "Check a parameter file offline: cosmos3-ros validate-params FILE",
        "",
        "parameters (name, default, run-time changeable):",
    ]
    for scope in NODE_SCOPES:
        lines.append(f"  [{scope}]")
        for s in settings_in(scope):
            lines.append(f"    {s.name} ({'runtime' if s.runtime else 'read-only'}): {s.help_text()}")
    return "\n".join(lines)
