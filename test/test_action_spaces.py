# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Action spaces out: normalization statistics from a file next to the checkpoint, and the ee_pose action space
in a real rclpy graph (PoseArray of absolute poses chained from the current end-effector pose)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph import Camera, Collector, Graph
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.control.config import controller_config, load_action_stats, values_from_overrides
from cosmos3_ros.core.poses import relative_to_absolute
from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.policy_node import PolicyNode

# -- normalization statistics ----------------------------------------------------------------------------------------


def test_mean_std_and_quantile_statistics_become_scale_and_offset(tmp_path):
    p = tmp_path / "stats.json"
    p.write_text(json.dumps({"mean": [1.0, 2.0, 9.0], "std": [0.5, 2.0, 9.0]}))
    assert load_action_stats(p, 2) == ([0.5, 2.0], [1.0, 2.0])  # a * std + mean; extra entries (padding) ignored
    p.write_text(json.dumps({"global": {"q01": [-1.0, 0.0], "q99": [3.0, 0.5]}}))
    scale, offset = load_action_stats(p, 2)
    assert scale == [2.0, 0.25] and offset == [1.0, 0.25]  # [-1, 1] onto [q01, q99]
    p.write_text(json.dumps({"min": [0.0], "max": [1.0]}))
    with pytest.raises(ValueError, match="need 2 finite values"):
        load_action_stats(p, 2)
    p.write_text(json.dumps({"median": [0.0, 1.0]}))
    with pytest.raises(ValueError, match="no mean/std, q01/q99 or min/max"):
        load_action_stats(p, 2)
    with pytest.raises(ValueError, match="action_stats"):
        load_action_stats(tmp_path / "missing.json", 2)


def test_auto_statistics_come_from_the_checkpoint_directory(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    over = {"model": str(ckpt), "domain_name": "pusht", "action_stats": "auto"}
    cfg = controller_config(values_from_overrides(over))
    np.testing.assert_array_equal(cfg.mapping.scale, [1.0, 1.0])  # no file: unnormalized, as the model gives them
    (ckpt / "action_stats.json").write_text(json.dumps({"mean": [0.1, 0.2], "std": [3.0, 4.0]}))
    cfg = controller_config(values_from_overrides(over))
    np.testing.assert_array_equal(cfg.mapping.scale, [3.0, 4.0])
    np.testing.assert_array_equal(cfg.mapping.offset, [0.1, 0.2])
    with pytest.raises(ValueError, match="replaces action_scale"):
        controller_config(values_from_overrides({**over, "action_scale": [1.0, 1.0]}))


# -- ee_pose in a graph ---------------------------------------------------------------------------------------------

TOPIC = "/cam/image_raw"
FRAME = moving_scene_frame(0.0, 96, 128)


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


@pytest.mark.ros
def test_ee_pose_chunks_are_absolute_poses_from_the_current_pose(graph):
    params = {
        "backend": "fake",
        "camera_topics": [TOPIC],
        "domain_name": "bridge",
        "action_chunk_size": 8,
        "fps": 5.0,
        "warmup": False,
        "forecast_every": 0,
        "max_observation_age": 2.0,
        "action_space": "ee_pose",
        "ee_pose_topic": "/ee_pose",
        "action_scale": [0.01] * 3 + [1.0] * 7,  # centimetre steps: the fake's [-1, 1] actions as small motions
    }
    node = graph.add(
        PolicyNode(context=graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    )
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.backend_error
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    pose_pub = test.create_publisher(PoseStamped, "/ee_pose", 10)
    poses = Collector(test, PoseArray, "/cosmos3_policy/ee_poses")
    grip = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    position, quat = np.array([0.4, -0.1, 0.3]), np.array([0.0, 0.0, np.sin(np.pi / 8), np.cos(np.pi / 8)])
    stamp = test.get_clock().now().nanoseconds * 1e-9

    def tick() -> bool:
        msg = PoseStamped()
        msg.header.stamp = test.get_clock().now().to_msg()
        msg.header.frame_id = "panda_link0"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = position
        o = msg.pose.orientation
        o.x, o.y, o.z, o.w = quat
        pose_pub.publish(msg)
        cam.publish(FRAME, stamp=stamp)
        time.sleep(0.05)
        return len(poses) >= 1

    graph.wait_for(tick, timeout=20, period=0.0)
    msg = poses.snapshot()[0]
    assert msg.header.frame_id == "panda_link0"
    got = np.array([[p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y, p.orientation.z,
                     p.orientation.w] for p in msg.poses])  # fmt: skip
    settings = node.loop.controller.settings
    actions = FakeBackend().policy(FRAME, settings).actions.astype(np.float64)
    rows = actions[:, :9] * np.array([0.01] * 3 + [1.0] * 6)
    expected = relative_to_absolute(rows, position, quat)
    np.testing.assert_allclose(got, expected[-len(got) :], atol=1e-9)  # rows already due when it arrived: dropped
    g = grip.snapshot()[0]
    assert list(g.joint_names) == ["gripper"] and len(g.points) == len(msg.poses)
    # no pose any more: the loop stops planning (it never chains from a stale pose)
    n = node.loop.controller.counters.get("requests")
    time.sleep(2.5)
    cam.publish(FRAME, stamp=test.get_clock().now().nanoseconds * 1e-9)
    graph.wait_for(lambda: node.loop.controller.counters.get("no_observation.stale_pose") > 0, timeout=10)
    assert node.loop.controller.counters.get("requests") <= n + 1
