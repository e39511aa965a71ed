# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The node with the shipped DROID preset (config/droid.yaml): three cameras and a JointState in, 32-point
trajectories of the Franka's 8 joints at 1/15 s out, that follow the robot state and hold when it goes stale.

The fake backend runs it fast; the same test on the real diffusers pipeline (tiny random-weights checkpoint,
DROID shapes: 540x640 composite, chunk 32, 8-D output, state row given) is in the slow tier."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph import Camera, Collector, Graph
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.core.params_file import read_params_file
from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.policy_node import PolicyNode

pytestmark = pytest.mark.ros

PRESET = Path(__file__).resolve().parents[1] / "config" / "droid.yaml"
JOINTS = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"]
TRAJ = "/cosmos3_policy/joint_trajectory"
#: Camera frames: the wrist at 360x640 and exteriors that compose to exactly 540x640 (no resize).
FRAMES = {
    "/wrist_camera/image_raw": moving_scene_frame(0.0, 360, 640),
    "/exterior_camera_1/image_raw": moving_scene_frame(0.3, 180, 320),
    "/exterior_camera_2/image_raw": moving_scene_frame(0.6, 180, 320),
}
HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04]


def preset_values(**over) -> dict:
    report = read_params_file(PRESET, "/cosmos3_policy")
    assert report.ok, report.warnings()
    values = dict(report.values)
    values.update(over)
    return values


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


class Robot:
    """Three cameras (static frames: only the state changes what the model sees) and a JointState publisher."""

    def __init__(self, graph: Graph) -> None:
        self.node = graph.node("robot")
        self.cams = {topic: Camera(self.node, topic) for topic in FRAMES}
        self.states = self.node.create_publisher(JointState, "/joint_states", 10)
        self.position = list(HOME)
        self.publish_state = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.now()
            for topic, cam in self.cams.items():
                cam.publish(FRAMES[topic], stamp=now)
            if self.publish_state:
                msg = JointState()
                msg.header.stamp = self.node.get_clock().now().to_msg()
                msg.name = ["panda_finger_joint2", *reversed(JOINTS)]  # order and extras must not matter
                msg.position = [0.04, *reversed(self.position)]
                self.states.publish(msg)
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def start(graph: Graph, **over) -> PolicyNode:
    values = preset_values(warmup=False, forecast_every=0, max_observation_age=1.0, **over)
    node = graph.add(
        PolicyNode(context=graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    )
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.backend_error
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return node


def run_droid(graph: Graph, node: PolicyNode, timeout: float) -> None:
    robot = Robot(graph)
    got = Collector(graph.node("tester"), JointTrajectory, TRAJ)
    chunks = lambda: [m for m in got.snapshot() if len(m.points) > 1]  # noqa: E731
    try:
        graph.wait_for(lambda: len(chunks()) >= 1, timeout=timeout)
        msg = chunks()[0]
        assert list(msg.joint_names) == JOINTS
        # A chunk of 32 rows at 1/15 s from the observation: rows already due when it arrived are dropped, the
        # rest sit on the grid up to row 32 (a first point at the switch time, off the grid, is the current command).
        t = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
        rows = t * 15
        on_grid = np.abs(rows - np.round(rows)) < 1e-5
        assert on_grid[1:].all() and np.round(rows[-1]) == 32
        np.testing.assert_allclose(np.diff(t[on_grid]), 1 / 15, atol=1e-6)
        assert 16 <= on_grid.sum() <= 32
        pos = np.array([p.positions for p in msg.points])
        vel = np.array([p.velocities for p in msg.points])
        assert pos.shape[1] == 8 and vel.shape == pos.shape and np.isfinite(pos).all()
        lower = np.array(preset_values()["joint_limits.lower"])
        upper = np.array(preset_values()["joint_limits.upper"])
        assert (pos >= lower - 1e-9).all() and (pos <= upper + 1e-9).all()

        # The state row reaches the model in model units: joints 1:1, finger 0.04 m -> 1.0 (the model's 1 - g).
        def last_chunk_after(n: int) -> np.ndarray:
            try:
                graph.wait_for(lambda: len(chunks()) > n, timeout=timeout)
            except TimeoutError:
                pytest.fail(f"no new chunk: {node.loop.controller.counters} {node.loop.controller.last_error}")
            return np.array([p.positions for p in chunks()[-1].points])

        n = len(chunks())
        a = last_chunk_after(n)
        robot.position = [0.3, -0.5, 0.2, -2.0, 0.1, 1.8, 0.5, 0.01]
        time.sleep(0.3)
        b = last_chunk_after(len(chunks()) + 1)  # one in flight may still carry the old state
        k = min(len(a), len(b))  # the chunks' last k rows (rows already due at arrival are not published)
        assert not np.allclose(a[-k:], b[-k:]), "the trajectory does not follow the joint state"

        # State goes stale: the node stops planning and holds (a one-point trajectory), cameras still streaming.
        robot.publish_state = False
        graph.wait_for(lambda: node.loop.controller.counters.get("no_observation.stale_state") > 0, timeout=10)
        graph.wait_for(lambda: len(got.snapshot()[-1].points) == 1, timeout=timeout)
        n = len(chunks())
        time.sleep(1.0)
        assert len(chunks()) == n, "planned from a stale robot state"
    finally:
        robot.close()


@pytest.mark.slow  # several seconds of real streaming: the full suite runs it
def test_droid_preset_with_the_fake_backend(graph):
    node = start(graph, backend="fake", replan_every=4)
    run_droid(graph, node, timeout=20)
    calls = node.loop.backend.policy_calls
    assert calls and all(c.image_shape == (540, 640, 3) for c in calls)
    assert calls[0].settings.use_state and calls[0].settings.action_chunk_size == 32
    np.testing.assert_allclose(calls[0].state, [*HOME[:7], 1.0], atol=1e-6)


def test_droid_preset_on_the_real_pipeline(graph, tiny_model):
    node = start(graph, backend="in_process", model=str(tiny_model), device="cpu")
    run_droid(graph, node, timeout=180)
