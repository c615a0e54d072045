"""Deadman: a teleop command is only valid while the input device has spoken recently (and, optionally,
while an enable button is held).

No fresh input within `timeout_s` (100 ms by default) → `alive()` is False: the teleop node stops publishing
chunks (the controller's watchdog then holds the arm) and freezes its own target, so motion never resumes
with a jump when input comes back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DeadmanConfig:
    """Deadman settings.

    Args:
        timeout_s: input older than this (seconds, node clock) disables motion.
        require_enable: if True, motion also needs the device's enable button held (gamepad shoulder, etc.).
    """

    timeout_s: float = 0.1
    require_enable: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_s) and 0.0 < self.timeout_s <= 5.0):
            raise ValueError(
                f"DeadmanConfig.timeout_s: expected a value in (0, 5] s, found {self.timeout_s!r}"
            )


class Deadman:
    """Tracks the freshness of device input against an injected clock value (`now`, seconds).

    Times are passed in explicitly so tests drive it with a fake clock and the node with its (sim) clock.
    """

    def __init__(self, config: DeadmanConfig | None = None) -> None:
        self.config = config or DeadmanConfig()
        self._last_input: float | None = None
        self._enabled = False
        self.trips = 0  # number of alive → dead transitions (for diagnostics)
        self._was_alive = False

    def feed(self, stamp: float, enable: bool = True) -> None:
        """Record fresh device input produced at `stamp` (seconds) with the enable button state."""
        if not math.isfinite(stamp):
            raise ValueError(f"Deadman.feed: stamp must be finite, found {stamp!r}")
        if self._last_input is None or stamp >= self._last_input:
            self._last_input = stamp
            self._enabled = bool(enable)

    def age(self, now: float) -> float:
        """Seconds since the last input (inf before the first)."""
        return math.inf if self._last_input is None else max(0.0, now - self._last_input)

    def alive(self, now: float) -> bool:
        """True while input is fresh (and enabled, if required). Counts alive→dead transitions in `trips`."""
        ok = self.age(now) <= self.config.timeout_s
        if self.config.require_enable:
            ok = ok and self._enabled
        if self._was_alive and not ok:
            self.trips += 1
        self._was_alive = ok
        return ok

    def reset(self) -> None:
        """Forget all input (e.g. after a device reconnect): motion needs fresh input again."""
        self._last_input = None
        self._enabled = False
        self._was_alive = False
