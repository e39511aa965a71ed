# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros replay``: run the node's policy loop offline on a rosbag2 bag, on bag time.

The same parameter file as the node configures the same controller, backend, forecasting and drift
monitoring (:mod:`cosmos3_ros.control.config`, :class:`cosmos3_ros.control.loop.PolicyLoop`).
Frames are fed in bag order;
the control loop ticks at every frame of the reference camera, and each model call completes at the
bag time of the frame that triggered it (inference is instantaneous in bag time), so two replays of
one bag with one seed give identical actions. The output bag (MCAP) holds the input frames, every
JointTrajectory, the predicted frames, the prediction errors and per-chunk timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Node name the output bag's topics are recorded under (as the node's own recording would).
NODE = "/cosmos3_policy"

HELP = "replay a rosbag2 bag (sqlite3 or MCAP) through the policy loop; write an MCAP bag and an HTML report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    parser.add_argument("in_bag", metavar="IN_BAG", help="input bag directory, or a single .mcap/.db3 file")
    parser.add_argument(
        "--params-file", help="the node's parameter file (e.g. config/policy.yaml); required unless --report-only"
    )
    parser.add_argument(
        "--out", metavar="OUT_BAG", help="output bag directory (must not exist); required unless --report-only"
    )
    parser.add_argument("--report", metavar="REPORT.html", help="also write a self-contained HTML report")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="do not run the policy: write the --report of IN_BAG as recorded (a live recording or a replay's output)",
    )
    from cosmos3_ros.commands.flags import add_setting_flags

    add_setting_flags(parser, ["model", "device"], defaults={"model": "the parameter file's", "device": "the file's"})
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="override one parameter (YAML value), like --ros-args -p",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from cosmos3_ros.core.params_file import read_params_file

    report = read_params_file(args.params_file)
    if not report.ok:
        raise ValueError("; ".join(report.warnings()))
    values = dict(report.values)
    for item in args.param:
        if ":=" not in item:
            raise ValueError(f"--param {item!r}: expected NAME:=VALUE")
        name, raw = item.split(":=", 1)
        values[name.strip()] = yaml.safe_load(raw)
    for name in ("model", "device"):
        if hasattr(args, name):
            values[name] = getattr(args, name)
    return values


def _state_topic(source: Any, values: dict[str, Any], in_bag: str | Path) -> str:
    """The robot-state topic to feed from the bag: ``joint_states_topic`` if the bag has it ("" if not needed)."""
    topic = values["joint_states_topic"]
    if not topic:
        return ""
    if topic in source.topics():
        return topic
    if values["use_state"]:
        from cosmos3_ros.bags.reader import BagError

        raise BagError(
            f"bag {in_bag} has no {topic}: use_state gives the model the robot state, so the replay needs it (the "
            "node records it when joint_states_topic is set; replay with use_state:=false to run without it)"
        )
    return ""


def _feed_state(loop: Any, msg: Any, names: Any) -> None:
    """A recorded JointState into the loop, picked by name as the node does; a malformed one is rejected, counted."""
    from cosmos3_ros.core.joints import positions_by_name

    try:
        positions = positions_by_name(list(msg.msg.name), msg.msg.position, names)
    except ValueError as exc:
        loop.reject("robot_state", msg.stamp, "state_joints", str(exc))
        return
    loop.on_state(msg.stamp, positions)


