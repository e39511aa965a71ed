# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Real-time chunking in a real rclpy graph (fake backend with real latency): chunks join where the previous one
is, the delay estimate follows the latency, every point has velocities, clamps are counted, dry_run commands
nothing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph import Camera, Collector, Graph
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.control.events import ChunkRecord, LoopSink
from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.policy_node import PolicyNode

pytestmark = pytest.mark.ros

TOPIC = "/cam/image_raw"
TRAJ = "/cosmos3_policy/joint_trajectory"
FPS = 10.0


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


class Records(LoopSink):
    def __init__(self) -> None:
        self.records: list[ChunkRecord] = []

    def chunk_done(self, record: ChunkRecord) -> None:
        self.records.append(record)


def _node(graph: Graph, **over) -> tuple[PolicyNode, Records]:
    params = {
        "backend": "fake",
        "fake_latency": 0.25,
        "camera_topics": [TOPIC],
        "domain_name": "pusht",  # 2 joints
        "action_chunk_size": 16,
        "fps": FPS,
        "replan_every": 4,
        "max_observation_age": 2.0,
        "forecast_every": 0,
        "warmup": False,
        **over,
    }
    node = graph.add(
        PolicyNode(context=graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    )
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.backend_error
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    records = Records()
    node.loop.sink.sinks.append(records)
    return node, records


class Streamer:
    """A camera at 20 Hz showing a moving scene (the fake policy's chunks change with the frame)."""

    def __init__(self, graph: Graph) -> None:
        self.node = graph.node("camera")
        self.cam = Camera(self.node, TOPIC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            now = self.node.get_clock().now().nanoseconds * 1e-9
            self.cam.publish(moving_scene_frame(k * 0.37, 96, 128), stamp=now)
            k += 1
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _abs_times(msg: JointTrajectory) -> np.ndarray:
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    return np.array([stamp + p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])


def _run(graph: Graph, n_chunks: int, **over) -> tuple[PolicyNode, Records, list[JointTrajectory]]:
    node, records = _node(graph, **over)
    got = Collector(graph.node("tester"), JointTrajectory, TRAJ)
    cam = Streamer(graph)
    try:
        graph.wait_for(lambda: len([r for r in records.records if r.published]) >= n_chunks, timeout=60)
    finally:
        cam.close()
    chunks = [m for m in got.snapshot() if len(m.points) > 1]
    return node, records, chunks


@pytest.mark.slow  # several seconds of real streaming: the full suite runs it
def test_rtc_chunks_continue_the_previous_chunk_inside_the_delay(graph):
    node, records, chunks = _run(graph, 8, rtc=True)
    published = [r for r in records.records if r.published]
    checked = pairs = 0
    for prev, cur, rec in zip(chunks[:-1], chunks[1:], published[1:], strict=False):
        if rec.prefix_rows == 0 or rec.consumed_rows > rec.prefix_rows:
            continue  # after a hold (nothing to continue), or late on a loaded machine (counted, checked below)
        pairs += 1
        t_prev, t_cur = _abs_times(prev), _abs_times(cur)
        p_prev = np.array([p.positions for p in prev.points])
        p_cur = np.array([p.positions for p in cur.points])
        base = cur.header.stamp.sec + cur.header.stamp.nanosec * 1e-9
        inside = t_cur <= base + rec.prefix_rows / FPS + 1e-9
        for t, p in zip(t_cur[inside][1:], p_cur[inside][1:], strict=True):  # point 0 is the command at the switch
            k = int(np.argmin(np.abs(t_prev - t)))
            assert abs(t_prev[k] - t) < 1e-6, "chunk k+1 is not on chunk k's grid"
            np.testing.assert_allclose(p, p_prev[k], rtol=0, atol=1e-6)
            checked += 1
        assert rec.boundary_jump is not None and rec.boundary_jump < 1e-5
    assert pairs >= 3 and checked >= 5
    for msg in chunks:
        assert all(len(p.velocities) == len(p.positions) == 2 for p in msg.points)
    late = node.loop.controller.counters.get("rtc.late_chunks")
    assert late <= len(published) // 3, f"{late} of {len(published)} chunks late"


@pytest.mark.slow  # two runs of six chunks
def test_boundary_jumps_are_at_least_ten_times_smaller_with_rtc(graph):
    _, on, _ = _run(graph, 6, rtc=True)
    jumps_on = [r.boundary_jump for r in on.records if r.boundary_jump is not None]
    graph.close()
    graph2 = Graph()
    try:
        _, off, _ = _run(graph2, 6, rtc=False)
    finally:
        graph2.close()
    jumps_off = [r.boundary_jump for r in off.records if r.boundary_jump is not None]
    assert len(jumps_on) >= 4 and len(jumps_off) >= 4
    assert np.median(jumps_off) >= 10 * max(np.median(jumps_on), 1e-9), (jumps_on, jumps_off)


@pytest.mark.slow  # latencies of 0.5 s
def test_the_delay_estimate_follows_a_latency_step(graph):
    node, records, _ = _run(graph, 4, rtc=True, fake_latency=0.1)
    delay = node.loop.controller.delay
    assert delay.latency() is not None and delay.latency() < 0.3
    d_before = records.records[-1].prefix_rows
    node.loop.backend.set_latency(0.5, mode="policy")
    cam = Streamer(graph)
    try:
        n = len(records.records)
        graph.wait_for(lambda: len(records.records) >= n + 4, timeout=60)
    finally:
        cam.close()
    assert delay.latency() >= 0.5  # two slow calls move the p95 of the window
    assert records.records[-1].prefix_rows > d_before


def test_velocity_clamps_are_counted_in_diagnostics(graph):
    node, _, chunks = _run(graph, 3, max_velocity=[0.2, 0.2])
    for msg in chunks[1:]:
        t = _abs_times(msg)
        p = np.array([q.positions for q in msg.points])
        assert (np.abs(np.diff(p, axis=0)) / np.diff(t)[:, None] <= 0.2 + 1e-6).all()
    values = node.diagnosis().values
    assert int(values["count.clamps.velocity"]) > 0


def test_dry_run_commands_nothing(graph):
    test = graph.node("watcher")
    real = Collector(test, JointTrajectory, TRAJ)
    dry = Collector(test, JointTrajectory, "/cosmos3_policy/dry_run/joint_trajectory")
    _run(graph, 2, dry_run=True)
    graph.wait_for(lambda: len(dry) >= 2, timeout=10)
    time.sleep(0.2)
    assert len(real) == 0
