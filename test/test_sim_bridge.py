# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The simulator node on a real rclpy graph: Isaac Sim's bridge topics in simulated time, JointState commands with
the articulation controller's semantics, JointTrajectory following, pause and reset; the CLI headless on EGL and
OSMesa, stopped by Ctrl-C; the screenshot."""

from __future__ import annotations

import ctypes.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rosgraph import Collector, Graph
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosmos3_ros.sim.world import CONTROLLED, JOINT_NAMES, select_gl

select_gl()
pytest.importorskip("mujoco")

from cosmos3_ros.sim.bridge import SimBridge  # noqa: E402
from cosmos3_ros.sim.options import preset_values  # noqa: E402
from cosmos3_ros.sim.trajectory import TrajectoryCommand, TrajectoryFollower  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
DT = 0.002  # the physics step at the default physics_rate


def sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def start(graph: Graph, **over) -> SimBridge:
    values = preset_values("isaac", **{"width": 64, "height": 48, "real_time_factor": 4.0, **over})
    sim = SimBridge(context=graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return graph.add(sim).start()


def wait_sim(graph: Graph, sim: SimBridge, t: float) -> None:
    graph.wait_for(lambda: sim.sim_time >= t, timeout=60)


def latest(col: Collector) -> JointState:
    return col.snapshot()[-1]


def positions(msg: JointState, names=CONTROLLED) -> np.ndarray:
    index = {n: i for i, n in enumerate(msg.name)}
    return np.array([msg.position[index[n]] for n in names])


def test_isaac_bridge_topics_in_simulated_time(graph):
    sim = start(graph, camera_rate=10.0)
    test = graph.node("tester")
    clock, js = Collector(test, Clock, "/clock"), Collector(test, JointState, "/joint_states")
    rgb, info = Collector(test, Image, "/rgb"), Collector(test, CameraInfo, "/camera_info")
    wait_sim(graph, sim, 2.0)
    t = np.array([sec(m.clock) for m in clock.snapshot()])
    assert len(t) > 50 and (np.diff(t) > 0).all()  # /clock advances
    msg = latest(js)
    assert list(msg.name) == list(JOINT_NAMES) and len(msg.velocity) == len(msg.effort) == 9
    assert 0 < sec(msg.header.stamp) <= t[-1] + 0.1  # stamped in simulated time
    np.testing.assert_allclose(positions(msg), [0, -0.785, 0, -2.356, 0, 1.571, 0.785, 0.04], atol=0.01)
    frames = rgb.snapshot()
    assert frames and all(f.encoding == "rgb8" and (f.width, f.height, f.step) == (64, 48, 192) for f in frames)
    stamps = np.array([sec(f.header.stamp) for f in frames])
    np.testing.assert_allclose(np.diff(stamps), 0.1, atol=1e-6)  # camera_rate in simulated time
    assert np.frombuffer(bytes(frames[-1].data), np.uint8).std() > 10  # the scene, not a blank frame
    k = latest(info).k
    assert (latest(info).width, latest(info).height) == (64, 48) and k[2] == 32 and k[5] == 24 and k[0] > 0


def test_joint_commands_move_the_arm_and_bad_commands_change_nothing(graph):
    sim = start(graph)
    test = graph.node("tester")
    js = Collector(test, JointState, "/joint_states")
    pub = test.create_publisher(JointState, "/joint_command", 10)
    graph.wait_for(lambda: len(js) > 0, timeout=30)
    target = positions(latest(js)) + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.2, 0.3, -0.03])
    pub.publish(JointState(name=list(CONTROLLED), position=target.tolist()))
    t0 = sim.sim_time
    wait_sim(graph, sim, t0 + 1.5)
    np.testing.assert_allclose(positions(latest(js)), target, atol=0.01)
    for bad in (
        JointState(name=["panda_joint1"], position=[float("nan")]),
        JointState(name=["panda_joint1", "elbow"], position=[0.0, 0.0]),
        JointState(name=["panda_joint1", "panda_joint2"], position=[0.0]),
    ):
        pub.publish(bad)
    graph.wait_for(lambda: sum(v for k, v in sim.drive.counters.items() if k.startswith("rejected.")) == 3, 20)
    wait_sim(graph, sim, sim.sim_time + 0.5)
    np.testing.assert_allclose(positions(latest(js)), target, atol=0.01)
    assert {"rejected.non_finite", "rejected.unknown_joints", "rejected.shape"} <= set(sim.drive.counters)


def test_a_trajectory_is_followed_as_joint_trajectory_controller_follows_it(graph):
    sim = start(graph, real_time_factor=2.0)
    test = graph.node("tester")
    js = Collector(test, JointState, "/cosmos3_sim/monitor/measured")
    ref = Collector(test, JointState, "/cosmos3_sim/monitor/reference")
    pub = test.create_publisher(JointTrajectory, "/joint_trajectory", 10)
    graph.wait_for(lambda: len(js) > 0, timeout=30)
    home = positions(latest(js))
    # Stamped 0.3 s in the past: its first points are already due and are skipped.
    stamp = sim.sim_time - 0.3
    times = np.arange(1, 31) / 15.0
    pos = np.tile(home, (30, 1))
    pos[:, :7] += 0.4 * np.sin(1.5 * times)[:, None]
    vel = np.zeros_like(pos)
    vel[:-1, :7] = 0.6 * np.cos(1.5 * times[:-1])[:, None]
    msg = JointTrajectory(joint_names=list(CONTROLLED))
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int(stamp % 1 * 1e9)
    for p, v, t in zip(pos, vel, times, strict=True):
        point = JointTrajectoryPoint(positions=p.tolist(), velocities=v.tolist())
        point.time_from_start.sec, point.time_from_start.nanosec = int(t), int(t % 1 * 1e9)
        msg.points.append(point)
    pub.publish(msg)
    stamp = sec(msg.header.stamp)
    wait_sim(graph, sim, stamp + times[-1] + 0.5)
    assert sim.drive.counters["trajectories"] == 1 and sim.drive.following is not None
    # The reference is the controller's cubic through the points (the one stamped t drove the physics step that ended
    # at t, so it was sampled at t - dt); the arm follows it within a few milliradians.
    expected = TrajectoryFollower(TrajectoryCommand.build(CONTROLLED, stamp, times, pos, vel), np.arange(8))
    follow = sim.drive.following
    expected.begin(follow.time_before, *follow.state_before[:2])
    refs = [m for m in ref.snapshot() if stamp + 0.5 <= sec(m.header.stamp) <= stamp + times[-1]]
    assert len(refs) > 50
    for m in refs:
        np.testing.assert_allclose(positions(m), expected.sample(sec(m.header.stamp) - DT)[0], atol=1e-6)
    measured = {round(sec(m.header.stamp), 6): positions(m) for m in js.snapshot()}
    err = [np.abs(measured[round(sec(m.header.stamp), 6)] - positions(m))[:7].max() for m in refs]
    assert max(err) < 0.01, max(err)
    np.testing.assert_allclose(positions(latest(js))[:7], pos[-1, :7], atol=0.005)  # the last point is held
    # A moving end is refused as joint_trajectory_controller refuses it by default.
    msg.points[-1].velocities = [0.1] * 8
    msg.header.stamp.sec = int(sim.sim_time) + 1
    pub.publish(msg)
    graph.wait_for(lambda: sim.drive.counters["rejected.end_velocity"] == 1, timeout=20)


def test_pause_stops_the_clock_and_reset_starts_over(graph):
    sim = start(graph)
    test = graph.node("tester")
    clock, js = Collector(test, Clock, "/clock"), Collector(test, JointState, "/joint_states")
    pause, reset = test.create_client(SetBool, "/cosmos3_sim/pause"), test.create_client(Trigger, "/cosmos3_sim/reset")
    pub = test.create_publisher(JointState, "/joint_command", 10)
    wait_sim(graph, sim, 1.0)
    pub.publish(JointState(name=["panda_joint1"], position=[0.5]))
    wait_sim(graph, sim, sim.sim_time + 1.0)
    assert pause.wait_for_service(timeout_sec=10)
    graph.wait_for(pause.call_async(SetBool.Request(data=True)).done, timeout=10)
    time.sleep(0.3)
    n_clock, n_js, t_paused = len(clock), len(js), sim.sim_time
    time.sleep(1.0)
    assert (len(clock), len(js), sim.sim_time) == (n_clock, n_js, t_paused)  # nothing steps, nothing is published
    graph.wait_for(pause.call_async(SetBool.Request(data=False)).done, timeout=10)
    wait_sim(graph, sim, t_paused + 0.5)
    assert positions(latest(js))[0] == pytest.approx(0.5, abs=0.01)
    graph.wait_for(reset.call_async(Trigger.Request()).done, timeout=10)
    graph.wait_for(lambda: sec(latest(clock).clock) < t_paused, timeout=10)  # time starts again at 0
    graph.wait_for(lambda: sec(latest(js).header.stamp) < 0.5, timeout=10)
    assert abs(positions(latest(js))[0]) < 0.01 and sim.summary()["resets"] == 1  # home again


@pytest.mark.parametrize("gl", ["egl", "osmesa"])
def test_the_cli_runs_headless_and_stops_cleanly_on_ctrl_c(gl, tmp_path):
    if gl == "osmesa" and not ctypes.util.find_library("OSMesa"):
        pytest.skip("libosmesa6 is not installed (.ci/run installs it)")
    cmd = [sys.executable, "-m", "cosmos3_ros.cli", "sim", "--gl", gl, "--width", "64", "--height", "48"]
    env = dict(os.environ, ROS_DOMAIN_ID=str(os.getpid() % 90 + 5), PYTHONUNBUFFERED="1")
    env.pop("MUJOCO_GL", None)
    env.pop("PYOPENGL_PLATFORM", None)
    r = subprocess.run(
        [*cmd, "--duration", "1", "--real-time-factor", "0"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads(r.stdout.split("cosmos3-ros sim: ", 1)[1])
    assert summary["sim_time_s"] >= 1.0 and summary["frames"] > 0 and summary["mujoco_gl"] == gl
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr
    log = (tmp_path / "sim.log").open("w")
    proc = subprocess.Popen(
        [*cmd, "--real-time-factor", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while "simulating the Panda" not in (tmp_path / "sim.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C, then launch's forwarded one
        time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    out = (tmp_path / "sim.log").read_text()
    assert "cosmos3-ros sim: {" in out and "Exception ignored" not in out and "Traceback" not in out, out[-2000:]


def test_the_screenshot_shows_the_droid_cameras(tmp_path):
    from PIL import Image as PILImage

    out = tmp_path / "cams.png"
    r = subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", "sim", "--preset", "droid", "--width", "96", "--height", "54",
         "--screenshot", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    image = np.asarray(PILImage.open(out))
    assert image.shape == (54, 3 * 96, 3) and image.std() > 10
