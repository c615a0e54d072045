"""Policy side of the robot path (no ROS, no torch): observation assembly and the timed inference step."""

from dm1.policy.controller_watch import CONTROLLER_STATUS_NAME, ControllerWatch
from dm1.policy.observation import (
    JOINT_STREAM,
    Observation,
    ObservationAssembler,
    ObservationConfig,
    StaleReason,
)
from dm1.policy.session import (
    NODE_PARAMETERS,
    PolicyConfig,
    PolicySession,
    config_from_parameters,
    parse_camera_topics,
)
from dm1.policy.step import MODES, ActionChunk, LatencyLedger, PolicyStep, StepOutcome

__all__ = [
    "CONTROLLER_STATUS_NAME",
    "ControllerWatch",
    "JOINT_STREAM",
    "MODES",
    "NODE_PARAMETERS",
    "ActionChunk",
    "LatencyLedger",
    "Observation",
    "ObservationAssembler",
    "ObservationConfig",
    "PolicyConfig",
    "PolicySession",
    "PolicyStep",
    "config_from_parameters",
    "parse_camera_topics",
    "StaleReason",
    "StepOutcome",
]
