# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
