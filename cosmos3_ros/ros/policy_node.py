# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3_policy``: the lifecycle node that runs Cosmos 3 as the robot's policy.

Thin rclpy shell over :class:`cosmos3_ros.core.controller.PolicyController`: camera callbacks decode
and buffer frames, a control timer asks the controller what to do, inference runs on a worker thread
(never in a callback, never blocking the executor), and results are published as
``trajectory_msgs/JointTrajectory`` (plus ``sensor_msgs/JointState`` streaming in joint_state mode).

Lifecycle: configure loads and warms up the backend, activate starts commanding, deactivate stops
commanding (one hold), cleanup releases the model. With ``autostart`` the node configures and
activates itself.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosmos3_ros.core.backend import PolicyBackend
from cosmos3_ros.core.controller import ControllerConfig, InferenceRequest, PolicyController
from cosmos3_ros.core.images import ImageDecodeError
from cosmos3_ros.core.settings import SettingsError
from cosmos3_ros.core.stats import LatencyStats, RateEstimator
from cosmos3_ros.core.trajectory import ActionMapping, Trajectory, default_joint_names
from cosmos3_ros.ros.convert import compressed_msg_to_rgb, image_msg_to_rgb, sec_to_stamp, stamp_to_sec
from cosmos3_ros.ros.params import PARAMS, SPEC_BY_NAME, array_type_problem, settings_from_values

NODE_NAME = "cosmos3_policy"
_SAMPLING = ("prompt", "num_steps", "guidance", "shift", "seed", "view_point")


def sec_to_duration(t: float) -> Duration:
    """Non-negative seconds to builtin_interfaces/Duration (same rounding as convert.sec_to_stamp)."""
    stamp = sec_to_stamp(max(0.0, float(t)))
    return Duration(sec=stamp.sec, nanosec=stamp.nanosec)


def trajectory_to_msg(traj: Trajectory) -> JointTrajectory:
    """A JointTrajectory for ``traj``; holds (stamp None) get a zero stamp, meaning "start on receipt"."""
    msg = JointTrajectory()
    msg.header.stamp = sec_to_stamp(traj.stamp) if traj.stamp is not None else Time()
    msg.joint_names = list(traj.joint_names)
    for pos, t in zip(traj.positions, traj.times, strict=True):
        p = JointTrajectoryPoint()
        p.positions = [float(v) for v in pos]
        p.time_from_start = sec_to_duration(t)
        msg.points.append(p)
    return msg


def make_backend(values: dict[str, Any]) -> PolicyBackend:
    """Create the configured backend (heavy imports happen here, not at node import)."""
    if values["backend"] == "in_process":
        from cosmos3_ros.runtime.runtime import Cosmos3PolicyRuntime

        if not values["model"]:
            raise ValueError("parameter 'model' is empty: set it to a checkpoint directory or a cached HF id")
        return Cosmos3PolicyRuntime(
            values["model"], device=values["device"], dtype=values["dtype"], guardrail=values["guardrail"]
        )
    from cosmos3_ros.backends.sidecar import SidecarBackend

    return SidecarBackend(
        values["sidecar_url"], token=values["sidecar_token"] or None, timeout_s=float(values["sidecar_timeout"])
    )


