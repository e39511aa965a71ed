# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The policy node in a real rclpy graph: the fake backend for the loop behaviour, the real tiny model end to end."""

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


pytestmark = pytest.mark.ros


def _params(**over):
    base = {
        "backend": "fake",
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


def _start(graph: Graph, activate=True, **over) -> PolicyNode:
    node = graph.add(PolicyNode(context=graph.context, parameter_overrides=_params(**over)))
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


def test_chunks_are_well_formed_trajectories(graph):
    node = _start(graph)
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
    assert node.loop.controller.counters.get("chunks_published") >= 2


@pytest.mark.slow
def test_stamp_equals_observation_and_actions_equal_runtime(graph, tiny_model):
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    # 8 rows at 1 Hz: room for a slow call on a loaded CPU (rows already due on arrival are not published)
    node = _start(graph, backend="in_process", model=str(tiny_model), device="cpu", fps=1.0)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    stamp = test.get_clock().now().nanoseconds * 1e-9
    # Best-effort camera QoS: repeat the same frame until discovery is done (repeats are rejected as out of order).
    graph.wait_for(lambda: (cam.publish(FRAME, stamp=stamp), len(got) >= 1)[1], timeout=30, period=0.1)
    msg = got.snapshot()[0]
    assert msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 == pytest.approx(stamp, abs=1e-6)
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu")
    expected = rt.policy(FRAME, node.loop.controller.settings).actions
    points = [p.positions for p in msg.points]
    assert len(points) >= 2
    np.testing.assert_allclose(points, expected[-len(points) :], rtol=1e-6, atol=1e-6)


def test_prompt_change_via_instruction_topic(graph):
    node = _start(graph)
    test = graph.node("tester")
    pub = test.create_publisher(String, "/cosmos3_policy/instruction", 10)
    graph.wait_for(
        lambda: (pub.publish(String(data="wipe the table")), node.loop.controller.settings.prompt == "wipe the table")[
            1
        ],
        timeout=10,
    )
    assert node.get_parameter("prompt").value == "wipe the table"


def test_enable_service_disarms_with_hold_and_rearms(graph):
    node = _start(graph)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    client = test.create_client(SetBool, "/cosmos3_policy/enable")
    assert client.wait_for_service(timeout_sec=10)
    graph.wait_for(lambda: (cam.publish(FRAME), len(got) >= 1)[1], timeout=30)
    resp = graph.wait_for(lambda: client.call(SetBool.Request(data=False), timeout_sec=5))
    assert resp.success and not node.loop.controller.armed
    hold = graph.wait_for(lambda: [m for m in got.snapshot() if len(m.points) == 1])[0]
    assert hold.header.stamp.sec == 0 and hold.header.stamp.nanosec == 0
    n = len(got)
    _stream(graph, cam, 1.0)
    assert len(got) == n  # disarmed: nothing more
    assert client.call(SetBool.Request(data=True), timeout_sec=5).success
    graph.wait_for(lambda: (cam.publish(FRAME), len(got) > n)[1], timeout=30)


def test_hold_on_backend_failure_and_error_diagnostics(graph):
    node = _start(graph)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    diags = Collector(test, DiagnosticArray, "/diagnostics")
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(got) >= 1)[1], timeout=30)
    node.loop.backend.inject("nonfinite", count=1000)  # the model starts producing NaN: every call now fails
    graph.wait_for(
        lambda: (
            cam.publish(moving_scene_frame(time.time(), 120, 160)),
            node.loop.controller.counters.get("inference_errors") >= 1,
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


def test_stale_input_produces_no_chunk(graph):
    node = _start(graph, max_observation_age=0.3)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    _stream(graph, cam, 1.5, stamp_offset=-5.0)
    assert len(got) == 0
    assert node.loop.controller.counters.get("no_observation.stale") > 0
    assert node.loop.controller.counters.get("requests") == 0


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


def test_malformed_images_rejected_node_keeps_running(graph):
    node = _start(graph)
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
        rejected = node.loop.controller.counters.snapshot()
        return sum(v for k, v in rejected.items() if k.startswith("rejected_frames.")) >= 10

    graph.wait_for(send_bad, timeout=20, period=0.0)
    assert len(got) == 0
    counters = node.loop.controller.counters.snapshot()
    for reason in ("encoding", "step", "truncated"):
        assert counters.get(f"rejected_frames.{reason}", 0) >= 1, counters
    graph.wait_for(lambda: (cam.publish(FRAME), len(got) >= 1)[1], timeout=30)


def test_two_cameras_side_by_side(graph):
    node = _start(
        graph,
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
    assert len(got) == 0 and node.loop.controller.counters.get("no_observation.unsynced") > 0

    def both():
        now = test.get_clock().now().nanoseconds * 1e-9
        front.publish(FRAME, stamp=now)
        wrist.publish(moving_scene_frame(1.0, 120, 160), stamp=now + 0.01)
        return len(got) >= 1

    graph.wait_for(both, timeout=30)
    assert node.loop.controller.counters.get("requests") >= 1


def test_parameter_validation(graph):
    node = _start(graph)
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
    assert node.loop.controller.settings.num_steps == 3
    assert node.set_parameters([Parameter("shift", value=5.0)])[0].successful
    assert node.loop.controller.settings.shift == 5.0
    # Values the model cannot run are refused when set, with the schema's bounds (never accepted, then failing).
    for name, value, words in (("shift", 1e-300, "0.1"), ("num_steps", 300, "200"), ("prompt", "x" * 5000, "4096")):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and name in result.reason and words in result.reason


def test_bad_configuration_fails_configure_cleanly(graph, tmp_path):
    node = graph.add(PolicyNode(context=graph.context, parameter_overrides=_params(joint_names=["a", "b"])))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert "joint_names" in node.backend_error
    missing = _params(backend="in_process", model=str(tmp_path / "missing"))
    node2 = graph.add(PolicyNode("second", context=graph.context, parameter_overrides=missing))
    assert node2.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node2.backend_state == "error" and "no such directory" in node2.backend_error
    assert node2.diagnosis().level == DiagnosticStatus.ERROR[0]


def test_lifecycle_transitions(graph):
    node = _start(graph, activate=False)
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
    assert node.loop is None and node.backend_state == "unconfigured"
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(got) > n)[1], timeout=30)


def test_joint_state_streaming(graph):
    _start(graph, output_mode="joint_state", joint_command_topic="/joint_command")
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    cmds = Collector(test, JointState, "/joint_command")
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(cmds) >= 10)[1], timeout=30)
    m = cmds.snapshot()[-1]
    assert len(m.name) == 10 and len(m.position) == 10 and np.isfinite(m.position).all()


