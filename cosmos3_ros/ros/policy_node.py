# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3_policy``: the lifecycle node that runs Cosmos 3 as the robot's policy.

Thin rclpy shell over :class:`cosmos3_ros.control.controller.PolicyController`: camera callbacks decode
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
from std_msgs.msg import Float64, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosmos3_ros.control.config import build_controller, loop_options, make_backend
from cosmos3_ros.control.controller import PolicyController
from cosmos3_ros.control.loop import PolicyLoop
from cosmos3_ros.core.backend import PolicyBackend
from cosmos3_ros.core.images import ImageDecodeError
from cosmos3_ros.core.monitoring import DriftState, ErrorSample
from cosmos3_ros.core.settings import SettingsError
from cosmos3_ros.core.stats import LatencyStats, RateEstimator
from cosmos3_ros.core.trajectory import Trajectory
from cosmos3_ros.ros.convert import (
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    rgb_to_image_msg,
    sec_to_stamp,
    stamp_to_sec,
)
from cosmos3_ros.ros.params import PARAMS, SPEC_BY_NAME, check_value, settings_from_values

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


class _NodeSink:
    """PolicyLoop outputs as ROS messages."""

    def __init__(self, node: PolicyNode) -> None:
        self.node = node

    def trajectory(self, traj: Trajectory, now: float) -> None:
        self.node._publish_trajectory(traj)

    def predicted_frames(self, chunk_id: int, stamps: list[float], frames: np.ndarray) -> None:
        pub = self.node._pred_pub
        if pub is None:
            return
        for stamp, frame in zip(stamps, frames, strict=True):
            pub.publish(rgb_to_image_msg(frame, stamp, f"cosmos3_forecast/{chunk_id}"))

    def prediction_errors(self, samples: list[ErrorSample], drift: DriftState) -> None:
        pub = self.node._err_pub
        metric = self.node.loop.options.drift_metric if self.node.loop else "nmse"
        if pub is not None:
            for sample in samples:
                pub.publish(Float64(data=float(sample.value(metric))))
        if drift.tripped:
            self.node.get_logger().warning(self.node.controller.last_error if self.node.controller else "drift")

    def chunk_record(self, record: dict[str, Any]) -> None:
        if record.get("forecast") == "skipped_budget":
            self.node._warn_throttled("forecast", "forecast skipped: it would delay the next policy call", 10.0)


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
        self.loop: PolicyLoop | None = None
        self.recorder: Any = None
        self._pred_pub = None
        self._err_pub = None
        self.rates: dict[str, RateEstimator] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._active = False
        self._subs: list[Any] = []
        self._timers: list[Any] = []
        self._last_warn: dict[str, float] = {}
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

    @property
    def latency(self) -> LatencyStats:
        """Policy-call latency statistics (empty before configure)."""
        return self.loop.policy_latency if self.loop is not None else LatencyStats()

    def monitor_summary(self) -> list[str]:
        """Human-readable forecast-monitoring lines (demo summary)."""
        if self.loop is None:
            return []
        m = self.loop.monitor_summary()
        return [
            f"forecasts            {m['forecasts']} made, {m['forecast_skipped']} skipped (budget), "
            f"{m['forecast_errors']} failed; p95 {m['forecast_latency_p95_s'] * 1e3:.0f} ms",
            f"prediction error     {m['prediction_error_metric']} last {m['prediction_error_last']:.3f}, "
            f"mean {m['prediction_error_mean']:.3f} over {m['forecast_matched']} matched frames "
            f"({m['forecast_missed']} missed)",
        ]

    def now(self) -> float:
        """Node clock time in seconds (sim time when use_sim_time)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def values(self) -> dict[str, Any]:
        """Current values of all declared parameters (arrays as lists)."""
        out = {}
        for spec in PARAMS:
            v = self.get_parameter(spec.name).value
            out[spec.name] = list(v or []) if spec.type_ is not None else v
        return out

    def _warn_throttled(self, key: str, message: str, period: float = 5.0) -> None:
        t = time.monotonic()
        if t - self._last_warn.get(key, -1e9) >= period:
            self._last_warn[key] = t
            self.get_logger().warning(message)

    # -- parameters ---------------------------------------------------------------------------

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate-only: reject bad values with a reason naming them; nothing is applied here."""
        values = self.values()
        for p in params:
            spec = SPEC_BY_NAME.get(p.name)
            if spec is None:
                continue
            problem = check_value(spec, list(p.value or []) if spec.type_ is not None else p.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            values[p.name] = list(p.value or []) if spec.type_ is not None else p.value
        try:
            settings_from_values(values)
            if self.controller is None:
                build_controller(values)  # full check of the loop configuration
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
        if self.loop is None:
            response.success = False
            response.message = "not configured"
            return response
        self.loop.arm(bool(request.data))
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
                problem = check_value(spec, values[spec.name])
                if problem:
                    raise ValueError(problem)
            controller = build_controller(values)
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
        try:
            options = loop_options(values, self.get_fully_qualified_name())
            if values["record_path"]:
                from cosmos3_ros.bags.recorder import BagRecorder

                self.recorder = BagRecorder(values["record_path"], storage="mcap").start()
                self.get_logger().info(f"recording to {values['record_path']} (MCAP)")
        except Exception as exc:
            backend.close()
            self.backend_state, self.backend_error = "error", f"{type(exc).__name__}: {exc}"
            self.get_logger().error(self.backend_error)
            return TransitionCallbackReturn.FAILURE
        self.backend, self.controller = backend, controller
        self.loop = PolicyLoop(controller, backend, options, _NodeSink(self), self.now, recorder=self.recorder)
        self.backend_state, self.backend_error = "ready", ""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosmos3_infer")
        self._traj_pub = self.create_lifecycle_publisher(JointTrajectory, "~/joint_trajectory", 10)
        # A forecast is a burst of chunk-size frames: keep them all.
        self._pred_pub = self.create_lifecycle_publisher(Image, "~/predicted_image", 64)
        self._err_pub = self.create_lifecycle_publisher(Float64, "~/prediction_error", 10)
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
        if self.loop is not None:
            self.loop.arm(False)  # one hold; publishers are still active here
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
        for name in ("_traj_pub", "_pred_pub", "_err_pub"):
            pub = getattr(self, name)
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
                setattr(self, name, None)
        if self.recorder is not None:
            self.recorder.close()
            self.get_logger().info(f"recording closed: {self.recorder.stats()}")
            self.recorder = None
        if self._cmd_pub is not None:
            self.destroy_lifecycle_publisher(self._cmd_pub)
            self._cmd_pub = None
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception as exc:  # closing must not raise out of a transition
                self.get_logger().warning(f"backend close failed: {exc}")
        self.backend, self.controller, self.loop = None, None, None

    # -- callbacks ----------------------------------------------------------------------------

    def _on_image(self, topic: str, msg: Image | CompressedImage, compressed: bool) -> None:
        controller, loop = self.controller, self.loop
        if controller is None or loop is None:
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
        if loop.on_frame(topic, stamp, rgb):
            self.rates[topic].tick(stamp)
        else:
            self._warn_throttled(f"reject.{topic}", f"rejected frame on {topic}: {controller.last_error}")

    def _on_joint_state(self, msg: JointState) -> None:
        """Robot state for backends that take it: joints whose name contains "gripper" or "finger" go to
        ``observation/gripper_position``, the others to ``observation/joint_position`` (sidecar backend)."""
        backend = self.backend
        setter = getattr(backend, "set_robot_state", None)
        if setter is None or len(msg.position) != len(msg.name):
            return
        pos = np.asarray(msg.position, dtype=np.float64)
        if not np.isfinite(pos).all():
            self._warn_throttled("joint_states", "ignoring a JointState with non-finite positions")
            return
        grip = np.array([("gripper" in n or "finger" in n) for n in msg.name], dtype=bool)
        setter(pos[~grip], pos[grip] if grip.any() else None)

    def _on_control(self) -> None:
        controller, loop = self.controller, self.loop
        if controller is None or loop is None or not self._active:
            return
        now = self.now()
        request = loop.step(now)
        if request is not None and self._pool is not None:
            self._pool.submit(self._run_request, loop, request)
        if self._cmd_pub is not None:
            cmd = controller.command_at(now)
            if cmd is not None:
                js = JointState()
                js.header.stamp = sec_to_stamp(now)
                js.name = list(controller.config.mapping.joint_names)
                js.position = [float(v) for v in cmd]
                self._cmd_pub.publish(js)

    def _run_request(self, loop: PolicyLoop, request: Any) -> None:
        """Worker thread: model work for one request (policy, then maybe a forecast)."""
        try:
            loop.run_request(request)
        except Exception as exc:  # never let the worker die silently
            self.get_logger().error(f"policy loop failed: {type(exc).__name__}: {exc}")

    def _publish_trajectory(self, traj: Trajectory) -> None:
        pub = self._traj_pub
        if pub is None:
            return
        if not np.isfinite(traj.positions).all():  # the controller never hands these out; belt and braces
            self.get_logger().error("refusing to publish a non-finite trajectory")
            return
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
            drift_exceeded = False
            if self.loop is not None:
                for k, v in self.loop.monitor_summary().items():
                    kv[k] = f"{v:.4g}" if isinstance(v, float) else str(v)
                drift_exceeded = self.loop.drift.exceeded
            if controller.consecutive_errors > 0:
                level, message = DiagnosticStatus.ERROR, f"inference failing: {controller.last_error}"
            elif not controller.armed:
                level, message = DiagnosticStatus.WARN, "disarmed"
            elif drift_exceeded:
                level, message = DiagnosticStatus.WARN, f"reality drifts from the forecast: {controller.last_error}"
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
