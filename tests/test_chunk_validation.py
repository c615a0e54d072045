"""Chunk validation found by an adversarial tester: future chunks from rest, invalid stamps, stale chunks,
frames, duplicate times, non-unit quaternions, status hygiene and the home service under a stream."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from conftest import FakeClock, wait_for
from dm1.control.backend import HOME_EE_POS, FakeBackend
from dm1.control.executor import ACTIVE, HOLDING, ChunkExecutor
from dm1.control.executor_gate import ExecutorGate
from dm1.control.limits import SafetyLimits
from dm1.control.parameters import SAFETY_PARAMETERS
from dm1.control.schedule import MAX_CHUNK_SPAN_S, ChunkSchedule, ScheduledTarget, TimedChunk
from test_executor import ee_chunk, make, run
from test_executor_gate import SlowHomeBackend

OFFSET = np.array([0.0, 0.05, 0.0])
EE = ("x", "y", "z", "gripper")
JOINTS = (*(f"fr3_joint{i}" for i in range(1, 8)), "gripper")


def _chunk(stamp: float, times, quats=None, offset=OFFSET) -> TimedChunk:
    n = len(times)
    pos = np.tile(HOME_EE_POS + offset, (n, 1))
    return TimedChunk(stamp, np.asarray(times, float), pos, np.zeros(n), quat_xyzw=quats)


def _sent_ee(backend: FakeBackend) -> list[np.ndarray]:
    return [args[0] for name, args in backend.motion_calls() if name == "ee"]


# --- 1: a chunk dated in the future, nothing running ----------------------------------------------------
def test_a_future_chunk_blends_from_the_hold_target_and_reaches_its_first_point_at_its_time() -> None:
    sched = ChunkSchedule(chunk_timeout_s=1.0, max_future_s=1.0)
    hold = ScheduledTarget(HOME_EE_POS.copy(), np.zeros(3), 0.0, np.array([1.0, 0.0, 0.0, 0.0]))
    assert sched.offer(_chunk(10.5, [0.0, 0.1]), now=10.0, hold=lambda: hold) == "accepted"
    np.testing.assert_allclose(sched.target_at(10.0).position, HOME_EE_POS, atol=1e-12)
    np.testing.assert_allclose(sched.target_at(10.25).position, HOME_EE_POS + OFFSET / 2, atol=1e-12)
    np.testing.assert_allclose(sched.target_at(10.5).position, HOME_EE_POS + OFFSET, atol=1e-12)


def test_a_future_chunk_from_rest_does_not_move_the_arm_ahead_of_its_blend() -> None:
    """Stamped 0.5 s ahead, 5 cm away: the arm moved 40-52 mm at 0.38 m/s before any action was due."""
    ex, backend, clock = make(chunk_timeout_s=1.0)
    assert ex.on_chunk(_chunk(clock.t + 0.5, np.arange(10) * 0.05)) == "accepted"
    run(ex, clock, 0.1)
    moved = np.linalg.norm(_sent_ee(backend)[-1] - HOME_EE_POS)
    assert moved <= 0.05 * 0.1 / 0.5 + 1e-6, f"{1000 * moved:.1f} mm commanded 0.4 s before the first action"
    run(ex, clock, 0.4)
    np.testing.assert_allclose(_sent_ee(backend)[-1], HOME_EE_POS + OFFSET, atol=2e-3)


def test_a_future_chunk_without_a_hold_target_waits_for_its_first_point() -> None:
    ex, backend, clock = make(chunk_timeout_s=1.0)

    def unreadable():
        raise RuntimeError("no state")

    read_state, backend.read_state = backend.read_state, unreadable  # type: ignore[method-assign]
    assert ex.on_chunk(_chunk(clock.t + 0.3, np.arange(10) * 0.05)) == "accepted"
    backend.read_state = read_state  # type: ignore[method-assign]
    run(ex, clock, 0.2)
    assert _sent_ee(backend) == [] and ex.schedule.chunk is not None  # held, the chunk kept
    run(ex, clock, 0.2)
    assert _sent_ee(backend), "the chunk did not run once its first point was due"


# --- 2: a header stamp that is no valid builtin_interfaces/Time ---------------------------------------------
@pytest.mark.parametrize(("sec", "nanosec"), [(100, 1_500_000_000), (100, 10**9), (-1, 0)])
def test_an_invalid_header_stamp_is_refused_as_malformed(sec: int, nanosec: int) -> None:
    cv = pytest.importorskip("dm1_ros.conversions")
    from dm1.policy.step import ActionChunk

    msg = cv.chunk_to_msg(ActionChunk(100.0, 0.1, np.zeros((3, 4)), 0, 0.0, "ee_position", EE), [1, 0, 0, 0])
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    with pytest.raises(ValueError, match=r"header.stamp: expected sec >= 0 and 0 <= nanosec < 1e9"):
        cv.msg_to_timed_chunk(msg)


# --- 3: stale chunks and over-long chunks -----------------------------------------------------------------
def test_a_stale_chunk_is_refused_and_counted_naming_its_age_and_the_bound() -> None:
    ex, backend, clock = make()
    clock.t = 50.0
    assert ex.on_chunk(_chunk(clock.t - 2.0, np.arange(40) * 0.1)) == "rejected_stale"
    assert ex.counters["rejected_stale"] == 1
    assert "2.00 s old" in ex.reasons[0] and "max_chunk_age_s 1 s" in ex.reasons[0], ex.reasons
    run(ex, clock, 0.2)
    assert backend.motion_calls() == []


def test_a_chunk_spanning_more_than_the_bound_is_refused() -> None:
    with pytest.raises(ValueError, match=rf"at most {MAX_CHUNK_SPAN_S:g} s, found 20.500 s"):
        _chunk(0.0, [0.0, 10.0, 20.5])


def test_max_chunk_age_s_is_a_bounded_safety_parameter() -> None:
    assert SAFETY_PARAMETERS["max_chunk_age_s"][0] == 1.0 == SafetyLimits().max_chunk_age_s
    for bad in (0.0, -1.0, float("nan"), MAX_CHUNK_SPAN_S + 1):
        with pytest.raises(ValueError, match="SafetyLimits.max_chunk_age_s"):
            SafetyLimits(max_chunk_age_s=bad)


# --- 4: frames ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", ["world", "", "fr3_hand_tcp"])
def test_a_cartesian_chunk_in_another_frame_than_the_base_is_refused(frame: str) -> None:
    cv = pytest.importorskip("dm1_ros.conversions")
    from dm1.policy.step import ActionChunk

    policy_msg = cv.chunk_to_msg(
        ActionChunk(1.0, 0.1, np.zeros((3, 4)), 0, 0.0, "ee_position", EE), [1, 0, 0, 0]
    )
    assert cv.msg_to_timed_chunk(policy_msg).kind == "cartesian"  # what the policy node publishes
    policy_msg.header.frame_id = frame
    with pytest.raises(ValueError, match=rf"header.frame_id: expected 'fr3_link0', found {frame!r}"):
        cv.msg_to_timed_chunk(policy_msg)


def test_a_joint_chunk_may_leave_the_frame_empty_but_not_name_another() -> None:
    cv = pytest.importorskip("dm1_ros.conversions")
    from dm1.policy.step import ActionChunk

    msg = cv.chunk_to_msg(ActionChunk(1.0, 0.1, np.zeros((3, 8)), 0, 0.0, "joint_position", JOINTS))
    for frame in ("", "fr3_link0"):
        msg.header.frame_id = frame
        assert cv.msg_to_timed_chunk(msg).kind == "joint"
    msg.header.frame_id = "world"
    with pytest.raises(ValueError, match="joint trajectory header.frame_id"):
        cv.msg_to_timed_chunk(msg)


# --- 5: duplicate times ------------------------------------------------------------------------------------
def test_duplicate_times_from_start_are_refused() -> None:
    with pytest.raises(ValueError, match=r"time_from_start\[2\]: expected strictly increasing times"):
        _chunk(0.0, [0.0, 0.1, 0.1])


# --- 6: quaternions -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("quat", [[0.002, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0], [1e200, 0.0, 0.0, 0.0]])
def test_a_quaternion_that_is_not_unit_is_refused_without_overflow(quat: list[float]) -> None:
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (3, 1))
    quats[1] = quat
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow on the way
        with pytest.raises(ValueError, match=r"quat_xyzw\[1\]: expected a unit quaternion"):
            _chunk(0.0, [0.0, 0.1, 0.2], quats=quats)


def test_a_nearly_unit_quaternion_such_as_the_policys_is_accepted_normalised() -> None:
    quats = np.array([[1.0, 0.0, 0.0, 0.0], [1.005, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(_chunk(0.0, [0.0, 0.1, 0.2], quats=quats).quat_xyzw[1], [1.0, 0.0, 0.0, 0.0])


# --- 7: status hygiene --------------------------------------------------------------------------------------
def test_a_hold_requests_text_is_quoted_on_one_line_in_the_status() -> None:
    ex, _, clock = make()
    ex.on_chunk(ee_chunk(clock.t))
    run(ex, clock, 0.02)
    ex.stop("x\n[controller_node] [ERROR] forged line")
    reasons = ex.status().values()["reasons"]
    assert ex.state == HOLDING and "\n" not in reasons, reasons
    assert reasons == "stop requested: 'x\\n[controller_node] [ERROR] forged line'"


def test_the_status_shows_the_newest_hold_request_while_holding_or_idle() -> None:
    ex, _, clock = make()
    ex.count_malformed("malformed chunk: bad names\nsecond line")
    assert "\n" not in ex.reasons[0]
    ex.stop("policy: stale")  # idle
    assert ex.reasons == ["stop requested: 'policy: stale'"]
    ex.on_chunk(ee_chunk(clock.t))
    run(ex, clock, 0.02)
    ex.stop("policy: stale")
    ex.stop("policy: late")  # already holding
    assert ex.state == HOLDING and ex.reasons == ["stop requested: 'policy: late'"]


# --- 8: the home service under a stream --------------------------------------------------------------------
def _gate() -> tuple[ExecutorGate, SlowHomeBackend, FakeClock]:
    backend, clock = SlowHomeBackend(), FakeClock()
    return ExecutorGate(ChunkExecutor(backend, SafetyLimits(), clock, mode="cartesian")), backend, clock


def test_a_home_under_a_running_stream_pre_empts_it_and_the_stream_is_not_chased() -> None:
    """The home service moves the arm even while chunks run (teleop streams while a device is connected);
    the running chunk is forgotten and the stream's chunks from before the move's end are refused."""
    gate, backend, clock = _gate()
    stamp = clock.t
    assert gate.offer(ee_chunk(stamp, offset=(0.0, 0.1, 0.0), n=60)) == "accepted"
    clock.t += 0.01
    gate.tick()
    assert gate.executor.state == ACTIVE
    mover = threading.Thread(target=gate.home, daemon=True)
    mover.start()
    wait_for(backend.homing.is_set, 10, what="the home move to start under the stream")
    clock.t += 2.0
    backend.release.set()
    mover.join(timeout=10)
    assert gate.executor.schedule.chunk is None and gate.executor.state != ACTIVE
    assert gate.offer(ee_chunk(stamp + 1.0, offset=(0.0, 0.1, 0.0), n=60)) == "dropped_homing"
    gate.tick()
    assert gate.executor.state != ACTIVE  # nothing from before the move runs


def test_chunks_during_a_home_move_are_counted_and_a_pre_home_stream_is_not_chased() -> None:
    gate, backend, clock = _gate()
    mover = threading.Thread(target=gate.home, daemon=True)
    mover.start()
    wait_for(backend.homing.is_set, 10, what="the home move to start")
    stamp_during = clock.t
    assert gate.offer(ee_chunk(stamp_during, offset=(0.0, 0.1, 0.0))) is None
    assert gate.executor.counters["dropped_homing"] == 1
    clock.t += 2.0  # the move takes 2 s
    backend.release.set()
    mover.join(timeout=10)
    assert gate.executor.schedule.chunk is None
    # the stream goes on: a chunk computed before the move ended is no continuation to chase
    assert gate.offer(ee_chunk(stamp_during + 0.5, offset=(0.0, 0.1, 0.0), n=60)) == "dropped_homing"
    assert gate.executor.counters["dropped_homing"] == 2
    assert gate.offer(ee_chunk(clock.t)) == "accepted"  # a fresh one
