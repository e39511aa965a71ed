# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A real, isolated rclpy graph for tests: own Context and ROS_DOMAIN_ID, executor spinning in a thread."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from cosmos3_ros.ros.convert import rgb_to_image_msg
from cosmos3_ros.ros.executor import DrainingExecutor

_domains = itertools.count((os.getpid() * 7) % 80 + 100)


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID no other graph of this test process uses."""
    return next(_domains) % 200 + 20


class Graph:
    """One ROS 2 graph per test: ``add(node)``, ``wait_for(pred)``, ``close()``."""

    def __init__(self) -> None:
        self.domain_id = next_domain_id()
        self.context = Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.executor = DrainingExecutor(num_threads=4, context=self.context)
        self.nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # shutdown races end the spin thread quietly
            pass

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str) -> Node:
        return self.add(Node(name, context=self.context))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, period: float = 0.02) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(period)
        raise TimeoutError(f"condition not met within {timeout} s")

    def close(self) -> None:
        for n in self.nodes:
            teardown = getattr(n, "teardown", None)
            if teardown is not None:
                teardown()
        self.context.try_shutdown()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        for n in self.nodes:
            n.destroy_node()


class Camera:
    """A test node's camera publisher with helpers for frames at a given stamp."""

    def __init__(self, node: Node, topic: str, qos=qos_profile_sensor_data) -> None:
        self.node = node
        self.pub = node.create_publisher(Image, topic, qos)

    def publish(self, image: np.ndarray, stamp: float | None = None, frame_id: str = "camera") -> None:
        t = self.node.get_clock().now().nanoseconds * 1e-9 if stamp is None else stamp
        self.pub.publish(rgb_to_image_msg(image, t, frame_id))

    def publish_raw(self, msg: Image) -> None:
        self.pub.publish(msg)


class Collector:
    """Subscribes and keeps every message received."""

    def __init__(self, node: Node, msg_type: type, topic: str, qos: Any = 10) -> None:
        self.msgs: list[Any] = []
        self._lock = threading.Lock()
        node.create_subscription(msg_type, topic, self._cb, qos)

    def _cb(self, msg: Any) -> None:
        with self._lock:
            self.msgs.append(msg)

    def __len__(self) -> int:
        with self._lock:
            return len(self.msgs)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.msgs)
