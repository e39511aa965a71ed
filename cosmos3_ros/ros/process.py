# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The node as a process: start, spin, and stop cleanly.

SIGINT and SIGTERM set a flag the spin loop checks every 0.1 s (rclpy's own handlers are off, so a second signal
changes nothing); on stop the executor is drained before the node's entities are destroyed, the node gets
``SHUTDOWN_WAIT_S`` for a model call in flight, and signals are ignored while the interpreter and DDS finalize (a
second Ctrl-C, the one ``ros2 launch`` forwards, would otherwise kill the exit). A model call still running after
that is left behind with ``os._exit(0)``: the recording is already closed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from cosmos3_ros.core.params_file import read_params_file, ros_args_params
from cosmos3_ros.ros.executor import DrainingExecutor
from cosmos3_ros.ros.parameters import usage_text

#: Seconds a stopping node waits for a model call in flight.
SHUTDOWN_WAIT_S = 1.0


def _autostart(node: Any) -> None:
    """Configure then activate (beside the executor, so diagnostics flow while the model loads)."""
    if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
        node.trigger_activate()
    else:
        node.get_logger().error(
            f"autostart: configure failed ({node.backend_error}); fix it and configure again "
            "(cosmos3-ros lifecycle set ... configure)"
        )


def run_node(node_class: Callable[..., Any], args: list[str] | None = None) -> int:
    """Run one lifecycle node of ``node_class`` as a process: ``--help``, parameter files checked before rcl reads
    them, autostart beside the executor, and a clean stop however many SIGINT/SIGTERM arrive (see the module)."""
    argv = list(sys.argv if args is None else args)
    user_args = argv[1 : argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in user_args or "--help" in user_args:
        print(usage_text())
        return 0
    reports = [read_params_file(f) for f in ros_args_params(argv)[0]]
    fatal = [f"{r.path}: {problem}" for r in reports for problem in r.fatal]
    if fatal:  # rcl would refuse the file with a parser trace; say what is wrong instead
        print("policy_node: error: " + "; ".join(fatal), file=sys.stderr)
        return 2
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()  # the spin loop below notices within 0.1 s; a second signal changes nothing

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node = node_class(argv=argv)
    executor = DrainingExecutor(num_threads=4)
    executor.add_node(node)
    idle = True
    try:
        if node.get_parameter("autostart").value:
            threading.Thread(target=_autostart, args=(node,), daemon=True).start()
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.get_logger().info("shutting down")
        node.request_shutdown()
        executor.shutdown(timeout_sec=1.0)  # no callback runs while the node's entities are destroyed
        idle = node.teardown()
        node.destroy_node()
        rclpy.try_shutdown(uninstall_handlers=False)
        # Ignored from here on: Python resets its own handlers to the default (terminate) while the interpreter
        # and DDS finalize, so a second Ctrl-C (a terminal's, then the one ros2 launch forwards) would kill the exit.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not idle:  # a model call is still running (in C++ for torch): leave without waiting; the bag is closed
        print(f"policy_node: leaving a model call in flight after {SHUTDOWN_WAIT_S:g} s", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
