# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""What configures a :class:`~cosmos3_ros.control.controller.PolicyController` and what it asks the model for."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cosmos3_ros.core.clip_buffer import Observation
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.trajectory import ActionMapping, RateLimits

STAMP_MODES = ("observation", "now")
#: A clock that goes back by more than this (seconds) is a jump: a looping bag, a simulator reset.
CLOCK_JUMP_S = 0.5
#: ee_pose action space: the first 9 action dimensions are a relative pose (xyz + 6-D rotation).
POSE_DIMS = 9


@dataclass(frozen=True)
class ControllerConfig:
    """Loop configuration (the node parameters that shape control, not sampling)."""

    cameras: tuple[str, ...]
    mapping: ActionMapping
    camera_layout: str = "single"
    max_observation_age: float = 0.5
    sync_tolerance: float = 0.05
    replan_every: int = 8
    stamp_mode: str = "observation"
    buffer_capacity: int = 8
    max_clock_skew: float = 1.0
    action_space: str = "joint_pos"
    state_joints: tuple[str, ...] = ()
    #: Real-time chunking (see :mod:`cosmos3_ros.control.chunking`): fixed delay in steps (0: estimated), the
    #: most rows given as prefix (0: action_chunk_size - replan_every).
    rtc: bool = False
    rtc_delay: int = 0
    execution_horizon: int = 0
    rate_limits: RateLimits | None = None
    accelerations: bool = False

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("camera_topics must name at least one camera")
        if self.camera_layout == "single" and len(self.cameras) != 1:
            raise ValueError(f"camera_layout 'single' takes one camera, got {len(self.cameras)}")
        if self.camera_layout == "droid" and len(self.cameras) != 3:
            raise ValueError(
                f"camera_layout 'droid' takes three cameras (wrist, exterior 1, exterior 2), got {len(self.cameras)}"
            )
        if self.state_joints and len(self.state_joints) != self.mapping.width:
            raise ValueError(
                f"state_joint_names has {len(self.state_joints)} names, the action has {self.mapping.width} "
                "dimensions: one joint per dimension, in order"
            )
        if not self.max_observation_age > 0:
            raise ValueError(f"max_observation_age must be > 0, got {self.max_observation_age}")
        if self.sync_tolerance < 0:
            raise ValueError(f"sync_tolerance must be >= 0, got {self.sync_tolerance}")
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {self.replan_every}")
        if self.stamp_mode not in STAMP_MODES:
            raise ValueError(f"trajectory_stamp {self.stamp_mode!r} unknown; expected one of {list(STAMP_MODES)}")
        if self.rtc and self.action_space != "joint_pos":
            raise ValueError("rtc needs absolute actions (action_space joint_pos): relative poses cannot be given back")
        if self.rtc and (self.mapping.scale == 0).any():
            raise ValueError("rtc gives commanded positions back to the model: action_scale must not contain 0")
        if self.rate_limits is not None and len(self.rate_limits.max_velocity) != self.mapping.width:
            raise ValueError("max_velocity / max_acceleration must have one value per joint")

    @property
    def state_names(self) -> tuple[str, ...]:
        """JointState joints read as the robot state row (``state_joint_names``, else the output joint names)."""
        return self.state_joints or self.mapping.joint_names


@dataclass(frozen=True)
class InferenceRequest:
    """What the model must be run on: ``image`` (composed observation) taken at ``stamp``.

    ``state`` is the robot state at the observation, in the model's action space (the inverse of the action
    mapping), when a state input is configured.
    """

    request_id: int
    image: np.ndarray
    stamp: float
    settings: PolicySettings
    observation: Observation = field(repr=False)
    state: np.ndarray | None = None
    #: ee_pose action space: the end-effector pose the relative pose actions start from (position, xyzw, frame).
    reference_pose: tuple[np.ndarray, np.ndarray, str] | None = None
    #: RTC: the first rows of the chunk, known (model units), and the grid base of the chunk (row j is due at
    #: ``base + (j + 1) / fps``; without RTC the observation stamp).
    prefix: np.ndarray | None = None
    base: float | None = None
    #: Node-clock time the request was made (the delay estimate measures from here).
    made_at: float | None = None

    @property
    def grid_base(self) -> float:
        """Time of row -1 of the chunk (row j is due at ``grid_base + (j + 1) / fps``)."""
        return self.stamp if self.base is None else self.base
