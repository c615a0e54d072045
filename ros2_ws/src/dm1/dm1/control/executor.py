"""`ChunkExecutor`: timestamped chunks -> safety filter -> robot backend, with a hold/fault state machine.

States: IDLE (nothing commanded yet) -> ACTIVE (streaming targets) -> HOLDING (watchdog: no fresh chunk;
the backend decelerates and holds) -> ACTIVE again when a fresh chunk arrives. The first command after every
(re)activation is the measured state, so activation never jumps. A backend fault (franky ControlException,
a reflex), too many late chunks, or an unexpected error in a tick or while taking a chunk (the fallback:
reliability row 14) latch FAULT: the arm brakes to rest and holds, and nothing moves until `recover()` (an
explicit operator action), as do too many loop overruns or lost FCI commands (`LoopHealth`). The node never
dies of a bug in here while the robot streams. The clock is injected (node clock = simulation time on the
twin), so every timeout is testable; a clock that goes back holds (`ClockJumpWatch`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from dm1.control.backend import RobotBackend, RobotFault, RobotStateSnapshot
from dm1.control.chunk_refusals import (
    TIMING_COUNTERS,
    content_refusal,
    one_line,
    quoted,
    timing_refusal,
)
from dm1.control.chunk_sources import ChunkSource, SourceGuard
from dm1.control.clamp_log import ClampLog
from dm1.control.clock_jump import ClockJumpWatch, clock_jump_reason
from dm1.control.executor_status import (  # noqa: F401 - re-exported: the executor's public names
    ACTIVE,
    COUNTERS,
    FAULT,
    HOLDING,
    IDLE,
    STATUS_NAME,
    STATUS_TOPIC,
    ExecutorStatus,
)
from dm1.control.homing import move_home
from dm1.control.limits import SafetyLimits
from dm1.control.link_check import CommandLinkMonitor
from dm1.control.loop_health import LoopHealth
from dm1.control.safe_step import safe_step
from dm1.control.safety import OverspeedWatch, SafetyFilter, SafetyReport
from dm1.control.schedule import ChunkSchedule, ScheduledTarget, TimedChunk, hold_target
from dm1.control.tracking import TrackingMonitor

log = logging.getLogger(__name__)

NO_FAULT_TO_RECOVER = "no fault latched: nothing to recover"  # `ChunkExecutor.recover` on a healthy arm


class ChunkExecutor:
    """Runs action chunks on a `RobotBackend` at the controller rate.

    Args:
        backend: the robot (FrankyBackend, or FakeBackend in unit tests).
        limits: safety envelope (always applied).
        clock: returns the current time in seconds (the same clock as chunk stamps).
        mode: "cartesian" (EE position chunks) or "joint" (joint chunks); the other kind is refused.
        tick_period_s: the period `tick` is called at. A tick more than two periods late is an overrun
            (`LoopHealth.tick`, counted: `tick_overruns`); the rate limits then move the target as in two
            periods, not across the whole gap (the arm picks up smoothly instead of being thrown after the
            chunk). None: no overrun handling. A tick later than `limits.max_tick_gap_s` holds the arm; more
            overruns than `limits.max_overruns_per_s` within a second latch a fault.
        source_window_s: two publishers sending motion chunks in turns within this many seconds latch a
            fault (`SourceGuard`; 0 = off). Only chunks offered with a `source` are counted.
    """

    def __init__(
        self,
        backend: RobotBackend,
        limits: SafetyLimits,
        clock: Callable[[], float],
        mode: str = "cartesian",
        tick_period_s: float | None = None,
        source_window_s: float = 0.5,
    ) -> None:
        if mode not in ("cartesian", "joint"):
            raise ValueError(f"ChunkExecutor.mode: expected 'cartesian' or 'joint', found {mode!r}")
        self.backend, self.limits, self.clock, self.mode = backend, limits, clock, mode
        self.safety = SafetyFilter(limits)
        self.schedule = ChunkSchedule(limits.chunk_timeout_s, limits.max_future_s, limits.max_chunk_age_s)
        self.sources = SourceGuard(source_window_s)
        self.state = IDLE
        self.fault: str | None = None
        self.reasons: list[str] = []
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.consecutive_late = 0
        self.last_clamp: SafetyReport | None = None
        self._prev_target: np.ndarray | None = None
        self._prev_quat: np.ndarray | None = None  # the last commanded EE orientation (cartesian)
        self._prev_time: float | None = None
        self._gripper_closed: bool | None = None
        self._brake_error_logged = -np.inf  # time.monotonic() of the last "hold failed" log
        self.overspeed = OverspeedWatch(limits, mode)  # the measured speed vs what targets may command
        self.tick_period_s = tick_period_s
        self.link = CommandLinkMonitor()  # libfranka's command success rate, sampled while streaming
        self.tracking = TrackingMonitor(unit="mm" if mode == "cartesian" else "mrad")  # action-to-motion lag
        self.homed_at: float | None = None  # clock time the last home move ended: older chunks are pre-home
        self.clock_watch = ClockJumpWatch()  # the clock going back: the schedule is dropped, the arm held
        self.loop = LoopHealth(limits.max_overruns_per_s, limits.min_streaming_success_rate)
        self.clamp_log = ClampLog(log, what="pose" if mode == "cartesian" else "joint target")

    # --- input -------------------------------------------------------------------------------------------

    def on_chunk(self, chunk: TimedChunk, now: float | None = None, source: ChunkSource | None = None) -> str:
        """Offer a chunk from `source` (its publisher; None: not checked); returns "accepted" or the reason it
        was refused (each reason is counted). Two publishers in turns latch a fault (`SourceGuard`).

        An unexpected error while checking or scheduling it latches a fault (the arm brakes and holds until
        `recover()`), as in `tick`: a bug here never leaves the robot streaming a half-taken chunk."""
        now = self.clock() if now is None else now
        try:
            return self._offer(chunk, now, source)
        except Exception as exc:  # noqa: BLE001 - the fallback is a latched hold
            log.exception("offering a chunk failed")
            self._latch(f"internal error offering a chunk: {type(exc).__name__}: {exc}")
            return "fault"

    def _offer(self, chunk: TimedChunk, now: float, source: ChunkSource | None) -> str:
        self._clock_went_back(now, tick=False)  # a chunk stamped on the new clock is not "older" than the old
        conflict = None  # publishers are tracked while faulted too: `recover` refuses while two still publish
        if source is not None and chunk.kind == self.mode:
            conflict = self.sources.check(source, now, f"{self.mode} chunks")
        if self.state == FAULT:
            return self._refuse("rejected_fault", "fault latched: call recover()")
        if conflict:  # only chunks of the controller's mode are checked
            self.counters["rejected_two_sources"] += 1
            self._latch(conflict)
            return "rejected_two_sources"
        if (refusal := content_refusal(chunk, self.mode, self.homed_at)) is not None:
            return self._refuse(*refusal)
        running = self.schedule.chunk
        result = self.schedule.offer(
            chunk, now, lambda: hold_target(self.backend, self.mode, self._gripper_closed)
        )
        if result == ChunkSchedule.ACCEPTED:
            self.counters["accepted"] += 1
            self.consecutive_late = 0
            return result
        if result == ChunkSchedule.LATE:
            self.consecutive_late += 1
        why = timing_refusal(result, chunk, now, running, self.limits, self.consecutive_late)
        if result == ChunkSchedule.LATE:
            self._refuse("late", why)
            if self.consecutive_late >= self.limits.max_consecutive_late:
                self._latch(f"over budget: {self.consecutive_late} consecutive late chunks")
            return result
        return self._refuse(TIMING_COUNTERS[result], why)

    def stop(self, reason: str) -> None:
        """Explicit hold request from upstream (the policy's inputs went stale): hold now, not after the
        watchdog timeout. The next chunk starts again from the measured state."""
        self.counters["stop_requests"] += 1
        if self.state != FAULT:
            request = f"stop requested: {quoted(reason)}"
            self._hold(request)
            self.reasons = [request]  # the newest request, holding already or not

    def stream_lost(self, counter: str, reason: str) -> None:
        """A QoS event on the action topic (`counter`: "deadline_missed" or "liveliness_lost"): a running
        chunk is dropped and the arm held now, without waiting for the chunk watchdog (a second path beside
        it). Not a fault: the next fresh chunk starts again from the measured state. A lapsed liveliness is
        always counted; a missed deadline only when it stops a running chunk (a silent topic misses one every
        deadline while no policy is active)."""
        if self.state == ACTIVE or counter == "liveliness_lost":
            self.counters[counter] += 1
        if self.state == ACTIVE:
            self._hold(reason)

    def count_malformed(self, reason: str) -> None:
        """Count a message that could not be converted to a chunk (wrong names, lengths) and log why."""
        self._refuse("rejected_malformed", reason)

    def _refuse(self, key: str, reason: str) -> str:
        self.counters[key] += 1
        reason = one_line(reason)  # it may name a message's fields: one line, bounded
        self.reasons = [reason]
        log.warning(reason)
        return key

    # --- control loop ------------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> ExecutorStatus:
        """One control step: schedule -> safety -> backend, or hold when the watchdog expires."""
        now = self.clock() if now is None else now
        self.counters["ticks"] += 1
        self._clock_went_back(now)
        gap, overrun = self.loop.tick(now, self.state == ACTIVE, self.tick_period_s)  # overruns: streaming
        self.counters["tick_overruns"] += int(overrun)
        if self.state == FAULT:
            self._brake()  # our own latch (over budget, an error here) leaves the robot streaming
            return self.status()
        try:
            state = self.backend.read_state()
            if state.fault is not None:
                self._latch(state.fault)
                return self.status()
            if self.state == ACTIVE:
                self.link.update(state.command_success_rate)
                self.loop.sample(state.command_success_rate, now)
            if (unhealthy := self.loop.fault(now)) is not None:  # overruns, lost commands: over the bound
                self._latch(unhealthy)
                return self.status()
            if (overspeed := self.overspeed.check(state.ee_vel, state.dq)) is not None:
                self._latch(overspeed)
                return self.status()
            if gap > self.limits.max_tick_gap_s and self.state == ACTIVE:
                self._hold(
                    f"control loop overrun: {1000 * gap:.0f} ms since the previous tick (or a clock step)"
                )
                return self.status()
            target = self.schedule.target_at(now)
            if target is None and self.schedule.waiting(now):  # a chunk whose first point is not due yet
                self._hold("waiting for the chunk's first action", keep_chunk=True)
            elif target is None:
                self._hold(self.schedule.no_target_reason(now))
            else:
                self._command(target, state, now)
        except RobotFault as exc:
            self._latch(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug or a broken backend: the fallback is a latched hold
            log.exception("control tick failed")
            self._latch(f"internal error in the control tick: {type(exc).__name__}: {exc}")
        return self.status()

    def _clock_went_back(self, now: float, tick: bool = True) -> None:
        """A clock that went back (`ClockJumpWatch`; `tick`: a tick's reading, else a chunk's): drops the
        schedule and holds, as on a watchdog hold, and says so (counted, `clock_jumps`). Times kept on the old
        clock are forgotten or moved onto the new one; the next fresh chunk starts from the measured pose."""
        if (back := self.clock_watch.check(now, record=tick)) is None:
            return
        self.counters["clock_jumps"] += 1
        why = clock_jump_reason(back, now)
        log.warning(why)
        self._prev_time = None
        self.loop.reset()  # the previous tick too
        self.homed_at = None if self.homed_at is None else self.homed_at - back
        if self.state != FAULT:  # a latched fault stays the reason (nothing is scheduled then)
            self._hold(why)
            self.reasons = [why]

    def _hold(self, reason: str, keep_chunk: bool = False) -> None:
        if self.state == ACTIVE:
            self.backend.hold()
            self.counters["holds"] += 1
            self.state = HOLDING
            self.reasons = [reason]
            log.info("holding: %s", reason)
        elif self.state == HOLDING:
            self.backend.hold()  # every tick: the backend brakes until the arm is at rest, then latches
        self._prev_target = None  # the next activation starts from the measured state
        if not keep_chunk:
            self.schedule.clear()

    def _command(self, target: ScheduledTarget, state: RobotStateSnapshot, now: float) -> None:
        activating = self.state != ACTIVE or self._prev_target is None
        dt = 0.0 if self._prev_time is None or activating else max(now - self._prev_time, 0.0)
        if self.tick_period_s is not None:  # after an overrun the target moves on as after two periods, not
            dt = min(dt, 2.0 * self.tick_period_s)  # the whole gap: no step to where the chunk went meanwhile
        previous = None if activating else (self._prev_target, self._prev_quat)
        step = safe_step(self.safety, self.mode, target, state, previous, dt)  # activating: measured state
        if step.report is not None and step.report.clipped:
            self.counters["clamped"] += 1
            self.last_clamp = step.report
            self.clamp_log.report(step.report, now)  # a WARNING, at most once a second per reason
        if self.mode == "cartesian":
            self.backend.send_ee_target(step.position, step.quat_xyzw, step.velocity, step.acceleration)
        else:
            self.backend.send_joint_target(step.position, step.velocity)
        self._update_gripper(target.gripper)
        if activating:
            self.state, self.reasons = ACTIVE, ["streaming"]
            self.tracking.reset()  # a new stream: the window starts here
            self.loop.start_stream(now)
        self.tracking.record(now, step.position, state.ee_pos if self.mode == "cartesian" else state.q)
        self._prev_target, self._prev_quat, self._prev_time = step.position, step.quat_xyzw, now

    def _update_gripper(self, command: float) -> None:
        """Threshold the [0, 1] command with hysteresis; the backend is called only on a change."""
        if (closed := self.limits.gripper_closed(command, self._gripper_closed)) != self._gripper_closed:
            self.backend.set_gripper(closed)
            self._gripper_closed = closed

    # --- faults and operator actions -----------------------------------------------------------------------

    def _latch(self, reason: str) -> None:
        if self.state != FAULT:
            self.counters["faults"] += 1
            log.error("fault latched: %s", reason)
        self.state, self.fault, self.reasons = FAULT, reason, [f"fault: {reason}"]
        self.schedule.clear()
        self._prev_target = None
        self._brake()

    def _brake(self) -> None:
        """While faulted, every tick: the backend brakes the arm to rest, then holds it (see `backend.hold`).

        A robot fault (reflex) has already stopped the robot and this does nothing; a latch of the executor's
        own (too many late chunks, an error in the tick) leaves the robot streaming, and one call alone would
        let the impedance target spring the arm back to where the fault was latched (7 mm from 0.3 m/s on
        franky-sim)."""
        try:
            self.backend.hold()
        except RobotFault:
            pass  # a faulted robot has already stopped
        except Exception:  # noqa: BLE001 - the fault is latched already; say why the hold failed, once a second
            if time.monotonic() - self._brake_error_logged > 1.0:
                self._brake_error_logged = time.monotonic()
                log.exception("hold failed while faulted")

    def recover(self) -> str:
        """Explicit operator recovery: clear robot errors and the latch; the executor returns to IDLE.
        Raises RobotFault when the backend cannot recover (no link, user stop engaged) or while two publishers
        still send chunks (`SourceGuard.live`): nothing changes. Returns "recovered".

        With no fault latched, neither here nor by the robot, it does nothing and returns
        `NO_FAULT_TO_RECOVER`: a streaming or holding arm goes on as it was (the backend's recovery stops the
        running motion and waits up to 0.5 s for it, in the node's only executor thread). A robot fault no
        tick has latched yet (a failed home move: ticks pause while homing) is still recovered."""
        if self.state != FAULT and self._robot_fault() is None:
            log.info("recover: %s (%s)", NO_FAULT_TO_RECOVER, self.state)
            return NO_FAULT_TO_RECOVER
        if len(live := self.sources.live(self.clock())) > 1:
            self.reasons = [f"recover refused: {' and '.join(live)} still send chunks; stop all but one"]
            log.error("%s", self.reasons[0])
            raise RobotFault(self.reasons[0])
        try:
            self.backend.recover()
        except RobotFault as exc:
            self.reasons = [str(exc)]
            log.error("%s", exc)
            raise
        self.state, self.fault, self.reasons = IDLE, None, ["recovered"]
        self.consecutive_late = 0
        self.overspeed.ticks = 0
        self.loop.reset()
        self.schedule.clear()
        self._prev_target = None
        self._gripper_closed = None
        return "recovered"

    def _robot_fault(self) -> str | None:
        """The fault the backend reports (None: healthy); an unreadable state counts as one."""
        try:
            return self.backend.read_state().fault
        except Exception as exc:  # noqa: BLE001 - no state at all: the backend's recovery is the way back
            return f"{type(exc).__name__}: {exc}"

    def home(
        self, q: np.ndarray | None = None, open_gripper: bool = True, gripper_timeout_s: float = 5.0
    ) -> None:
        """Blocking move home (between episodes); refused while faulted. Leaves the executor IDLE.

        The schedule is cleared when the move starts and ends, and chunks stamped before it ended are refused
        (`dropped_homing`): the arm never chases a stream from before the move.

        With `open_gripper` (default) the gripper is opened first and the move ends once it is open (at
        least `GRIPPER_OPEN_M`, bounded by `gripper_timeout_s` of wall time): an episode starts as the
        demonstrations did, never with a gripper still closed on nothing from the previous one.
        """
        if self.state == FAULT:
            raise RobotFault(f"home refused: fault latched ({self.fault}); call recover() first")
        self.schedule.clear()
        self._prev_target = None
        try:
            if open_gripper:
                self._gripper_closed = False
            move_home(self.backend, q, open_gripper, gripper_timeout_s)
        finally:
            self.schedule.clear()  # nothing offered meanwhile may run after the move
            self._prev_target, self.state = None, IDLE
            self._clock_went_back(end := self.clock())  # a step back during the move: counted, nothing held
            self.homed_at = end
        self.reasons = ["homed"]

    def status(self) -> ExecutorStatus:
        """Current state, reasons and counters (copies)."""
        return ExecutorStatus(
            state=self.state,
            reasons=list(self.reasons),
            counters=dict(self.counters),
            fault=self.fault,
            last_clamp=self.last_clamp,
            consecutive_late=self.consecutive_late,
            extra={
                **self.link.values(),
                **self.loop.values(),
                **self.tracking.values(),
            },
            warning=self.link.warning(),
        )
