"""The teleop device interface: `TeleopDevice`, what it reads (`DeviceContext`) and returns (`DeviceCommand`).

Human devices give *deltas* (metres to add to the held target this tick); the scripted expert gives
*absolute* end-effector targets. A device whose hardware or library is missing raises
`DeviceUnavailableError`. The devices themselves live in `dm1.teleop.devices`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

EVENTS = ("start", "stop_save", "discard", "mark_success", "mark_failure")


class DeviceUnavailableError(RuntimeError):
    """The requested input device (or its Python library) is not present."""


@dataclass
class DeviceContext:
    """What a device may look at to produce a command (all in fr3_link0, metres, node clock seconds).

    Args:
        now: node clock time of this tick.
        dt: control period (s).
        ee_pos: measured end-effector position (3,) or None if unknown.
        gripper_width: measured gripper width (m) or None.
        cube_pos: object position from the twin (3,) or None (scripted expert only).
        episode_time: seconds since the current episode started (0 when idle).
        recording: an episode is open (the teleop loop sets it each tick; True when used alone).
    """

    now: float
    dt: float
    ee_pos: np.ndarray | None = None
    gripper_width: float | None = None
    cube_pos: np.ndarray | None = None
    episode_time: float = 0.0
    recording: bool = True


@dataclass
class DeviceCommand:
    """One tick of device input.

    Args:
        stamp: when the device produced it (node clock, s); feeds the deadman.
        mode: "delta" (xyz is a displacement to add to the target) or "absolute" (xyz is the target).
        xyz: (3,) metres.
        gripper: absolute gripper command in [0, 1] (1 = close), or None to keep the previous one.
        enable: enable/deadman button state (True for devices without one).
        events: episode-control events from this tick, a subset of `EVENTS`.
        perturbed: the command is a deliberate mistake (a scripted recovery demo's miss: recorded, not
            learned).
    """

    stamp: float
    mode: str = "delta"
    xyz: np.ndarray = field(default_factory=lambda: np.zeros(3))
    gripper: float | None = None
    enable: bool = True
    events: tuple[str, ...] = ()
    perturbed: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("delta", "absolute"):
            raise ValueError(f"DeviceCommand.mode: expected 'delta' or 'absolute', found {self.mode!r}")
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(self.xyz)):
            raise ValueError(f"DeviceCommand.xyz: expected finite values, found {self.xyz.tolist()}")
        if self.gripper is not None and not (0.0 <= self.gripper <= 1.0):
            raise ValueError(
                f"DeviceCommand.gripper: expected a value in [0, 1] or None, found {self.gripper!r}"
            )
        bad = [e for e in self.events if e not in EVENTS]
        if bad:
            raise ValueError(f"DeviceCommand.events: unknown {bad}, expected a subset of {list(EVENTS)}")


class TeleopDevice(Protocol):
    """An input device: open once, read every control tick, close at shutdown."""

    name: str

    def open(self) -> None:
        """Connect; raise `DeviceUnavailableError` (clear message) if the device or its library is absent."""

    def read(self, ctx: DeviceContext) -> DeviceCommand | None:
        """Latest input, or None if nothing fresh/usable (device unplugged, no observation yet)."""

    def close(self) -> None:
        """Release the device."""
