# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3_sim``: the MuJoCo Panda behind the ROS 2 interface of Isaac Sim's bridge.

Publishes ``/clock`` (rosgraph_msgs/Clock, simulated time), ``/joint_states`` (sensor_msgs/JointState of every
joint, stamped in simulated time), each camera as sensor_msgs/Image rgb8 (``/rgb`` by default) with its
sensor_msgs/CameraInfo; takes sensor_msgs/JointState commands on ``/joint_command`` (Isaac's articulation
controller) and trajectory_msgs/JointTrajectory on ``trajectory_topic`` (joint_trajectory_controller); see
:mod:`cosmos3_ros.sim.drive` for what the commands do. Extras Isaac does not have: ``~/monitor/measured`` and
``~/monitor/reference`` (JointState of the driven joints: measured, and the command the drives follow before their
velocity limit, stamped alike, at ``monitor_rate``), services ``~/pause`` (std_srvs/SetBool) and ``~/reset``
(std_srvs/Trigger: back to the start at time 0, like Isaac's stop and play), parameter ``paused``.

Threading: one simulation thread owns the world (physics and renderers: EGL binds a renderer to its thread), steps
it, publishes, and paces itself to ``real_time_factor``; subscription callbacks only convert messages and queue
them, and the simulation thread applies queued commands at the next physics step. When rendering or the machine is
too slow for the requested factor, the simulation runs slower rather than in bursts (counted as ``overruns``).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any

from builtin_interfaces.msg import Time
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.ros.convert import rgb_to_image_msg, sec_to_stamp, stamp_to_sec
from cosmos3_ros.sim.drive import JointDrive
from cosmos3_ros.sim.options import BY_NAME, NODE_NAME, PARAMS, CameraTopic, check
from cosmos3_ros.sim.trajectory import CommandError, TrajectoryCommand
from cosmos3_ros.sim.world import ALIASES, CONTROLLED, JOINT_NAMES, PandaWorld

#: A simulation more than this far behind the wall clock (seconds) stops catching up and runs slower instead.
MAX_LAG_S = 0.1


class SimBridge(Node):
    """The simulator node (see the module docstring); ``start()`` runs the simulation thread, ``close()`` ends it."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for p in PARAMS:
            self.declare_parameter(
                p.name, p.default, ParameterDescriptor(description=p.description, read_only=not p.runtime)
            )
        self.values = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        self.cameras: list[CameraTopic] = check(self.values)  # ValueError: the caller reports it
        self._rtf = float(self.values["real_time_factor"])
        self._paused = threading.Event()
        if self.values["paused"]:
            self._paused.set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reset_requested = False
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.world: PandaWorld | None = None
        self.drive: JointDrive | None = None
        self.sim_time = 0.0
        self.stats: dict[str, Any] = {"steps": 0, "frames": 0, "render_s": 0.0, "overruns": 0, "resets": 0}
        self._wall_running = 0.0
        self._sim_elapsed = 0.0
        self._last_warn: dict[str, float] = {}
        self.add_on_set_parameters_callback(self._on_set)
        self._clock_pub = self.create_publisher(Clock, "/clock", 10)
        self._js_pub = self.create_publisher(JointState, self.values["joint_states_topic"], 10)
        self._mon_pubs = (
            self.create_publisher(JointState, "~/monitor/measured", 50),
            self.create_publisher(JointState, "~/monitor/reference", 50),
        )
        self._cam_pubs = [self.create_publisher(Image, c.topic, 5) for c in self.cameras]
        self._info_pubs = (
            [self.create_publisher(CameraInfo, c.info_topic, 5) for c in self.cameras]
            if self.values["camera_info"]
            else []
        )
        self.create_subscription(JointState, self.values["joint_command_topic"], self._on_joint_command, 10)
        if self.values["trajectory_topic"]:
            self.create_subscription(JointTrajectory, self.values["trajectory_topic"], self._on_trajectory, 10)
        self.create_service(SetBool, "~/pause", self._on_pause)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._thread = threading.Thread(target=self._run, name="cosmos3_sim", daemon=True)

    # -- control --------------------------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SimBridge:
        """Start the simulation thread; returns once the world is loaded (raises what loading raised)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the simulation did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def pause(self, paused: bool) -> None:
        """Pause (nothing steps or publishes, /clock stops) or resume."""
        if paused:
            self._paused.set()
        else:
            self._paused.clear()
        self._wake.set()

    def reset(self) -> None:
        """Back to the start at simulated time 0 (applied by the simulation thread before its next step)."""
        self._reset_requested = True
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the simulation thread (which closes the renderers). Idempotent."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def teardown(self) -> None:
        """Same as :meth:`close` (the name test graphs and launch helpers call)."""
        self.close()

    @property
    def error(self) -> BaseException | None:
        """What stopped the simulation thread, if it failed (None while it runs or after a clean stop)."""
        return self._error

    @property
    def paused(self) -> bool:
        """Whether the simulation is paused."""
        return self._paused.is_set()

    def summary(self) -> dict[str, Any]:
        """Counters, simulated and wall time, achieved real-time factor, CPU and render cost."""
        s = dict(self.stats)
        s["sim_time_s"] = round(self.sim_time, 3)
        s["wall_running_s"] = round(self._wall_running, 3)
        s["sim_elapsed_s"] = round(self._sim_elapsed, 3)
        s["real_time_factor"] = round(self._sim_elapsed / self._wall_running, 3) if self._wall_running > 0 else None
        s["render_ms_per_frame"] = round(1e3 * s["render_s"] / s["frames"], 2) if s["frames"] else None
        if self.drive is not None:
            s["commands"] = dict(self.drive.counters)
            s["last_rejection"] = self.drive.last_rejection
        return s

    def _on_set(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            spec = BY_NAME.get(p.name)
            if spec is None:
                continue
            if not spec.runtime:
                return SetParametersResult(successful=False, reason=f"{p.name} is read-only")
            if p.name == "real_time_factor":
                v = p.value
                if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 100.0:
                    return SetParametersResult(successful=False, reason="real_time_factor must be in [0, 100]")
                self._rtf = float(v)
                self._wake.set()
            elif p.name == "paused":
                if not isinstance(p.value, bool):
                    return SetParametersResult(successful=False, reason="paused must be true or false")
                self.pause(p.value)
        return SetParametersResult(successful=True)

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.pause(bool(request.data))
        response.success, response.message = True, "paused" if request.data else "running"
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.reset()
        response.success, response.message = True, "reset to time 0"
        return response

    # -- inputs (executor thread): convert and queue ---------------------------------------------------------------

    def _on_joint_command(self, msg: JointState) -> None:
        self._inbox.append(
            (
                "joint",
                (
                    list(msg.name),
                    list(msg.position),
                    list(msg.velocity),
                    list(msg.effort),
                    stamp_to_sec(msg.header.stamp),
                ),
            )
        )

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            cmd = TrajectoryCommand.build(
                msg.joint_names,
                stamp_to_sec(msg.header.stamp),
                [stamp_to_sec(p.time_from_start) for p in msg.points],
                [list(p.positions) for p in msg.points],
                [list(p.velocities) for p in msg.points],
                [list(p.accelerations) for p in msg.points],
            )
        except CommandError as exc:
            self._inbox.append(("rejected", exc))
            return
        self._inbox.append(("trajectory", cmd))

    def _warn(self, key: str, message: str, period: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) >= period:
            self._last_warn[key] = now
            self.get_logger().warning(message)

    def _apply_inbox(self, drive: JointDrive, now: float) -> None:
        while self._inbox:
            kind, item = self._inbox.popleft()
            try:
                if kind == "joint":
                    names, pos, vel, eff, stamp = item
                    drive.joint_command(names, pos, vel, eff, stamp=stamp)
                elif kind == "trajectory":
                    drive.trajectory(item, now)
                else:
                    drive.reject(item)
                    raise item
            except CommandError as exc:
                self._warn(f"rejected.{exc.reason}", f"command rejected ({exc.reason}): {exc}")

    # -- the simulation thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        v = self.values
        try:
            world = PandaWorld(seed=int(v["seed"]), timestep=1.0 / float(v["physics_rate"]))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        try:
            self.world = world
            drive = JointDrive(
                CONTROLLED,
                world.limits,
                articulation=JOINT_NAMES,
                aliases=ALIASES,
                velocity_feedforward=bool(v["velocity_feedforward"]),
                allow_partial_joints_goal=bool(v["allow_partial_joints_goal"]),
                allow_nonzero_velocity_at_trajectory_end=bool(v["allow_nonzero_velocity_at_trajectory_end"]),
            )
            drive.reset(world.home())
            self.drive = drive
            self._ready.set()
            self._loop(world, drive)
        except BaseException as exc:  # reported by close() callers through the log; the process stays up
            self._error = exc
            self.get_logger().error(f"the simulation stopped: {type(exc).__name__}: {exc}")
        finally:
            self._ready.set()
            world.close()

    def _every(self, rate: float, dt: float) -> int:
        return max(1, round(1.0 / (rate * dt)))

    def _loop(self, world: PandaWorld, drive: JointDrive) -> None:
        v = self.values
        dt = world.timestep
        clock_every = self._every(v["clock_rate"], dt)
        js_every = self._every(v["joint_state_rate"], dt)
        self._monitor_every = self._every(v["monitor_rate"] or v["joint_state_rate"], dt)
        cam_every = self._every(v["camera_rate"], dt)
        k = 0
        self._publish(world, drive, k, clock_every, js_every, cam_every)
        wall0, sim0 = time.monotonic(), world.time
        while not self._stop.is_set():
            if self._reset_requested:
                self._reset_requested = False
                self._inbox.clear()
                world.reset()
                drive.reset(world.home())
                k = 0
                self.stats["resets"] += 1
                self._publish(world, drive, k, clock_every, js_every, cam_every)
                wall0, sim0 = time.monotonic(), world.time
            if self._paused.is_set():
                self._wake.wait(0.1)
                self._wake.clear()
                wall0, sim0 = time.monotonic(), world.time  # resume at the real-time pace, no catching up
                continue
            t_wall = time.monotonic()
            self._apply_inbox(drive, world.time)
            p, q = world.controlled_state()
            world.step(drive.update(world.time, p, q, dt))
            k += 1
            self.stats["steps"] += 1
            self.sim_time = world.time
            self._sim_elapsed += dt
            if k % clock_every == 0 or k % js_every == 0 or k % cam_every == 0 or k % self._monitor_every == 0:
                self._publish(world, drive, k, clock_every, js_every, cam_every)
                rtf = self._rtf
                if rtf > 0:
                    delay = wall0 + (world.time - sim0) / rtf - time.monotonic()
                    if delay > 0:
                        self._wake.wait(delay)
                        self._wake.clear()
                    elif delay < -MAX_LAG_S:
                        self.stats["overruns"] += 1
                        wall0, sim0 = time.monotonic(), world.time
            self._wall_running += time.monotonic() - t_wall

    def _publish(
        self, world: PandaWorld, drive: JointDrive, k: int, clock_every: int, js_every: int, cam_every: int
    ) -> None:
        now = world.time
        stamp = sec_to_stamp(now)
        if k % clock_every == 0:
            self._clock_pub.publish(Clock(clock=stamp))
        if k == 0:  # time 0 reads as "no stamp" to many consumers: sensors start one step later
            return
        if k % js_every == 0:
            pos, vel, eff = world.joint_state()
            msg = JointState(name=list(JOINT_NAMES), position=pos.tolist(), velocity=vel.tolist(), effort=eff.tolist())
            msg.header.stamp = stamp
            self._js_pub.publish(msg)
        if k % self._monitor_every == 0:
            q, qd = world.controlled_state()
            measured = JointState(name=list(CONTROLLED), position=q.tolist(), velocity=qd.tolist())
            ref = JointState(name=list(CONTROLLED))
            ref.position, ref.velocity = drive.reference.tolist(), drive.reference_velocity.tolist()
            for pub, m in zip(self._mon_pubs, (measured, ref), strict=True):
                m.header.stamp = stamp
                pub.publish(m)
        if k % cam_every == 0:
            t0 = time.perf_counter()
            for i, cam in enumerate(self.cameras):
                image = world.render(cam.spec)
                self._cam_pubs[i].publish(rgb_to_image_msg(image, stamp, f"{cam.spec.name}_optical_frame"))
                if self._info_pubs:
                    self._info_pubs[i].publish(self._camera_info(world, cam, stamp))
                self.stats["frames"] += 1
            self.stats["render_s"] += time.perf_counter() - t0

    def _camera_info(self, world: PandaWorld, cam: CameraTopic, stamp: Time) -> CameraInfo:
        w, h = cam.spec.width, cam.spec.height
        f = 0.5 * h / math.tan(math.radians(world.camera_fovy(cam.spec.name)) / 2)
        info = CameraInfo(width=w, height=h, distortion_model="plumb_bob", d=[0.0] * 5)
        info.header.stamp, info.header.frame_id = stamp, f"{cam.spec.name}_optical_frame"
        info.k = [f, 0.0, w / 2, 0.0, f, h / 2, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, w / 2, 0.0, 0.0, f, h / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info
