# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The policy node in a real rclpy graph with the real pipeline and the tiny checkpoint."""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph import Camera, Collector, Graph
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.policy_node import PolicyNode

TOPIC = "/cam/image_raw"
FRAME = moving_scene_frame(0.0, 120, 160)


def _params(tiny_model, **over):
    base = {
        "model": str(tiny_model),
        "device": "cpu",
        "camera_topics": [TOPIC],
        "num_steps": 2,
        "image_size": 256,
        "action_chunk_size": 8,
        "fps": 5.0,
        "warmup": False,
        "max_observation_age": 2.0,
        "forecast_every": 0,  # forecasting has its own tests (test_monitoring_node.py)
    }
    base.update(over)
    return [Parameter(k, value=v) for k, v in base.items()]


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def _start(graph: Graph, tiny_model, activate=True, **over) -> PolicyNode:
    node = graph.add(PolicyNode(context=graph.context, parameter_overrides=_params(tiny_model, **over)))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    if activate:
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return node


def _stream(graph: Graph, cam: Camera, seconds: float, hz: float = 10.0, stamp_offset: float = 0.0) -> None:
    t_end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < t_end:
        now = cam.node.get_clock().now().nanoseconds * 1e-9
        cam.publish(moving_scene_frame(k / hz, 120, 160), stamp=now + stamp_offset)
        k += 1
        time.sleep(1.0 / hz)


def test_chunks_are_well_formed_trajectories(graph, tiny_model):
    node = _start(graph, tiny_model)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    t_pub = time.time()
    chunks = lambda: [m for m in got.snapshot() if len(m.points) > 1]  # noqa: E731
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(chunks()) >= 2)[1], timeout=30)
    msg = chunks()[0]
    assert list(msg.joint_names) == [
        "x",
        "y",
        "z",
        "rot6d_0",
        "rot6d_1",
        "rot6d_2",
        "rot6d_3",
        "rot6d_4",
        "rot6d_5",
        "gripper",
    ]
    assert len(msg.points) == 8
    tfs = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
    np.testing.assert_allclose(tfs, np.arange(1, 9) / 5.0, atol=1e-6)
    for p in msg.points:
        assert len(p.positions) == 10 and np.isfinite(p.positions).all()
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    assert abs(stamp - t_pub) < 30  # the observation time, on the node clock
    # The published stamp is the stamp of a frame the test sent.
    assert node.controller.counters.get("chunks_published") >= 2


def test_stamp_equals_observation_and_actions_equal_runtime(graph, tiny_model):
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    node = _start(graph, tiny_model)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    stamp = test.get_clock().now().nanoseconds * 1e-9
    # Best-effort camera QoS: repeat the same frame until discovery is done (repeats are rejected as out of order).
    graph.wait_for(lambda: (cam.publish(FRAME, stamp=stamp), len(got) >= 1)[1], timeout=30, period=0.1)
    msg = got.snapshot()[0]
    assert msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 == pytest.approx(stamp, abs=1e-6)
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu")
    expected = rt.policy(FRAME, node.controller.settings).actions
    np.testing.assert_allclose([p.positions for p in msg.points], expected, rtol=1e-6, atol=1e-6)


def test_prompt_change_via_instruction_topic(graph, tiny_model):
    node = _start(graph, tiny_model)
    test = graph.node("tester")
    pub = test.create_publisher(String, "/cosmos3_policy/instruction", 10)
    graph.wait_for(
        lambda: (pub.publish(String(data="wipe the table")), node.controller.settings.prompt == "wipe the table")[1],
        timeout=10,
    )
    assert node.get_parameter("prompt").value == "wipe the table"


def test_enable_service_disarms_with_hold_and_rearms(graph, tiny_model):
    node = _start(graph, tiny_model)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    client = test.create_client(SetBool, "/cosmos3_policy/enable")
    assert client.wait_for_service(timeout_sec=10)
    graph.wait_for(lambda: (cam.publish(FRAME), len(got) >= 1)[1], timeout=30)
    resp = graph.wait_for(lambda: client.call(SetBool.Request(data=False), timeout_sec=5))
    assert resp.success and not node.controller.armed
    hold = graph.wait_for(lambda: [m for m in got.snapshot() if len(m.points) == 1])[0]
    assert hold.header.stamp.sec == 0 and hold.header.stamp.nanosec == 0
    n = len(got)
    _stream(graph, cam, 1.0)
    assert len(got) == n  # disarmed: nothing more
    assert client.call(SetBool.Request(data=True), timeout_sec=5).success
    graph.wait_for(lambda: (cam.publish(FRAME), len(got) > n)[1], timeout=30)


