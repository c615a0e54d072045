"""Whether simulation time still runs: `dm1 launch --use-sim` follows the twin's `/clock` once it is up.

A twin that hangs (`kill -STOP`, a deadlock, a starved process) stops `/clock`; every node on simulation
time then waits forever, and the launcher used to say nothing. The drivers of a graph (`dm1 eval`,
`dm1 data collect`) already give up after `dm1_ros.graph_client.SIM_STALL_S` of wall time without progress;
the launcher warns once after `warn_after_s` (naming the twin's process state), says when time runs again,
and stops the graph with a non-zero code after `stop_after_s` (by default after a driver would have given up,
so a driver reports the stall in its own words first).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SIM_STALL_WARN_S = 10.0  # wall seconds without /clock advancing before the launcher warns (once)
SIM_STALL_STOP_S = 90.0  # ... before it stops the graph (exit code 1)


@dataclass(frozen=True)
class ClockWatchSettings:
    """How the launcher watches simulation time.

    Args:
        node: name of the node that publishes `/clock` (the twin): its process state goes into the warning.
        warn_after_s: wall seconds without progress before the one warning.
        stop_after_s: wall seconds without progress before the graph is stopped (exit code 1).
    """

    node: str
    warn_after_s: float = SIM_STALL_WARN_S
    stop_after_s: float = SIM_STALL_STOP_S

    def __post_init__(self) -> None:
        if not 0 < self.warn_after_s <= self.stop_after_s:
            raise ValueError(
                f"ClockWatchSettings: expected 0 < warn_after_s <= stop_after_s, found "
                f"{self.warn_after_s} and {self.stop_after_s}"
            )


class Stall(enum.Enum):
    """What `SimClockWatch.step` found."""

    NONE = "none"  # nothing new to say
    STUCK = "stuck"  # simulation time has stood still for `warn_after_s` (said once per stall)
    RESUMED = "resumed"  # it runs again after a STUCK
    GIVE_UP = "give_up"  # it has stood still for `stop_after_s`


class SimClockWatch:
    """Simulation time against wall time: says when the former stands still (pure; the caller feeds it)."""

    def __init__(self, warn_after_s: float, stop_after_s: float, now: float) -> None:
        self.warn_after_s = warn_after_s
        self.stop_after_s = stop_after_s
        self.last_sim_s: float | None = None
        self._advanced_at = now  # wall time of the last progress (or of the start)
        self._warned = False

    def stalled_s(self, now: float) -> float:
        """Wall seconds since simulation time last advanced (or since the watch started)."""
        return now - self._advanced_at

    def step(self, sim_s: float | None, now: float) -> Stall:
        """Take the latest simulation time (None: none heard yet) at wall time `now`."""
        if sim_s is not None and sim_s != self.last_sim_s:  # any change counts (a reset may set it back)
            self.last_sim_s, self._advanced_at = sim_s, now
            if self._warned:
                self._warned = False
                return Stall.RESUMED
            return Stall.NONE
        stalled = self.stalled_s(now)
        if not self._warned and stalled >= self.warn_after_s:
            self._warned = True
            return Stall.STUCK
        if stalled >= self.stop_after_s:
            return Stall.GIVE_UP
        return Stall.NONE
