"""One commander at a time: `SourceGuard` and the executor's latch on a second live chunk publisher."""

from __future__ import annotations

import pytest
from dm1.control.backend import RobotFault
from dm1.control.chunk_sources import ChunkSource, SourceGuard
from dm1.control.executor import ACTIVE, FAULT, IDLE
from test_executor import ee_chunk, make, run

POLICY = ChunkSource(b"\x01" * 16, "/policy_node")
TELEOP = ChunkSource(b"\x02" * 16, "/teleop")
OTHER_POLICY = ChunkSource(b"\x03" * 16, "/policy_node")  # a second launch: same node name, another GID


def test_one_publisher_never_conflicts_with_itself() -> None:
    guard = SourceGuard(0.5)
    assert all(guard.check(POLICY, 0.05 * i) is None for i in range(100))


def test_two_publishers_in_turns_conflict_at_the_first_ones_next_chunk_naming_both() -> None:
    guard = SourceGuard(0.5)
    assert guard.check(POLICY, 10.0) is None
    assert guard.check(TELEOP, 10.02) is None  # alone, this could be a hand-over
    reason = guard.check(POLICY, 10.05, "cartesian chunks")  # ... but the policy goes on: two commanders
    assert reason is not None
    assert "two commanders: /teleop and /policy_node sent cartesian chunks in turns within 0.5 s" in reason
    assert "recover" in reason
    assert guard.check(TELEOP, 10.07) is not None  # and so does teleop


def test_two_publishers_with_one_node_name_are_told_apart_by_their_gid() -> None:
    guard = SourceGuard(0.5)
    guard.check(POLICY, 0.0)
    guard.check(OTHER_POLICY, 0.02)
    assert "two publishers named /policy_node" in (guard.check(POLICY, 0.05) or "")


def test_a_hand_over_is_not_a_conflict() -> None:
    guard = SourceGuard(0.5)
    for i in range(10):  # the collection driver opens the gripper, then teleop drives
        assert guard.check(POLICY, 0.05 * i) is None
    assert all(guard.check(TELEOP, 0.5 + 0.05 * i) is None for i in range(10))
    assert guard.check(POLICY, 1.2) is None  # back to the first one after a pause
    assert guard.check(TELEOP, 1.25) is not None  # ... while the second one still publishes


def test_a_clock_that_restarts_forgets_earlier_chunks() -> None:
    guard = SourceGuard(0.5)
    guard.check(POLICY, 50.0)
    guard.check(TELEOP, 50.01)
    assert guard.check(POLICY, 0.2) is None  # simulated time restarted at a twin reset


def test_a_zero_window_turns_the_guard_off_and_a_bad_one_is_refused() -> None:
    guard = SourceGuard(0.0)
    guard.check(POLICY, 0.0)
    guard.check(TELEOP, 0.01)
    assert guard.check(POLICY, 0.02) is None
    with pytest.raises(ValueError, match=r"SourceGuard.window_s: expected 0 <= window <= 60 s, found -1"):
        SourceGuard(-1.0)


def test_a_second_commander_latches_a_fault_and_the_arm_stops_following_either() -> None:
    ex, backend, clock = make()
    assert ex.on_chunk(ee_chunk(clock.t, n=40), source=POLICY) == "accepted"
    run(ex, clock, 0.05)
    assert ex.on_chunk(ee_chunk(clock.t, offset=(0.0, 0.05, 0.0), n=40), source=TELEOP) == "accepted"
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE
    assert ex.on_chunk(ee_chunk(clock.t, n=40), source=POLICY) == "rejected_two_sources"
    assert ex.state == FAULT and "two commanders: /teleop and /policy_node" in (ex.fault or "")
    assert ex.counters["rejected_two_sources"] == 1 and ex.counters["faults"] == 1
    moves = len(backend.motion_calls())
    assert ex.on_chunk(ee_chunk(clock.t, n=40), source=TELEOP) == "rejected_fault"
    run(ex, clock, 0.3)
    assert len(backend.motion_calls()) == moves  # braked and held: neither plan is followed


def test_recover_is_refused_while_both_still_publish_and_one_alone_drives_after() -> None:
    ex, _backend, clock = make()
    for source in (POLICY, TELEOP, POLICY):
        ex.on_chunk(ee_chunk(clock.t, n=40), source=source)
        clock.t += 0.02
    assert ex.state == FAULT
    assert ex.on_chunk(ee_chunk(clock.t, n=40), source=TELEOP) == "rejected_fault"  # both go on
    with pytest.raises(RobotFault, match="recover refused: /policy_node and /teleop still send chunks"):
        ex.recover()
    assert ex.state == FAULT and ex.status().reasons[0].startswith("recover refused")
    clock.t += 1.0  # teleop was stopped: only the policy publishes now
    assert ex.on_chunk(ee_chunk(clock.t, n=40), source=POLICY) == "rejected_fault"
    ex.recover()
    assert ex.state == IDLE
    for _ in range(5):
        assert ex.on_chunk(ee_chunk(clock.t, n=40), source=POLICY) == "accepted"
        run(ex, clock, 0.05)
    assert ex.state == ACTIVE


def test_live_names_the_publishers_of_the_last_window() -> None:
    guard = SourceGuard(0.5)
    guard.check(POLICY, 1.0)
    guard.check(TELEOP, 1.2)
    assert guard.live(1.3) == ["/policy_node", "/teleop"]
    assert guard.live(1.6) == ["/teleop"] and guard.live(2.0) == []


def test_hold_requests_and_chunks_without_a_source_are_not_counted() -> None:
    ex, _backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, n=40), source=POLICY)
    run(ex, clock, 0.05)
    ex.stop("inputs stale")  # an empty chunk from anyone: a hold is always welcome
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "accepted"  # no GID from the middleware: not checked
    assert ex.on_chunk(ee_chunk(clock.t + 0.01, n=40), source=POLICY) == "accepted"
    assert ex.counters["rejected_two_sources"] == 0