def test_hold_on_backend_failure_and_error_diagnostics(graph, tiny_model):
    import torch

    node = _start(graph, tiny_model)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    diags = Collector(test, DiagnosticArray, "/diagnostics")
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(got) >= 1)[1], timeout=30)
    with torch.no_grad():  # the model starts producing NaN: every call now fails validation
        node.backend.pipe.transformer.norm_moe_gen.weight.fill_(float("nan"))
    graph.wait_for(
        lambda: (
            cam.publish(moving_scene_frame(time.time(), 120, 160)),
            node.controller.counters.get("inference_errors") >= 1,
        )[1],
        timeout=30,
    )
    graph.wait_for(lambda: any(len(m.points) == 1 for m in got.snapshot()), timeout=5)
    _stream(graph, cam, 1.0)  # keeps failing: no further holds, no chunks
    msgs = got.snapshot()
    holds = [m for m in msgs if len(m.points) == 1]
    assert len(holds) == 1, "exactly one hold, then silence"
    assert len(msgs[msgs.index(holds[0]) + 1 :]) == 0
    for m in msgs:
        for p in m.points:
            assert np.isfinite(p.positions).all()
    status = graph.wait_for(
        lambda: [s for a in diags.snapshot() for s in a.status if s.level == DiagnosticStatus.ERROR], timeout=5
    )[0]
    assert "inference failing" in status.message
    assert "NonFiniteOutputError" in dict((kv.key, kv.value) for kv in status.values)["last_error"]


def test_stale_input_produces_no_chunk(graph, tiny_model):
    node = _start(graph, tiny_model, max_observation_age=0.3)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    _stream(graph, cam, 1.5, stamp_offset=-5.0)
    assert len(got) == 0
    assert node.controller.counters.get("no_observation.stale") > 0
    assert node.controller.counters.get("requests") == 0


def _bad_images() -> dict[str, Image]:
    good = Image(height=120, width=160, encoding="rgb8", step=480, data=FRAME.tobytes())
    out = {}
    out["encoding"] = Image(height=120, width=160, encoding="yuv422_weird", step=480, data=FRAME.tobytes())
    out["step"] = Image(height=120, width=160, encoding="rgb8", step=100, data=FRAME.tobytes())
    out["truncated"] = Image(height=120, width=160, encoding="rgb8", step=480, data=FRAME.tobytes()[:1000])
    out["empty"] = Image(height=0, width=0, encoding="rgb8", step=0, data=b"")
    out["size"] = Image(height=120, width=0, encoding="rgb8", step=480, data=FRAME.tobytes())
    out["good"] = good
    return out


def test_malformed_images_rejected_node_keeps_running(graph, tiny_model):
    node = _start(graph, tiny_model)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    bad = _bad_images()

    def send_bad() -> bool:
        for key, msg in bad.items():
            if key == "good":
                continue
            msg.header.stamp = test.get_clock().now().to_msg()
            cam.publish_raw(msg)
        time.sleep(0.05)
        rejected = node.controller.counters.snapshot()
        return sum(v for k, v in rejected.items() if k.startswith("rejected_frames.")) >= 10

    graph.wait_for(send_bad, timeout=20, period=0.0)
    assert len(got) == 0
    counters = node.controller.counters.snapshot()
    for reason in ("encoding", "step", "truncated"):
        assert counters.get(f"rejected_frames.{reason}", 0) >= 1, counters
    graph.wait_for(lambda: (cam.publish(FRAME), len(got) >= 1)[1], timeout=30)


def test_two_cameras_side_by_side(graph, tiny_model):
    node = _start(
        graph,
        tiny_model,
        camera_topics=["/front/image_raw", "/wrist/image_raw"],
        camera_layout="side_by_side",
        view_point="concat_view",
    )
    test = graph.node("tester")
    front, wrist = Camera(test, "/front/image_raw"), Camera(test, "/wrist/image_raw")
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    # Unsynchronised cameras (1 s apart) give no chunk.
    for _ in range(5):
        now = test.get_clock().now().nanoseconds * 1e-9
        front.publish(FRAME, stamp=now)
        wrist.publish(FRAME, stamp=now - 1.0)
        time.sleep(0.1)
    assert len(got) == 0 and node.controller.counters.get("no_observation.unsynced") > 0

    def both():
        now = test.get_clock().now().nanoseconds * 1e-9
        front.publish(FRAME, stamp=now)
        wrist.publish(moving_scene_frame(1.0, 120, 160), stamp=now + 0.01)
        return len(got) >= 1

    graph.wait_for(both, timeout=30)
    assert node.controller.counters.get("requests") >= 1


