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
