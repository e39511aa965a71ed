# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Model backends other than the in-process runtime, each implementing ``core.backend.PolicyBackend``.

- :mod:`cosmos3_ros.sidecar.client`: ``SidecarBackend``, a websocket client of a Cosmos 3
  policy server (ours, ``cosmos3-ros sidecar``, or NVIDIA's openpi-protocol server). No torch.
"""
