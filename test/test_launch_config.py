# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""What can be tested of launch and configuration without `ros2 launch`: parameter files load into the real
node and every key is a declared parameter; the launch file references the installed executable and configs;
README documents every parameter."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph import Graph

from cosmos3_ros.core.params_file import read_params_file
from cosmos3_ros.core.schema import NODE_SETTINGS, SCOPES, markdown_table, yaml_template
from cosmos3_ros.ros.policy_node import PolicyNode

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
BUILTIN = {"use_sim_time"}


def _keys(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["/**"], "presets apply to the node under any name and namespace"
    report = read_params_file(path)
    assert report.ok, report.warnings()
    return report.values


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_preset_is_a_clean_parameter_file(path):
    from cosmos3_ros.control.config import values_from_overrides

    values_from_overrides(_keys(path))  # every key declared, every value in range, the combination accepted


def test_policy_yaml_is_the_schema_at_its_defaults():
    text = (ROOT / "config" / "policy.yaml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#") or line.startswith("#  ")) + "\n"
    assert body.split("/**:", 1)[1] == yaml_template().split("/**:", 1)[1], "regenerate: cosmos3-ros settings --yaml"
    keys = _keys(ROOT / "config" / "policy.yaml")
    assert set(keys) == {s.name for s in NODE_SETTINGS}


@pytest.mark.ros
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_params_file_loads_into_the_node(path):
    g = Graph()
    try:
        node = g.add(
            PolicyNode(
                context=g.context,
                cli_args=["--ros-args", "--params-file", str(path)],
                argv=["policy_node", "--ros-args", "--params-file", str(path)],
                parameter_overrides=[Parameter("backend", value="fake")],
            )
        )
        assert node.param_warnings == []
        for key, value in _keys(path).items():
            if key == "backend":  # overridden above
                continue
            got = node.get_parameter(key).value if key in BUILTIN else node.values()[key]
            assert got == value, key
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.backend_error
    finally:
        g.close()


def _launch_calls():
    tree = ast.parse((ROOT / "launch" / "policy.launch.py").read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def test_launch_file_arguments_are_described_and_reference_installed_things():
    text = (ROOT / "launch" / "policy.launch.py").read_text()
    assert text.lstrip().startswith("# Copyright") and '"""Launch the Cosmos 3 policy node' in text
    declared = []
    for call in _launch_calls():
        if getattr(call.func, "id", None) == "DeclareLaunchArgument":
            name = call.args[0].value
            kws = {k.arg for k in call.keywords}
            assert "description" in kws and "default_value" in kws, name
            declared.append(name)
    for required in ("params_file", "model", "backend", "use_sim_time", "namespace", "camera_topic", "start_sidecar"):
        assert required in declared
    used = set(re.findall(r'LaunchConfiguration\("([a-z_]+)"\)', text))
    assert used <= set(declared), used - set(declared)
    assert 'installed_executable("policy_node")' in text and 'PACKAGE = "cosmos3_ros"' in text
    assert '"config", "policy.yaml"' in text
    setup = (ROOT / "setup.py").read_text()
    assert "policy_node = cosmos3_ros.ros.policy_node:main" in setup
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
    assert (ROOT / "resource" / "cosmos3_ros").is_file()


def test_readme_tables_are_the_schema():
    readme = (ROOT / "README.md").read_text()
    for scope in SCOPES:
        table = markdown_table([scope])
        assert table in readme, f"README's {scope} table differs from the schema: cosmos3-ros settings --markdown"
