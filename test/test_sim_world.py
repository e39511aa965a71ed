# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The MuJoCo Panda scene without ROS: determinism per seed, the drives track commands, offscreen cameras."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.sim.drive import JointDrive
from cosmos3_ros.sim.trajectory import TrajectoryCommand
from cosmos3_ros.sim.world import ALIASES, CONTROLLED, JOINT_NAMES, CameraSpec, PandaWorld, select_gl

select_gl()  # MUJOCO_GL before mujoco is imported
pytest.importorskip("mujoco")


def drive_for(world: PandaWorld) -> JointDrive:
    d = JointDrive(CONTROLLED, world.limits, articulation=JOINT_NAMES, aliases=ALIASES)
    d.reset(world.home())
    return d


def run(world: PandaWorld, d: JointDrive, seconds: float, command=None) -> list[np.ndarray]:
    errors = []
    while world.time < seconds - 1e-9:
        if command is not None:
            command(world.time)
        p, v = world.controlled_state()
        out = d.update(world.time, p, v, world.timestep)
        world.step(out)
        errors.append(world.controlled_state()[0] - out.reference)
    return errors


def scripted(world: PandaWorld, d: JointDrive):
    home = world.home()

    def command(t: float) -> None:
        if abs(t * 60 - round(t * 60)) < 1e-6:  # a 60 Hz JointState stream
            q = home.copy()
            q[:7] += 0.3 * np.sin(2.0 * t)
            q[7] = 0.04 if t < 0.3 else 0.0
            d.joint_command(CONTROLLED, q, stamp=t)

    return command


def test_stepping_is_deterministic_for_a_seed():
    states = []
    for seed in (3, 3, 4):
        w = PandaWorld(seed=seed)
        d = drive_for(w)
        run(w, d, 0.6, scripted(w, d))
        states.append(w.state_vector())
    np.testing.assert_array_equal(states[0], states[1])  # bitwise
    assert not np.array_equal(states[0], states[2])  # another seed places the objects elsewhere
    w = PandaWorld(seed=3)
    w.data.qpos[0] += 0.5
    w.reset()  # back to exactly the seed's start
    assert w.time == 0.0 and np.array_equal(w.state_vector()[:10], PandaWorld(seed=3).state_vector()[:10])


def test_the_arm_tracks_a_spline_and_closes_the_hand():
    w = PandaWorld(seed=0)
    d = drive_for(w)
    home = w.home()
    ts = np.arange(1, 31) / 15.0
    pos = np.tile(home, (len(ts), 1))
    pos[:, :7] += 0.3 * np.sin(2.0 * ts)[:, None]
    pos[:, 7] = 0.0
    vel = np.zeros_like(pos)
    vel[:-1, :7] = 0.6 * np.cos(2.0 * ts[:-1])[:, None]
    d.trajectory(TrajectoryCommand.build(CONTROLLED, 0.0, ts, pos, vel), now=0.0)
    errors = np.array(run(w, d, 2.0))
    arm = np.abs(errors[100:, :7]).max()
    assert arm < 0.01, f"arm tracking error {arm:.4f} rad"  # velocity targets from the spline: tight tracking
    fingers = w.joint_state()[0][7:]
    assert fingers[0] < 0.002 and abs(fingers[0] - fingers[1]) < 0.001  # closed, finger 2 mirrors finger 1


@pytest.mark.slow  # an OpenGL context per size: about a second on the CPU
def test_cameras_render_the_scene_and_close():
    with PandaWorld(seed=0) as w:
        front = w.render(CameraSpec("front", 64, 48))
        wrist = w.render(CameraSpec("wrist", 32, 24))
        again = w.render(CameraSpec("front", 64, 48))
        assert front.shape == (48, 64, 3) and front.dtype == np.uint8 and wrist.shape == (24, 32, 3)
        assert front.std() > 10 and np.array_equal(front, again)  # a scene, and the same scene twice
        assert w.camera_fovy("front") > 0
    assert not w._renderers  # noqa: SLF001  closed on exit
    with pytest.raises(ValueError):
        CameraSpec("nope", 64, 48)
