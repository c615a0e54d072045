"""`ClampLog`: the safety filter's clamps as throttled WARNING lines, naming the original and the safe target.

A clamp (a target clipped to the workspace, rate-limited, stepped toward the measured pose) was logged at
DEBUG, and the controller node forwards only warnings and above to the ROS log (`dm1_ros.log_bridge`): the
original and the clipped values reached nobody but the status's last clamp. A clamping stream clamps on every
tick (100 Hz), so each reason (a clamp's list of reasons, e.g. "workspace, ee_speed") is logged at most once
per `CLAMP_LOG_PERIOD_S`, with how many clamps of it were not logged since its previous line. Under the
bundled policy on the twin (`dm1 bench loop`, 20 s of simulated time): 1585 clamps, 56 lines.
"""

from __future__ import annotations

import logging

import numpy as np

from dm1.control.safety import SafetyReport

#: s (executor clock); a clamp reason is logged at most once per this period
CLAMP_LOG_PERIOD_S = 1.0


def _values(x: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in np.asarray(x, dtype=float).ravel()) + "]"


class ClampLog:
    """Logs clamp reports at WARNING, each reason (the report's list of reasons, e.g. "workspace, ee_speed")
    at most once per `period_s`, with how many clamps of it were not logged since its previous line.

    Args:
        logger: where the lines go.
        period_s: the least time between two lines of one reason.
        what: names the values ("pose" [x, y, z, qx, qy, qz, qw], "joint target" rad).
    """

    def __init__(
        self, logger: logging.Logger, period_s: float = CLAMP_LOG_PERIOD_S, what: str = "target"
    ) -> None:
        if not period_s >= 0:
            raise ValueError(f"ClampLog.period_s: expected >= 0 s, found {period_s!r}")
        self.logger, self.period_s, self.what = logger, period_s, what
        self._last: dict[str, float] = {}  # reason -> clock time of its last line
        self._suppressed: dict[str, int] = {}  # reason -> clamps not logged since its last line

    def report(self, report: SafetyReport, now: float) -> bool:
        """Log `report` (a clamp at `now`, s) unless its reason was logged within the period (a clock that
        went back since holds no line back); otherwise count it. Returns whether a line was logged."""
        reason = ", ".join(dict.fromkeys(report.reasons))
        if 0.0 <= now - self._last.get(reason, -np.inf) < self.period_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        self._last[reason] = now
        skipped = self._suppressed.pop(reason, 0)
        more = f" ({skipped} more not logged since the previous line)" if skipped else ""
        original, safe = _values(report.original), _values(report.safe)
        self.logger.warning("clamped (%s): %s %s -> %s%s", reason, self.what, original, safe, more)
        return True
