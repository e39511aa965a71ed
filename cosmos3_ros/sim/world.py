# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The simulated world: MuJoCo physics of the Panda scene and its offscreen cameras (no ROS).

One thread owns a :class:`PandaWorld` (model, data and renderers): with EGL a renderer is bound to the thread that
made it. Stepping is deterministic: the same scene, seed, mujoco version and sequence of drive targets give bitwise
the same states and images. Call :meth:`PandaWorld.close` (or use ``with``) from that thread before the interpreter
exits: a renderer left to the garbage collector raises at exit with OSMesa.

``MUJOCO_GL`` picks the OpenGL backend and must be set before mujoco is imported: :func:`select_gl` does that
(``egl`` by default on a machine without a display; ``osmesa`` needs Debian's libosmesa6).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.sim.drive import DriveTargets, JointLimits

SCENE = Path(__file__).resolve().parent / "assets" / "panda_scene.xml"
ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
#: Every joint of the articulation, in the order /joint_states lists them.
JOINT_NAMES = ARM_JOINTS + FINGER_JOINTS
#: The joints commands drive (finger 2 mirrors finger 1).
CONTROLLED = (*ARM_JOINTS, "panda_finger_joint1")
ALIASES = {"panda_finger_joint2": "panda_finger_joint1"}
#: Franka's limits (franka_description; the finger in m/s and N).
MAX_VELOCITY = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61, 0.2])
MAX_EFFORT = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0, 70.0])
CAMERAS = ("front", "exterior_1", "exterior_2", "wrist")
#: How far the seed moves each cube from its place in the scene (metres) and turns it (radians).
OBJECT_JITTER = (0.03, 0.6)
GL_BACKENDS = ("egl", "osmesa")


def select_gl(backend: str | None = None) -> str:
    """Set ``MUJOCO_GL`` before mujoco is imported: ``backend``, else the environment's, else ``egl``.

    Raises ValueError for another backend, or when mujoco was already imported with a different one.
    """
    chosen = backend or os.environ.get("MUJOCO_GL") or "egl"
    if chosen not in GL_BACKENDS:
        raise ValueError(f"MUJOCO_GL / --gl {chosen!r}: offscreen rendering needs one of {list(GL_BACKENDS)}")
    if "mujoco" in sys.modules and os.environ.get("MUJOCO_GL") != chosen:
        raise ValueError(f"mujoco is already imported with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}, not {chosen!r}")
    os.environ["MUJOCO_GL"] = chosen
    if "mujoco" not in sys.modules:  # PyOpenGL's platform must agree (an inherited one would break the other backend)
        os.environ["PYOPENGL_PLATFORM"] = chosen
    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's INFO line about OpenGL_accelerate
    return chosen


@dataclass(frozen=True)
class CameraSpec:
    """An offscreen camera: the scene's camera ``name`` rendered at ``width`` x ``height``."""

    name: str
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.name not in CAMERAS:
            raise ValueError(f"camera {self.name!r} is not in the scene; expected one of {list(CAMERAS)}")
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise ValueError(f"camera {self.name}: {self.width}x{self.height} is outside 16..4096 pixels a side")


