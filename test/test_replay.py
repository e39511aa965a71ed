# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Offline replay: real rosbag2 bags (sqlite3 and MCAP) written and read with rosbags; the fake backend, and the
real pipeline end to end (slow)."""

from __future__ import annotations

import html as html_lib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from disk_util import read_only_dir

from cosmos3_ros.bags import report_plots
from cosmos3_ros.bags.msgbuild import get_ros2_typestore, header
from cosmos3_ros.bags.reader import open_bag
from cosmos3_ros.bags.recorder import BagRecorder
from cosmos3_ros.bags.report import fmt
from cosmos3_ros.bags.report_bag import report_data_from_bag
from cosmos3_ros.bags.report_data import LABELS, summarize
from cosmos3_ros.bags.report_strips import enough_matched
from cosmos3_ros.commands.replay import replay
from cosmos3_ros.core.synthetic import moving_scene_frame

CAM = "/camera/image_raw"


def _write_bag(path: Path, storage: str, seconds: float = 3.0, hz: float = 10.0, topic: str = CAM) -> Path:
    rec = BagRecorder(path, storage=storage).start()
    for k in range(int(seconds * hz)):
        t = 500.0 + k / hz
        rec.write_image(topic, t, moving_scene_frame(t, 120, 160), frame_id="cam")
    assert rec.close()
    return path


def _params(**over):
    values = {
        "backend": "fake",
        "camera_topics": [CAM],
        "num_steps": 2,
        "image_size": 256,
        "action_chunk_size": 8,
        "warmup": False,
    }
    values.update(over)
    return values


def _read(out: Path) -> dict[str, list]:
    topics: dict[str, list] = {}
    with open_bag(out) as bag:
        for m in bag.messages():
            topics.setdefault(m.topic, []).append(m)
    return topics


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replay_writes_trajectories_forecasts_and_errors(tmp_path, storage):
    bag = _write_bag(tmp_path / "in", storage)
    report = tmp_path / "report.html" if storage == "mcap" else None  # one report is enough (figures cost time)
    summary = replay(bag, _params(), tmp_path / "out", report=report, progress=False)
    topics = _read(tmp_path / "out")
    trajs = topics["/cosmos3_policy/joint_trajectory"]
    assert summary["chunks"] == len(trajs) >= 4
    for m in trajs:
        actions = [p for p in m.msg.points if p.time_from_start.nanosec or p.time_from_start.sec]  # not the anchor
        assert len(actions) == 8 and len(m.msg.joint_names) == 10
        assert all(np.isfinite(p.positions).all() for p in m.msg.points)
        assert actions[0].time_from_start.nanosec == 200_000_000  # 1/fps after the observation
    predicted = topics["/cosmos3_policy/predicted_image"]
    assert len(predicted) == summary["predicted_frames"] == 8 * summary["forecasts"]
    errors = topics["/cosmos3_policy/prediction_error"]
    assert len(errors) == summary["prediction_errors"] > 0
    assert all(np.isfinite(m.msg.data) and m.msg.data >= 0 for m in errors)
    predicted_stamps = {round(m.stamp, 6) for m in predicted}
    assert {round(m.stamp, 6) for m in errors} <= predicted_stamps  # each error is at a forecast frame's time
    timing = [json.loads(m.msg.data) for m in topics["/cosmos3_policy/chunk_timing"]]
    assert len(timing) == summary["counters"]["requests"] and all(t["policy_s"] > 0 for t in timing)
    assert len(topics[CAM]) == 30  # input frames are in the output bag
    if report is None:
        return
    html = report.read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    # the worst chunk is ranked among chunks with enough matched frames, and its strip shows them
    worst = re.search(r"Worst chunk: chunk \d+, mean nmse [\d.]+ over (\d+) of (\d+) frames", html)
    assert worst is not None and enough_matched(int(worst.group(1)), int(worst.group(2)))
    assert "Run configuration" in html and "bridge_orig_lerobot" in html


@pytest.mark.parametrize("rtc", [False, True])
def test_two_replays_give_identical_actions(tmp_path, rtc):
    bag = _write_bag(tmp_path / "in", "mcap")
    params = _params(forecast_every=0, rtc=rtc, replan_every=2)
    replay(bag, params, tmp_path / "a", progress=False)
    replay(bag, params, tmp_path / "b", progress=False)
    a = [[p.positions for p in m.msg.points] for m in _read(tmp_path / "a")["/cosmos3_policy/joint_trajectory"]]
    b = [[p.positions for p in m.msg.points] for m in _read(tmp_path / "b")["/cosmos3_policy/joint_trajectory"]]
    assert len(a) == len(b) >= 4
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    if rtc:  # and the chunks did continue each other (known rows given, no jump at the switch)
        timing = [json.loads(m.msg.data) for m in _read(tmp_path / "a")["/cosmos3_policy/chunk_timing"]]
        joined = [t for t in timing if t["prefix_rows"] > 0]
        assert len(joined) >= 3 and all(t["boundary_jump"] < 1e-6 for t in joined)


def _bag_with_a_gap_and_a_bad_frame(path: Path) -> Path:
    """2 s of frames at 10 Hz, a 2.5 s gap (the running chunk runs out: a hold), 1 s more; one frame undecodable."""
    rec = BagRecorder(path, storage="mcap").start()
    types = get_ros2_typestore().types
    stamps = [500.0 + k / 10 for k in range(20)] + [504.5 + k / 10 for k in range(10)]
    for i, t in enumerate(stamps):
        if i == 5:
            sec, nsec = divmod(round(t * 1e9), 1_000_000_000)
            bad = types["sensor_msgs/msg/Image"](
                header=header(types, sec, nsec, "cam"),
                height=120,
                width=160,
                encoding="rgb8",
                is_bigendian=0,
                step=480,
                data=np.zeros(10, np.uint8),  # far too short
            )
            rec.write_message(CAM, t, "sensor_msgs/msg/Image", bad)
        else:
            rec.write_image(CAM, t, moving_scene_frame(t, 120, 160), frame_id="cam")
    assert rec.close()
    return path


def test_forecasting_off_json_report_holds_and_the_recordings_report_agree(tmp_path, monkeypatch):
    """The replay's JSON is valid with forecasting off (null, never NaN) and says what its report says; holds and
    rejected frames come with their reasons; the output bag reports the same run."""
    monkeypatch.setattr(report_plots, "png", lambda fig: "")  # the HTML text is what is checked here
    bag = _bag_with_a_gap_and_a_bad_frame(tmp_path / "in")
    summary = replay(bag, _params(forecast_every=0), tmp_path / "out", report=tmp_path / "r.html", progress=False)
    json.loads(json.dumps(summary, allow_nan=False))
    assert summary["forecasts"] == 0 and summary["prediction_error_mean"] is None
    assert summary["holds_by_reason"] == {"chunk_expired": 1} and summary["holds"] == 1
    assert summary["rejected_frames"] == 1 and summary["rejected_by_reason"] == {"truncated": 1}
    assert summary["motion"]["boundaries"] == summary["chunks"] - 1 >= 2
    assert [b["after"] for b in summary["motion"]["per_boundary"]].count("hold:chunk_expired") == 1
    text = (tmp_path / "r.html").read_text()
    table = text.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    cells = {
        html_lib.unescape(k): html_lib.unescape(v)
        for k, v in re.findall(r'<td class="k">(.*?)</td><td>(.*?)</td>', table)
    }
    for key, value in summary.items():
        if key in LABELS and key != "report":
            assert cells[LABELS[key]] == fmt(value), key
    timeline = html_lib.unescape(text.split("<h2>Timeline", 1)[1].split("<h2>", 1)[0])
    assert "<h3>Holds</h3>" in timeline and "chunk_expired" in timeline and "<h3>Rejected inputs</h3>" in timeline
    # the recording's own report: same chunks, holds with reasons, rejections, boundaries
    again = summarize(report_data_from_bag(tmp_path / "out"))
    json.dumps(again, allow_nan=False)
    for key in ("chunks", "holds", "holds_by_reason", "rejected_by_reason", "policy_calls", "skipped_actions"):
        assert again[key] == summary[key], key
    assert again["boundary_jump_max"] == pytest.approx(summary["boundary_jump_max"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", "replay", *args], capture_output=True, text=True, timeout=300
    )


def test_replay_cli_bad_bags_are_clear_errors(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n"
        "    backend: fake\n    num_steps: 2\n    warmup: false\n"
        f"    camera_topics: ['{CAM}']\n"
    )
    r = _cli(str(tmp_path / "missing"), "--params-file", str(params), "--out", str(tmp_path / "o1"))
    assert r.returncode == 2 and "missing" in r.stderr
    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + b"garbage" * 100)
    r = _cli(str(corrupt), "--params-file", str(params), "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "error" in r.stderr.lower()
    empty = BagRecorder(tmp_path / "empty", storage="mcap").start()
    empty.close()
    r = _cli(str(tmp_path / "empty"), "--params-file", str(params), "--out", str(tmp_path / "o3"))
    assert r.returncode == 2 and "empty" in r.stderr.lower()
    other = _write_bag(tmp_path / "other", "sqlite3", seconds=0.3, topic="/other/image")
    r = _cli(str(other), "--params-file", str(params), "--out", str(tmp_path / "o4"))
    assert r.returncode == 2 and CAM in r.stderr and "/other/image" in r.stderr
    r = _cli(str(other), "--params-file", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o5"))
    assert r.returncode == 2 and "nope.yaml" in r.stderr
    r = _cli(str(other), "--params-file", str(params), "--out", str(tmp_path / "o6"), "-p", "num_steps:=0")
    assert r.returncode == 2 and "num_steps" in r.stderr
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))


def test_replay_cli_end_to_end_with_progress(tmp_path, tiny_model):
    bag = _write_bag(tmp_path / "in", "sqlite3", seconds=1.5)
    params = tmp_path / "p.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n"
        f"    model: {tiny_model}\n    device: cpu\n    num_steps: 2\n    warmup: false\n    image_size: 256\n"
        f"    camera_topics: ['{CAM}']\n    action_chunk_size: 8\n"
    )
    r = _cli(
        str(bag), "--params-file", str(params), "--out", str(tmp_path / "out"), "--report", str(tmp_path / "r.html")
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "replay" in r.stderr and "100%" in r.stderr  # the progress bar
    summary = json.loads(r.stdout)
    assert summary["chunks"] >= 1 and (tmp_path / "r.html").is_file()
    assert summary["predicted_frames"] == 8 * summary["forecasts"] and summary["forecasts"] >= 1


def _strict_json(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_replay_cli_prints_valid_json_with_forecasting_off_and_reports_a_recording(tmp_path):
    bag = _bag_with_a_gap_and_a_bad_frame(tmp_path / "in")
    params = tmp_path / "p.yaml"
    params.write_text(FAKE_PARAMS + "    forecast_every: 0\n    action_chunk_size: 8\n")
    r = _cli(str(bag), "--params-file", str(params), "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = _strict_json(r.stdout)  # bare NaN would fail here
    assert summary["prediction_error_mean"] is None and summary["forecast_latency_s"] is None
    assert summary["holds_by_reason"] == {"chunk_expired": 1}
    r = _cli(str(tmp_path / "out"), "--report-only", "--report", str(tmp_path / "rec.html"))
    assert r.returncode == 0, r.stderr[-2000:]
    again = _strict_json(r.stdout)
    assert again["chunks"] == summary["chunks"] and again["holds_by_reason"] == {"chunk_expired": 1}
    text = (tmp_path / "rec.html").read_text()
    assert "<h3>Holds</h3>" in text and "chunk_expired" in text and "Run configuration" in text
    assert "No run configuration recorded" not in text
    line = one_error_line(_cli(str(tmp_path / "out"), "--report-only"))
    assert "--report-only needs --report" in line
    line = one_error_line(_cli(str(bag), "--out", str(tmp_path / "o2")))
    assert "--params-file required" in line


def test_replay_with_the_policy_video_as_forecast_source(tmp_path):
    bag = _write_bag(tmp_path / "in", "mcap", seconds=2.0)
    summary = replay(bag, _params(forecast_source="policy_video"), tmp_path / "out", progress=False)
    topics = _read(tmp_path / "out")
    assert summary["forecasts"] >= 1 and summary["forecast_errors"] == 0
    assert len(topics["/cosmos3_policy/predicted_image"]) == 8 * summary["forecasts"]
    timing = [json.loads(m.msg.data) for m in topics["/cosmos3_policy/chunk_timing"]]
    assert sum(t["forecast"] == "ok" for t in timing) == summary["forecasts"]  # from the policy call's own video


# ---------------------------------------------------------------------------------------------------------------------
# Broken input or output: one error line, exit 2, what was written stays readable
# ---------------------------------------------------------------------------------------------------------------------

FAKE_PARAMS = (
    f"/**:\n  ros__parameters:\n    backend: fake\n    num_steps: 2\n    warmup: false\n    camera_topics: ['{CAM}']\n"
)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("cosmos3-ros replay: error:")]
    assert len(errors) == 1 and r.stderr.rstrip().splitlines()[-1] == errors[0], r.stderr[-3000:]
    return errors[0]


def test_replay_cli_unwritable_output_fails_before_loading(tmp_path):
    bag = _write_bag(tmp_path / "in", "mcap", seconds=0.3)
    params = tmp_path / "p.yaml"
    params.write_text(FAKE_PARAMS)
    ro = read_only_dir(tmp_path)
    line = one_error_line(_cli(str(bag), "--params-file", str(params), "--out", str(ro / "out"), "--no-progress"))
    assert str(ro) in line and "not writable" in line
    line = one_error_line(_cli(str(bag), "--params-file", str(params), "--out", str(bag), "--no-progress"))
    assert "exists" in line
    report = ro / "r.html"
    line = one_error_line(
        _cli(str(bag), "--params-file", str(params), "--out", str(tmp_path / "o"), "--report", str(report))
    )
    assert "report" in line and not (tmp_path / "o").exists()  # refused before anything was written


def test_replay_cli_full_disk_is_an_error_and_the_output_stays_readable(tmp_path):
    bag = _write_bag(tmp_path / "in", "mcap")
    params = tmp_path / "p.yaml"
    params.write_text(FAKE_PARAMS)
    out = tmp_path / "out"
    child = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, resource.RLIM_INFINITY))\n"
        "from cosmos3_ros.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            child,
            "replay",
            str(bag),
            "--params-file",
            str(params),
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = one_error_line(r)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # the recorder's own log lines are not repeated
    assert f"writing the output bag {out} failed: File too large (EFBIG)" in line
    assert r.stdout == ""  # no summary: the run failed
    with open_bag(out) as src:  # readable, with what was written before the failure
        n = src.message_count()
        assert 0 < n == len(list(src.messages()))
    assert f"keeps the first {n} messages" in line


def test_replay_cli_bit_flipped_input_names_the_corrupt_chunk(tmp_path):
    from cosmos3_ros.bags import mcap_scan

    bag = _write_bag(tmp_path / "in", "mcap")
    mcap = next(bag.glob("*.mcap"))
    scan = mcap_scan.scan(mcap)
    bad = scan.blocks[len(scan.blocks) // 2]
    data = bytearray(mcap.read_bytes())
    data[bad.offset + bad.length // 2] ^= 0x01  # one bit in the middle of a chunk's image data
    mcap.write_bytes(bytes(data))
    params = tmp_path / "p.yaml"
    params.write_text(FAKE_PARAMS)
    out = tmp_path / "out"
    line = one_error_line(_cli(str(bag), "--params-file", str(params), "--out", str(out), "--no-progress"))
    assert f"chunk {bad.number} at byte {bad.offset} is corrupt: CRC mismatch" in line
    with open_bag(out, allow_empty=True) as src:  # the output was closed properly
        assert src.note is None
        assert src.message_count([CAM]) < 30  # replay stopped at the damaged chunk


def test_replay_of_a_cut_recording(tmp_path, caplog):
    """A recording that was killed replays (what it holds), with a warning saying what was lost."""
    bag = _write_bag(tmp_path / "in", "mcap")
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    (bag / "metadata.yaml").unlink()
    mcap.write_bytes(data[: len(data) * 2 // 3])
    with open_bag(bag) as src:
        frames = src.message_count([CAM])
    assert 0 < frames < 30
    with caplog.at_level("WARNING", logger="cosmos3_ros.bags.reader"):
        summary = replay(bag, _params(), tmp_path / "out", progress=False)
    assert summary["frames"] == frames and len(_read(tmp_path / "out")[CAM]) == frames
    assert any("cut record" in r.getMessage() for r in caplog.records)


JOINTS = [f"j{k}" for k in range(10)]


def _write_bag_with_state(path: Path, offset: float) -> Path:
    """Frames at 10 Hz and the robot state at 30 Hz (an extra joint first, as real JointStates have)."""
    rec = BagRecorder(path, storage="mcap").start()
    for k in range(90):
        t = 500.0 + k / 30
        if k % 3 == 0:
            rec.write_image(CAM, t, moving_scene_frame(t, 120, 160), frame_id="cam")
        rec.write_joint_state("/joint_states", t, ["extra", *JOINTS], [9.0, *(offset + 0.01 * k + np.arange(10))])
    assert rec.close()
    return path


def test_replay_gives_the_recorded_robot_state_to_the_model(tmp_path):
    """use_state: the bag's JointState is picked by name and given to the model; the output bag keeps it (as the
    node records it), so the replay's own output replays again."""
    params = _params(forecast_every=0, use_state=True, joint_states_topic="/joint_states", joint_names=JOINTS)
    actions = {}
    for offset in (0.0, 0.5):
        bag = _write_bag_with_state(tmp_path / f"in{offset}", offset)
        summary = replay(bag, params, tmp_path / f"out{offset}", progress=False)
        assert summary["chunks"] >= 4 and summary["counters"]["states"] == 90
        assert summary["counters"].get("no_observation.no_state", 0) <= 1  # the first frame comes before a state
        topics = _read(tmp_path / f"out{offset}")
        states = topics["/joint_states"]
        assert len(states) == 90 and list(states[0].msg.name) == JOINTS
        np.testing.assert_allclose(states[5].msg.position, offset + 0.05 + np.arange(10))
        actions[offset] = np.array([p.positions for p in topics["/cosmos3_policy/joint_trajectory"][0].msg.points])
    assert not np.allclose(actions[0.0], actions[0.5])  # the state reached the model
    again = replay(tmp_path / "out0.0", params, tmp_path / "again", progress=False)
    assert again["chunks"] == summary["chunks"] and again["counters"]["states"] == 90


def test_replay_with_use_state_needs_the_state_in_the_bag(tmp_path):
    bag = _write_bag(tmp_path / "in", "mcap")
    params = _params(use_state=True, joint_states_topic="/joint_states", joint_names=JOINTS)
    with pytest.raises(Exception, match="has no /joint_states: use_state"):
        replay(bag, params, tmp_path / "out", progress=False)
    # without use_state the topic is optional
    assert replay(bag, {**params, "use_state": False}, tmp_path / "out2", progress=False)["chunks"] >= 4
