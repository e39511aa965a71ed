# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Subcommands of ``cosmos3-ros``: each module has HELP, add_arguments(parser) and run(args)."""
