# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros validate-params FILE``: check a node parameter file offline, as the node will read it.

Reports what rcl would silently ignore (keys that are no parameter, with "did you mean"; sections for another node
name; a file without ``ros__parameters``), values of the wrong type or out of range, and combinations the node
refuses at configure (e.g. a joint_names list that does not match the domain's action width). Exit 0 when the file
is good, 1 when it has problems.
"""

from __future__ import annotations

import argparse

HELP = "check a node parameter file offline (unknown keys with suggestions, types, ranges, node name)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    parser.add_argument("file", metavar="FILE", help="a ROS 2 parameter file (YAML)")
    parser.add_argument(
        "--node-name",
        default="/cosmos3_policy",
        help="fully qualified node name the file is for (namespace included) [default: /cosmos3_policy]",
    )


def run(args: argparse.Namespace) -> int:
    """Print the findings; 0 when there are none."""
    from cosmos3_ros.control.config import values_from_overrides
    from cosmos3_ros.core.params_file import read_params_file

    report = read_params_file(args.file, args.node_name)
    findings = report.warnings()
    if report.ok:
        try:
            values_from_overrides(report.values)
        except ValueError as exc:
            findings.append(f"{args.file}: {exc}")
    for line in findings:
        print(line)
    if findings:
        return 1
    print(f"{args.file}: OK for node {report.node} ({len(report.values)} parameters set)")
    return 0
