# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The report of a recording as it was recorded (a live run's ``record_path`` bag, or a replay's output bag).

:func:`report_data_from_bag` reads what :class:`cosmos3_ros.bags.sinks.RecorderSink` writes (see its table): chunks
and holds from ``joint_trajectory`` (told apart with ``chunk_timing``: a chunk's stamp is its observation's, or its
completion time with ``trajectory_stamp: now``), hold reasons, rejected inputs and drift trips from ``events``, the run
configuration from ``run_config`` (or the bag's ``custom_data``), prediction errors, and the frame strips from the
predicted and the recorded camera frames. Recordings made before ``events`` and ``run_config`` existed still report;
the sections they cannot fill say so. Images are read twice, streamed, so memory stays at thumbnails.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.bags.report_config import config_from_custom_data
from cosmos3_ros.bags.report_data import ChunkTrace, LatencyRecord, Mark, ReportData
from cosmos3_ros.bags.report_strips import StripPicker, thumbnail
from cosmos3_ros.core.forecast import ErrorSample

#: A recorded trajectory of one point this close to its stamp is a hold (the controller holds 1 ms ahead).
HOLD_MAX_OFFSET_S = 0.01


def _json(msg: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(msg.data)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _duration(d: Any) -> float:
    return float(d.sec) + float(d.nanosec) * 1e-9


def _section(config: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if not config:
        return {}
    value = config.get("sections", {}).get(name, {})
    return value if isinstance(value, dict) else {}


def _prefix(topics: dict[str, Any]) -> str:
    for name, info in topics.items():
        if name.endswith("/joint_trajectory") and info.msgtype == "trajectory_msgs/msg/JointTrajectory":
            return name[: -len("/joint_trajectory")]
    raise ValueError(f"no */joint_trajectory topic: not a cosmos3_ros recording (topics: {sorted(topics)})")


def report_data_from_bag(path: str | Path, *, title: str | None = None) -> ReportData:
    """A :class:`ReportData` of the recording at ``path`` (raises ``BagError``/``ValueError`` for a bag that is not
    readable or not a cosmos3_ros recording)."""
    from cosmos3_ros.bags.reader import open_bag

    with open_bag(path) as bag:
        topics = bag.topics()
        prefix = _prefix(topics)
        have = lambda name: f"{prefix}/{name}" in topics  # noqa: E731
        config = None
        if have("run_config"):
            for m in bag.messages([f"{prefix}/run_config"]):
                config = _json(m.msg)
                break
        config = config or config_from_custom_data(path)
        sampling, monitoring = _section(config, "Sampling"), _section(config, "Monitoring")
        metric = str(monitoring.get("drift_metric", "nmse"))
        threshold = monitoring.get("drift_threshold")
        cameras = list(_section(config, "Topics").get("cameras", []))
        if not cameras:
            cameras = [
                n for n, i in topics.items() if i.msgtype.startswith("sensor_msgs/msg/") and not n.startswith(prefix)
            ]
        cameras = [c for c in cameras if c in topics]

        records = _json_messages(bag, f"{prefix}/chunk_timing") if have("chunk_timing") else []
        events = _json_messages(bag, f"{prefix}/events") if have("events") else []
        by_obs = {round(float(r["observation_stamp"]), 6): r for r in records if r.get("observation_stamp") is not None}
        by_done = {round(float(r["completed_stamp"]), 6): r for r in records if r.get("completed_stamp") is not None}
        chunks: list[ChunkTrace] = []
        traj_holds: list[Mark] = []
        used: set[int] = set()
        for m in bag.messages([f"{prefix}/joint_trajectory"]):
            pts = m.msg.points
            if not pts:
                continue
            pos = np.array([p.positions for p in pts], dtype=np.float64)
            offsets = np.array([_duration(p.time_from_start) for p in pts])
            rec = by_obs.get(round(m.stamp, 6)) or by_done.get(round(m.stamp, 6))
            one_point_now = len(pts) == 1 and offsets[0] <= HOLD_MAX_OFFSET_S
            if rec is None or one_point_now or id(rec) in used:  # a hold: one point, stamped when it was published
                traj_holds.append(Mark(m.stamp, "unknown", position=pos[0]))
                continue
            used.add(id(rec))
            vel = np.array([p.velocities for p in pts], dtype=np.float64) if len(pts[0].velocities) else None
            dt = float(np.median(np.diff(offsets))) if len(offsets) > 1 else 1.0 / float(sampling.get("fps", 5.0))
            done = rec.get("completed_stamp")
            chunks.append(
                ChunkTrace(
                    m.stamp,
                    pos,
                    dt,
                    rec.get("chunk_id"),
                    float(offsets[0]),
                    published=None if done is None else max(float(done), m.stamp),
                    velocities=vel if vel is not None and vel.shape == pos.shape else None,
                    offsets=offsets,
                )
            )
        names = None
        for m in bag.messages([f"{prefix}/joint_trajectory"]):
            names = list(m.msg.joint_names)
            break
        holds = [
            Mark(float(e["t"]), str(e.get("reason", "unknown")), "", e.get("chunk_id"), _array(e.get("position")))
            for e in events
            if e.get("kind") == "hold"
        ] or traj_holds
        rejections = [
            Mark(float(e["t"]), str(e.get("reason")), str(e.get("input", "")))
            for e in events
            if e.get("kind") == "rejected"
        ]
        trips = [
            Mark(
                float(e["t"]),
                f"{e.get('metric', metric)} {float(e['value']):.3g}" if e.get("value") is not None else "",
            )
            for e in events
            if e.get("kind") == "drift_trip"
        ]
        latencies = [
            LatencyRecord(
                float(r["observation_stamp"]),
                float(r.get("policy_s", math.nan)),
                r.get("forecast_s"),
                r.get("chunk_id"),
                forecast=r.get("forecast"),
                budget_s=r.get("budget_s"),
                published=bool(r.get("published", True)),
                error=r.get("error"),
                completed=r.get("completed_stamp"),
                requested=r.get("request_stamp"),
            )
            for r in records
        ]
        fps = float(sampling.get("fps") or (1.0 / chunks[0].dt if chunks else 5.0))
        layout = str(_section(config, "Controller").get("camera_layout", "single"))
        errors, picker, span, frames = _forecasts_and_frames(bag, prefix, cameras, layout, records, metric, fps, have)
    data = ReportData(
        title=title or f"cosmos3_ros recording {Path(path).name}",
        chunks=chunks,
        errors=errors,
        latencies=latencies,
        strips=picker.strips(),
        strip_note=picker.note(),
        threshold=None if threshold is None else float(threshold),
        metric=metric,
        action_names=names,
        holds=holds,
        rejections=rejections,
        drift_trips=trips,
        config=config,
        span=span,
        control_rate=float(_section(config, "Controller").get("control_rate", 50.0)),
    )
    data.summary = {"in_bag": str(path), "frames": frames}
    if holds is traj_holds and holds:
        data.strip_note = (data.strip_note + " Hold reasons were not recorded (a recording without events).").strip()
    return data


def _json_messages(bag: Any, topic: str) -> list[dict[str, Any]]:
    """The JSON objects on ``topic``, each with its bag time as ``t``."""
    out = []
    for m in bag.messages([topic]):
        data = _json(m.msg)
        if data is not None:
            out.append({**data, "t": m.stamp})
    return out


def _array(value: Any) -> np.ndarray | None:
    try:
        a = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    return a if a.size and np.isfinite(a).all() else None


def _forecasts_and_frames(
    bag: Any,
    prefix: str,
    cameras: list[str],
    layout: str,
    records: list[dict[str, Any]],
    metric: str,
    fps: float,
    have: Any,
) -> tuple[list[ErrorSample], StripPicker, tuple[float, float] | None, int]:
    """Errors (with chunk ids and steps), the strip picker fed in time order, the cameras' span and frame count."""
    from cosmos3_ros.bags.reader import frame_from_msg
    from cosmos3_ros.core.images import ImageDecodeError

    tol = 0.5 / fps
    picker = StripPicker(metric, tolerance_s=tol)
    forecasts: dict[int, list[tuple[float, np.ndarray]]] = defaultdict(list)
    if have("predicted_image"):
        ok = sorted((float(r["observation_stamp"]), int(r["chunk_id"])) for r in records if r.get("forecast") == "ok")
        for m in bag.messages([f"{prefix}/predicted_image"]):
            frame_id = str(m.msg.header.frame_id)
            _, _, tail = frame_id.partition("/")
            cid = int(tail) if tail.isdigit() else _guess_chunk(m.stamp, ok, forecasts, fps)
            if cid is None:
                continue
            try:
                forecasts[cid].append((m.stamp, thumbnail(frame_from_msg(m.msgtype, m.msg), picker.size)))
            except ImageDecodeError:
                continue
    slots: dict[int, list[tuple[int, float]]] = defaultdict(list)  # rounded stamp -> [(chunk, step)]
    for cid in sorted(forecasts):
        for k, (s, _) in enumerate(forecasts[cid]):
            slots[round(s * 1e6)].append((cid, k))
    values: list[tuple[float, float]] = []
    if have("prediction_error"):
        values = [(m.stamp, float(m.msg.data)) for m in bag.messages([f"{prefix}/prediction_error"])]
    errors: list[ErrorSample] = []
    for s, v in values:
        owners = slots.get(round(s * 1e6))
        cid, k = owners.pop(0) if owners else (-1, 0)
        fields = {"nmse": math.nan, "psnr": math.nan, "mae": math.nan, metric: v}
        errors.append(ErrorSample(cid, k, s, math.nan, fields["nmse"], fields["psnr"], fields["mae"]))
    # stream the cameras in time order, feeding forecasts when their chunk was observed and samples once decided
    starts = sorted((fr[0][0] - 1.0 / fps, cid) for cid, fr in forecasts.items() if fr)
    pending = sorted(errors, key=lambda e: e.stamp)
    collector_frames = {}
    span: tuple[float, float] | None = None
    count, fi, ei = 0, 0, 0
    prev: float | None = None
    if cameras:
        for m in bag.messages(cameras):
            count += 1
            span = (m.stamp, m.stamp) if span is None else (min(span[0], m.stamp), max(span[1], m.stamp))
            while fi < len(starts) and starts[fi][0] <= m.stamp + 1e-9:
                cid = starts[fi][1]
                picker.forecast(cid, [s for s, _ in forecasts[cid]], [t for _, t in forecasts[cid]])
                fi += 1
            try:
                image = frame_from_msg(m.msgtype, m.msg)
            except ImageDecodeError:
                continue
            if m.topic != cameras[0]:
                collector_frames[m.topic] = image
                continue
            picker.real(m.stamp, _composed(image, collector_frames, cameras, layout))
            while ei < len(pending) and pending[ei].stamp <= m.stamp + 1e-9:
                e = pending[ei]
                near = m.stamp if prev is None or abs(m.stamp - e.stamp) <= abs(prev - e.stamp) else prev
                if abs(near - e.stamp) <= tol + 1e-9:
                    picker.sample(e.chunk_id, e.step, e.value(metric), near)
                ei += 1
            prev = m.stamp
    picker.finish()
    return errors, picker, span, count


def _composed(image: np.ndarray, latest: dict[str, np.ndarray], cameras: list[str], layout: str) -> np.ndarray | None:
    """The view forecasts are compared with: the reference camera, or all cameras composed like the loop does."""
    if len(cameras) == 1:
        return image
    from cosmos3_ros.core.compose import compose

    frames = {**latest, cameras[0]: image}
    if any(c not in frames for c in cameras):
        return None
    try:
        return compose({c: frames[c] for c in cameras}, cameras, layout)
    except ValueError:
        return None


def _guess_chunk(stamp: float, ok: list[tuple[float, int]], taken: dict[int, list[Any]], fps: float) -> int | None:
    """Older recordings (predicted frames without a chunk id): the earliest forecast chunk whose next free step is
    expected at ``stamp``."""
    for obs, cid in ok:
        k = len(taken.get(cid, []))
        if abs(obs + (k + 1) / fps - stamp) <= 1e-3:
            return cid
    return None
