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

from cosmos3_ros.control.config import load_params_file
from cosmos3_ros.ros.params import PARAMS
from cosmos3_ros.ros.policy_node import PolicyNode

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
BUILTIN = {"use_sim_time"}


def _keys(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["/**"], "presets apply to the node under any name and namespace"
    return load_params_file(path)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_key_is_a_declared_parameter(path):
    declared = {p.name for p in PARAMS} | BUILTIN
    keys = set(_keys(path))
    assert keys <= declared, f"undeclared keys in {path.name}: {sorted(keys - declared)}"


def test_policy_yaml_lists_every_parameter_with_its_default():
    keys = _keys(ROOT / "config" / "policy.yaml")
    for spec in PARAMS:
        assert spec.name in keys, f"config/policy.yaml lacks {spec.name}"
        if spec.name == "model":
            continue
        assert keys[spec.name] == spec.default or (keys[spec.name] == [] and spec.default == []), spec.name


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_params_file_loads_into_the_node(path, tiny_model):
    g = Graph()
    try:
        node = g.add(
            PolicyNode(
                context=g.context,
                cli_args=["--ros-args", "--params-file", str(path)],
                parameter_overrides=[
                    Parameter("model", value=str(tiny_model)),
                    Parameter("warmup", value=False),
                    Parameter("device", value="cpu"),
                ],
            )
        )
        for key, value in _keys(path).items():
            if key in ("model", "warmup", "device"):  # overridden above
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
    assert 'executable="policy_node"' in text and 'package="cosmos3_ros"' in text
    assert '"config", "policy.yaml"' in text
    setup = (ROOT / "setup.py").read_text()
    assert "policy_node = cosmos3_ros.ros.policy_node:main" in setup
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
    assert (ROOT / "resource" / "cosmos3_ros").is_file()


def test_readme_documents_every_parameter():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in PARAMS if f"`{p.name}`" not in readme]
    assert not missing, f"README lacks parameters: {missing}"
