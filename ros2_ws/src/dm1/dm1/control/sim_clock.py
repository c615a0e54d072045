"""`SimClockWatch`: the controller's view of a simulated clock that stopped (ROS-free; times in seconds).

Under simulated time every timer of the controller node runs on /clock, which the twin publishes: a twin
killed or hung stops them all (control ticks, /joint_states, the status), and the node went silent with the
robot link dead behind it. A timer on the wall clock asks `check` a few times a second; once the simulated
time has not moved for `limit_s` of wall time, the controller reports it until the clock moves again
(`stopped_clock_status`): a fault when the robot cannot be read either (the twin is gone: a lost link), a
warning while it still answers. Nothing is commanded meanwhile: the control ticks do not run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from dm1.control.backend import RobotBackend
from dm1.control.executor_status import FAULT, ExecutorStatus

log = logging.getLogger(__name__)

SIM_CLOCK_LIMIT_S = 1.0  # wall seconds without a simulated-time step that count as a stopped clock


class SimClockWatch:
    """Tells how long the simulated clock has stood still, by a wall clock.

    Args:
        limit_s: wall seconds without a step of simulated time before `check` reports it.
        wall: the wall clock (monotonic seconds; injected for tests).
    """

    def __init__(
        self, limit_s: float = SIM_CLOCK_LIMIT_S, wall: Callable[[], float] = time.monotonic
    ) -> None:
        if not limit_s > 0:
            raise ValueError(f"SimClockWatch.limit_s: expected > 0 s, found {limit_s}")
        self.limit_s, self._wall = limit_s, wall
        self._sim: float | None = None  # the simulated time last seen, and the wall time it was first seen
        self._since = wall()
        self.stopped = False  #: whether the last `check` found the clock stopped
        self.changed = False  #: whether that `check` found it stopping or moving again (log it once)

    def check(self, sim_now: float) -> str | None:
        """None while the simulated clock moves, or before its first message (ROS time reads 0 until then:
        right after start-up, DDS discovery alone can take longer than `limit_s` on a loaded host, and the
        controller cannot come up without the twin's robot anyway); once it stood still over `limit_s`,
        why."""
        wall = self._wall()
        if sim_now == 0.0:
            self._since = wall
            return None
        if sim_now != self._sim:  # the first time seen: still since this watch started, as far as it knows
            self._since = wall if self._sim is not None else self._since
            self._sim = sim_now
        still = wall - self._since
        stopped = still > self.limit_s
        self.changed, self.stopped = stopped != self.stopped, stopped
        if not stopped:
            return None
        return f"simulation clock stopped for {still:.1f} s at t={sim_now:.3f} (is the twin running?)"


def stopped_clock_status(status: ExecutorStatus, stopped: str, robot_fault: str | None) -> ExecutorStatus:
    """The executor's `status` with the stopped clock: a fault naming it and the robot's fault when the robot
    cannot be read (a lost link: the twin is gone), so consumers of the status (the operator CLI, the policy,
    which deactivates) see it as one; a warning while the robot still answers (a twin starved of CPU for a
    moment is no fault: nothing moves meanwhile, and it goes on when the clock does)."""
    if robot_fault is None:
        return replace(status, warning=stopped)
    why = f"{stopped}; robot: {robot_fault}"
    return replace(status, state=FAULT, fault=why, reasons=[f"fault: {why}"])


def robot_fault(backend: RobotBackend) -> str | None:
    """The robot's fault, read now. A lost link is found and latched by this read (`FrankyBackend`: franky's
    stored NetworkException, or a state read that times out once), as a control tick would."""
    try:
        return backend.read_state().fault
    except Exception as exc:  # noqa: BLE001 - not even a last state to return: that is the fault
        return f"{type(exc).__name__}: {exc}"


class StoppedClockReport:
    """The controller's wall-clock watchdog under simulated time: `tick` (a wall-clock timer, a few times a
    second) publishes a fault status while the simulated clock stands still, and logs each change once.

    Args:
        backend: the robot, read for its fault while the clock stands still (no control tick reads it then).
        status: the executor's status now (`ChunkExecutor.status`).
        sim_now: the node's (simulated) time, seconds.
        publish: publishes a status (the node's `publish_status`).
        watch: the clock watch (its limit; a fake wall clock in tests).
    """

    def __init__(
        self,
        backend: RobotBackend,
        status: Callable[[], ExecutorStatus],
        sim_now: Callable[[], float],
        publish: Callable[[ExecutorStatus], None],
        watch: SimClockWatch | None = None,
    ) -> None:
        self.backend, self.status, self.sim_now, self.publish = backend, status, sim_now, publish
        self.watch = watch or SimClockWatch()

    def tick(self) -> None:
        """Publish the stopped-clock status while the simulated clock stands still; nothing while it moves."""
        if (st := self.check(self.sim_now())) is not None:
            self.publish(st)

    def check(self, sim_now: float) -> ExecutorStatus | None:
        """The fault status to publish now, or None while the simulated clock moves."""
        stopped = self.watch.check(sim_now)
        if stopped is None:
            if self.watch.changed:
                log.warning("simulation clock running again")
            return None
        if self.watch.changed:
            log.error("%s: no control ticks, nothing commanded", stopped)
        return stopped_clock_status(self.status(), stopped, robot_fault(self.backend))
