# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Model runtime (torch + diffusers); imported lazily so the core and the node stay light."""
