"""ChunkExecutor faults on a FakeBackend with a fake clock: the latch, its brake, recovery (and when there is
nothing to recover), errors in the executor's own code, and the measured-overspeed watch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeClock
from dm1.control.backend import FakeBackend, RobotFault
from dm1.control.executor import ACTIVE, FAULT, HOLDING, IDLE, ChunkExecutor
from dm1.control.limits import SafetyLimits
from test_executor import ee_chunk, make, run


def faulted_while_streaming(fault: str) -> tuple[ChunkExecutor, FakeBackend, FakeClock]:
    """An executor streaming a chunk when the backend raises `fault` (a reflex, a lost link): latched."""
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    backend.fail_next = fault
    run(ex, clock, 0.01)
    assert ex.state == FAULT and ex.fault == fault
    return ex, backend, clock


def test_fault_latches_until_recover() -> None:
    ex, backend, clock = faulted_while_streaming(
        "ControlException: Motion aborted by reflex! [cartesian_reflex]"
    )
    backend.fault = None  # the robot itself might look fine again: the latch still holds
    n = len(backend.motion_calls())
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "rejected_fault"
    run(ex, clock, 0.2)
    assert len(backend.motion_calls()) == n
    with pytest.raises(RobotFault):
        ex.home()
    ex.recover()
    assert ex.state == IDLE and ("recover", ()) in backend.calls
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "accepted"
    run(ex, clock, 0.02)
    assert ex.state == ACTIVE and len(backend.motion_calls()) > n


def test_a_recovery_the_robot_refuses_keeps_the_fault_latched_and_says_why() -> None:
    ex, backend, clock = faulted_while_streaming("NetworkException: libfranka: UDP receive: Timeout")
    backend.fail_recover = "recover failed: NetworkException: libfranka: UDP receive: Timeout"
    with pytest.raises(RobotFault, match="recover failed"):
        ex.recover()
    assert ex.state == FAULT and ex.status().reasons == [backend.fail_recover]
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "rejected_fault"
    backend.fail_recover = None  # the link is back: the operator recovers
    ex.recover()
    assert ex.state == IDLE and ex.on_chunk(ee_chunk(clock.t, n=40)) == "accepted"


def test_an_error_in_the_control_tick_latches_a_fault_and_the_arm_holds(monkeypatch) -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE

    def broken_filter(*_args, **_kwargs):
        raise RuntimeError("filter bug")

    monkeypatch.setattr(ex.safety, "filter_ee", broken_filter)
    n = len(backend.motion_calls())
    holds = backend.calls.count(("hold", ()))
    run(ex, clock, 0.01)  # the tick raises inside: no exception reaches the caller (the node's timer)
    assert ex.state == FAULT
    assert ex.fault == "internal error in the control tick: RuntimeError: filter bug"
    run(ex, clock, 0.1)  # 10 more ticks: each one brakes, none commands motion
    assert backend.calls.count(("hold", ())) == holds + 11
    assert len(backend.motion_calls()) == n
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "rejected_fault"
    monkeypatch.undo()
    ex.recover()
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "accepted"
    run(ex, clock, 0.02)
    assert ex.state == ACTIVE and len(backend.motion_calls()) > n


def test_an_error_while_offering_a_chunk_latches_a_fault(monkeypatch) -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)

    def broken_offer(*_args, **_kwargs):
        raise IndexError("schedule bug")

    monkeypatch.setattr(ex.schedule, "offer", broken_offer)
    n = len(backend.motion_calls())
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "fault"
    assert ex.state == FAULT and "IndexError: schedule bug" in ex.fault
    run(ex, clock, 0.1)
    assert len(backend.motion_calls()) == n and ("hold", ()) in backend.calls[-3:]


def test_a_latched_over_budget_fault_brakes_on_every_tick() -> None:
    ex, backend, clock = make(max_consecutive_late=2)
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    for k in range(2):
        assert ex.on_chunk(ee_chunk(clock.t - 0.04 + k * 0.01, n=1)) == "late"
    assert ex.state == FAULT and "over budget" in ex.fault
    holds = backend.calls.count(("hold", ()))
    run(ex, clock, 0.2)
    assert backend.calls.count(("hold", ())) == holds + 20


def test_a_hold_that_fails_while_faulted_does_not_stop_the_ticks(monkeypatch) -> None:
    ex, backend, clock = make()
    backend.fail_next = "ControlException: reflex"
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.02)
    assert ex.state == FAULT

    def broken_hold() -> None:
        raise ConnectionError("robot unreachable")

    monkeypatch.setattr(backend, "hold", broken_hold)
    run(ex, clock, 0.1)  # no exception escapes
    assert ex.status().counters["ticks"] == 12 and ex.state == FAULT


def test_a_measured_ee_overspeed_on_three_ticks_latches_a_fault_and_brakes() -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    backend.ee_vel = np.array([0.0, 1.1, 0.0])  # above 3 x 0.35 m/s: nothing commanded that
    run(ex, clock, 0.02)
    assert ex.state != FAULT, "two samples over the limit are not yet a fault"
    backend.ee_vel = np.array([0.0, 0.7, 0.0])
    run(ex, clock, 0.01)
    backend.ee_vel = np.array([0.0, 1.1, 0.0])
    run(ex, clock, 0.02)
    assert ex.state != FAULT, "the count restarts after a sample under the limit"
    n = len(backend.motion_calls())
    run(ex, clock, 0.01)
    assert ex.state == FAULT and ex.fault.startswith("overspeed: measured EE speed 1.100 m/s"), ex.fault
    assert backend.calls[-1] == ("hold", ())
    backend.ee_vel = np.zeros(3)
    run(ex, clock, 0.1)
    assert len(backend.motion_calls()) == n and ex.state == FAULT  # latched until an operator recovers
    ex.recover()
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "accepted"
    run(ex, clock, 0.02)
    assert ex.state == ACTIVE


def test_a_measured_joint_overspeed_in_joint_mode_names_the_joint() -> None:
    ex, backend, clock = make(mode="joint")
    backend.ee_vel = np.array([0.0, 1.0, 0.0])  # below 3 x max_ee_speed (joint mode watches it too)
    backend.dq[3] = 2.5  # joint 4: above 3 x 0.3 x 2.62 rad/s
    ex.tick()
    ex.tick()
    assert ex.state != FAULT
    ex.tick()
    assert ex.state == FAULT and "joint 4 speed 2.500 rad/s" in ex.fault, ex.fault


def test_overspeed_factor_must_exceed_one() -> None:
    with pytest.raises(ValueError, match="overspeed_factor"):
        SafetyLimits(overspeed_factor=1.0)


def test_recover_without_a_latched_fault_leaves_a_streaming_arm_alone() -> None:
    """`recover` on a healthy controller stopped a moving arm (the backend's recover stops the tracker) and
    blocked the node's only executor thread: with no fault latched it must change nothing."""
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE
    reasons, moves = ex.status().reasons, len(backend.motion_calls())
    assert ex.recover() == "no fault latched: nothing to recover"
    assert ("recover", ()) not in backend.calls and ex.state == ACTIVE and ex.status().reasons == reasons
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE and len(backend.motion_calls()) > moves  # the stream goes on
    run(ex, clock, 0.3)
    assert ex.state == HOLDING
    ex.recover()
    assert ("recover", ()) not in backend.calls and ex.state == HOLDING


def test_recover_still_clears_a_robot_fault_the_executor_has_not_latched_yet() -> None:
    """A robot fault seen by no tick yet (a failed home move: ticks pause while homing) is still recovered."""
    ex, backend, _clock = make()
    backend.fault = "ControlException: home move stopped after 30 s"
    assert ex.recover() == "recovered"
    assert ("recover", ()) in backend.calls and backend.fault is None and ex.state == IDLE