class PandaWorld:
    """The Panda scene: reset by seed, step with drive targets, read joint states, render cameras."""

    def __init__(self, *, seed: int = 0, timestep: float = 0.002, scene: Path | str = SCENE) -> None:
        select_gl()
        import mujoco

        self._mj = mujoco
        if not 1e-4 <= timestep <= 0.01:
            raise ValueError(f"physics timestep {timestep} s is outside 0.0001..0.01 s")
        self.model = mujoco.MjModel.from_xml_path(str(scene))
        self.model.opt.timestep = timestep
        self.data = mujoco.MjData(self.model)
        self.seed = int(seed)
        m = self.model
        jid = [m.joint(n).id for n in JOINT_NAMES]
        self._qpos = np.array([m.jnt_qposadr[j] for j in jid])
        self._dof = np.array([m.jnt_dofadr[j] for j in jid])
        self._pos_act = np.array([m.actuator(n).id for n in CONTROLLED])
        self._vel_act = np.array([m.actuator(f"{n}_vel").id for n in ARM_JOINTS])
        ctrl = [m.joint(n).id for n in CONTROLLED]
        self.limits = JointLimits(
            lower=np.array([m.jnt_range[j][0] for j in ctrl]),
            upper=np.array([m.jnt_range[j][1] for j in ctrl]),
            max_velocity=MAX_VELOCITY.copy(),
            max_effort=MAX_EFFORT.copy(),
        )
        self._objects = [b for b in ("cube_red", "cube_green", "cube_blue")]
        self._renderers: dict[tuple[int, int], Any] = {}
        self.reset()

    # -- state ----------------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """The home pose at time 0, the objects placed by the seed."""
        mj, m, d = self._mj, self.model, self.data
        mj.mj_resetDataKeyframe(m, d, m.key("home").id)
        rng = np.random.default_rng(self.seed)
        shift, turn = OBJECT_JITTER
        for name in self._objects:
            adr = m.jnt_qposadr[m.joint(name).id]
            d.qpos[adr : adr + 2] += rng.uniform(-shift, shift, 2)
            yaw = rng.uniform(-turn, turn)
            d.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        mj.mj_forward(m, d)

    @property
    def time(self) -> float:
        """Simulated time in seconds."""
        return float(self.data.time)

    @property
    def timestep(self) -> float:
        """Physics step in seconds."""
        return float(self.model.opt.timestep)

    def home(self) -> np.ndarray:
        """Positions of the controlled joints in the home pose."""
        m = self.model
        qpos = m.key("home").qpos
        return np.array([qpos[m.jnt_qposadr[m.joint(n).id]] for n in CONTROLLED])

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, velocity, effort) of every joint in :data:`JOINT_NAMES` order (effort: the drives' force)."""
        d = self.data
        return d.qpos[self._qpos].copy(), d.qvel[self._dof].copy(), d.qfrc_actuator[self._dof].copy()

    def controlled_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(position, velocity) of the :data:`CONTROLLED` joints."""
        d = self.data
        return d.qpos[self._qpos[:8]].copy(), d.qvel[self._dof[:8]].copy()

    def body_position(self, name: str) -> np.ndarray:
        """World position of a body (e.g. ``cube_red``, ``panda_hand``)."""
        return self.data.body(name).xpos.copy()

    def state_vector(self) -> np.ndarray:
        """The full physics state (time, qpos, qvel, act), for determinism checks."""
        d = self.data
        return np.concatenate([[d.time], d.qpos, d.qvel, d.act])

    # -- stepping -------------------------------------------------------------------------------------------------

    def step(self, targets: DriveTargets, n: int = 1) -> None:
        """``n`` physics steps with the drives set to ``targets``."""
        d = self.data
        d.ctrl[self._pos_act] = targets.position
        d.ctrl[self._vel_act] = targets.velocity[:7]
        d.qfrc_applied[self._dof[:8]] = targets.effort
        for _ in range(n):
            self._mj.mj_step(self.model, d)

    # -- cameras --------------------------------------------------------------------------------------------------

    def render(self, camera: CameraSpec) -> np.ndarray:
        """An RGB image (height x width x 3, uint8, row 0 at the top) of ``camera`` now."""
        key = (camera.height, camera.width)
        renderer = self._renderers.get(key)
        if renderer is None:
            vis = self.model.vis.global_
            vis.offwidth, vis.offheight = max(vis.offwidth, camera.width), max(vis.offheight, camera.height)
            renderer = self._mj.Renderer(self.model, height=camera.height, width=camera.width)
            self._renderers[key] = renderer
        renderer.update_scene(self.data, camera=camera.name)
        return renderer.render()

    def camera_fovy(self, name: str) -> float:
        """Vertical field of view of a camera, in degrees."""
        return float(self.model.cam_fovy[self.model.camera(name).id])

    def close(self) -> None:
        """Release the renderers (from the thread that rendered). Idempotent."""
        renderers, self._renderers = list(self._renderers.values()), {}
        for r in renderers:
            r.close()

    def __enter__(self) -> PandaWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
