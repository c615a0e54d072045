"""Teleoperation core (ROS-free): input devices, deadman, episode state machine, recorder, MCAP mirror.

The ROS shell is `dm1_ros.teleop_node`; everything here is numpy-only and unit-testable with a fake
clock.
"""

from dm1.teleop.deadman import Deadman
from dm1.teleop.device_interface import (
    DeviceCommand,
    DeviceContext,
    DeviceUnavailableError,
    TeleopDevice,
)
from dm1.teleop.devices import make_device
from dm1.teleop.session import EpisodeSession, SessionError, SessionState

__all__ = [
    "Deadman",
    "DeviceCommand",
    "DeviceContext",
    "DeviceUnavailableError",
    "EpisodeSession",
    "SessionError",
    "SessionState",
    "TeleopDevice",
    "make_device",
]
