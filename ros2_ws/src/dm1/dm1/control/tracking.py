"""How late and how closely the arm follows the targets the controller streams: an online lag estimate.

The controller sends a target every tick and reads the measured pose in the same tick. The measured path is
the target path delayed (the impedance tracker, the robot, the network) plus an error; `TrackingMonitor`
keeps the last `window_s` of both and finds the delay τ that best explains the measurement:
min over τ of RMS ‖target(t − τ) − measured(t)‖ (targets interpolated; τ on a grid of `step_s`). The lag and
the error at that lag go into the controller's status (`tracking_lag_ms`, `tracking_error_mm` or `_mrad`),
so a user sees how long an action takes to become motion on this robot (peer-features §4.3), and notices
when it changes (a payload, a stiffer task, a slower link). No estimate while the targets barely move: a
lag is only visible in motion.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class TrackingMonitor:
    """Online action-to-motion lag and tracking error over a sliding window.

    Args:
        unit_scale: measured units → reported units (1000: m → mm or rad → mrad).
        unit: the reported unit's name (`mm`, `mrad`).
        window_s: how much history an estimate uses (s, node clock).
        max_lag_s: the largest lag searched.
        step_s: the lag grid.
        min_path: the target path length over the window needed for an estimate (m or rad).
        every_s: at most one estimate per this interval (the status is read every control tick).
    """

    def __init__(
        self,
        unit_scale: float = 1000.0,
        unit: str = "mm",
        window_s: float = 2.0,
        max_lag_s: float = 0.3,
        step_s: float = 0.005,
        min_path: float = 0.02,
        every_s: float = 0.5,
    ) -> None:
        self.unit_scale, self.unit = unit_scale, unit
        self.window_s, self.max_lag_s, self.step_s = window_s, max_lag_s, step_s
        self.min_path, self.every_s = min_path, every_s
        self._samples: deque[tuple[float, np.ndarray, np.ndarray]] = deque()
        self._last_estimate_at = -np.inf
        self.lag_s: float | None = None
        self.error: float | None = None  # RMS at the best lag, measured units

    def record(self, t: float, target: np.ndarray, measured: np.ndarray) -> None:
        """One tick while streaming: the target sent (D,) and the pose measured (D,) at time `t`."""
        if self._samples and t <= self._samples[-1][0]:
            self.reset()  # the clock went back (simulation reset): an old timeline says nothing
        self._samples.append((t, np.asarray(target, float).copy(), np.asarray(measured, float).copy()))
        while self._samples and self._samples[0][0] < t - self.window_s:
            self._samples.popleft()
        if t - self._last_estimate_at >= self.every_s:
            self._last_estimate_at = t
            self._estimate()

    def reset(self) -> None:
        """Forget the window (a hold, or a new stream: targets stood still or jumped); keep the estimate."""
        self._samples.clear()
        self._last_estimate_at = -np.inf

    def _estimate(self) -> None:
        t = np.array([s[0] for s in self._samples])  # (N,)
        target = np.array([s[1] for s in self._samples])  # (N, D)
        measured = np.array([s[2] for s in self._samples])  # (N, D)
        if len(t) < 10 or t[-1] - t[0] < 2 * self.max_lag_s:
            return
        if np.linalg.norm(np.diff(target, axis=0), axis=1).sum() < self.min_path:
            return
        lags = np.arange(0.0, self.max_lag_s + 1e-9, self.step_s)  # (L,)
        usable = t >= t[0] + self.max_lag_s  # every lag's delayed target lies inside the window
        when = t[usable][None, :] - lags[:, None]  # (L, M) times of the delayed targets
        delayed = np.stack(
            [np.interp(when, t, target[:, d]) for d in range(target.shape[1])], -1
        )  # (L, M, D)
        rms = np.sqrt(np.mean(np.sum((delayed - measured[usable][None]) ** 2, axis=-1), axis=1))  # (L,)
        best = int(np.argmin(rms))
        self.lag_s, self.error = float(lags[best]), float(rms[best])

    def values(self) -> dict[str, float]:
        """Status key/values: the latest estimate (empty before the first)."""
        if self.lag_s is None or self.error is None:
            return {}
        return {
            "tracking_lag_ms": round(1000.0 * self.lag_s, 1),
            f"tracking_error_{self.unit}": round(self.unit_scale * self.error, 2),
        }
