# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The simulator's drives: Isaac Sim's articulation-controller semantics for JointState commands, trajectories,
velocity limit, rejections. Pure numpy (no MuJoCo, no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.sim.drive import JointDrive, JointLimits
from cosmos3_ros.sim.options import check, parse_cameras, preset_values
from cosmos3_ros.sim.trajectory import CommandError, TrajectoryCommand

JOINTS = ("j1", "j2", "finger1")
ARTICULATION = ("j1", "j2", "finger1", "finger2")
LIMITS = JointLimits(
    lower=np.array([-2.0, -1.0, 0.0]),
    upper=np.array([2.0, 1.0, 0.04]),
    max_velocity=np.array([1.0, 2.0, 0.2]),
    max_effort=np.array([10.0, 10.0, 5.0]),
)
DT = 0.002


def drive(**kw) -> JointDrive:
    d = JointDrive(JOINTS, LIMITS, articulation=ARTICULATION, aliases={"finger2": "finger1"}, **kw)
    d.reset(np.array([0.0, 0.0, 0.04]))
    return d


def step(d: JointDrive, now: float, pos=(0.0, 0.0, 0.04), vel=(0.0, 0.0, 0.0)):
    return d.update(now, np.array(pos), np.array(vel), DT)


def test_joint_command_sets_the_named_joints_only_and_keeps_the_rest():
    d = drive()
    d.joint_command(["j2"], [0.5])
    out = step(d, 0.0)
    np.testing.assert_allclose(out.reference, [0.0, 0.5, 0.04])
    np.testing.assert_allclose(out.velocity, 0.0)  # Isaac: a position-only command leaves the target velocity at 0
    d.joint_command([], [0.1, 0.2, 0.02, 0.03])  # no names: every joint of the articulation, in order
    np.testing.assert_allclose(step(d, DT).reference, [0.1, 0.2, 0.02])  # finger2 mirrors finger1: finger1 wins
    d.joint_command(["finger2"], [0.01])  # the mirrored finger alone drives the hand
    assert step(d, 2 * DT).reference[2] == pytest.approx(0.01)


def test_velocities_and_efforts_of_a_command_become_targets_within_the_limits():
    d = drive()
    d.joint_command(["j1", "j2"], [0.1, 0.2], [5.0, -0.5], [100.0, -1.0])
    out = step(d, 0.0)
    np.testing.assert_allclose(out.velocity, [1.0, -0.5, 0.0])  # clipped to the velocity limit
    np.testing.assert_allclose(out.effort, [10.0, -1.0, 0.0])  # clipped to the effort limit
    d.joint_command(["j1"], [5.0])  # beyond the position limit: clamped and counted
    assert step(d, DT).reference[0] == 2.0 and d.counters["clamped_commands"] == 1


def test_the_position_target_ramps_at_the_velocity_limit():
    d = drive()
    d.joint_command(["j1"], [1.0])
    targets = [step(d, k * DT).position[0] for k in range(600)]
    np.testing.assert_allclose(np.diff(targets[:400]), LIMITS.max_velocity[0] * DT)  # 1 rad/s: a ramp, not a jump
    assert targets[-1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((["j1"], [np.nan]), "non_finite"),
        ((["j1", "nope"], [0.1, 0.2]), "unknown_joints"),
        ((["j1", "j2"], [0.1]), "shape"),
        ((["j1"],), "empty"),
        ((["j1", "j1"], [0.1, 0.2]), "duplicate_joints"),
    ],
)
def test_a_bad_command_is_refused_whole_and_counted(args, reason):
    d = drive()
    d.joint_command(["j1"], [0.3])
    with pytest.raises(CommandError):
        d.joint_command(*args)
    assert d.counters[f"rejected.{reason}"] == 1 and d.last_rejection
    assert step(d, 0.0).reference[0] == pytest.approx(0.3)  # unchanged


def test_velocity_feedforward_from_consecutive_commands_lapses_when_the_stream_stops():
    d = drive(velocity_feedforward=True)
    d.joint_command(["j1"], [0.0], stamp=1.0)
    d.joint_command(["j1"], [0.05], stamp=1.1)
    assert step(d, 1.1).velocity[0] == pytest.approx(0.5)
    assert step(d, 1.2).velocity[0] == pytest.approx(0.5)
    assert step(d, 1.1 + 0.3).velocity[0] == 0.0  # no command for 3 periods: nothing to feed forward


def test_trajectories_and_joint_commands_replace_each_other():
    d = drive()
    traj = TrajectoryCommand.build(JOINTS, 0.0, [0.1, 0.2], [[0.1, 0.1, 0.04], [0.2, 0.2, 0.04]])
    d.trajectory(traj, now=5.0)
    out = step(d, 5.0, pos=(0.05, 0.0, 0.04))  # the measured state is where the trajectory starts from
    assert out.mode == "trajectory"
    np.testing.assert_allclose(out.reference[:2], [0.05, 0.0])
    np.testing.assert_allclose(step(d, 5.15).reference[:2], [0.15, 0.15])
    d.joint_command(["j1"], [-0.5])  # the newest command wins
    out = step(d, 5.16)
    assert out.mode == "joint_command" and out.reference[0] == -0.5
    assert d.following is None
    late = TrajectoryCommand.build(JOINTS, 1.0, [0.1], [[0.0, 0.0, 0.0]])
    with pytest.raises(CommandError):
        d.trajectory(late, now=5.2)
    assert d.counters["rejected.ends_in_past"] == 1 and d.counters["trajectories"] == 1


def test_simulator_options_and_presets():
    values = preset_values("droid", camera_rate=5)
    cams = check(values)
    assert [c.topic for c in cams] == [
        "/wrist_camera/image_raw",
        "/exterior_camera_1/image_raw",
        "/exterior_camera_2/image_raw",
    ]
    assert cams[0].info_topic == "/wrist_camera/camera_info" and values["camera_rate"] == 5.0
    assert parse_cameras(["/rgb=front@64x48"], 320, 240)[0].info_topic == "/camera_info"
    assert parse_cameras(["/rgb=front@64x48"], 320, 240)[0].spec.width == 64
    for bad in (["rgb=front"], ["/rgb=nope"], ["/rgb=front@64"], ["/a=front", "/a=wrist"]):
        with pytest.raises(ValueError):
            parse_cameras(bad, 320, 240)
    for name, value in (("camera_rate", 0.0), ("real_time_factor", -1.0), ("seed", 1.5), ("paused", "yes")):
        with pytest.raises(ValueError, match=name):
            check(preset_values("isaac", **{name: value}))
    with pytest.raises(ValueError, match="exceeds physics_rate"):
        check(preset_values("isaac", clock_rate=1000.0, physics_rate=500.0))


def test_the_readme_documents_every_simulator_parameter():
    """The README's simulator parameter table lists every parameter the node declares (sim/options.py's PARAMS)."""
    from pathlib import Path

    from cosmos3_ros.sim.options import PARAMS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Simulator parameters") : readme.index("### Headless rendering")]
    assert [p.name for p in PARAMS if f"`{p.name}`" not in section] == []
