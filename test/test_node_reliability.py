# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The node under bad time, bad input and lifecycle abuse (real rclpy graph, fake backend)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from disk_util import disk_full_after
from PIL import Image as PILImage
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph import Camera, Collector, Graph
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.policy_node import PolicyNode

pytestmark = pytest.mark.ros

TOPIC = "/cam/image_raw"
TRAJ = "/cosmos3_policy/joint_trajectory"
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def _node(graph: Graph, activate: bool = True, **over) -> PolicyNode:
    params = {
        "backend": "fake",
        "camera_topics": [TOPIC],
        "action_chunk_size": 8,
        "image_size": 256,
        "max_observation_age": 2.0,
        "forecast_every": 0,
        **over,
    }
    node = graph.add(
        PolicyNode(context=graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    )
    assert node.trigger_configure() == SUCCESS, node.backend_error
    if activate:
        assert node.trigger_activate() == SUCCESS
    return node


def _chunks(got: Collector) -> list:
    return [m for m in got.snapshot() if len(m.points) > 1]


def _stamp(m) -> float:
    return m.header.stamp.sec + m.header.stamp.nanosec * 1e-9


def _feed(graph: Graph, cam: Camera, predicate, timeout: float = 20.0, stamp=None) -> None:
    def tick():
        t = cam.node.get_clock().now().nanoseconds * 1e-9 if stamp is None else stamp()
        cam.publish(moving_scene_frame(t, 48, 64), stamp=t)
        return predicate()

    graph.wait_for(tick, timeout=timeout, period=0.05)


# -- time ---------------------------------------------------------------------------------------------------------


def test_one_frame_from_an_hour_ahead_does_not_stop_the_robot(graph):
    node = _node(graph)
    test = graph.node("tester")
    cam, got = Camera(test, TOPIC), Collector(test, JointTrajectory, TRAJ)
    _feed(graph, cam, lambda: len(_chunks(got)) >= 1)
    now = test.get_clock().now().nanoseconds * 1e-9
    graph.wait_for(  # best effort: repeat until it arrived
        lambda: (cam.publish(moving_scene_frame(0, 48, 64), stamp=now + 3600.0),
                 node.loop.controller.counters.get("rejected_frames.future_stamp") >= 1)[1],
        timeout=10, period=0.05,
    )  # fmt: skip
    n = len(_chunks(got))
    _feed(graph, cam, lambda: len(_chunks(got)) >= n + 2)  # good frames go on being used
    assert node.loop.controller.counters.get("rejected_frames.out_of_order") == 0
    latest = test.get_clock().now().nanoseconds * 1e-9
    assert all(_stamp(m) <= latest for m in got.snapshot()), "never a chunk stamped in the future"


def test_sim_time_that_jumps_back_holds_once_and_resumes(graph):
    node = _node(graph, use_sim_time=True, replan_every=1)
    test = graph.node("tester")
    clock_pub = test.create_publisher(Clock, "/clock", 10)
    cam, got = Camera(test, TOPIC), Collector(test, JointTrajectory, TRAJ)
    sim = [1000.0]

    def sim_clock() -> float:
        sim[0] += 0.1
        clock_pub.publish(Clock(clock=Time(sec=int(sim[0]), nanosec=int(sim[0] % 1 * 1e9))))
        return sim[0]

    _feed(graph, cam, lambda: len(_chunks(got)) >= 3, stamp=sim_clock)
    sim[0] -= 25.0  # `ros2 bag play --loop --clock` starts over; Isaac Sim resets
    n = len(_chunks(got))
    _feed(graph, cam, lambda: len(_chunks(got)) >= n + 3, stamp=sim_clock)
    assert node.loop.controller.counters.get("clock_jumps") == 1
    holds = [m for m in got.snapshot() if len(m.points) == 1]
    assert len(holds) == 1
    assert _stamp(_chunks(got)[-1]) < 1000.0, "planning resumed on the new timeline"


def test_bad_stamps_are_rejected_frames_even_with_recording(graph, tmp_path):
    node = _node(graph, record_path=str(tmp_path / "rec"))
    test = graph.node("tester")
    cam, got = Camera(test, TOPIC), Collector(test, JointTrajectory, TRAJ)
    bad = Image(height=48, width=64, encoding="rgb8", step=64 * 3, data=moving_scene_frame(0, 48, 64).tobytes())
    bad.header.stamp = Time(sec=-5, nanosec=0)
    graph.wait_for(
        lambda: (cam.publish_raw(bad), node.loop.controller.counters.get("rejected_frames.negative_stamp") >= 1)[1],
        timeout=10,
        period=0.05,
    )
    _feed(graph, cam, lambda: len(_chunks(got)) >= 1)
    assert node.diagnosis().level != DiagnosticStatus.ERROR[0]


# -- input --------------------------------------------------------------------------------------------------------


def test_a_megabyte_instruction_is_refused_and_never_wedges_the_loop(graph):
    node = _node(graph, replan_every=1)
    test = graph.node("tester")
    cam, got = Camera(test, TOPIC), Collector(test, JointTrajectory, TRAJ)
    pub = test.create_publisher(String, "/cosmos3_policy/instruction", 10)
    _feed(graph, cam, lambda: len(_chunks(got)) >= 1)
    graph.wait_for(
        lambda: (pub.publish(String(data="x" * 2**20)),
                 node.loop.controller.counters.get("rejected_instructions.invalid") >= 1)[1],
        timeout=10, period=0.1,
    )  # fmt: skip
    assert node.loop.controller.settings.prompt == "Perform the task."
    n = len(_chunks(got))
    _feed(graph, cam, lambda: len(_chunks(got)) >= n + 2)
    graph.wait_for(
        lambda: (pub.publish(String(data="wipe")), node.loop.controller.settings.prompt == "wipe")[1], timeout=10
    )


class NodeProcess:
    """The node as its own process (its memory is measured apart from the test's)."""

    def __init__(self, graph: Graph, **params) -> None:
        args = [sys.executable, "-m", "cosmos3_ros.ros.policy_node", "--ros-args"]
        for k, v in {"backend": "fake", "image_size": 256, "action_chunk_size": 8, **params}.items():
            args += ["-p", f"{k}:={json.dumps(v)}"]
        env = {**os.environ, "ROS_DOMAIN_ID": str(graph.domain_id)}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0, out[-3000:]
        return out


def _flood(graph: Graph, node: NodeProcess, good, bad, count: int) -> tuple[float, float]:
    """RSS of the node once it commands (fed ``good(test)`` frames), and after ``count`` ``bad(test)`` frames."""
    test = graph.node("tester")
    got = Collector(test, JointTrajectory, TRAJ)
    graph.wait_for(lambda: (good(test), len(_chunks(got)) >= 1)[1], timeout=60, period=0.05)
    before = node.rss_mb()
    for _ in range(count):
        bad(test)
        time.sleep(0.03)
    time.sleep(1.0)
    return before, node.rss_mb()


@pytest.mark.slow  # several seconds of real streaming: the full suite runs it
def test_pngs_small_on_the_wire_but_huge_decoded_are_refused_from_their_header(graph):
    topic = "/cam/image_raw/compressed"
    node = NodeProcess(graph, camera_topics=[topic])
    pubs: dict = {}

    def png(size: int) -> bytes:
        buf = io.BytesIO()
        PILImage.new("RGB", (size, size), (90, 90, 90)).save(buf, format="PNG")
        return buf.getvalue()

    small, huge = png(64), png(4096)  # the huge one: about 50 KB on the wire, 50 MB decoded

    def sender(data: bytes):
        def send(test) -> None:
            pub = pubs.setdefault("p", test.create_publisher(CompressedImage, topic, qos_profile_sensor_data))
            msg = CompressedImage(format="png", data=data)
            msg.header.stamp = test.get_clock().now().to_msg()
            pub.publish(msg)

        return send

    try:
        before, after = _flood(graph, node, sender(small), sender(huge), 72)
    finally:
        out = node.stop()
    print(f"72 PNGs of 4096x4096: node RSS {before:.0f} -> {after:.0f} MB")  # the figure for the README (-s)
    assert "too_large" in out and "4096x4096" in out  # rejected, with the reason, in the log
    assert after - before < 100, f"the node's RSS grew {after - before:.0f} MB (was +4 GB)"


@pytest.mark.slow  # several seconds of real streaming: the full suite runs it
def test_large_raw_frames_are_kept_at_the_size_the_policy_needs(graph):
    node = NodeProcess(graph, camera_topics=[TOPIC])
    big = np.zeros((2000, 2000, 3), np.uint8)
    cams: dict = {}

    def camera(test) -> Camera:
        return cams.setdefault("c", Camera(test, TOPIC))

    try:
        before, after = _flood(
            graph, node, lambda test: camera(test).publish(moving_scene_frame(time.time(), 48, 64)),
            lambda test: camera(test).publish(big), 80,
        )  # fmt: skip
    finally:
        node.stop()
    print(f"80 raw frames of 2000x2000: node RSS {before:.0f} -> {after:.0f} MB")  # the figure for the README (-s)
    assert after - before < 150, f"the node's RSS grew {after - before:.0f} MB (was +1 GB)"


def test_frames_are_buffered_downscaled_and_bounded(graph):
    node = _node(graph)
    test = graph.node("tester")
    cam, got = Camera(test, TOPIC), Collector(test, JointTrajectory, TRAJ)
    big = np.zeros((2000, 2000, 3), np.uint8)
    graph.wait_for(lambda: (cam.publish(big), len(_chunks(got)) >= 1)[1], timeout=20, period=0.05)
    newest = node.loop.controller.buffer.observation(node.now(), 1e9, 1.0)[0]
    assert newest is not None and max(newest.frames[TOPIC].image.shape[:2]) == 512  # 2 x tier 256
    assert node.loop.controller.config.buffer_capacity == 8


@pytest.mark.parametrize("topics", [["/with space"], [""], ["/cam/"]], ids=["space", "empty", "trailing-slash"])
def test_invalid_topic_names_fail_configure_before_anything_loads(graph, topics, tmp_path):
    params = {"backend": "in_process", "model": str(tmp_path / "no-model-here"), "camera_topics": topics}
    node = graph.add(
        PolicyNode(context=graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    )
    assert node.trigger_configure() == FAILURE
    assert "camera_topics" in node.backend_error and "not a valid ROS 2 topic name" in node.backend_error
    assert "no-model-here" not in node.backend_error  # refused before the model was looked at
    diag = node.diagnosis()
    assert diag.level == DiagnosticStatus.ERROR[0] and "camera_topics" in diag.message


# -- lifecycle and threads ----------------------------------------------------------------------------------------


@pytest.mark.slow  # one diagnostics period (1 s) per transition
def test_diagnostics_run_in_every_lifecycle_state(graph):
    node = _node(graph, activate=False)
    test = graph.node("tester")
    diags = Collector(test, DiagnosticArray, "/diagnostics")

    def one_more() -> None:
        n = len(diags)
        graph.wait_for(lambda: len(diags) > n, timeout=5)

    one_more()
    for transition in ("activate", "deactivate", "cleanup", "configure", "activate", "deactivate", "cleanup"):
        assert getattr(node, f"trigger_{transition}")() == SUCCESS, transition
        one_more()
    assert node.backend_state == "unconfigured"

    def latest() -> set[str]:
        return {s.message for s in diags.snapshot()[-1].status}

    graph.wait_for(lambda: latest() == {"backend unconfigured"}, timeout=5)  # one in flight may still say "inactive"


@pytest.mark.slow  # several seconds of real streaming: the full suite runs it
def test_deactivate_while_a_model_call_runs_publishes_nothing_after_the_hold(graph):
    node = _node(graph, fake_latency=0.8, replan_every=1, action_chunk_size=16)
    test = graph.node("tester")
    cam, got = Camera(test, TOPIC), Collector(test, JointTrajectory, TRAJ)
    _feed(graph, cam, lambda: len(_chunks(got)) >= 1)
    _feed(graph, cam, lambda: node.loop.controller.in_flight, timeout=5)
    assert node.trigger_deactivate() == SUCCESS
    graph.wait_for(lambda: len(got.snapshot()[-1].points) == 1, timeout=5)  # the hold
    n = len(got)
    time.sleep(1.2)  # the call in flight finishes in the meantime
    msgs = got.snapshot()
    assert len(msgs) == n and len(msgs[-1].points) == 1, "the hold is the last message"
    assert node.loop.controller.counters.get("unexpected_results") >= 1


def test_configure_and_cleanup_hammered_while_frames_stream(graph):
    node = _node(graph, activate=False, replan_every=1, fake_latency=0.05)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            cam.publish(moving_scene_frame(time.time(), 48, 64))
            time.sleep(0.01)

    feeder = threading.Thread(target=stream, daemon=True)
    feeder.start()
    try:
        for _ in range(10):
            assert node.trigger_activate() == SUCCESS
            time.sleep(0.1)
            assert node.trigger_deactivate() == SUCCESS
            assert node.trigger_cleanup() == SUCCESS
            assert node.trigger_configure() == SUCCESS
    finally:
        stop.set()
        feeder.join(2)
    assert node.trigger_activate() == SUCCESS
    got = Collector(test, JointTrajectory, TRAJ)
    _feed(graph, cam, lambda: len(_chunks(got)) >= 1)


# -- storage --------------------------------------------------------------------------------------------------------


def test_a_recording_that_fails_is_an_error_diagnostic_and_control_goes_on(graph, tmp_path, monkeypatch):
    free_disk = disk_full_after(monkeypatch, 200_000)  # the disk fills up after 200 kB
    node = _node(graph, record_path=str(tmp_path / "rec"), replan_every=2)
    test = graph.node("tester")
    cam, got = Camera(test, TOPIC), Collector(test, JointTrajectory, TRAJ)
    _feed(graph, cam, lambda: "recording" in node.faults, timeout=30)
    diag = node.diagnosis()
    assert diag.level == DiagnosticStatus.ERROR[0] and "recording failed" in diag.message
    assert "No space left on device" in diag.values["fault.recording"]
    n = len(_chunks(got))
    _feed(graph, cam, lambda: len(_chunks(got)) > n + 1, timeout=20)  # still commanding
    free_disk()
    assert node.trigger_deactivate() == SUCCESS and node.trigger_cleanup() == SUCCESS
    assert node.faults == {}
