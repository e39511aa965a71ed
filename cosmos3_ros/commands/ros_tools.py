# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The few `ros2` CLI verbs a user of this package needs, on rclpy alone (the PyPI wheels have no `ros2` command).

``cosmos3-ros topic list|echo|hz``, ``cosmos3-ros lifecycle get|set``, ``cosmos3-ros param get|set``: the same
arguments and the same effect as ``ros2 topic ...``, ``ros2 lifecycle ...`` and ``ros2 param ...`` (message types are
resolved from the graph, as ``ros2 topic echo`` does). Each subcommand module (``topic``, ``lifecycle``, ``param``)
exposes HELP, add_arguments and run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from typing import Any

#: Timeout of one graph query or service call, seconds.
WAIT_S = 10.0


@contextlib.contextmanager
def graph_node(name: str = "cosmos3_ros_cli") -> Iterator[Any]:
    """A short-lived rclpy node in its own context (the environment's ROS_DOMAIN_ID)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    ctx = Context()
    rclpy.init(context=ctx)
    node = Node(name, context=ctx, start_parameter_services=False)
    node.cli_executor = SingleThreadedExecutor(context=ctx)
    node.cli_executor.add_node(node)
    try:
        yield node
    finally:
        node.cli_executor.shutdown()
        node.destroy_node()
        ctx.try_shutdown()


def spin_until(node: Any, done: Callable[[], bool], timeout: float) -> bool:
    """Spin ``node`` (made by ``graph_node``) until ``done()`` or ``timeout`` seconds; whether it was done."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        node.cli_executor.spin_once(timeout_sec=0.05)
    return done()


def message_class(type_name: str) -> type:
    """The message class of ``pkg/msg/Type`` (or ``pkg/Type``); ValueError when it is not importable."""
    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"message type {type_name!r}: expected pkg/msg/Type")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {type_name!r} is not installed ({exc})") from None


def to_yaml_like(msg: Any, indent: int = 0, max_items: int = 16) -> str:
    """A message as ``ros2 topic echo`` prints it (long arrays cut to ``max_items`` with a count)."""
    pad = "  " * indent
    lines = []
    for field in msg.get_fields_and_field_types():
        value = getattr(msg, field)
        if hasattr(value, "get_fields_and_field_types"):
            lines.append(f"{pad}{field}:")
            lines.append(to_yaml_like(value, indent + 1, max_items))
        elif isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
            items = list(value)
            if items and hasattr(items[0], "get_fields_and_field_types"):
                lines.append(f"{pad}{field}:")
                for item in items[:max_items]:
                    body = to_yaml_like(item, indent + 2, max_items).lstrip()
                    lines.append(f"{pad}- {body}")
            else:
                shown = ", ".join(repr(v) if isinstance(v, str) else f"{v}" for v in items[:max_items])
                more = f", ... ({len(items)} items)" if len(items) > max_items else ""
                lines.append(f"{pad}{field}: [{shown}{more}]")
        else:
            lines.append(f"{pad}{field}: {value!r}" if isinstance(value, str) else f"{pad}{field}: {value}")
    return "\n".join(lines)


def topic_type(node: Any, topic: str, timeout: float) -> str:
    """The type of ``topic`` as the graph reports it (waiting up to ``timeout`` s for discovery)."""
    found: dict[str, str] = {}

    def look() -> bool:
        for name, types in node.get_topic_names_and_types():
            if name == topic and types:
                found["type"] = types[0]
        return "type" in found

    if not spin_until(node, look, timeout):
        raise ValueError(f"topic {topic} not found within {timeout:g} s (is the node running, same ROS_DOMAIN_ID?)")
    return found["type"]


# -- topic ----------------------------------------------------------------------------------------------------------


def add_topic_arguments(parser: argparse.ArgumentParser) -> None:
    """``topic list``, ``topic echo TOPIC [--count N]``, ``topic hz TOPIC [--window S]``."""
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    sub.add_parser("list", help="topics and their types")
    echo = sub.add_parser("echo", help="print messages of a topic")
    echo.add_argument("topic")
    echo.add_argument("--count", type=int, default=0, help="stop after N messages (0: until Ctrl-C) [default: 0]")
    echo.add_argument("--timeout", type=float, default=0.0, help="give up after S seconds (0: never) [default: 0]")
    hz = sub.add_parser("hz", help="measure the rate of a topic")
    hz.add_argument("topic")
    hz.add_argument("--window", type=float, default=5.0, help="seconds to measure [default: 5]")


def run_topic(args: argparse.Namespace) -> int:
    """Run ``topic list|echo|hz``."""
    from rclpy.qos import qos_profile_sensor_data

    with graph_node() as node:
        if args.verb == "list":
            spin_until(node, lambda: False, 1.0)  # discovery
            for name, types in sorted(node.get_topic_names_and_types()):
                print(f"{name} [{', '.join(types)}]")
            return 0
        cls = message_class(topic_type(node, args.topic, WAIT_S))
        stamps: list[float] = []

        def on_msg(msg: Any) -> None:
            stamps.append(time.monotonic())
            if args.verb == "echo":
                print(to_yaml_like(msg) + "\n---", flush=True)

        node.create_subscription(cls, args.topic, on_msg, qos_profile_sensor_data)
        if args.verb == "hz":
            spin_until(node, lambda: False, args.window)
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
            print(f"{args.topic}: {rate:.2f} Hz over {len(stamps)} messages in {args.window:g} s")
            return 0
        limit = args.timeout or float("inf")
        spin_until(node, lambda: bool(args.count) and len(stamps) >= args.count, limit)
        return 0


