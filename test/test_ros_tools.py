# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros topic|lifecycle|param``: the ros2 CLI verbs users without a distro need, against a real node."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph import Camera, Graph

from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.policy_node import PolicyNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # each test starts CLI subprocesses (~6 s)


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def _cli(graph: Graph, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROS_DOMAIN_ID": str(graph.domain_id)}
    return subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_lifecycle_get_and_set_drive_the_node(graph):
    params = [Parameter("backend", value="fake"), Parameter("camera_topics", value=["/cam"])]
    node = graph.add(PolicyNode(context=graph.context, parameter_overrides=params))
    r = _cli(graph, "lifecycle", "get", "/cosmos3_policy")
    assert r.returncode == 0 and "unconfigured" in r.stdout, r.stderr
    for transition in ("configure", "activate"):
        r = _cli(graph, "lifecycle", "set", "/cosmos3_policy", transition)
        assert r.returncode == 0 and "successful" in r.stdout, r.stdout + r.stderr
    assert node.loop is not None
    assert "active" in _cli(graph, "lifecycle", "get", "/cosmos3_policy").stdout


def test_param_get_set_and_a_refused_value(graph):
    params = [Parameter("backend", value="fake"), Parameter("camera_topics", value=["/cam"])]
    node = graph.add(PolicyNode(context=graph.context, parameter_overrides=params))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    r = _cli(graph, "param", "set", "/cosmos3_policy", "num_steps", "7")
    assert r.returncode == 0 and node.loop.controller.settings.num_steps == 7, r.stdout + r.stderr
    assert _cli(graph, "param", "get", "/cosmos3_policy", "num_steps").stdout.strip() == "7"
    r = _cli(graph, "param", "set", "/cosmos3_policy", "shift", "1e-300")
    assert r.returncode == 1 and "shift" in r.stdout and "[0.1, 50]" in r.stdout


def test_topic_list_echo_and_hz(graph):
    node = graph.node("publisher")
    cam = Camera(node, "/cam/image_raw")
    timer = node.create_timer(0.05, lambda: cam.publish(moving_scene_frame(0, 24, 32)))
    try:
        assert "/cam/image_raw [sensor_msgs/msg/Image]" in _cli(graph, "topic", "list").stdout
        r = _cli(graph, "topic", "echo", "/cam/image_raw", "--count", "1", "--timeout", "30")
        assert r.returncode == 0 and "encoding: 'rgb8'" in r.stdout and "items)" in r.stdout, r.stderr
        r = _cli(graph, "topic", "hz", "/cam/image_raw", "--window", "2")
        rate = float(r.stdout.split(": ")[1].split(" Hz")[0])
        assert 10 < rate < 30, r.stdout
    finally:
        timer.cancel()
    r = _cli(graph, "topic", "echo", "/nothing/here")
    assert r.returncode == 2 and "not found" in r.stderr