def replay(
    in_bag: str | Path,
    values_overrides: dict[str, Any],
    out_bag: str | Path,
    *,
    report: str | Path | None = None,
    progress: bool = True,
    params_file: str | Path | None = None,
) -> dict[str, Any]:
    """Replay ``in_bag`` with the given parameter values; returns the summary (JSON-able: null, never NaN).

    The summary's keys are :data:`cosmos3_ros.bags.report_data.LABELS`' (the report prints the same figures with
    those labels), plus ``counters`` (the loop's) and ``motion`` (:meth:`MotionReport.to_dict`, per boundary).
    """
    from tqdm import tqdm

    from cosmos3_ros.backends import make_backend
    from cosmos3_ros.bags.msgbuild import jsonable
    from cosmos3_ros.bags.reader import BagError, frame_from_msg, open_bag
    from cosmos3_ros.bags.recorder import BagRecorder, RecorderError
    from cosmos3_ros.bags.report import write_report
    from cosmos3_ros.bags.report_config import recording_metadata, run_config
    from cosmos3_ros.bags.report_data import ReportData, motion_of, summarize
    from cosmos3_ros.bags.sinks import RecorderSink, ReportCollector
    from cosmos3_ros.bags.storage import check_output_path
    from cosmos3_ros.control.config import build_controller, decode_options, loop_options, values_from_overrides
    from cosmos3_ros.control.events import Tee
    from cosmos3_ros.control.loop import PolicyLoop
    from cosmos3_ros.core.images import ImageDecodeError

    # Broken output fails here, before anything is loaded (a read-only or missing directory, an existing bag).
    check_output_path(out_bag)
    if report:
        check_output_path(report, "report", must_not_exist=False)
    values = values_from_overrides(values_overrides)
    controller = build_controller(values)
    decode = decode_options(values)  # frames capped and downscaled as the node does
    cameras = list(controller.config.cameras)
    source = open_bag(in_bag)
    try:
        source.require_topics(cameras)
        state_topic = _state_topic(source, values, in_bag)
        total = source.message_count(cameras)
        if total == 0:
            raise BagError(f"bag {in_bag} has no messages on {cameras}")
        out = Path(out_bag)
        if out.exists():
            raise FileExistsError(f"output bag {out} exists; pick a new path")
        t_load = time.perf_counter()
        backend = make_backend(values)
        warmup_s = backend.warmup(controller.settings) if values["warmup"] else 0.0
        load_s = time.perf_counter() - t_load
        quiet = _QuietRecorderLog(out)  # a failure of the output is replay's one error line (see run)
        logging.getLogger("cosmos3_ros.bags.recorder").addFilter(quiet)
        config = run_config(values, kind="replay", params_file=params_file, in_bag=in_bag)
        try:
            recorder = BagRecorder(
                out,
                storage="mcap",
                image_every_n=int(values["record_image_every"]),
                custom_data={"cosmos3_ros.replay_of": str(in_bag), **recording_metadata(config)},
            ).start()
        except RecorderError as exc:
            logging.getLogger("cosmos3_ros.bags.recorder").removeFilter(quiet)
            backend.close()
            raise ValueError(str(exc)) from exc
        settings = controller.settings
        collector = ReportCollector(
            metric=values["drift_metric"],
            counters=controller.counters,
            cameras=cameras,
            layout=controller.config.camera_layout,
            fps=settings.fps,
        )
        clock = {"now": 0.0}
        sink = RecorderSink.for_loop(recorder, NODE, values, controller, config, lambda: clock["now"], state_topic)
        options = dataclasses.replace(loop_options(values), enforce_budget=False)  # inference is instant in bag time
        raw = _RawActions(backend)
        loop = PolicyLoop(controller, raw, options, Tee(sink, collector), lambda: clock["now"], keep_frames_size=None)
        span: list[float] = []
        t0 = time.perf_counter()
        bar = tqdm(total=total, unit="frame", desc="replay", disable=not progress)
        try:
            for msg in source.messages(cameras + ([state_topic] if state_topic else [])):
                if recorder.error is not None:  # the output broke (disk full...): stop, reported below
                    break
                if msg.topic == state_topic:
                    clock["now"] = msg.stamp
                    _feed_state(loop, msg, controller.config.state_names)
                    continue
                bar.update(1)
                span = [msg.stamp, msg.stamp] if not span else [min(span[0], msg.stamp), max(span[1], msg.stamp)]
                try:
                    frame = frame_from_msg(msg.msgtype, msg.msg, decode)
                except ImageDecodeError as exc:
                    loop.reject(msg.topic, msg.stamp, exc.reason, str(exc))
                    continue
                clock["now"] = msg.stamp
                loop.on_frame(msg.topic, msg.stamp, np.ascontiguousarray(frame))
                if msg.topic != cameras[0]:
                    continue
                request = loop.step(msg.stamp)
                if request is not None:
                    loop.run_request(request)
            bar.close()
            loop.flush()
            collector.finish()
        finally:
            bar.close()
            recorder.close()
            logging.getLogger("cosmos3_ros.bags.recorder").removeFilter(quiet)
            backend.close()
        _check_output_written(recorder, out)
        wall_s = time.perf_counter() - t0
    finally:
        source.close()
    for c in collector.chunks:  # the model's own actions, before the mapping (secondary plot)
        c.raw = raw.by_stamp.get(round(c.stamp, 6))
    counters = controller.counters.snapshot()
    data = ReportData(
        title=f"cosmos3_ros replay of {Path(in_bag).name}",
        chunks=collector.chunks,
        errors=collector.errors,
        latencies=collector.latencies,
        strips=collector.picker.strips(),
        strip_note=collector.picker.note(),
        threshold=float(values["drift_threshold"]),
        metric=values["drift_metric"],
        action_names=list(controller.config.mapping.joint_names),
        holds=collector.holds,
        rejections=collector.rejections,
        drift_trips=collector.drift_trips,
        config=config,
        span=(span[0], span[1]) if span else None,
        control_rate=float(values["control_rate"]),
        counters=counters,
    )
    monitor = loop.monitor_summary()
    data.summary = {
        "in_bag": str(in_bag),
        "out_bag": str(out_bag),
        "frames": total,
        "predicted_frames": collector.forecast_frames,
        "forecast_missed": monitor["forecast_missed"],
        "replay_wall_s": round(wall_s, 3),
        "model_load_s": round(load_s, 3),
        "warmup_s": round(warmup_s, 3),
    }
    motion = motion_of(data)
    summary: dict[str, Any] = jsonable(summarize(data, motion))
    summary["counters"] = counters
    summary["motion"] = jsonable(motion.to_dict(data.action_names))
    if report:
        data.summary = {k: v for k, v in summary.items() if k not in ("counters", "motion")}
        write_report(report, data)
        summary["report"] = str(report)
    return summary


