"""ControllerWatch: the policy's view of the controller's fault reports (no ROS; times in seconds)."""

from __future__ import annotations

from dm1.policy import ControllerWatch


def test_a_reported_fault_blocks_until_a_report_without_one() -> None:
    watch = ControllerWatch()
    assert watch.fault(10.0) is None  # nothing heard yet: a policy without a controller may activate
    assert watch.update(True, "ControlException: reflex", 10.0) == "ControlException: reflex"
    assert watch.fault(10.5) == "ControlException: reflex"
    assert watch.update(False, "idle", 10.6) is None
    assert watch.fault(10.7) is None


def test_an_old_fault_report_no_longer_blocks() -> None:
    watch = ControllerWatch(fresh_s=1.0)
    watch.update(True, "over budget", 10.0)
    assert watch.fault(11.0) == "over budget"
    assert watch.fault(11.5) is None  # the controller went quiet: its next report decides
    assert watch.fault(5.0) is None  # the clock jumped back (a simulation reset): not a fresh report


def test_an_error_report_without_a_message_still_names_a_fault() -> None:
    assert ControllerWatch().update(True, "", 1.0) == "controller fault"


def test_a_controller_that_stops_reporting_is_lost_until_it_reports_again() -> None:
    watch = ControllerWatch(silence_s=2.0)
    assert watch.lost(100.0) is None  # never heard: a policy without a controller (tests, replay) runs on
    watch.update(False, "active", 10.0)
    assert watch.lost(12.0) is None
    assert watch.lost(12.5) == "no controller report for 2.5 s (limit 2 s): is it running?"
    assert watch.lost(3.0) is None  # the clock jumped back (a simulation reset): not silence
    watch.update(False, "idle", 13.0)  # a restarted controller reports
    assert watch.lost(13.1) is None
    assert ControllerWatch(silence_s=0.0).lost(1e9) is None  # 0 = off


def test_a_report_taken_in_before_the_sim_clock_started_is_not_silence_once_it_starts() -> None:
    """Under sim time the policy's clock reads 0 until its first /clock; reports queued while it loaded its
    model can be taken in before that. The jump to sim time (2 s on the twin) deactivated the fresh policy
    as 'controller lost' (seen in a launch test, at random)."""
    watch = ControllerWatch(silence_s=2.0)
    assert watch.update(False, "idle", 0.0) is None
    assert watch.lost(2.04) is None
    assert watch.update(True, "reflex", 0.0) == "reflex"  # a fault reported then still stops the policy
    watch.update(False, "idle", 2.05)  # the first report on the running clock anchors the silence
    assert watch.lost(4.0) is None and watch.lost(4.1) is not None
