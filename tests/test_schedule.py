"""ChunkSchedule: timestamped chunks, dropping past actions, interpolation, latest wins, watchdog."""

from __future__ import annotations

import numpy as np
import pytest
from dm1.control.schedule import ChunkSchedule, TimedChunk, Watchdog


def chunk(stamp: float, start: float = 0.0, n: int = 5, rate: float = 10.0, step: float = 0.01) -> TimedChunk:
    """A cartesian chunk moving +y by `step` per point from y=start."""
    pos = np.array([[0.5, start + step * i, 0.3] for i in range(n)])
    return TimedChunk(stamp=stamp, time_from_start=np.arange(n) / rate, positions=pos, gripper=np.zeros(n))


def test_target_interpolates_between_bracketing_points() -> None:
    sched = ChunkSchedule(chunk_timeout_s=1.0, max_future_s=1.0)
    assert sched.offer(chunk(10.0), now=10.0) == "accepted"
    target = sched.target_at(10.15)
    assert target.position[1] == pytest.approx(0.015)
    assert target.velocity[1] == pytest.approx(0.1)


def test_late_chunk_points_are_dropped() -> None:
    sched = ChunkSchedule(chunk_timeout_s=1.0, max_future_s=1.0)
    # received 0.25 s after its first action: points 0..1 are past, execution continues at point 2.5
    assert sched.offer(chunk(10.0), now=10.25) == "accepted"
    assert sched.target_at(10.25).position[1] == pytest.approx(0.025)


def test_chunk_with_every_point_past_is_late() -> None:
    sched = ChunkSchedule(chunk_timeout_s=1.0, max_future_s=1.0)
    assert sched.offer(chunk(10.0), now=11.0) == "late"
    assert sched.target_at(11.0) is None


def test_latest_chunk_wins_and_older_stamps_are_ignored() -> None:
    sched = ChunkSchedule(chunk_timeout_s=1.0, max_future_s=1.0)
    sched.offer(chunk(10.0, start=0.0), now=10.0)
    assert sched.offer(chunk(10.1, start=0.2), now=10.1) == "accepted"
    assert sched.target_at(10.1).position[1] == pytest.approx(0.2)
    assert sched.offer(chunk(10.05, start=0.9), now=10.12) == "older_stamp"
    assert sched.target_at(10.12).position[1] == pytest.approx(0.202)


def test_continuous_across_chunk_boundary() -> None:
    sched = ChunkSchedule(chunk_timeout_s=1.0, max_future_s=1.0)
    sched.offer(chunk(10.0, start=0.0), now=10.0)
    before = sched.target_at(10.099).position[1]
    # the next chunk continues the same path from its stamp: no jump, no stop
    sched.offer(chunk(10.1, start=0.01), now=10.1)
    after = sched.target_at(10.101).position[1]
    assert after - before == pytest.approx(0.0002, abs=1e-6)
    assert sched.target_at(10.101).velocity[1] == pytest.approx(0.1)


def test_stale_chunk_expires_the_watchdog() -> None:
    sched = ChunkSchedule(chunk_timeout_s=0.1, max_future_s=1.0)
    sched.offer(chunk(10.0, n=20), now=10.0)
    assert sched.target_at(10.09) is not None
    assert sched.target_at(10.11) is None  # points remain, but nothing fresh arrived


def test_chunk_too_far_in_future_is_refused() -> None:
    sched = ChunkSchedule(chunk_timeout_s=0.1, max_future_s=0.5)
    assert sched.offer(chunk(12.0), now=10.0) == "too_far_in_future"


def test_future_chunk_with_nothing_to_blend_from_holds_until_its_first_point_is_due() -> None:
    """It used to aim at its first point at once: the arm moved 40-52 mm before any action was due."""
    sched = ChunkSchedule(chunk_timeout_s=0.5, max_future_s=0.5)
    sched.offer(chunk(10.2, start=0.3), now=10.0)
    assert sched.target_at(10.05) is None and sched.waiting(10.05)
    assert sched.target_at(10.2).position[1] == pytest.approx(0.3)


def test_malformed_chunk_shapes_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="TimedChunk.positions"):
        TimedChunk(stamp=0.0, time_from_start=np.arange(3), positions=np.zeros((3, 7)), gripper=np.zeros(3))
    with pytest.raises(ValueError, match="TimedChunk.gripper"):
        TimedChunk(stamp=0.0, time_from_start=np.arange(3), positions=np.zeros((3, 3)), gripper=np.zeros(2))
    with pytest.raises(ValueError, match="TimedChunk.kind"):
        TimedChunk(stamp=0.0, time_from_start=[0.0], positions=np.zeros((1, 3)), gripper=[0.0], kind="ee")
    with pytest.raises(ValueError, match="strictly increasing"):
        TimedChunk(stamp=0.0, time_from_start=[0.1, 0.0], positions=np.zeros((2, 3)), gripper=[0.0, 0.0])


