# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The package as a ROS user runs it: ``colcon build`` in a fresh workspace, ``source install/setup.bash``, the real
``ros2 launch``; Ctrl-C to the launch process alone and to the whole process group (a terminal's)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from launch_util import ROOT, Launch, built_workspace, clean_env, copy_sources, require_tools
from rclpy.parameter_client import AsyncParameterClient
from rosgraph import Camera, Collector, Graph
from rosgraph_msgs.msg import Clock
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.bags.reader import open_bag
from cosmos3_ros.core.synthetic import moving_scene_frame

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAM = "/cam/image_raw"
TRAJ = "/cosmos3_policy/joint_trajectory"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return built_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def _preset(tmp_path: Path, **values) -> Path:
    path = tmp_path / "preset.yaml"
    lines = ["/**:", "  ros__parameters:"] + [f"    {k}: {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _feed_until(graph: Graph, cam: Camera, predicate, timeout: float, clock=None) -> None:
    def tick():
        t = cam.node.get_clock().now().nanoseconds * 1e-9
        if clock is not None:
            t = clock()
        cam.publish(moving_scene_frame(t, 48, 64), stamp=t)
        return predicate()

    graph.wait_for(tick, timeout=timeout, period=0.1)


def _finish(launch: Launch, group: bool, timeout: float = 20.0) -> str:
    t0 = time.monotonic()
    launch.sigint(group)
    code = launch.wait(timeout)
    took = time.monotonic() - t0
    out = launch.output()
    assert code == 0, out[-4000:]
    assert "process has died" not in out and "Traceback" not in out, out[-4000:]
    assert "never retrieved" not in out, out[-4000:]  # no callback ran into a destroyed entity
    assert "sending signal 'SIGTERM'" not in out, f"shutdown needed SIGTERM escalation:\n{out[-4000:]}"
    assert took < 5.0, f"shutdown took {took:.1f} s"
    print(f"Ctrl-C ({'process group' if group else 'launch'}): every process exited 0 in {took:.2f} s")
    deadline = time.monotonic() + 5
    while launch.leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not launch.leftovers(), launch.leftovers()
    return out


@pytest.mark.parametrize("group", [False, True], ids=["sigint-to-launch", "sigint-to-process-group"])
def test_default_launch_commands_and_stops_cleanly_with_a_complete_recording(workspace, graph, tmp_path, group):
    bag = tmp_path / "rec"
    # A model call is in flight when Ctrl-C comes (6 s each, the next starts at once after the first chunk, with
    # about 6 s left): shutdown must not wait for it. No warm-up call and no forecasts: fewer 6 s calls before the
    # first chunk.
    params = _preset(
        tmp_path,
        backend="fake",
        fake_latency=6.0,
        action_chunk_size=64,
        replan_every=1,
        record_path=str(bag),
        warmup=False,
        forecast_every=0,
    )
    launch = Launch(
        workspace,
        [f"params_file:={params}", f"camera_topic:={CAM}"],
        graph.domain_id,
        tmp_path / "launch.log",
    )
    try:
        test = graph.node("tester")
        got = Collector(test, JointTrajectory, TRAJ)
        cam = Camera(test, CAM)
        _feed_until(graph, cam, lambda: len(got) >= 1, timeout=60)
        t_end = time.monotonic() + 1.0
        _feed_until(graph, cam, lambda: time.monotonic() > t_end, timeout=5)  # fresh frames: the next call starts
        out = _finish(launch, group)
    finally:
        launch.kill()
    assert "recording closed" in out  # and _finish saw it stop in < 5 s, with a 6 s model call still running
    with open_bag(bag) as b:
        recorded = [m for m in b.messages([TRAJ]) if len(m.msg.points) > 1]
        assert len(recorded) >= 1 and b.message_count([CAM]) > 0
    received = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in got.snapshot() if len(m.points) > 1}
    assert received <= {(m.msg.header.stamp.sec, m.msg.header.stamp.nanosec) for m in recorded}


def test_a_preset_file_alone_means_what_it_says(workspace, graph, tmp_path):
    """use_sim_time: true in the file is not overridden by the launch file (it was, by the argument's default)."""
    params = _preset(tmp_path, backend="fake", use_sim_time=True, camera_topics=[CAM], max_observation_age=5.0)
    launch = Launch(workspace, [f"params_file:={params}"], graph.domain_id, tmp_path / "launch.log")
    try:
        test = graph.node("tester")
        clock_pub = test.create_publisher(Clock, "/clock", 10)
        got = Collector(test, JointTrajectory, TRAJ)
        sim = [5000.0]

        def sim_clock() -> float:
            sim[0] += 0.1
            clock_pub.publish(Clock(clock=Time(sec=int(sim[0]), nanosec=int(sim[0] % 1 * 1e9))))
            return sim[0]

        _feed_until(graph, Camera(test, CAM), lambda: len(got) >= 1, timeout=60, clock=sim_clock)
        stamp = got.snapshot()[0].header.stamp
        assert 5000 <= stamp.sec <= sim[0], "chunks are stamped in sim time"
        client = AsyncParameterClient(test, "/cosmos3_policy")
        assert client.wait_for_services(10)
        future = client.get_parameters(["use_sim_time", "backend"])
        graph.wait_for(future.done, timeout=10)
        values = [p.bool_value if i == 0 else p.string_value for i, p in enumerate(future.result().values)]
        assert values == [True, "fake"]
        _finish(launch, group=True)
    finally:
        launch.kill()


def test_the_shipped_presets_load_through_launch(workspace, graph, tmp_path):
    isaac = ROOT / "config" / "isaac_sim.yaml"
    launch = Launch(workspace, [f"params_file:={isaac}", "backend:=fake"], graph.domain_id, tmp_path / "l.log")
    try:
        launch.wait_for_output("active: commanding", timeout=60)
        test = graph.node("tester")
        client = AsyncParameterClient(test, "/cosmos3_policy")
        assert client.wait_for_services(10)
        future = client.get_parameters(["use_sim_time"])
        graph.wait_for(future.done, timeout=10)
        assert future.result().values[0].bool_value is True  # the preset's, not the launch argument's default
        _finish(launch, group=False)
    finally:
        launch.kill()


def test_sidecar_started_by_the_launch_serves_the_node(workspace, graph, tmp_path, tiny_model):
    params = _preset(tmp_path, num_steps=2, image_size=256, action_chunk_size=8, forecast_every=0, device="cpu")
    launch = Launch(
        workspace,
        [f"params_file:={params}", f"model:={tiny_model}", "start_sidecar:=true", "sidecar_port:=18777",
         f"camera_topic:={CAM}"],
        graph.domain_id,
        tmp_path / "launch.log",
    )  # fmt: skip
    try:
        test = graph.node("tester")
        got = Collector(test, JointTrajectory, TRAJ)
        _feed_until(graph, Camera(test, CAM), lambda: len(got) >= 2, timeout=120)
        out = launch.output()
        assert "serving on ws://127.0.0.1:18777" in out and "token required" in out  # the shared token
        assert "COSMOS3_ROS_SIDECAR_TOKEN" not in out and "--token" not in out
        for m in got.snapshot():
            assert all(np.isfinite(p.positions).all() for p in m.points)
        _finish(launch, group=True)
    finally:
        launch.kill()


def test_pip_installed_package_starts_with_ros2_launch(tmp_path, graph):
    """A plain ``pip install .`` (scripts in <prefix>/bin, not lib/cosmos3_ros) still starts with ros2 launch."""
    require_tools()
    prefix = tmp_path / "prefix"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed",
         "--prefix", str(prefix), str(copy_sources(tmp_path / "src"))],  # never touch this environment's install
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    site = next(prefix.glob("lib/python*/site-packages"))
    env = clean_env(
        PATH=f"{prefix / 'bin'}:{clean_env()['PATH']}",
        PYTHONPATH=str(site),
        AMENT_PREFIX_PATH=f"{prefix}:{clean_env()['AMENT_PREFIX_PATH']}",
        ROS_DOMAIN_ID=str(graph.domain_id),
    )
    proc = subprocess.Popen(
        ["ros2", "launch", "cosmos3_ros", "policy.launch.py", "backend:=fake", f"camera_topic:={CAM}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        test = graph.node("tester")
        got = Collector(test, JointTrajectory, TRAJ)
        _feed_until(graph, Camera(test, CAM), lambda: len(got) >= 1, timeout=60)
    finally:
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "never retrieved" not in out, out[-3000:]
    # pip put the executables in <prefix>/bin only: the launch file found them on PATH
    assert (prefix / "bin" / "policy_node").is_file() and not (prefix / "lib" / "cosmos3_ros").exists()