class _RawActions:
    """A backend wrapper that keeps the model's raw actions of every policy call, by observation stamp."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.by_stamp: dict[float, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def policy(self, image: Any, settings: Any, *args: Any, **kwargs: Any) -> Any:
        chunk = self._backend.policy(image, settings, *args, **kwargs)
        stamp = kwargs.get("observation_stamp")
        if stamp is not None and len(self.by_stamp) < 100_000:
            self.by_stamp[round(float(stamp), 6)] = np.array(chunk.actions, dtype=np.float64)
        return chunk


class _QuietRecorderLog(logging.Filter):
    """Drops the recorder's own log lines about a failure of ``out``: replay raises the error itself."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = str(out)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or self.out not in record.getMessage()


def _check_output_written(recorder: Any, out: Path) -> None:
    """Raise ValueError when writing the output bag failed (the recorder keeps what it wrote readable)."""
    if recorder.error is None:
        return
    from cosmos3_ros.bags.writer_thread import describe_error

    st = recorder.stats()
    raise ValueError(
        f"writing the output bag {out} failed: {describe_error(recorder.error)}; it keeps the first {st['written']} "
        f"messages ({st['lost'] + st['rejected']} were not written); see `cosmos3-ros bag info {out}`"
    )


def report_of_recording(in_bag: str | Path, report: str | Path) -> dict[str, Any]:
    """Write the report of a recording as recorded; returns its summary (JSON-able)."""
    from cosmos3_ros.bags.msgbuild import jsonable
    from cosmos3_ros.bags.report import write_report
    from cosmos3_ros.bags.report_bag import report_data_from_bag
    from cosmos3_ros.bags.report_data import motion_of, summarize
    from cosmos3_ros.bags.storage import check_output_path

    check_output_path(report, "report", must_not_exist=False)
    data = report_data_from_bag(in_bag)
    motion = motion_of(data)
    summary = jsonable(summarize(data, motion))
    data.summary = dict(summary)
    write_report(report, data)
    return {**summary, "motion": jsonable(motion.to_dict(data.action_names)), "report": str(report)}


def run(args: argparse.Namespace) -> int:
    """Replay (or only report) and print the summary."""
    if args.report_only:
        if not args.report:
            raise ValueError("--report-only needs --report REPORT.html")
        print(json.dumps(report_of_recording(args.in_bag, args.report), indent=2, allow_nan=False))
        return 0
    missing = [flag for flag, v in (("--params-file", args.params_file), ("--out", args.out)) if not v]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (or --report-only with --report)")
    try:
        summary = replay(
            args.in_bag,
            _overrides(args),
            args.out,
            report=args.report,
            progress=not args.no_progress,
            params_file=args.params_file,
        )
    except (FileNotFoundError, FileExistsError):
        raise
    except OSError as exc:  # e.g. the report or the output can not be written: one line, exit 2 (cli)
        raise ValueError(f"{exc.filename or 'I/O'}: {exc.strerror or exc}") from exc
    print(json.dumps(summary, indent=2, allow_nan=False))
    return 0
