# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""GPU sidecar: the model in its own process, served over openpi's websocket + msgpack-numpy protocol.

``protocol`` (pure: numpy + msgpack) defines the encoding and the request/reply schema, ``droid`` reads NVIDIA's
DROID/RoboArena observation keys as its released policy server does;
``server`` runs the websocket server (``cosmos3-ros sidecar``). The client side is
:class:`cosmos3_ros.sidecar.client.SidecarBackend`; the real ``openpi-client`` works too.
"""
