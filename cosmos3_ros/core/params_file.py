# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""ROS 2 parameter files read the way rcl reads them, and checked against the settings schema.

Pure Python (PyYAML, no ROS). A ROS 2 parameter file maps node names to ``ros__parameters``; rcl applies a section
when its name matches the node's fully qualified name (a name without a leading ``/`` gets one; ``*`` matches one
name token, ``**`` any number of them). What rcl silently ignores, this module reports: keys that are not declared
parameters (with a "did you mean"), sections for other nodes, files without ``ros__parameters``, and values of the
wrong type or out of range. The node logs these as warnings at start; ``cosmos3-ros validate-params`` prints them;
``cosmos3-ros replay`` and ``cosmos3-ros sidecar`` refuse a file with problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cosmos3_ros.core.schema import NODE_SETTINGS, Setting, SettingsError, did_you_mean

#: Parameters rclpy declares on every node (or that QoS overriding declares); accepted, not ours to check.
BUILTIN_PARAMS: frozenset[str] = frozenset({"use_sim_time", "start_type_description_service"})
BUILTIN_PREFIXES: tuple[str, ...] = ("qos_overrides.",)

DEFAULT_NODE = "/cosmos3_policy"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus the ``!!python/tuple`` tag launch_ros writes for list parameters (rcl reads those
    as sequences too), and rcl's booleans: a bare ``y``, ``Y``, ``n`` or ``N`` is a bool to rcl (PyYAML reads it as
    a string), so a joint named ``y`` must be quoted."""


_Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))
#: Plain scalars rcl_yaml_param_parser reads as booleans beyond YAML's true/false/yes/no/on/off.
_RCL_BOOLS = {"y": True, "Y": True, "n": False, "N": False}


def _construct_str(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    value = loader.construct_scalar(node)
    if node.style is None and value in _RCL_BOOLS:
        return _RCL_BOOLS[value]
    return value


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a parameter rclpy itself owns (use_sim_time, qos_overrides.*)."""
    return name in BUILTIN_PARAMS or name.startswith(BUILTIN_PREFIXES)


def _normalize(name: str) -> str:
    return name if name.startswith("/") else "/" + name


def section_matches(section: str, node_fqn: str) -> bool:
    """Whether a parameter-file section name applies to the node ``node_fqn`` (rcl's wildcard rules)."""
    pattern = [t for t in _normalize(str(section)).split("/") if t]
    target = [t for t in _normalize(node_fqn).split("/") if t]

    def match(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(target)
        if pattern[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(target) + 1))
        if j == len(target):
            return False
        return (pattern[i] == "*" or pattern[i] == target[j]) and match(i + 1, j + 1)

    return match(0, 0)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class ParamsReport:
    """What a parameter file means for one node: the values that apply, and everything wrong with it."""

    path: str
    node: str
    values: dict[str, Any] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    other_sections: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Problems that make rcl refuse the whole file (the process cannot start with it).
    fatal: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problems and no unknown keys (sections for other nodes are allowed: one file may hold several)."""
        return not self.problems and not self.unknown and not self.fatal

    def warnings(self) -> list[str]:
        """One line per finding, most serious first."""
        out = [f"{self.path}: {p}" for p in self.fatal]
        out += [f"{self.path}: {p}" for p in self.problems]
        out += [f"{self.path}: {u}" for u in self.unknown]
        if self.other_sections and not self.values:
            out.append(
                f"{self.path}: no section applies to node {self.node} (sections: {self.other_sections}); "
                "its parameters are not used"
            )
        return out


def read_params_file(
    path: str | Path, node: str = DEFAULT_NODE, settings: Iterable[Setting] = NODE_SETTINGS
) -> ParamsReport:
    """Read ``path`` for the node named ``node`` (fully qualified) and check it against ``settings``.

    Never raises for a bad file: everything wrong is in the report (a missing file too).
    """
    table = {s.name: s for s in settings}
    report = ParamsReport(str(path), _normalize(node))
    p = Path(path)
    if not p.is_file():
        report.fatal.append("no such file")
        return report
    try:
        data = yaml.load(p.read_text(), Loader=_Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        report.fatal.append(f"not valid YAML: {exc}")
        return report
    if data is None:
        report.problems.append("the file is empty")
        return report
    if not isinstance(data, dict):
        report.fatal.append("expected a mapping of node names to `ros__parameters`")
        return report
    exact: dict[str, Any] = {}
    wild: dict[str, Any] = {}
    for section, body in data.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            report.fatal.append(
                f"section {section!r} has no `ros__parameters`: a ROS 2 parameter file is "
                "`<node name or /**>: {ros__parameters: {name: value}}` (a flat list of parameters is ignored by ROS)"
            )
            continue
        if not section_matches(section, report.node):
            report.other_sections.append(str(section))
            continue
        params = body["ros__parameters"] or {}
        if not isinstance(params, dict):
            report.fatal.append(f"section {section!r}: `ros__parameters` must be a mapping")
            continue
        target = wild if "*" in str(section) else exact
        target.update(_flatten(params))
    for key, value in {**wild, **exact}.items():  # rcl: an exact node section overrides wildcard ones
        if is_builtin(key):
            report.values[key] = value
            continue
        spec = table.get(key)
        if spec is None:
            report.unknown.append(f"{key!r} is not a parameter of this node{did_you_mean(key, table)}")
            continue
        try:
            report.values[key] = spec.validate(value)
        except SettingsError as exc:
            hint = ""
            if spec.kind in ("str", "str_list") and any(isinstance(v, bool) for v in _items(value)):
                hint = " (rcl reads a bare y, n, yes, no, on, off, true or false as a boolean: quote it)"
            report.problems.append(f"{exc}{hint}")
    return report


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def ros_args_params(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The ``--params-file`` paths and ``-p name:=value`` overrides inside ``--ros-args`` sections of ``argv``.

    Values are parsed as YAML, as rcl does. A node remap (``-r __node:=x``) is not a parameter and is skipped.
    """
    files: list[str] = []
    overrides: dict[str, Any] = {}
    in_ros = False
    it = iter(argv)
    for arg in it:
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif in_ros and arg == "--params-file":
            files.append(next(it, ""))
        elif in_ros and arg in ("-p", "--param"):
            item = next(it, "")
            if ":=" in item:
                name, raw = item.split(":=", 1)
                try:
                    overrides[name] = yaml.safe_load(raw)
                except yaml.YAMLError:
                    overrides[name] = raw
        elif in_ros and arg in ("-r", "--remap", "-e", "--enclave", "--log-level", "--log-config-file"):
            next(it, None)
    return files, overrides


def check_overrides(overrides: dict[str, Any], settings: Iterable[Setting] = NODE_SETTINGS) -> list[str]:
    """Warnings for ``-p`` overrides that name no parameter or have a bad value."""
    table = {s.name: s for s in settings}
    out = []
    for key, value in overrides.items():
        if is_builtin(key):
            continue
        spec = table.get(key)
        if spec is None:
            out.append(f"-p {key}: not a parameter of this node{did_you_mean(key, table)}")
            continue
        try:
            spec.validate(value)
        except SettingsError as exc:
            out.append(f"-p {key}: {exc}")
    return out