def test_sim_time_with_clock_publisher(graph):
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    node = _start(graph, use_sim_time=True)
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


def test_compressed_camera_topic(graph):
    import io

    from PIL import Image as PILImage
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    topic = "/cam/image_raw/compressed"
    node = _start(graph, camera_topics=[topic])
    test = graph.node("tester")
    pub = test.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    buf = io.BytesIO()
    PILImage.fromarray(FRAME).save(buf, format="JPEG", quality=90)

    def send(data: bytes, fmt: str) -> None:
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp = test.get_clock().now().to_msg()
        pub.publish(msg)

    counters = node.loop.controller.counters
    truncated = buf.getvalue()[:200]
    graph.wait_for(lambda: (send(truncated, "jpeg"), counters.get("rejected_frames.truncated") >= 1)[1], timeout=30)
    graph.wait_for(lambda: (send(buf.getvalue(), "rgb8; jpeg compressed bgr8"), len(got) >= 1)[1], timeout=30)
    assert counters.get(f"frames.{topic}") >= 1


def _node_with_file(graph: Graph, path, name: str = "cosmos3_policy", ns: str = "") -> PolicyNode:
    argv = ["policy_node", "--ros-args", "--params-file", str(path)]
    return graph.add(PolicyNode(name, namespace=ns, context=graph.context, cli_args=argv[1:], argv=argv))


def test_flat_parameter_file_stops_the_node_with_a_clear_error(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "flat.yaml"
    path.write_text("num_steps: 4\nprompt: hi\n")  # rcl refuses this file outright
    r = subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.ros.policy_node", "--ros-args", "--params-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "has no `ros__parameters`" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "text, expected",
    [
        ("other_node:\n  ros__parameters:\n    num_steps: 4\n", "no section applies to node /cosmos3_policy"),
        ("/**:\n  ros__parameters:\n    num_stpes: 4\n", "did you mean 'num_steps'"),
    ],
    ids=["other-node", "misspelled"],
)
def test_parameter_file_mistakes_are_reported_not_silently_dropped(graph, tmp_path, text, expected):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    node = _node_with_file(graph, path)
    assert any(expected in w for w in node.param_warnings), node.param_warnings
    assert node.diagnosis().values["parameter_warnings"] == str(len(node.param_warnings))