def test_parameter_validation(graph, tiny_model):
    node = _start(graph, tiny_model)
    bad = [
        Parameter("num_steps", value=0),
        Parameter("view_point", value="top_down"),
        Parameter("guidance", value=0.5),
        Parameter("seed", value=-3),
        Parameter("model", value="/elsewhere"),
        Parameter("shift", value=-1.0),
    ]
    for p in bad:
        result = node.set_parameters([p])[0]
        assert not result.successful, p.name
        assert result.reason
    assert node.set_parameters([Parameter("num_steps", value=3)])[0].successful
    assert node.controller.settings.num_steps == 3
    assert node.set_parameters([Parameter("shift", value=5.0)])[0].successful
    assert node.controller.settings.shift == 5.0


def test_bad_configuration_fails_configure_cleanly(graph, tiny_model, tmp_path):
    node = graph.add(PolicyNode(context=graph.context, parameter_overrides=_params(tiny_model, joint_names=["a", "b"])))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert "joint_names" in node.backend_error
    node2 = graph.add(PolicyNode("second", context=graph.context, parameter_overrides=_params(tmp_path / "missing")))
    assert node2.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node2.backend_state == "error" and "no such directory" in node2.backend_error
    assert node2.diagnostic_status().level == DiagnosticStatus.ERROR


def test_lifecycle_transitions(graph, tiny_model):
    node = _start(graph, tiny_model, activate=False)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    _stream(graph, cam, 0.8)
    assert len(got) == 0  # configured but inactive: no commands
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(got) >= 1)[1], timeout=30)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    graph.wait_for(lambda: any(len(m.points) == 1 for m in got.snapshot()), timeout=5)
    n = len(got)
    _stream(graph, cam, 0.8)
    assert len(got) == n
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.backend is None and node.controller is None
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(got) > n)[1], timeout=30)


def test_joint_state_streaming(graph, tiny_model):
    _start(graph, tiny_model, output_mode="joint_state", joint_command_topic="/joint_command")
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    cmds = Collector(test, JointState, "/joint_command")
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(cmds) >= 10)[1], timeout=30)
    m = cmds.snapshot()[-1]
    assert len(m.name) == 10 and len(m.position) == 10 and np.isfinite(m.position).all()


def test_sim_time_with_clock_publisher(graph, tiny_model):
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    node = _start(graph, tiny_model, use_sim_time=True)
    test = graph.node("tester")
    clock_pub = test.create_publisher(Clock, "/clock", 10)
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    sim = 1000.0

    def tick():
        nonlocal sim
        sim += 0.05
        clock_pub.publish(Clock(clock=Time(sec=int(sim), nanosec=int((sim % 1) * 1e9))))
        cam.publish(FRAME, stamp=sim)
        return len(got) >= 1

    graph.wait_for(tick, timeout=30, period=0.05)
    msg = got.snapshot()[0]
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    assert 1000.0 < stamp < sim + 1e-6  # observation time in sim time, not wall time
    assert abs(node.now() - sim) < 1.0


def test_compressed_camera_topic(graph, tiny_model):
    import io

    from PIL import Image as PILImage
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    topic = "/cam/image_raw/compressed"
    node = _start(graph, tiny_model, camera_topics=[topic])
    test = graph.node("tester")
    pub = test.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    buf = io.BytesIO()
    PILImage.fromarray(FRAME).save(buf, format="JPEG", quality=90)

    def send() -> bool:
        msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=buf.getvalue())
        msg.header.stamp = test.get_clock().now().to_msg()
        pub.publish(msg)
        bad = CompressedImage(format="jpeg", data=buf.getvalue()[:200])  # truncated jpeg
        bad.header.stamp = test.get_clock().now().to_msg()
        pub.publish(bad)
        return len(got) >= 1

    graph.wait_for(send, timeout=30, period=0.1)
    assert node.controller.counters.get(f"frames.{topic}") >= 1
    assert sum(v for k, v in node.controller.counters.snapshot().items() if k.startswith("rejected_frames.")) >= 1