class PolicyNode(LifecycleNode):
    """Cosmos 3 policy lifecycle node (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._declare_parameters()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.backend: PolicyBackend | None = None
        self.controller: PolicyController | None = None
        self.backend_state = "unconfigured"
        self.backend_error = ""
        self.warmup_s = float("nan")
        self.latency = LatencyStats()
        self.rates: dict[str, RateEstimator] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._active = False
        self._subs: list[Any] = []
        self._timers: list[Any] = []
        self._last_warn: dict[str, float] = {}
        self._joint_state: JointState | None = None
        self._traj_pub = None
        self._cmd_pub = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_subscription(String, "~/instruction", self._on_instruction, 10)

    def _declare_parameters(self) -> None:
        """Declare every parameter of the table.

        Array parameters are declared with dynamic typing because an empty list (their default, and
        `[]` in YAML) has no element type in rclpy; the validate callback checks their element types.
        """
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())

    # -- helpers ------------------------------------------------------------------------------

    def now(self) -> float:
        """Node clock time in seconds (sim time when use_sim_time)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def values(self) -> dict[str, Any]:
        """Current values of all declared parameters (arrays as lists)."""
        out = {}
        for spec in PARAMS:
            v = self.get_parameter(spec.name).value
            out[spec.name] = list(v) if spec.type_ is not None else v
        return out

    def _warn_throttled(self, key: str, message: str, period: float = 5.0) -> None:
        t = time.monotonic()
        if t - self._last_warn.get(key, -1e9) >= period:
            self._last_warn[key] = t
            self.get_logger().warning(message)

    def _build_controller(self, values: dict[str, Any]) -> PolicyController:
        settings = settings_from_values(values)
        names = list(values["joint_names"]) or default_joint_names(settings.domain_name, settings.action_width)
        mapping = ActionMapping.build(
            names,
            scale=values["action_scale"],
            offset=values["action_offset"],
            lower=values["joint_limits.lower"],
            upper=values["joint_limits.upper"],
        )
        replan = int(values["replan_every"]) or max(1, settings.action_chunk_size // 2)
        cameras = tuple(values["camera_topics"])
        config = ControllerConfig(
            cameras=cameras,
            mapping=mapping,
            camera_layout=values["camera_layout"],
            max_observation_age=float(values["max_observation_age"]),
            sync_tolerance=float(values["sync_tolerance"]),
            replan_every=replan,
            stamp_mode=values["trajectory_stamp"],
        )
        return PolicyController(config, settings)

    # -- parameters ---------------------------------------------------------------------------

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate-only: reject bad values with a reason naming them; nothing is applied here."""
        values = self.values()
        for p in params:
            spec = SPEC_BY_NAME.get(p.name)
            if spec is None:
                continue
            if spec.choices and p.value not in spec.choices:
                return SetParametersResult(successful=False, reason=f"{p.name}={p.value!r}: not one of {spec.choices}")
            problem = array_type_problem(spec, p.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            values[p.name] = list(p.value) if spec.type_ is not None else p.value
        try:
            settings_from_values(values)
            if self.controller is None:
                self._build_controller(values)  # full check of the loop configuration
        except (SettingsError, ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        if self.controller is not None and any(p.name in _SAMPLING for p in params):
            self.controller.set_settings(settings_from_values(self.values()))
            self.get_logger().info(f"sampling settings updated: {[p.name for p in params]}")

    def _on_instruction(self, msg: String) -> None:
        result = self.set_parameters([Parameter("prompt", value=msg.data)])[0]
        if not result.successful:
            self.get_logger().warning(f"instruction rejected: {result.reason}")
        else:
            self.get_logger().info(f"new instruction: {msg.data!r}")

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if self.controller is None:
            response.success = False
            response.message = "not configured"
            return response
        self._publish(self.controller.arm(self.now(), bool(request.data)))
        response.success = True
        response.message = "armed" if request.data else "disarmed (hold published if commanding)"
        self.get_logger().info(response.message)
        return response

    # -- lifecycle ----------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, load and warm up the backend, create subscriptions and publishers."""
        values = self.values()
        try:
            for spec in PARAMS:
                problem = array_type_problem(spec, values[spec.name])
                if problem:
                    raise ValueError(problem)
                if spec.choices and values[spec.name] not in spec.choices:
                    raise ValueError(f"{spec.name}={values[spec.name]!r}: not one of {spec.choices}")
            controller = self._build_controller(values)
        except (SettingsError, ValueError) as exc:
            self.backend_state, self.backend_error = "error", f"bad configuration: {exc}"
            self.get_logger().error(self.backend_error)
            return TransitionCallbackReturn.FAILURE
        self.backend_state = "loading"
        try:
            backend = make_backend(values)
            if values["warmup"]:
                self.backend_state = "warming_up"
                self.warmup_s = backend.warmup(controller.settings)
                self.get_logger().info(f"backend warm-up took {self.warmup_s:.2f} s")
        except Exception as exc:
            self.backend_state, self.backend_error = "error", f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"backend failed to load: {self.backend_error}")
            return TransitionCallbackReturn.FAILURE
        self.backend, self.controller = backend, controller
        self.backend_state, self.backend_error = "ready", ""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosmos3_infer")
        self._traj_pub = self.create_lifecycle_publisher(JointTrajectory, "~/joint_trajectory", 10)
        if values["output_mode"] == "joint_state":
            self._cmd_pub = self.create_lifecycle_publisher(JointState, values["joint_command_topic"], 10)
        self._create_camera_subscriptions(values)
        if values["joint_states_topic"]:
            self._subs.append(
                self.create_subscription(JointState, values["joint_states_topic"], self._on_joint_state, 10)
            )
        group = MutuallyExclusiveCallbackGroup()
        self._timers.append(self.create_timer(1.0 / float(values["control_rate"]), self._on_control, group))
        info = backend.info()
        self.get_logger().info(
            f"configured: model {info.model} on {info.device}/{info.dtype}, cameras {list(controller.config.cameras)}, "
            f"domain {controller.settings.domain_name}, chunk {controller.settings.action_chunk_size} @ "
            f"{controller.settings.fps} Hz, replan every {controller.config.replan_every}"
        )
        return TransitionCallbackReturn.SUCCESS

    def _create_camera_subscriptions(self, values: dict[str, Any]) -> None:
        qos = {
            "sensor_data": qos_profile_sensor_data,
            "reliable": QoSProfile(
                depth=5, reliability=QoSReliabilityPolicy.RELIABLE, history=QoSHistoryPolicy.KEEP_LAST
            ),
            "system_default": qos_profile_system_default,
        }[values["camera_qos"]]
        group = MutuallyExclusiveCallbackGroup()
        for topic in values["camera_topics"]:
            compressed = topic.rstrip("/").endswith("/compressed")
            self.rates[topic] = RateEstimator()
            self._subs.append(
                self.create_subscription(
                    CompressedImage if compressed else Image,
                    topic,
                    lambda msg, t=topic, c=compressed: self._on_image(t, msg, c),
                    qos,
                    callback_group=group,
                    qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                )
            )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start commanding."""
        self._active = True
        self.get_logger().info("active: commanding")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop commanding: one hold if a chunk was running."""
        if self.controller is not None:
            holds = self.controller.arm(self.now(), False)
            self._publish(holds)  # publishers are still active here
            self.controller.arm(self.now(), True)
            self.controller.release()
        self._active = False
        self.get_logger().info("inactive: not commanding")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model and all subscriptions."""
        self._teardown()
        self.backend_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything."""
        self._teardown()
        self.backend_state = "shutdown"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Go back to unconfigured after an error in a transition."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self._active = False
        for t in self._timers:
            self.destroy_timer(t)
        for s in self._subs:
            self.destroy_subscription(s)
        self._timers, self._subs = [], []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._traj_pub is not None:
            self.destroy_lifecycle_publisher(self._traj_pub)
            self._traj_pub = None
        if self._cmd_pub is not None:
            self.destroy_lifecycle_publisher(self._cmd_pub)
            self._cmd_pub = None
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception as exc:  # closing must not raise out of a transition
                self.get_logger().warning(f"backend close failed: {exc}")
        self.backend, self.controller = None, None

    # -- callbacks ----------------------------------------------------------------------------

    def _on_image(self, topic: str, msg: Image | CompressedImage, compressed: bool) -> None:
        controller = self.controller
        if controller is None:
            return
        try:
            rgb = (
                compressed_msg_to_rgb(msg)
                if compressed
                else image_msg_to_rgb(msg, max_depth_mm=int(self.get_parameter("max_depth_mm").value))
            )
        except ImageDecodeError as exc:
            controller.counters.inc(f"rejected_frames.{exc.reason}")
            controller.last_error = f"{topic}: {exc}"
            self._warn_throttled(f"reject.{topic}", f"rejected frame on {topic}: {exc}")
            return
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp == 0.0:
            stamp = self.now()
            controller.counters.inc("zero_stamp_frames")
        if controller.add_frame(topic, stamp, rgb):
            self.rates[topic].tick(stamp)
        else:
            self._warn_throttled(f"reject.{topic}", f"rejected frame on {topic}: {controller.last_error}")

    def _on_joint_state(self, msg: JointState) -> None:
        self._joint_state = msg

    def _on_control(self) -> None:
        controller = self.controller
        if controller is None or not self._active:
            return
        now = self.now()
        request, out = controller.step(now)
        self._publish(out)
        if request is not None and self._pool is not None:
            self._pool.submit(self._infer, request)
        if self._cmd_pub is not None:
            cmd = controller.command_at(now)
            if cmd is not None:
                js = JointState()
                js.header.stamp = sec_to_stamp(now)
                js.name = list(controller.config.mapping.joint_names)
                js.position = [float(v) for v in cmd]
                self._cmd_pub.publish(js)

    def _infer(self, request: InferenceRequest) -> None:
        """Worker thread: run the backend for ``request`` and publish what the controller decides."""
        controller, backend = self.controller, self.backend
        if controller is None or backend is None:
            return
        t0 = time.perf_counter()
        chunk, error = None, None
        try:
            chunk = backend.policy(request.image, request.settings, observation_stamp=request.stamp)
        except Exception as exc:  # any backend failure becomes a hold, never a crash
            error = exc
        self.latency.add(time.perf_counter() - t0)
        out = controller.complete(request, chunk, error, self.now())
        if error is not None:
            self._warn_throttled("infer", f"inference failed: {type(error).__name__}: {error}", 2.0)
        self._publish(out)

    def _publish(self, trajectories: list[Trajectory]) -> None:
        pub = self._traj_pub
        if pub is None:
            return
        for traj in trajectories:
            if not np.isfinite(traj.positions).all():  # the controller never hands these out; belt and braces
                self.get_logger().error("refusing to publish a non-finite trajectory")
                continue
            pub.publish(trajectory_to_msg(traj))
            if traj.kind == "hold":
                self._warn_throttled("hold", "holding: no fresh valid chunk; stopped commanding", 2.0)

    # -- diagnostics --------------------------------------------------------------------------

    def diagnostic_status(self) -> DiagnosticStatus:
        """The node's DiagnosticStatus: level, message and key values."""
        status = DiagnosticStatus(name=f"{self.get_name()}: policy", hardware_id=NODE_NAME)
        now = self.now()
        lat = self.latency.summary()
        kv: dict[str, str] = {
            "backend_state": self.backend_state,
            "active": str(self._active),
            "latency_last_ms": f"{lat['last'] * 1e3:.1f}",
            "latency_p50_ms": f"{lat['p50'] * 1e3:.1f}",
            "latency_p95_ms": f"{lat['p95'] * 1e3:.1f}",
            "warmup_s": f"{self.warmup_s:.2f}",
        }
        level, message = DiagnosticStatus.OK, "ok"
        controller = self.controller
        if controller is not None:
            counters = controller.counters.snapshot()
            kv["armed"] = str(controller.armed)
            kv["commanding"] = str(controller.commanding)
            kv["prompt"] = controller.settings.prompt
            for topic, rate in self.rates.items():
                kv[f"input_rate_hz[{topic}]"] = f"{rate.rate(now):.2f}"
            kv["chunks_published"] = str(counters.get("chunks_published", 0))
            kv["holds"] = str(counters.get("holds", 0))
            kv["inference_errors"] = str(counters.get("inference_errors", 0))
            kv["rejected_frames"] = str(sum(v for k, v in counters.items() if k.startswith("rejected_frames.")))
            kv["stale_observations"] = str(counters.get("no_observation.stale", 0))
            kv["stale_chunks"] = str(counters.get("stale_chunks", 0))
            for k, v in sorted(counters.items()):
                kv[f"count.{k}"] = str(v)
            kv["last_error"] = controller.last_error
            if controller.consecutive_errors > 0:
                level, message = DiagnosticStatus.ERROR, f"inference failing: {controller.last_error}"
            elif not controller.armed:
                level, message = DiagnosticStatus.WARN, "disarmed"
            elif self._active and not controller.commanding:
                level, message = DiagnosticStatus.WARN, "not commanding: waiting for a fresh observation and chunk"
            elif any(r.rate(now) == 0.0 for r in self.rates.values()):
                level, message = DiagnosticStatus.WARN, "a camera is silent"
        elif self.backend_state == "error":
            level, message = DiagnosticStatus.ERROR, self.backend_error
        else:
            level, message = DiagnosticStatus.WARN, f"backend {self.backend_state}"
        status.level, status.message = level, message
        status.values = [KeyValue(key=k, value=v) for k, v in kv.items()]
        return status

    def _publish_diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [self.diagnostic_status()]
        self._diag_pub.publish(arr)


def main(args: list[str] | None = None) -> None:
    """``policy_node`` / ``ros2 run cosmos3_ros policy_node``."""
    rclpy.init(args=args)
    node = PolicyNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            threading.Thread(target=_autostart, args=(node,), daemon=True).start()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._teardown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def _autostart(node: PolicyNode) -> None:
    """Configure then activate (run beside the executor so diagnostics flow while the model loads)."""
    if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
        node.trigger_activate()
    else:
        node.get_logger().error("autostart: configure failed; fix the parameters and configure again")


if __name__ == "__main__":
    main()