def test_watchdog_expires_after_timeout_on_injected_clock() -> None:
    dog = Watchdog(0.1)
    assert dog.expired(0.0)
    dog.kick(5.0)
    assert not dog.expired(5.1)
    assert dog.expired(5.1001)
    with pytest.raises(ValueError, match="Watchdog.timeout_s"):
        Watchdog(0.0)


def test_replanned_chunk_starting_one_period_ahead_blends_without_a_jump() -> None:
    """Replan-every-tick: a new chunk's first point lies one period ahead; the target must not jump to it."""
    sched = ChunkSchedule(chunk_timeout_s=0.5, max_future_s=1.0)
    sched.offer(chunk(stamp=0.0, start=0.0, step=0.01), now=0.0)
    before = sched.target_at(0.05).position.copy()  # halfway between points 0 and 1
    assert sched.offer(chunk(stamp=0.1, start=0.02, step=0.01), now=0.05) == ChunkSchedule.ACCEPTED
    at_handover = sched.target_at(0.05).position
    np.testing.assert_allclose(at_handover, before, atol=1e-12)  # continuous at the hand-over
    first = np.array([0.5, 0.02, 0.3])
    np.testing.assert_allclose(sched.target_at(0.075).position, 0.5 * (before + first), atol=1e-9)
    np.testing.assert_allclose(sched.target_at(0.1).position, first, atol=1e-12)


def _ee(n: int = 3, **fields) -> TimedChunk:
    args = {"stamp": 0.0, "time_from_start": np.arange(n) * 0.1, "positions": np.zeros((n, 3))}
    return TimedChunk(**{**args, "gripper": np.zeros(n), **fields})


@pytest.mark.parametrize("bad", [[0.0, 0.0, 0.0, 0.0], [1e-9, 0.0, 0.0, 0.0]])
def test_a_zero_or_tiny_quaternion_is_refused_when_the_chunk_is_made(bad: list[float]) -> None:
    """It used to pass and latch "internal error in the control tick" on the next tick (normalisation)."""
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (3, 1))
    quats[1] = bad
    expected = r"TimedChunk.quat_xyzw\[1\]: expected a unit quaternion \(\|norm - 1\| <= 0.01\), found norm"
    with pytest.raises(ValueError, match=expected):
        _ee(quat_xyzw=quats)
    quats[1] = np.nan  # non-finite values stay the executor's to count (rejected_nonfinite)
    assert np.isnan(_ee(quat_xyzw=quats).quat_xyzw[1]).all()


def test_a_chunk_with_more_points_than_the_limit_is_refused() -> None:
    from dm1.control.schedule import MAX_CHUNK_POINTS

    def dense(n: int) -> TimedChunk:  # 1 kHz: within the chunk span limit
        return _ee(n=n, time_from_start=np.arange(n) * 0.001)

    assert dense(MAX_CHUNK_POINTS).time_from_start.size == MAX_CHUNK_POINTS
    with pytest.raises(ValueError, match=f"at most {MAX_CHUNK_POINTS} points, found {MAX_CHUNK_POINTS + 1}"):
        dense(MAX_CHUNK_POINTS + 1)


def test_a_negative_first_time_from_start_is_refused() -> None:
    with pytest.raises(ValueError, match=r"time_from_start\[0\]: expected >= 0 s.*found -0.5"):
        _ee(time_from_start=np.array([-0.5, 0.0, 0.1]))


@pytest.mark.parametrize("bad", [5.0, -5.0, 80.0])
def test_a_gripper_command_far_outside_0_1_is_refused(bad: float) -> None:
    expected = r"TimedChunk.gripper\[2\]: expected a command in \[0, 1\]"
    with pytest.raises(ValueError, match=rf"{expected}.*found {bad}"):
        _ee(gripper=np.array([0.0, 1.0, bad]))


def test_a_de_normalised_gripper_command_just_outside_0_1_is_clipped() -> None:
    """A policy's de-normalised output lands slightly outside [0, 1] (1 + 1e-6 from the normaliser's EPS;
    the reference random-weight network spans [-1, 1]): clipped, which the thresholds treat alike."""
    chunk = _ee(gripper=np.array([1.000001, -1.0, np.nan]))
    np.testing.assert_array_equal(chunk.gripper[:2], [1.0, 0.0])
    assert np.isnan(chunk.gripper[2])  # counted by the executor (rejected_nonfinite)
