"""`ClockJumpWatch`: the controller's clock going back (an NTP step on a real arm, a restarted /clock).

`ChunkExecutor` runs on the node clock: the system time on a real arm, which an NTP step can set back, or
/clock under the twin, which starts again from 0 when the simulation is restarted (or a recording replayed in
a loop). Every time the executor keeps lies on that clock (chunk stamps, the chunk watchdog's last kick, the
previous tick, the end of the last home move). After a step back of 5 s the watchdog never expired
(now - last kick < 0), the executor held "waiting for the chunk's first action" with the old chunk kept,
and refused every fresh chunk (stamped on the new clock) as older than it until the clock caught up. The
executor asks `check` with each reading; on a step back it drops the schedule, holds and starts again on the
new clock.

A step forward needs nothing of its own: the chunk watchdog expires (no action of the running chunk runs
after `chunk_timeout_s` without a fresh chunk), a tick more than `max_tick_gap_s` after the previous one
holds, and chunks stamped on the old clock are refused as late or stale.
"""

from __future__ import annotations

import math

#: s; a reading this far before the latest one is a step back. Two readings of one clock never go back; the
#: tolerance only keeps float noise out (NTP steps, unlike slewing, start at 0.128 s: ntpd's threshold).
CLOCK_JUMP_TOLERANCE_S = 0.01


class ClockJumpWatch:
    """The latest control-tick reading of a clock, and steps back from it.

    Only tick readings are recorded (`check(now)`); a chunk's reading is checked against them
    (`check(now, record=False)`) but not kept: a caller may tick with a time it read before offering a chunk
    (the in-process evaluator reads the simulated time, runs the policy, offers its chunk, then ticks at the
    time it read), and that tick is no step back.

    Args:
        tolerance_s: a reading more than this before the latest tick's is a step back.
    """

    def __init__(self, tolerance_s: float = CLOCK_JUMP_TOLERANCE_S) -> None:
        if not (math.isfinite(tolerance_s) and tolerance_s >= 0.0):
            raise ValueError(
                f"ClockJumpWatch.tolerance_s: expected a finite value >= 0 s, found {tolerance_s!r}"
            )
        self.tolerance_s = tolerance_s
        self.latest: float | None = None  #: the latest tick's reading (s); None before the first tick

    def check(self, now: float, record: bool = True) -> float | None:
        """How far the clock went back (s) when `now` lies more than the tolerance before the latest tick's
        reading, else None; a tick's reading is recorded (`record`), and after a step back `now` is the
        new clock's. A non-finite reading is ignored."""
        if not math.isfinite(now):
            return None
        latest = self.latest
        if latest is not None and now < latest - self.tolerance_s:
            self.latest = now
            return latest - now
        if record:
            self.latest = now if latest is None else max(latest, now)
        return None


def clock_jump_reason(back_s: float, now: float) -> str:
    """The hold reason for a clock that went back `back_s` s to `now` (s)."""
    return (
        f"clock jumped back by {back_s:.3f} s (to {now:.3f} s; an NTP step or a restarted /clock): "
        "schedule dropped, holding; the next fresh chunk (on the new clock) starts from the arm's pose"
    )
