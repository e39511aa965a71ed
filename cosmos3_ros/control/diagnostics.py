# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The node's health as a pure function: level, message and key values from the loop's state. No ROS.

The node turns a :class:`Diagnosis` into a ``diagnostic_msgs/DiagnosticStatus`` (:mod:`cosmos3_ros.ros.convert`)
once a second, in every lifecycle state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from cosmos3_ros.control.loop import PolicyLoop

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class Diagnosis:
    """One status: ``level`` (OK, WARN, ERROR), a one-line ``message`` and ``values`` (all strings)."""

    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def diagnose(
    *,
    state: str,
    error: str,
    active: bool,
    loop: PolicyLoop | None,
    input_rates: Mapping[str, float],
    extra: Mapping[str, str] | None = None,
    faults: Mapping[str, str] | None = None,
) -> Diagnosis:
    """The status of a node whose backend is in ``state`` (``error`` set when it failed) with ``loop`` (None
    before configure). ``input_rates`` are frames per second per camera topic, ``extra`` more key values,
    ``faults`` failures of parts other than the model (e.g. ``recording``: the bag could not be written), each an
    ERROR until cleared."""
    kv: dict[str, str] = {"backend_state": state, "active": str(active), **(extra or {})}
    for part, message in (faults or {}).items():
        kv[f"fault.{part}"] = message
    if loop is None:
        if state == "error":
            return Diagnosis(ERROR, error or "configure failed", kv)
        return Diagnosis(WARN, f"backend {state}", kv)
    controller = loop.controller
    lat = loop.policy_latency.summary()
    kv.update(
        latency_last_ms=f"{lat['last'] * 1e3:.1f}",
        latency_p50_ms=f"{lat['p50'] * 1e3:.1f}",
        latency_p95_ms=f"{lat['p95'] * 1e3:.1f}",
        armed=str(controller.armed),
        commanding=str(controller.commanding),
        prompt=controller.settings.prompt[:200],
    )
    for topic, rate in input_rates.items():
        kv[f"input_rate_hz[{topic}]"] = f"{rate:.2f}"
    counters = controller.counters.snapshot()
    kv["chunks_published"] = str(counters.get("chunks_published", 0))
    kv["holds"] = str(counters.get("holds", 0))
    kv["inference_errors"] = str(counters.get("inference_errors", 0))
    kv["rejected_frames"] = str(sum(v for k, v in counters.items() if k.startswith("rejected_frames.")))
    kv["stale_observations"] = str(counters.get("no_observation.stale", 0))
    kv["stale_chunks"] = str(counters.get("stale_chunks", 0))
    for k, v in sorted(counters.items()):
        kv[f"count.{k}"] = str(v)
    kv["last_error"] = controller.last_error
    for k, v in loop.monitor_summary().items():
        kv[k] = _fmt(v)
    if state == "error":
        return Diagnosis(ERROR, error, kv)
    if faults:
        part, message = next(iter(faults.items()))
        return Diagnosis(ERROR, f"{part} failed: {message}", kv)
    if controller.consecutive_errors > 0:
        return Diagnosis(ERROR, f"inference failing: {controller.last_error}", kv)
    if not controller.armed:
        return Diagnosis(WARN, "disarmed", kv)
    if loop.drift.exceeded:
        return Diagnosis(WARN, f"reality drifts from the forecast: {controller.last_error}", kv)
    if active and not controller.commanding:
        return Diagnosis(WARN, "not commanding: waiting for a fresh observation and chunk", kv)
    if any(r == 0.0 for r in input_rates.values()):
        return Diagnosis(WARN, "a camera is silent", kv)
    return Diagnosis(OK, "ok", kv)
