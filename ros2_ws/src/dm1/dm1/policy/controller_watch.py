"""What the policy knows of the controller's health: a latched controller fault stops the policy.

The controller reports its state on `/dm1/controller/status` (10 Hz, ERROR level with the fault's text while
a fault is latched). Reliability row 13: on a controller fault the policy goes inactive, and recovery is an
operator's action. So the policy node deactivates itself when a fault is reported, and refuses to activate
while the controller's latest report (within `fresh_s`) is a fault: after `/dm1/controller/recover` the arm
moves again only once someone activates the policy, never by itself because the policy was still running.
The same holds for a controller that stops reporting (crashed, killed, its host gone): a restarted controller
would otherwise execute the still-active policy's chunks at once. Once reports were heard, `silence_s`
without one stops the policy (`lost`) and blocks activation until the controller reports again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dm1.control.executor import STATUS_NAME as CONTROLLER_STATUS_NAME

__all__ = ["CONTROLLER_STATUS_NAME", "ControllerWatch"]


@dataclass
class ControllerWatch:
    """The controller's latest report, with the time (policy clock, s) at which it arrived.

    Args:
        fresh_s: a fault reported longer ago than this no longer blocks activation (a controller that
            faulted and then went away is `lost` instead).
        silence_s: a controller heard before and silent for longer than this is lost; 0 = never.
    """

    fresh_s: float = 1.0
    silence_s: float = 2.0
    _fault: str | None = None
    _seen_at: float = -math.inf

    def update(self, is_error: bool, message: str, now: float) -> str | None:
        """Record one report (`is_error`: ERROR level); returns the fault text if it reports a fault."""
        self._fault = (message or "controller fault") if is_error else None
        # A report taken in before the policy's clock started (sim time reads 0 until the first /clock, which
        # the node may process after reports that queued while it loaded its model) has no arrival time: it
        # anchors neither freshness nor silence, so the clock's first jump to sim time is not silence.
        self._seen_at = now if now > 0 else -math.inf
        return self._fault

    def fault(self, now: float) -> str | None:
        """The fault of the latest report if that report is recent (|now - arrival| <= fresh_s), else None.
        The absolute value: a clock that jumped back (a simulation reset) does not make an old report new."""
        if self._fault is None or abs(now - self._seen_at) > self.fresh_s:
            return None
        return self._fault

    def lost(self, now: float) -> str | None:
        """Why the controller counts as gone: heard before, and no report for more than `silence_s` (policy
        clock); else None. A clock that jumped back (a simulation reset) is not silence."""
        silent = now - self._seen_at
        if self.silence_s <= 0 or not math.isfinite(silent) or silent <= self.silence_s:
            return None
        return f"no controller report for {silent:.1f} s (limit {self.silence_s:g} s): is it running?"
