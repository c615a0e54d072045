"""Control-loop overruns and lost FCI commands over a second of streaming latch a fault (fake clock)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeClock
from dm1.control.backend import HOME_EE_POS, FakeBackend
from dm1.control.executor import ACTIVE, FAULT, HOLDING, IDLE, ChunkExecutor
from dm1.control.limits import SafetyLimits
from dm1.control.loop_health import LoopHealth
from dm1.control.schedule import TimedChunk


def ee_chunk(stamp: float, n: int = 10) -> TimedChunk:
    pos = HOME_EE_POS + np.outer(np.arange(n), [0.0, 0.001, 0.0])
    return TimedChunk(stamp=stamp, time_from_start=np.arange(n) * 0.05, positions=pos, gripper=np.zeros(n))


def make(**limits) -> tuple[ChunkExecutor, FakeBackend, FakeClock]:
    backend, clock = FakeBackend(), FakeClock()
    return ChunkExecutor(backend, SafetyLimits(**limits), clock, tick_period_s=0.01), backend, clock


def stream(ex: ChunkExecutor, clock: FakeClock, seconds: float, tick_s: float = 0.01) -> None:
    """Tick every `tick_s` for `seconds`, offering a fresh chunk at every tick (the watchdog never expires);
    stops at a fault."""
    for _ in range(round(seconds / tick_s)):
        clock.t += tick_s
        ex.on_chunk(ee_chunk(clock.t))
        if ex.tick().state == FAULT:
            return


def test_a_loop_ticking_at_33_hz_instead_of_100_latches_a_fault_naming_the_count_and_the_bound() -> None:
    ex, backend, clock = make()
    stream(ex, clock, 0.2)
    assert ex.state == ACTIVE
    stream(ex, clock, 2.0, tick_s=0.03)  # every tick three periods after the previous one
    assert ex.state == FAULT, ex.status().reasons
    assert ex.fault == (
        "control loop overruns: 11 ticks more than two periods late within 1 s "
        "(limit safety.max_overruns_per_s 10)"
    )
    assert ex.counters["tick_overruns"] == 11 and ex.status().values()["peak_overruns_per_s"] == 11
    assert backend.calls[-1] == ("hold", ())  # the arm brakes to rest
    n_moves = len(backend.motion_calls())
    stream(ex, clock, 0.3)  # a healthy loop again: nothing moves until the operator recovers
    assert ex.state == FAULT and len(backend.motion_calls()) == n_moves
    assert ex.counters["rejected_fault"] > 0
    assert ex.recover() == "recovered" and ex.state == IDLE
    stream(ex, clock, 0.3)
    assert ex.state == ACTIVE and len(backend.motion_calls()) > n_moves


def test_a_jittery_loop_under_the_bound_streams_on() -> None:
    ex, _backend, clock = make()
    for _ in range(10):  # an overrun of 40 ms every 0.45 s: 3 a second, more than the twin's on a loaded host
        stream(ex, clock, 0.41)
        stream(ex, clock, 0.04, tick_s=0.04)
    assert ex.state == ACTIVE and ex.counters["tick_overruns"] == 10
    assert ex.status().values()["peak_overruns_per_s"] == 3


def test_overrun_faults_switched_off_only_count() -> None:
    ex, _backend, clock = make(max_overruns_per_s=0)
    stream(ex, clock, 2.0, tick_s=0.03)
    assert ex.state == ACTIVE and ex.counters["tick_overruns"] == 66


def test_lost_fci_commands_over_a_second_of_streaming_latch_a_fault_and_a_warning_rate_does_not() -> None:
    ex, backend, clock = make()
    backend.command_success_rate = 0.0  # libfranka reports 0 while no control loop runs: not judged
    for _ in range(300):
        clock.t += 0.01
        ex.tick()
    assert ex.state == IDLE
    stream(ex, clock, 0.15)  # nor at the start of a stream, while libfranka's window fills
    backend.command_success_rate = 0.93  # below the warning (0.95), above the fault bound (0.9)
    stream(ex, clock, 2.0)
    status = ex.status()
    assert status.state == ACTIVE and status.level == "warn", status.reasons
    backend.command_success_rate = 0.8
    stream(ex, clock, 0.2)
    assert ex.state == ACTIVE, "one bad sample does not move the 1 s mean under the bound"
    stream(ex, clock, 1.0)
    assert ex.state == FAULT and ex.fault is not None
    assert "command success rate 0.8" in ex.fault and "safety.min_streaming_success_rate 0.9" in ex.fault
    assert backend.calls[-1] == ("hold", ())
    backend.command_success_rate = 1.0
    n_moves = len(backend.motion_calls())
    stream(ex, clock, 0.3)
    assert ex.state == FAULT and len(backend.motion_calls()) == n_moves
    ex.recover()
    stream(ex, clock, 1.5)
    assert ex.state == ACTIVE
    clock.t += 0.2  # the watchdog holds; the robot's loop may report anything then: not judged
    ex.tick()
    backend.command_success_rate = 0.0
    for _ in range(300):
        clock.t += 0.01
        ex.tick()
    assert ex.state == HOLDING


def test_lost_command_faults_switched_off_only_warn() -> None:
    ex, backend, clock = make(min_streaming_success_rate=0.0)
    backend.command_success_rate = 0.5
    stream(ex, clock, 3.0)
    assert ex.state == ACTIVE and ex.status().level == "warn"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_overruns_per_s", -1),
        ("max_overruns_per_s", 2.5),
        ("max_overruns_per_s", True),
        ("max_overruns_per_s", 1001),
        ("min_streaming_success_rate", 1.5),
        ("min_streaming_success_rate", float("nan")),
    ],
)
def test_bad_loop_health_bounds_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"SafetyLimits.{field}"):
        SafetyLimits(**{field: value})


def test_the_loop_health_window_slides() -> None:
    health = LoopHealth(max_overruns_per_s=2, min_success_rate=0.0)
    for t in (0.0, 0.5, 0.99):
        health.overrun(t)
    assert health.fault(0.99) is not None
    assert health.fault(1.0) is None  # the first one left the window
    with pytest.raises(ValueError, match="window_s"):
        LoopHealth(1, 0.5, window_s=0.0)
