# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Forecast monitoring and recording in the live node (real rclpy graph; the fake backend, and the real tiny model
end to end)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph import Camera, Collector, Graph
from sensor_msgs.msg import Image
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.bags.reader import open_bag
from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.policy_node import PolicyNode

pytestmark = pytest.mark.ros

TOPIC = "/cam/image_raw"
BASE = {
    "backend": "fake",
    "device": "cpu",
    "camera_topics": [TOPIC],
    "num_steps": 2,
    "image_size": 256,
    "action_chunk_size": 8,
    "fps": 5.0,
    "warmup": False,
    "max_observation_age": 2.0,
}


def _frame(test) -> tuple[np.ndarray, float]:
    t = test.get_clock().now().nanoseconds * 1e-9
    return moving_scene_frame(t, 120, 160), t


@pytest.mark.parametrize("backend", ["fake", pytest.param("in_process", marks=pytest.mark.slow)])
def test_forecast_published_and_errors_measured_then_disarm_on_drift(backend, request):
    g = Graph()
    try:
        params = {
            **BASE,
            "backend": backend,
            "forecast_every": 1,
            "drift_threshold": 0.05,
            "disarm_on_drift": True,
            # 16 actions at 5 Hz, replanning at the end of a chunk: 3.2 s leave room for the forecast (which is
            # skipped whenever it would delay the next policy call) even on a loaded 2-core machine.
            "action_chunk_size": 16,
            "replan_every": 16,
            "max_observation_age": 5.0,
        }
        if backend == "in_process":
            params["model"] = str(request.getfixturevalue("tiny_model"))
        node = g.add(
            PolicyNode(context=g.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        )
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        test = g.node("tester")
        cam = Camera(test, TOPIC)
        trajs = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
        preds = Collector(test, Image, "/cosmos3_policy/predicted_image", qos=64)
        errs = Collector(test, Float64, "/cosmos3_policy/prediction_error")

        def tick():
            img, t = _frame(test)
            cam.publish(img, stamp=t)
            time.sleep(0.1)
            return not node.loop.controller.armed

        g.wait_for(tick, timeout=120, period=0.0)  # the random-weights forecast is far off: drift disarms
        g.wait_for(lambda: len(preds) >= 16, timeout=10)
        p = preds.snapshot()[0]
        # The model predicts the content area floored to whole 16-pixel latents: 120x160 -> 112x160 (the fake
        # backend forecasts the input size).
        assert (p.height, p.width, p.encoding) == ((112 if backend == "in_process" else 120), 160, "rgb8")
        first_chunk = next(m for m in trajs.snapshot() if len(m.points) > 1)
        obs = first_chunk.header.stamp.sec + first_chunk.header.stamp.nanosec * 1e-9
        pstamps = sorted(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in preds.snapshot()[:16])
        np.testing.assert_allclose(pstamps, obs + np.arange(1, 17) / 5.0, atol=1e-6)  # stamped when expected
        assert len(errs) >= 1 and all(np.isfinite(m.data) for m in errs.snapshot())
        assert node.loop.controller.counters.get("drift_disarms") == 1
        assert any(len(m.points) == 1 for m in trajs.snapshot()), "disarming published a hold"
        values = node.diagnosis().values
        assert float(values["prediction_error_last"]) > 0.05
        assert "drift_threshold" in values["last_error"]
    finally:
        g.close()


def test_recording_survives_sigterm(tmp_path):
    g = Graph()
    bag = tmp_path / "rec"
    env = {**os.environ, "ROS_DOMAIN_ID": str(g.domain_id), "PYTHONUNBUFFERED": "1"}
    args = [
        sys.executable,
        "-m",
        "cosmos3_ros.ros.policy_node",
        "--ros-args",
        "-p",
        f"record_path:={bag}",
        "-p",
        f"camera_topics:=['{TOPIC}']",
        "-p",
        "forecast_every:=1",
    ]
    for k, v in BASE.items():
        if k != "camera_topics":
            args += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        test = g.node("tester")
        cam = Camera(test, TOPIC)
        trajs = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")

        def tick():
            img, t = _frame(test)
            cam.publish(img, stamp=t)
            time.sleep(0.1)
            assert proc.poll() is None, proc.stdout.read()
            return len([m for m in trajs.snapshot() if len(m.points) > 1]) >= 3

        g.wait_for(tick, timeout=90, period=0.0)
        received = [m for m in trajs.snapshot() if len(m.points) > 1]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out[-3000:]
        assert "recording closed" in out
    finally:
        if proc.poll() is None:
            proc.kill()
        g.close()
    with open_bag(bag) as b:
        topics = {t: info.count for t, info in b.topics().items()}
        recorded = [m for m in b.messages(["/cosmos3_policy/joint_trajectory"]) if len(m.msg.points) > 1]
    assert len(recorded) >= len(received)  # nothing published before the signal is missing
    recorded_stamps = {(m.msg.header.stamp.sec, m.msg.header.stamp.nanosec) for m in recorded}
    for m in received:
        assert (m.header.stamp.sec, m.header.stamp.nanosec) in recorded_stamps
    # A chunk's timing record is written when its request completes (after its forecast): the last chunk's
    # forecast may still be running when the signal arrives.
    assert topics[TOPIC] > 0 and topics.get("/cosmos3_policy/chunk_timing", 0) >= len(received) - 1
