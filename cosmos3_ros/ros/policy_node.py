# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3_policy``: the lifecycle node that runs Cosmos 3 as the robot's policy.

A thin rclpy shell over :class:`cosmos3_ros.control.loop.PolicyLoop`: camera callbacks decode and hand frames to the
loop, a control timer steps it, model calls run on an :class:`~cosmos3_ros.control.worker.InferenceWorker` thread
(never in a callback), and the loop's events come back through :class:`NodeSink` as ROS messages (built in
:mod:`cosmos3_ros.ros.convert`). Parameters come from the settings schema (:mod:`cosmos3_ros.ros.parameters`).

Lifecycle: configure checks every parameter, then loads and warms up the backend; activate starts commanding;
deactivate stops commanding (one hold); cleanup releases the model. With ``autostart`` the node configures and
activates itself. Diagnostics are published in every state.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
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

from cosmos3_ros.backends import make_backend
from cosmos3_ros.control.config import (
    apply_runtime_values,
    build_controller,
    check_values,
    decode_options,
    loop_options,
)
from cosmos3_ros.control.controller import CLOCK_JUMP_S, POSE_DIMS
from cosmos3_ros.control.diagnostics import diagnose
from cosmos3_ros.control.events import LoopSink, Tee
from cosmos3_ros.control.frame_gate import FrameGate
from cosmos3_ros.control.loop import PolicyLoop
from cosmos3_ros.control.worker import InferenceWorker
from cosmos3_ros.core.backend import WaitsUntilReady
from cosmos3_ros.core.images import ImageDecodeError
from cosmos3_ros.core.params_file import check_overrides, read_params_file, ros_args_params
from cosmos3_ros.core.schema import BY_NAME, NODE_SETTINGS, SettingsError
from cosmos3_ros.core.stats import RateEstimator
from cosmos3_ros.ros import convert
from cosmos3_ros.ros.node_sink import NodeSink
from cosmos3_ros.ros.parameters import current_values, declare_all
from cosmos3_ros.ros.process import SHUTDOWN_WAIT_S, run_node

NODE_NAME = "cosmos3_policy"

_CAMERA_QOS = {
    "sensor_data": qos_profile_sensor_data,
    "reliable": QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE, history=QoSHistoryPolicy.KEEP_LAST),
    "system_default": qos_profile_system_default,
}


