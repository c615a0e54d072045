"""`dm1.control.sim_clock`: the controller's wall-clock view of a stopped simulated clock (no ROS, fake wall
clock; times in seconds)."""

from __future__ import annotations

import pytest
from conftest import FakeClock
from dm1.control.backend import FakeBackend, RobotFault
from dm1.control.executor import ChunkExecutor
from dm1.control.executor_status import ExecutorStatus
from dm1.control.limits import SafetyLimits
from dm1.control.sim_clock import SimClockWatch, StoppedClockReport


def test_a_moving_clock_is_never_reported_however_slowly_it_moves() -> None:
    wall = FakeClock()
    watch = SimClockWatch(limit_s=1.0, wall=wall)
    for i in range(50):  # the twin at a tenth of real time on a loaded host: slow, not stopped
        wall.advance(0.9)
        assert watch.check(2.0 + 0.09 * i) is None
    assert not watch.stopped


def test_a_clock_standing_still_past_the_limit_is_reported_until_it_moves_again() -> None:
    wall = FakeClock()
    watch = SimClockWatch(limit_s=1.0, wall=wall)
    assert watch.check(5.0) is None
    wall.advance(1.0)
    assert watch.check(5.0) is None  # a stall of 1 s is libfranka's own limit: not yet
    wall.advance(0.5)
    assert watch.check(5.0) == "simulation clock stopped for 1.5 s at t=5.000 (is the twin running?)"
    assert watch.stopped and watch.changed  # the first report: logged once
    wall.advance(2.0)
    assert watch.check(5.0) == "simulation clock stopped for 3.5 s at t=5.000 (is the twin running?)"
    assert not watch.changed
    assert watch.check(5.001) is None and watch.changed and not watch.stopped  # it moves again


def test_a_clock_not_heard_yet_is_not_reported() -> None:
    """Right after start-up the node's time reads 0 until its /clock subscription has matched, which took
    over 1 s in a loaded test run: the policy took that report for a controller fault and deactivated."""
    wall = FakeClock()
    watch = SimClockWatch(limit_s=1.0, wall=wall)
    wall.advance(5.0)
    assert watch.check(0.0) is None and not watch.stopped
    assert watch.check(2.0) is None  # the first message: still from here on
    wall.advance(1.5)
    assert watch.check(2.0) == "simulation clock stopped for 1.5 s at t=2.000 (is the twin running?)"


def test_a_stopped_clock_with_a_robot_that_still_answers_is_a_warning_not_a_fault() -> None:
    """A twin starved of CPU for a moment stops /clock but still serves the robot: a warning (the policy
    deactivates on a fault); the lost link of a twin that is gone makes it a fault (next test)."""
    wall, backend = FakeClock(), FakeBackend()
    executor = ChunkExecutor(backend, SafetyLimits(), clock=lambda: 3.0)
    report = StoppedClockReport(
        backend, executor.status, lambda: 3.0, lambda st: None, SimClockWatch(limit_s=1.0, wall=wall)
    )
    report.check(3.0)
    wall.advance(1.5)
    st = report.check(3.0)
    assert st is not None and st.state != "fault" and st.level == "warn" and st.fault is None
    assert st.warning == "simulation clock stopped for 1.5 s at t=3.000 (is the twin running?)"


def test_a_watch_without_a_positive_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit_s"):
        SimClockWatch(limit_s=0.0)


def test_a_stopped_clock_is_published_as_a_fault_naming_the_robots_lost_link_and_nothing_moves() -> None:
    """Under sim time no control tick runs once /clock stops: the wall-clock report reads the robot itself,
    which latches a lost link (FrankyBackend), and names both; the arm is not commanded."""
    wall, sim = FakeClock(), 3.0
    backend = FakeBackend()
    executor = ChunkExecutor(backend, SafetyLimits(), clock=lambda: sim)
    published: list[ExecutorStatus] = []
    report = StoppedClockReport(
        backend, executor.status, lambda: sim, published.append, SimClockWatch(limit_s=1.0, wall=wall)
    )
    report.tick()
    wall.advance(0.5)
    report.tick()
    assert published == []  # the clock moving (or not yet long still): the node's own status timer reports
    wall.advance(1.0)
    backend.fault = "NetworkException: libfranka: UDP receive: Timeout"
    report.tick()
    (st,) = published
    assert st.state == "fault" and st.level == "error"
    assert st.fault == (
        "simulation clock stopped for 1.5 s at t=3.000 (is the twin running?); "
        "robot: NetworkException: libfranka: UDP receive: Timeout"
    )
    assert executor.state == "idle" and backend.calls == [], "the report commanded the arm"
    sim = 3.005  # the twin back (restarted): the report stops, the control ticks report again
    report.tick()
    assert len(published) == 1


def test_a_robot_that_cannot_be_read_at_all_is_named_in_the_report() -> None:
    class Unreadable(FakeBackend):
        def read_state(self):
            raise RobotFault("NetworkException: libfranka: UDP receive: Timeout")

    wall = FakeClock()
    backend = Unreadable()
    executor = ChunkExecutor(backend, SafetyLimits(), clock=lambda: 1.0)
    report = StoppedClockReport(
        backend, executor.status, lambda: 1.0, lambda st: None, SimClockWatch(limit_s=1.0, wall=wall)
    )
    report.check(1.0)
    wall.advance(2.0)
    st = report.check(1.0)
    assert st is not None and st.fault is not None
    assert st.fault.endswith("robot: RobotFault: NetworkException: libfranka: UDP receive: Timeout"), st.fault