def test_parameter_file_for_this_node_name_and_namespace_applies_without_warnings(graph, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/robot1/cosmos3_policy:\n  ros__parameters:\n    num_steps: 4\n    backend: fake\n")
    node = _node_with_file(graph, path, ns="/robot1")
    assert node.param_warnings == []
    assert node.get_parameter("num_steps").value == 4


def test_out_of_range_value_in_a_parameter_file_does_not_crash_the_node(graph, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    num_steps: 5000\n    backend: fake\n")
    node = _node_with_file(graph, path)  # rclpy refuses the value: the node starts on the default and says so
    assert any("num_steps" in w for w in node.param_warnings)
    assert node.get_parameter("num_steps").value == 30


# Each run-time parameter, set on the live node, reaches the loop the next cycle uses (the behaviour each one
# changes is tested directly on PolicyLoop in test_loop.py).
RUNTIME_PROBES = {
    "prompt": ("wipe", lambda n: n.loop.controller.settings.prompt),
    "num_steps": (3, lambda n: n.loop.controller.settings.num_steps),
    "guidance": (2.5, lambda n: n.loop.controller.settings.guidance),
    "guidance_steps": (1, lambda n: n.loop.controller.settings.guidance_steps),
    "shift": (5.0, lambda n: n.loop.controller.settings.shift),
    "seed": (9, lambda n: n.loop.controller.settings.seed),
    "view_point": ("wrist_view", lambda n: n.loop.controller.settings.view_point),
    "negative_prompt": ("blurry", lambda n: n.loop.controller.settings.negative_prompt),
    "use_system_prompt": (True, lambda n: n.loop.controller.settings.use_system_prompt),
    "sync_tolerance": (0.2, lambda n: n.loop.controller.config.sync_tolerance),
    "max_observation_age": (3.0, lambda n: n.loop.controller.config.max_observation_age),
    "max_depth_mm": (5000, lambda n: n.image_options()["max_depth_mm"]),
    "max_clock_skew": (0.25, lambda n: n.loop.controller.config.max_clock_skew),
    "forecast_every": (3, lambda n: n.loop.options.forecast_every),
    "drift_threshold": (0.25, lambda n: n.loop.drift.threshold),
    "disarm_on_drift": (True, lambda n: n.loop.options.disarm_on_drift),
}


def test_every_runtime_parameter_has_a_probe():
    from cosmos3_ros.core.schema import RUNTIME_SETTINGS

    assert set(RUNTIME_PROBES) == {s.name for s in RUNTIME_SETTINGS}


@pytest.mark.parametrize("name", sorted(RUNTIME_PROBES))
def test_runtime_parameter_reaches_the_running_loop(graph, name):
    node = _start(graph)
    value, probe = RUNTIME_PROBES[name]
    assert probe(node) != value
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert result.successful, result.reason
    assert probe(node) == value


def test_read_only_parameters_are_refused_at_run_time(graph):
    node = _start(graph)
    for name, value in (("camera_topics", ["/x"]), ("domain_name", "droid"), ("backend", "sidecar")):
        assert not node.set_parameters([Parameter(name, value=value)])[0].successful


def test_sampling_change_is_used_by_the_next_policy_call(graph):
    node = _start(graph)
    test = graph.node("tester")
    cam = Camera(test, TOPIC)
    got = Collector(test, JointTrajectory, "/cosmos3_policy/joint_trajectory")
    graph.wait_for(lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(got) >= 1)[1], timeout=30)
    assert node.set_parameters([Parameter("seed", value=1234), Parameter("num_steps", value=7)])[0].successful
    n = len(node.loop.backend.policy_calls)
    graph.wait_for(
        lambda: (cam.publish(moving_scene_frame(time.time(), 120, 160)), len(node.loop.backend.policy_calls) > n)[1],
        timeout=30,
    )
    call = node.loop.backend.policy_calls[-1]
    assert (call.settings.seed, call.settings.num_steps) == (1234, 7)
