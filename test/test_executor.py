# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The node's executor under use_sim_time: it waits for work instead of spinning (``cosmos3_ros/ros/executor.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import rclpy
import rclpy.executors as rclpy_executors
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph import next_domain_id
from sensor_msgs.msg import JointState

from cosmos3_ros.ros.executor import DrainingExecutor

pytestmark = pytest.mark.ros

# The simulator's side, in its own process as Isaac Sim is: /clock and /joint_states at 60 Hz.
_PUBLISHER = """
import time, rclpy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
rclpy.init()
node = rclpy.create_node("sim")
clock_pub = node.create_publisher(Clock, "/clock", 10)
joint_pub = node.create_publisher(JointState, "/joint_states", 10)
start = time.monotonic()
while True:
    now = time.monotonic() - start + 1.0
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = int(now), int(now % 1 * 1e9)
    clock_pub.publish(msg)
    joint_pub.publish(JointState(name=["j"], position=[0.0]))
    time.sleep(1 / 60)
"""


class _CountingRclpy:
    """Stands in for ``rclpy.executors._rclpy`` and counts the wait sets the executor builds (one per wake-up)."""

    def __init__(self, real) -> None:
        self._real = real
        self.wait_sets = 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def WaitSet(self, *args):  # noqa: N802 (rclpy's name)
        self.wait_sets += 1
        return self._real.WaitSet(*args)


def test_sim_time_inputs_at_60_hz_wake_the_executor_a_few_times_per_callback(monkeypatch):
    """/clock and /joint_states at 60 Hz and a 60 Hz sim-time timer, as the node sees them next to Isaac Sim.

    rclpy's own MultiThreadedExecutor woke 26-45 times per callback here (a core-eating spin while a callback waits
    for a pool thread); a loop that waits for work wakes about twice per callback.
    """
    domain_id = next_domain_id()
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    publisher = None
    counter = _CountingRclpy(rclpy_executors._rclpy)  # noqa: SLF001 (what the executor calls)
    monkeypatch.setattr(rclpy_executors, "_rclpy", counter)
    executor = DrainingExecutor(num_threads=4, context=context)
    try:
        node = Node("sim_time_listener", context=context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        calls = {"timer": 0, "joint_states": 0}
        node.create_timer(1 / 60, lambda: calls.__setitem__("timer", calls["timer"] + 1))
        node.create_subscription(
            JointState, "/joint_states", lambda _: calls.__setitem__("joint_states", calls["joint_states"] + 1), 10
        )
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        publisher = subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER], env={**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
        )
        deadline = time.monotonic() + 15
        while not (calls["timer"] > 10 and calls["joint_states"] > 10) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls["timer"] > 10 and calls["joint_states"] > 10, calls
        before_calls, before_waits = dict(calls), counter.wait_sets
        time.sleep(2.0)
        callbacks = sum(calls.values()) - sum(before_calls.values())
        wakeups = counter.wait_sets - before_waits
        # /clock callbacks are not counted in `calls`: 3 callbacks a tick (clock, joint_states, timer), 60 ticks/s
        assert callbacks > 0
        print(f"{wakeups / callbacks:.1f} wake-ups per callback")
        assert wakeups / callbacks < 10, f"{wakeups} wake-ups for {callbacks} callbacks in 2 s"
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait()
        executor.shutdown(timeout_sec=2.0)
        rclpy.try_shutdown(context=context)