class PolicyNode(LifecycleNode):
    """Cosmos 3 policy lifecycle node (see the module docstring). ``argv`` is checked for parameter mistakes."""

    def __init__(self, node_name: str = NODE_NAME, *, argv: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.param_warnings = declare_all(self)
        self.param_warnings += self._check_param_sources(argv or [])
        for warning in self.param_warnings:
            self.get_logger().warning(warning)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.backend_state, self.backend_error = "unconfigured", ""
        #: Failures of parts other than the model (e.g. "recording"), reported as ERROR diagnostics until cleanup.
        self.faults: dict[str, str] = {}
        self.warmup_s = float("nan")
        self.loop: PolicyLoop | None = None
        self.rates: dict[str, RateEstimator] = {}
        self._backend: Any = None
        self._worker: InferenceWorker | None = None
        self._node_sink: NodeSink | None = None
        self._recorder: Any = None
        self._cmd_pub: Any = None
        self._subs: list[Any] = []
        self._loop_timers: list[Any] = []
        self._active = False
        self._decode = decode_options(self.values())
        self._gate: FrameGate | None = None
        self._jump_handle: Any = None
        self.faults: dict[str, str] = {}  # lasting failures outside the loop (recording): ERROR in diagnostics
        self._last_warn: dict[str, float] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()  # set at shutdown: interrupts a configure that waits for its backend
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics, MutuallyExclusiveCallbackGroup())
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_subscription(String, "~/instruction", self._on_instruction, 10)

    # -- helpers --------------------------------------------------------------------------------------------------

    def now(self) -> float:
        """Node clock time in seconds (sim time with use_sim_time)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def values(self) -> dict[str, Any]:
        """Current values of all declared parameters."""
        return current_values(self)

    def image_options(self) -> dict[str, Any]:
        """How camera images are decoded now (run-time parameters)."""
        return dataclasses.asdict(self._decode)

    def warn_throttled(self, key: str, message: str, period: float = 5.0) -> None:
        """Log a warning at most once per ``period`` seconds per ``key``."""
        t = time.monotonic()
        if t - self._last_warn.get(key, -1e9) >= period:
            self._last_warn[key] = t
            self.get_logger().warning(message)

    def _check_param_sources(self, argv: Sequence[str]) -> list[str]:
        files, overrides = ros_args_params(argv)
        fqn = self.get_fully_qualified_name()
        out = []
        for path in files:
            out += read_params_file(path, fqn).warnings()
        return out + check_overrides(overrides)

    # -- parameters -----------------------------------------------------------------------------------------------

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate-only: reject bad values with a reason naming them; nothing is applied here."""
        values = self.values()
        try:
            for p in params:
                spec = BY_NAME.get(p.name)
                if spec is not None:
                    values[p.name] = spec.validate(p.value)
            check_values(values)
        except (SettingsError, ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        names = [p.name for p in params if p.name in BY_NAME]
        if not names:  # rclpy's own parameters (qos_overrides.*, use_sim_time)
            return
        values = self.values()
        self._decode = decode_options(values)
        with self._lock:
            if self.loop is not None:
                apply_runtime_values(self.loop, values)
        self.get_logger().info(f"parameters updated: {names}")

    def _on_instruction(self, msg: String) -> None:
        result = self.set_parameters([Parameter("prompt", value=msg.data)])[0]
        if not result.successful:
            self.loop_note("rejected_instructions.invalid", result.reason)
            self.get_logger().warning(f"instruction rejected: {result.reason}")
        else:
            self.get_logger().info(f"new instruction: {msg.data[:200]!r}")

    def loop_note(self, key: str, message: str) -> None:
        """Count an event in the loop's counters (when configured)."""
        loop = self.loop
        if loop is not None:
            loop.controller.note(key, message)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        loop = self.loop
        if loop is None:
            response.success, response.message = False, "not configured"
            return response
        loop.arm(bool(request.data))
        response.success = True
        response.message = "armed" if request.data else "disarmed (hold published if commanding)"
        self.get_logger().info(response.message)
        return response

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def _fail(self, message: str) -> TransitionCallbackReturn:
        self.backend_state, self.backend_error = "error", message
        self.get_logger().error(message)
        return TransitionCallbackReturn.FAILURE

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check every parameter (before anything loads), load and warm up the backend, create inputs and outputs.

        A failure at any point leaves the node unconfigured with the reason at ERROR in the log and diagnostics.
        """
        values = self.values()
        try:
            for spec in NODE_SETTINGS:
                spec.validate(values[spec.name])
            check_values(values)
            controller = build_controller(values)
        except (SettingsError, ValueError) as exc:
            return self._fail(f"configure failed: bad configuration: {exc}")
        try:
            backend = self._load_backend(values, controller.settings)
        except Exception as exc:
            return self._fail(f"configure failed: backend failed to load: {type(exc).__name__}: {exc}")
        try:
            self._build(values, controller, backend)
        except Exception as exc:
            self.teardown()
            return self._fail(f"configure failed: {type(exc).__name__}: {exc}")
        self.backend_state, self.backend_error = "ready", ""
        info = backend.info()
        cfg, s = controller.config, controller.settings
        self.get_logger().info(
            f"configured: model {info.model} on {info.device} ({info.dtype}), cameras {list(cfg.cameras)}, "
            f"domain {s.domain_name}, chunk {s.action_chunk_size} @ {s.fps:g} Hz, replan every {cfg.replan_every}"
        )
        return TransitionCallbackReturn.SUCCESS

    def _load_backend(self, values: dict[str, Any], settings: Any) -> Any:
        """The backend, ready (a starting sidecar waited for) and warm; closed again if any of that fails."""
        self.backend_state = "loading"
        backend = make_backend(values)
        try:
            if isinstance(backend, WaitsUntilReady) and values["sidecar_wait"] > 0:
                limit = values["sidecar_wait"]

                def waiting(waited: float, why: str) -> None:
                    self.backend_state = f"waiting_for_backend ({waited:.0f} of {limit:.0f} s)"
                    self.warn_throttled("wait", f"waiting for the backend ({waited:.0f} of {limit:.0f} s): {why}", 10)

                backend.wait_ready(limit, stop=self._closing, on_wait=waiting)
            if values["warmup"]:
                self.backend_state = "warming_up"
                self.warmup_s = backend.warmup(settings)
                self.get_logger().info(f"backend warm-up took {self.warmup_s:.2f} s")
        except BaseException:
            backend.close()
            raise
        return backend

    def _build(self, values: dict[str, Any], controller: Any, backend: Any) -> None:
        """The loop, its sinks (recording), publishers, subscriptions and timers around a loaded backend."""
        with self._lock:
            self._backend = backend
        sinks: list[LoopSink] = []
        if values["record_path"]:
            from cosmos3_ros.bags.recorder import BagRecorder
            from cosmos3_ros.bags.report_config import recording_metadata, run_config
            from cosmos3_ros.bags.sinks import RecorderSink

            name = self.get_fully_qualified_name()
            config = run_config(values, kind="live", node=name)  # what the report needs to reproduce the run
            recorder = BagRecorder(
                values["record_path"],
                image_every_n=int(values["record_image_every"]),
                on_error=self._on_record_error,
                custom_data=recording_metadata(config),
            )
            self._recorder = recorder.start()
            sinks.append(RecorderSink.for_loop(recorder, name, values, controller, config, self.now))
            self.get_logger().info(f"recording to {values['record_path']} (MCAP)")
        self._node_sink = NodeSink(
            self, values["drift_metric"], POSE_DIMS if values["action_space"] == "ee_pose" else 0, values["dry_run"]
        )
        loop = PolicyLoop(controller, backend, loop_options(values), Tee(self._node_sink, *sinks), self.now)
        if values["warmup"]:  # measured latencies, so even the first forecast never delays a policy call
            loop.prime_on_first_request()
        with self._lock:
            self.loop = loop
            self._worker = InferenceWorker()
        if values["output_mode"] == "joint_state":
            topic = "~/dry_run/joint_command" if values["dry_run"] else values["joint_command_topic"]
            self._cmd_pub = self.create_lifecycle_publisher(JointState, topic, 10)
        self._gate = FrameGate(controller.settings.fps)
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(seconds=-CLOCK_JUMP_S), on_clock_change=True),
            post_callback=self._on_clock_jump,
        )
        self._create_inputs(values)
        self._loop_timers.append(
            self.create_timer(1.0 / values["control_rate"], self._on_control, MutuallyExclusiveCallbackGroup())
        )

    def _create_inputs(self, values: dict[str, Any]) -> None:
        # One callback group per input: no input waits for another (a burst of camera frames never delays the robot
        # state or the control timer).
        qos = _CAMERA_QOS[values["camera_qos"]]
        for topic in values["camera_topics"]:
            group = MutuallyExclusiveCallbackGroup()
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
        if values["joint_states_topic"]:
            sub = self.create_subscription(
                JointState,
                values["joint_states_topic"],
                self._on_joint_state,
                10,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
            self._subs.append(sub)
        if values["ee_pose_topic"]:
            sub = self.create_subscription(
                PoseStamped,
                values["ee_pose_topic"],
                self._on_ee_pose,
                10,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
            self._subs.append(sub)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start commanding."""
        self._active = True
        self.get_logger().info("active: commanding")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop commanding: one hold if a chunk was running (publishers are still active here)."""
        if self.loop is not None:
            self.loop.stop()
        self._active = False
        self.get_logger().info("inactive: not commanding")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model and all subscriptions."""
        self.teardown()
        self.faults.clear()
        self.backend_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything."""
        self.teardown()
        self.backend_state = "shutdown"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Go back to unconfigured after an error in a transition."""
        self.teardown()
        self.backend_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def request_shutdown(self) -> None:
        """Interrupt anything that waits (a configure waiting for its backend); the process is ending."""
        self._closing.set()

    def teardown(self, wait_s: float = SHUTDOWN_WAIT_S) -> bool:
        """Release subscriptions, timers, publishers, recording and backend without waiting long for a model call.

        Returns True when no model call is left running (False: it finishes in the background, its result is
        discarded and the backend is closed after it). Idempotent; diagnostics keep running.
        """
        self._active = False
        with self._lock:
            loop, worker, backend, sink = self.loop, self._worker, self._backend, self._node_sink
            self.loop, self._worker, self._backend, self._node_sink = None, None, None, None
        if self._jump_handle is not None:
            self._jump_handle.unregister()
            self._jump_handle = None
        self._gate = None
        for timer in self._loop_timers:
            self.destroy_timer(timer)
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._loop_timers, self._subs = [], []
        if loop is not None:
            loop.detach()
        idle = True
        if worker is not None:
            idle = worker.stop(wait_s, on_idle=_closer(backend, self.get_logger().warning))
        elif backend is not None:
            _closer(backend, self.get_logger().warning)()
        if sink is not None:
            sink.close()
        if self._cmd_pub is not None:
            self.destroy_lifecycle_publisher(self._cmd_pub)
            self._cmd_pub = None
        if self._recorder is not None:
            self._recorder.close()
            self.get_logger().info(f"recording closed: {self._recorder.stats()}")
            self._recorder = None
        self.rates = {}
        return idle

    # -- callbacks ------------------------------------------------------------------------------------------------

    def _on_image(self, topic: str, msg: Image | CompressedImage, compressed: bool) -> None:
        loop, gate = self.loop, self._gate
        if loop is None or gate is None:
            return
        stamp = convert.stamp_to_sec(msg.header.stamp)
        if stamp == 0.0:
            stamp = self.now()
            loop.controller.note("zero_stamp_frames")
        if not gate.wanted(topic, stamp):  # a fast camera: a few frames per policy period are decoded, not all
            loop.controller.note(f"decimated.{topic}")
            return
        try:
            if compressed:
                rgb = convert.compressed_msg_to_rgb(msg, self._decode)
            else:
                rgb = convert.image_msg_to_rgb(msg, self._decode)
        except ImageDecodeError as exc:
            loop.reject(topic, stamp, exc.reason, str(exc))
            return
        if loop.on_frame(topic, stamp, rgb):
            gate.accepted(topic, stamp)
            rate = self.rates.get(topic)
            if rate is not None:
                rate.tick(stamp)

    def _on_clock_jump(self, jump: Any) -> None:
        """rclpy's clock jump callback: the clock went back (a looping bag, a simulator reset) or changed source."""
        loop, gate = self.loop, self._gate
        if loop is None:
            return
        if gate is not None:
            gate.reset()
        loop.on_clock_jump()
        self.get_logger().warning("the clock jumped back: buffered frames dropped, one hold, resuming from new frames")

    def _on_joint_state(self, msg: JointState) -> None:
        loop = self.loop
        if loop is None:
            return
        stamp = convert.stamp_to_sec(msg.header.stamp) or self.now()
        try:
            positions = convert.joint_positions(msg, loop.controller.config.state_names)
        except ValueError as exc:
            loop.reject("robot_state", stamp, "state_joints", str(exc))
            return
        loop.on_state(stamp, positions)

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        loop = self.loop
        if loop is not None:
            loop.on_pose(convert.stamp_to_sec(msg.header.stamp) or self.now(), *convert.pose_from_msg(msg))

    def _on_control(self) -> None:
        loop, worker = self.loop, self._worker
        if loop is None or worker is None or not self._active:
            return
        now = self.now()
        request = loop.step(now)
        if request is not None and not worker.submit(lambda: loop.run_request(request)):
            loop.controller.note("dropped_requests")
            loop.controller.withdraw(request)  # never leave it "in flight": the next tick asks again
        if self._cmd_pub is not None:
            cmd = loop.controller.command_at(now)
            if cmd is not None:
                self._cmd_pub.publish(convert.joint_state_msg(loop.controller.config.mapping.joint_names, cmd, now))

    # -- diagnostics ----------------------------------------------------------------------------------------------

    def _on_record_error(self, exc: BaseException) -> None:
        """The recorder's writer thread failed (disk full...): the bag keeps what was written; say so loudly."""
        self.faults["recording"] = f"{type(exc).__name__}: {exc} (the bag is readable up to this point)"
        self.get_logger().error(f"recording failed: {self.faults['recording']}")

    def diagnosis(self) -> Any:
        """The node's current :class:`~cosmos3_ros.control.diagnostics.Diagnosis`."""
        now = self.now()
        extra = {"warmup_s": f"{self.warmup_s:.2f}", "parameter_warnings": str(len(self.param_warnings))}
        if self.param_warnings:
            extra["parameter_warning"] = self.param_warnings[0]
        rates = {t: r.rate(now) for t, r in list(self.rates.items())}
        return diagnose(
            state=self.backend_state,
            error=self.backend_error,
            active=self._active,
            loop=self.loop,
            input_rates=rates,
            extra=extra,
            faults=dict(self.faults),
        )

    def _publish_diagnostics(self) -> None:
        msg = convert.diagnostic_array(
            self.diagnosis(), f"{self.get_name()}: policy", NODE_NAME, self.get_clock().now().to_msg()
        )
        try:
            self._diag_pub.publish(msg)
        except Exception:  # the context is shutting down
            pass


def _closer(backend: Any, warn: Callable[[str], None]) -> Callable[[], None]:
    def close() -> None:
        if backend is None:
            return
        try:
            backend.close()
        except Exception as exc:  # closing must not raise out of a transition
            warn(f"backend close failed: {exc}")

    return close


def main(args: list[str] | None = None) -> int:
    """``policy_node`` / ``ros2 run cosmos3_ros policy_node``. SIGINT and SIGTERM (however many) stop it cleanly."""
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    sys.exit(main())
