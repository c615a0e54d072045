"""`LoopHealth`: the controller's own loop and the FCI link over the last second of streaming, against bounds.

Two ways a running stream degrades without any single tick being wrong:

* control-loop overruns: ticks more than two periods after the previous one (`tick`; the node's executor
  was held up: a starved CPU, a blocking callback). Each one leaves the arm's target standing for that long;
  many in a row make the arm stutter along its path. More than `SafetyLimits.max_overruns_per_s` within any
  `LOOP_WINDOW_S` (1 s) while streaming latch a fault.
* lost commands: libfranka's `control_command_success_rate` (the fraction of the last 100 control commands
  that reached the robot). Its mean over the last `LOOP_WINDOW_S` of streaming below
  `SafetyLimits.min_streaming_success_rate` latches a fault; the first `LINK_WARMUP_S` of each stream is not
  judged (the rate's own 100-command window fills then, as in `link_check.run_comm_check`).

A latched fault brakes the arm to rest and holds it until the operator's explicit recovery, like every fault
of `ChunkExecutor`. Either bound at 0 switches its check off (the counts are still kept and exported).
ROS-free; times are the executor's clock (s).
"""

from __future__ import annotations

import math
from collections import deque

#: s; the window overruns are counted in and the success rate averaged over
LOOP_WINDOW_S = 1.0
#: s; the start of each stream whose success-rate samples are not judged (libfranka's window fills)
LINK_WARMUP_S = 0.2


class LoopHealth:
    """Overruns and command success rates within the last `window_s`, against their bounds (0 = off).

    Args:
        max_overruns_per_s: more overruns than this within `window_s` is a fault; 0 = off.
        min_success_rate: a mean success rate below this over `window_s` of streaming is a fault; 0 = off.
        window_s: the window (s).
        warmup_s: the start of a stream whose rate samples are dropped (s).
    """

    def __init__(
        self,
        max_overruns_per_s: int,
        min_success_rate: float,
        window_s: float = LOOP_WINDOW_S,
        warmup_s: float = LINK_WARMUP_S,
    ) -> None:
        if not window_s > 0 or not warmup_s >= 0:
            raise ValueError(
                f"LoopHealth: expected window_s > 0 and warmup_s >= 0, found {window_s!r}, {warmup_s!r}"
            )
        self.max_overruns, self.min_rate = int(max_overruns_per_s), float(min_success_rate)
        self.window_s, self.warmup_s = window_s, warmup_s
        self._overruns: deque[float] = deque()  # clock times of the overruns within the window
        self._rates: deque[tuple[float, float]] = deque()  # (time, success rate) within the window
        self._judged_from: float | None = None  # when the current stream's warm-up ends (None: no stream)
        self._last_tick: float | None = None  # clock time of the previous tick
        self.peak_overruns = 0  #: the most overruns seen within one window
        self.max_gap_s = 0.0  #: the longest time between two ticks while streaming

    def tick(self, now: float, streaming: bool, period_s: float | None) -> tuple[float, bool]:
        """(time since the previous tick, 0 for the first; whether it was an overrun) for a tick at `now`.

        Only while `streaming` (where a stall leaves the arm's target standing) is the longest gap kept and a
        gap over two periods `period_s` counted as an overrun (`overrun`); None: no overrun handling.
        """
        gap = 0.0 if self._last_tick is None else max(now - self._last_tick, 0.0)
        self._last_tick = now
        late = streaming and period_s is not None and gap > 2.0 * period_s
        if streaming:
            self.max_gap_s = max(self.max_gap_s, gap)
        if late:
            self.overrun(now)
        return gap, late

    def start_stream(self, now: float) -> None:
        """A stream starts at `now` (activation): the success-rate window starts over after the warm-up."""
        self._rates.clear()
        self._judged_from = now + self.warmup_s

    def overrun(self, now: float) -> None:
        """Count an overrun of the control loop at `now` (while streaming)."""
        self._overruns.append(now)
        self._drop_old(now)
        self.peak_overruns = max(self.peak_overruns, len(self._overruns))

    def sample(self, rate: float, now: float) -> None:
        """Record libfranka's command success rate (0..1) read at `now` while streaming; a non-finite sample,
        or one in the stream's warm-up, is not kept."""
        if math.isfinite(rate) and self._judged_from is not None and now >= self._judged_from:
            self._rates.append((now, float(rate)))
            self._drop_old(now)

    def fault(self, now: float) -> str | None:
        """Why the loop or the link is over its bound at `now`, or None."""
        self._drop_old(now)
        n = len(self._overruns)
        if 0 < self.max_overruns < n:
            return (
                f"control loop overruns: {n} ticks more than two periods late within {self.window_s:g} s "
                f"(limit safety.max_overruns_per_s {self.max_overruns})"
            )
        start = self._judged_from
        if self.min_rate > 0 and self._rates and start is not None and now - start >= self.window_s:
            mean = sum(r for _, r in self._rates) / len(self._rates)
            if mean < self.min_rate:
                return (
                    f"FCI link: command success rate {mean:.3f} on average over the last {self.window_s:g} s "
                    f"of streaming (limit safety.min_streaming_success_rate {self.min_rate:g}): commands lost"
                )
        return None

    def reset(self) -> None:
        """Forget every sample and the previous tick (after a recovery, or a clock that went back); the peak
        and the longest gap are kept."""
        self._overruns.clear()
        self._rates.clear()
        self._judged_from = self._last_tick = None

    def values(self) -> dict[str, float]:
        """Status key/values: the longest gap between two ticks and the most overruns within one window."""
        gap_ms = round(1000.0 * self.max_gap_s, 1)
        return {"max_tick_gap_ms": gap_ms, "peak_overruns_per_s": self.peak_overruns}

    def _drop_old(self, now: float) -> None:
        while self._overruns and not now - self._overruns[0] < self.window_s:
            self._overruns.popleft()
        while self._rates and not now - self._rates[0][0] < self.window_s:
            self._rates.popleft()