# -- lifecycle ------------------------------------------------------------------------------------------------------

TRANSITIONS = ("configure", "activate", "deactivate", "cleanup", "shutdown")


def add_lifecycle_arguments(parser: argparse.ArgumentParser) -> None:
    """``lifecycle get NODE``, ``lifecycle set NODE TRANSITION``."""
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    get = sub.add_parser("get", help="the node's lifecycle state")
    get.add_argument("node", help="e.g. /cosmos3_policy")
    st = sub.add_parser("set", help="trigger a transition")
    st.add_argument("node", help="e.g. /cosmos3_policy")
    st.add_argument("transition", choices=TRANSITIONS)


def _call(node: Any, srv_type: type, name: str, request: Any, timeout: float) -> Any:
    client = node.create_client(srv_type, name)
    if not spin_until(node, client.service_is_ready, timeout):
        raise ValueError(f"service {name} not available within {timeout:g} s (is the node running?)")
    future = client.call_async(request)
    if not spin_until(node, future.done, timeout):
        raise ValueError(f"{name}: no answer within {timeout:g} s")
    return future.result()


def run_lifecycle(args: argparse.Namespace) -> int:
    """Run ``lifecycle get|set``; exit 1 when a transition fails."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    target = args.node.rstrip("/")
    with graph_node() as node:
        if args.verb == "get":
            state = _call(node, GetState, f"{target}/get_state", GetState.Request(), WAIT_S).current_state
            print(f"{state.label} [{state.id}]")
            return 0
        transition = Transition(id=getattr(Transition, f"TRANSITION_{args.transition.upper()}"))
        timeout = 600.0 if args.transition == "configure" else WAIT_S  # configure loads the model
        ok = _call(node, ChangeState, f"{target}/change_state", ChangeState.Request(transition=transition), timeout)
        print("Transitioning successful" if ok.success else "Transitioning failed (see the node's log)")
        return 0 if ok.success else 1


# -- param ----------------------------------------------------------------------------------------------------------


def add_param_arguments(parser: argparse.ArgumentParser) -> None:
    """``param get NODE NAME``, ``param set NODE NAME VALUE`` (VALUE as YAML, like ``ros2 param set``)."""
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    get = sub.add_parser("get", help="a parameter's value")
    get.add_argument("node")
    get.add_argument("name")
    st = sub.add_parser("set", help="set a parameter (run-time parameters take effect on the next cycle)")
    st.add_argument("node")
    st.add_argument("name")
    st.add_argument("value", help="YAML value, e.g. 10, 2.5, true, '[a, b]'")


def coerce(value: Any, current: Any) -> Any:
    """``value`` (as YAML read it) in the type of the parameter's ``current`` value where that is lossless:
    ``7`` or ``"1e-3"`` for a double parameter (YAML 1.1 reads ``1e-3`` as a string), ``[1, 2]`` for a double array."""
    if isinstance(current, float) and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
    if isinstance(current, list) and current and isinstance(current[0], float) and isinstance(value, list):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
    return value


def run_param(args: argparse.Namespace) -> int:
    """Run ``param get|set``; exit 1 when the node refuses the value (the reason is printed)."""
    import yaml
    from rclpy.parameter import Parameter, parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    with graph_node() as node:
        client = AsyncParameterClient(node, args.node.rstrip("/"))
        if not spin_until(node, lambda: client.services_are_ready(), WAIT_S):
            raise ValueError(f"parameter services of {args.node} not available within {WAIT_S:g} s")
        if args.verb == "get":
            future = client.get_parameters([args.name])
            spin_until(node, future.done, WAIT_S)
            print(parameter_value_to_python(future.result().values[0]))
            return 0
        current = client.get_parameters([args.name])
        spin_until(node, current.done, WAIT_S)
        value = coerce(yaml.safe_load(args.value), parameter_value_to_python(current.result().values[0]))
        future = client.set_parameters([Parameter(args.name, value=value)])
        spin_until(node, future.done, WAIT_S)
        result = future.result().results[0]
        print("Set parameter successful" if result.successful else f"Setting parameter failed: {result.reason}")
        return 0 if result.successful else 1


#: ``cosmos3-ros <name>``: (help, add_arguments, run), registered by :mod:`cosmos3_ros.cli`.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "topic": (
        "topics as `ros2 topic` shows them: list, echo, hz (no ROS distro needed)",
        add_topic_arguments,
        run_topic,
    ),
    "lifecycle": (
        "lifecycle state of a node as `ros2 lifecycle` does: get, set <transition>",
        add_lifecycle_arguments,
        run_lifecycle,
    ),
    "param": ("a node's parameters as `ros2 param` does: get, set", add_param_arguments, run_param),
}
