# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``ros2 launch cosmos3_ros sim.launch.py`` as a ROS user runs it (``colcon build`` of this checkout, the real
``ros2 launch``): the simulator and the node start together, the arm moves under the node's commands on simulated
time, and a terminal's Ctrl-C stops both cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from launch_util import Launch, built_workspace
from rosgraph import Collector, Graph
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.sim.world import ARM_JOINTS, select_gl

select_gl()
pytest.importorskip("mujoco")

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = built_workspace(tmp_path_factory.mktemp("ws"))
    share = ws / "install" / "cosmos3_ros" / "share" / "cosmos3_ros"
    assert (share / "launch" / "sim.launch.py").is_file()
    assert list((ws / "install").rglob("cosmos3_ros/sim/assets/panda_scene.xml")), "the scene is not installed"
    return ws


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


@pytest.mark.parametrize("preset", ["isaac", "droid"])
def test_sim_launch_moves_the_arm_and_stops_on_ctrl_c(workspace, graph, tmp_path, preset):
    args = [f"preset:={preset}", "backend:=fake", "width:=64", "height:=48", "camera_rate:=10"]
    launch = Launch(workspace, args, graph.domain_id, tmp_path / "launch.log", launch_file="sim.launch.py")
    try:
        test = graph.node("tester")
        clock = Collector(test, Clock, "/clock")
        js = Collector(test, JointState, "/joint_states")
        traj = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
        launch.wait_for_output("active: commanding", timeout=120)
        graph.wait_for(lambda: len([m for m in traj.snapshot() if len(m.points) > 1]) >= 3, timeout=120)
        time.sleep(2.0)
        stamps = [m.header.stamp for m in traj.snapshot() if len(m.points) > 1]
        sim_now = clock.snapshot()[-1].clock
        assert all(s.sec <= sim_now.sec for s in stamps)  # the node is on the simulator's clock
        index = {n: i for i, n in enumerate(js.snapshot()[0].name)}
        q = np.array([[m.position[index[n]] for n in ARM_JOINTS] for m in js.snapshot()])
        assert np.ptp(q, axis=0).max() > 0.02, "the arm did not move"
        t0 = time.monotonic()
        launch.sigint(group=True)  # a terminal's Ctrl-C: launch, node and simulator all get it
        assert launch.wait(20) == 0
        assert time.monotonic() - t0 < 10
        out = launch.output()
        assert "simulating the Panda" in out and "cosmos3-ros sim: {" in out, out[-3000:]  # the simulator's summary
        for bad in ("Traceback", "process has died", "Exception ignored", "sending signal 'SIGTERM'"):
            assert bad not in out, out[-3000:]
        deadline = time.monotonic() + 5
        while launch.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not launch.leftovers()
    finally:
        launch.kill()
