"""ChunkExecutor on a clock that jumps (an NTP step on a real arm, a restarted /clock), on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeClock
from dm1.control.backend import HOME_EE_POS, FakeBackend
from dm1.control.clock_jump import ClockJumpWatch
from dm1.control.executor import ACTIVE, FAULT, HOLDING, IDLE, ChunkExecutor
from dm1.control.limits import SafetyLimits
from dm1.control.schedule import TimedChunk


def ee_chunk(stamp: float, offset=(0.0, 0.0, 0.0), n: int = 40) -> TimedChunk:
    """n points 50 ms apart from HOME_EE_POS + offset, 1 mm apart along +y."""
    pos = HOME_EE_POS + np.asarray(offset) + np.outer(np.arange(n), [0.0, 0.001, 0.0])
    return TimedChunk(stamp=stamp, time_from_start=np.arange(n) * 0.05, positions=pos, gripper=np.zeros(n))


def streaming() -> tuple[ChunkExecutor, FakeBackend, FakeClock]:
    """An executor at 100 Hz streaming a 2 s chunk for 50 ms."""
    backend, clock = FakeBackend(), FakeClock()
    ex = ChunkExecutor(backend, SafetyLimits(), clock, tick_period_s=0.01)
    assert ex.on_chunk(ee_chunk(clock.t)) == "accepted"
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE
    return ex, backend, clock


def run(ex: ChunkExecutor, clock: FakeClock, seconds: float, dt: float = 0.01) -> None:
    for _ in range(round(seconds / dt)):
        clock.t += dt
        ex.tick()


def test_a_clock_that_jumps_back_drops_the_chunk_holds_says_so_and_runs_the_next_fresh_chunk() -> None:
    ex, backend, clock = streaming()
    old = clock.t
    clock.t -= 5.0  # an NTP step back: the running chunk lies 5 s ahead, its watchdog never expires
    status = ex.tick()
    assert status.state == HOLDING and backend.calls[-1] == ("hold", ()), status.reasons
    assert status.reasons[0].startswith("clock jumped back by 5.0"), status.reasons
    assert status.counters["clock_jumps"] == 1 and ex.schedule.chunk is None
    n_moves = len(backend.motion_calls())
    run(ex, clock, 0.2)
    assert len(backend.motion_calls()) == n_moves, "the old chunk ran on after the clock went back"
    assert ex.state == HOLDING and ex.status().reasons[0].startswith("clock jumped back")
    assert ex.on_chunk(ee_chunk(old)) == "rejected_future"  # stamped on the old clock: 5 s ahead of the new
    run(ex, clock, 0.05)
    assert len(backend.motion_calls()) == n_moves
    backend.ee_pos = HOME_EE_POS + np.array([0.0, 0.0, -0.01])  # the arm came to rest somewhere
    assert ex.on_chunk(ee_chunk(clock.t, offset=(0.0, 0.0, -0.01))) == "accepted"  # stamped on the new clock
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE and len(backend.motion_calls()) > n_moves
    first = backend.motion_calls()[n_moves][1][0]
    np.testing.assert_allclose(first, HOME_EE_POS + np.array([0.0, 0.0, -0.01]))  # from the measured pose
    assert ex.counters["ignored_older"] == 0 and ex.counters["clock_jumps"] == 1


def test_a_chunk_offered_right_after_the_clock_went_back_is_taken_and_starts_from_the_measured_pose() -> None:
    ex, backend, clock = streaming()
    clock.t -= 5.0
    n_moves = len(backend.motion_calls())
    assert ex.on_chunk(ee_chunk(clock.t, offset=(0.0, 0.0, -0.01))) == "accepted"  # before any tick saw it
    assert ex.state == HOLDING and ex.counters["clock_jumps"] == 1 and backend.calls[-1] == ("hold", ())
    measured = backend.ee_pos.copy()
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE and ex.counters["clock_jumps"] == 1, ex.status().reasons
    np.testing.assert_allclose(backend.motion_calls()[n_moves][1][0], measured)


def test_a_clock_that_jumps_forward_past_the_watchdog_runs_no_stale_action() -> None:
    ex, backend, clock = streaming()
    old = clock.t
    clock.t -= 2.0  # back, then forward again (an NTP correction undone): both steps hold
    ex.tick()
    assert ex.on_chunk(ee_chunk(clock.t)) == "accepted"
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE
    clock.t = old + 3.0  # 3 s forward: the running chunk (2 s long) lies in the past
    n_moves = len(backend.motion_calls())
    assert ex.on_chunk(ee_chunk(old - 1.9)) == "late"  # a chunk stamped before the step
    status = ex.tick()
    assert status.state == HOLDING and "since the previous tick" in status.reasons[0], status.reasons
    run(ex, clock, 0.2)
    assert len(backend.motion_calls()) == n_moves, "a stale action ran after the clock stepped forward"
    assert ex.on_chunk(ee_chunk(clock.t)) == "accepted"
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE and ex.counters["clock_jumps"] == 1


def test_after_a_clock_step_back_a_homed_arm_takes_fresh_chunks() -> None:
    ex, backend, clock = streaming()
    ex.home()
    clock.t -= 5.0
    assert ex.on_chunk(ee_chunk(clock.t)) == "accepted", ex.status().reasons  # not "before the home move"
    assert ex.counters["dropped_homing"] == 0
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE


def test_a_clock_step_back_during_a_home_move_leaves_the_move_end_on_the_new_clock(monkeypatch) -> None:
    ex, backend, clock = streaming()
    monkeypatch.setattr(backend, "home", lambda q=None: setattr(clock, "t", clock.t - 5.0))  # NTP, mid-move
    ex.home(open_gripper=False)
    assert ex.counters["clock_jumps"] == 1 and ex.state == IDLE and ex.homed_at == clock.t
    run(ex, clock, 0.05)
    assert ex.on_chunk(ee_chunk(clock.t - 0.5)) == "dropped_homing"  # stamped during the move (new clock)
    assert ex.on_chunk(ee_chunk(clock.t - 0.02)) == "accepted"  # 20 ms old: after the move ended
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE and ex.counters["clock_jumps"] == 1


def test_a_clock_step_back_while_faulted_keeps_the_fault_and_recovery_starts_on_the_new_clock() -> None:
    ex, backend, clock = streaming()
    backend.fail_next = "ControlException: reflex"
    run(ex, clock, 0.01)
    assert ex.state == FAULT
    clock.t -= 5.0
    status = ex.tick()
    assert status.state == FAULT and status.reasons == ["fault: ControlException: reflex"]
    assert status.counters["clock_jumps"] == 1
    ex.recover()
    assert ex.state == IDLE and ex.on_chunk(ee_chunk(clock.t)) == "accepted"
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE


def test_the_clock_jump_watch_keeps_tick_readings_only_and_reports_a_step_back_once() -> None:
    watch = ClockJumpWatch(tolerance_s=0.01)
    assert watch.check(10.0) is None and watch.check(10.01) is None
    # a chunk read the clock after the tick; the next tick uses a time read before that chunk (the in-process
    # evaluator's loop): no step back
    assert watch.check(10.06, record=False) is None and watch.check(10.02) is None
    assert watch.check(10.015) is None  # within the tolerance
    assert watch.check(5.0) == pytest.approx(5.02)
    assert watch.check(5.01) is None and watch.latest == 5.01
    assert watch.check(float("nan")) is None and watch.latest == 5.01
    with pytest.raises(ValueError, match="tolerance_s"):
        ClockJumpWatch(tolerance_s=-1.0)
