# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The policy node with ``backend: sidecar`` against a real sidecar process on loopback."""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph import Camera, Collector, Graph
from test_sidecar import SidecarProcess, free_port
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.policy_node import PolicyNode

TOPIC = "/cam/image_raw"
FRAME = moving_scene_frame(0.0, 120, 160)


def _node(graph: Graph, url: str) -> PolicyNode:
    params = {
        "backend": "sidecar",
        "sidecar_url": url,
        "sidecar_timeout": 20.0,
        "camera_topics": [TOPIC],
        "num_steps": 2,
        "image_size": 256,
        "action_chunk_size": 16,
        "fps": 5.0,
        "seed": 4,
        "prompt": "stack the blocks",
        "warmup": True,
        "max_observation_age": 2.0,
        "forecast_every": 0,
    }
    node = graph.add(
        PolicyNode(context=graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    )
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.backend_error
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return node


@pytest.fixture
def sidecar(tiny_model, tmp_path):
    proc = SidecarProcess(tiny_model, free_port(), tmp_path / "sidecar.log").start().wait_healthy()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.proc.terminate()
        proc.proc.wait(timeout=30)


def test_node_with_sidecar_publishes_the_in_process_actions(sidecar, tiny_model):
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    g = Graph()
    try:
        node = _node(g, sidecar.url)
        test = g.node("tester")
        cam = Camera(test, TOPIC)
        got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
        stamp = test.get_clock().now().nanoseconds * 1e-9
        # Best-effort camera QoS: repeat the same frame until discovery is done (repeats are rejected).
        g.wait_for(lambda: (cam.publish(FRAME, stamp=stamp), len(got) >= 1)[1], timeout=60, period=0.1)
        msg = got.snapshot()[0]
        expected = Cosmos3PolicyRuntime(str(tiny_model), device="cpu").policy(FRAME, node.controller.settings)
        np.testing.assert_array_equal(np.asarray([p.positions for p in msg.points]), expected.actions)
    finally:
        g.close()


def test_sidecar_killed_and_restarted_under_a_running_node(sidecar):
    g = Graph()
    try:
        node = _node(g, sidecar.url)
        test = g.node("tester")
        cam = Camera(test, TOPIC)
        got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")

        def feed(pred):
            def tick():
                cam.publish(moving_scene_frame(time.time(), 120, 160), stamp=test.get_clock().now().nanoseconds * 1e-9)
                time.sleep(0.1)
                return pred()

            return tick

        g.wait_for(feed(lambda: len(got) >= 1), timeout=60, period=0.0)
        sidecar.proc.kill()
        sidecar.proc.wait(timeout=10)
        g.wait_for(feed(lambda: any(len(m.points) == 1 for m in got.snapshot())), timeout=60, period=0.0)
        assert node.controller.counters.get("inference_errors") >= 1
        assert not node.controller.commanding
        status = node.diagnostic_status()
        assert status.level == DiagnosticStatus.ERROR and "inference failing" in status.message
        n_before = len(got)
        sidecar.start().wait_healthy()
        g.wait_for(feed(lambda: any(len(m.points) > 1 for m in got.snapshot()[n_before:])), timeout=90, period=0.0)
        assert node.controller.commanding and node.controller.consecutive_errors == 0
        assert node.diagnostic_status().level != DiagnosticStatus.ERROR
        for m in got.snapshot():
            for p in m.points:
                assert np.isfinite(p.positions).all()
    finally:
        g.close()
