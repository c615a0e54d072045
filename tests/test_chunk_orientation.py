"""The commanded EE orientation goes through the safety layer like the position: rate limit vs the previous
commanded orientation (`max_ee_angular_speed`), step limit vs the measured one (`max_ee_rotation_step`)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeClock
from dm1.control.backend import HOME_EE_POS, TOP_DOWN_XYZW, FakeBackend
from dm1.control.executor import ChunkExecutor
from dm1.control.limits import SafetyLimits
from dm1.control.safety import SafetyFilter
from dm1.control.schedule import TimedChunk

DT = 0.01  # s, the controller period of these tests


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of two xyzw quaternions (4,)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def about_z(angle: float) -> np.ndarray:
    """The top-down orientation turned by `angle` rad about the base z axis (xyzw)."""
    return quat_mul(np.array([0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)]), TOP_DOWN_XYZW)


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle (rad) between two unit quaternions, either sign."""
    return float(2.0 * np.arccos(min(1.0, abs(float(np.dot(a, b))))))


def rotating_chunk(stamp: float, quat: np.ndarray, n: int = 80) -> TimedChunk:
    """A chunk that keeps the EE position at home and asks for orientation `quat` at every point."""
    return TimedChunk(
        stamp=stamp,
        time_from_start=np.arange(n) * 0.05,
        positions=np.tile(HOME_EE_POS, (n, 1)),
        gripper=np.zeros(n),
        quat_xyzw=np.tile(quat, (n, 1)),
    )


def stream(ex: ChunkExecutor, clock: FakeClock, seconds: float) -> None:
    for _ in range(round(seconds / DT)):
        clock.t += DT
        ex.tick()


def sent_quats(backend: FakeBackend) -> list[np.ndarray]:
    return [args[1] for name, args in backend.motion_calls() if name == "ee"]


def test_a_chunk_turning_the_hand_90_degrees_is_rate_limited_to_the_angular_speed_limit() -> None:
    """The exploratory twin run: a chunk turning the target 90° about z spun the hand at once."""
    backend, clock = FakeBackend(), FakeClock()
    ex = ChunkExecutor(backend, SafetyLimits(), clock, tick_period_s=DT)
    ex.on_chunk(rotating_chunk(clock.t, about_z(np.pi / 2)))
    stream(ex, clock, 0.5)
    quats = sent_quats(backend)
    np.testing.assert_allclose(quats[0], TOP_DOWN_XYZW)  # activation: the measured orientation
    steps = [angle_between(a, b) for a, b in zip(quats, quats[1:], strict=False)]
    limit = SafetyLimits().max_ee_angular_speed * DT
    assert max(steps) <= limit + 1e-9, f"a {max(steps):.3f} rad step in one tick (limit {limit:.3f})"
    assert steps[-1] == pytest.approx(limit), "the hand turns at the limit, toward the request"
    turned = angle_between(quats[-1], TOP_DOWN_XYZW)
    assert turned == pytest.approx(limit * (len(quats) - 1), rel=1e-6)
    assert angle_between(quats[-1], about_z(np.pi / 2)) == pytest.approx(np.pi / 2 - turned, abs=1e-6)
    assert ex.counters["clamped"] >= len(quats) - 1
    assert "ee_angular_speed" in ex.last_clamp.reasons


def test_the_commanded_orientation_stays_within_the_rotation_step_of_the_measured_one() -> None:
    """An arm that does not turn (held, blocked): the command never runs away from its orientation."""
    backend, clock = FakeBackend(), FakeClock()
    ex = ChunkExecutor(backend, SafetyLimits(max_ee_angular_speed=2.5), clock, tick_period_s=DT)
    ex.on_chunk(rotating_chunk(clock.t, about_z(0.6)))
    for _ in range(20):
        clock.t += DT
        ex.tick()
        backend.ee_quat = TOP_DOWN_XYZW.copy()  # the measured orientation stays where it was
    quats = sent_quats(backend)
    step = SafetyLimits().max_ee_rotation_step
    assert max(angle_between(q, TOP_DOWN_XYZW) for q in quats) == pytest.approx(step)
    # the step from the measured orientation binds last (the turn rate, at most 2.5 rad/s, binds too)
    assert ex.last_clamp.reasons == ["ee_angular_speed", "ee_rotation"]
    np.testing.assert_allclose(ex.last_clamp.original[3:], about_z(0.6), atol=1e-12)  # pose (7,)


def test_a_constant_top_down_chunk_is_sent_unchanged_and_never_counted_as_clamped() -> None:
    """The policy and teleop always send the card's top-down orientation: nothing changes for them."""
    backend, clock = FakeBackend(), FakeClock()
    ex = ChunkExecutor(backend, SafetyLimits(), clock, tick_period_s=DT)
    ex.on_chunk(rotating_chunk(clock.t, -TOP_DOWN_XYZW))  # the other sign of the same orientation
    stream(ex, clock, 0.3)
    for q in sent_quats(backend):
        assert angle_between(q, TOP_DOWN_XYZW) < 1e-9
    assert ex.counters["clamped"] == 0 and ex.last_clamp is None


def test_orientation_filter_takes_the_shortest_path_and_reports_both_limits() -> None:
    filt = SafetyFilter(SafetyLimits())
    far = about_z(1.0)
    report = filt.filter_orientation(-far, TOP_DOWN_XYZW, TOP_DOWN_XYZW, DT)  # -q is the same orientation
    assert report.reasons == ["ee_angular_speed"]
    assert angle_between(report.safe, TOP_DOWN_XYZW) == pytest.approx(0.5 * DT)
    assert angle_between(report.safe, far) == pytest.approx(1.0 - 0.5 * DT)
    report = filt.filter_orientation(far, TOP_DOWN_XYZW, far, DT)  # previous already there: step limit only
    assert report.reasons == ["ee_rotation"]
    assert angle_between(report.safe, TOP_DOWN_XYZW) == pytest.approx(0.1)
    report = filt.filter_orientation(about_z(0.002), TOP_DOWN_XYZW, TOP_DOWN_XYZW, DT)
    assert not report.clipped and np.linalg.norm(report.safe) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["max_ee_angular_speed", "max_ee_rotation_step"])
@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf")])
def test_orientation_limits_must_be_positive_and_finite(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"SafetyLimits.{name}: expected .*found"):
        SafetyLimits(**{name: value})


@pytest.mark.slow
def test_on_franky_sim_a_chunk_turning_the_hand_90_degrees_turns_it_at_the_limit() -> None:
    """The exploratory twin run again, on franky-sim: chunks asking for the hand turned 90° about z spun it
    58° with joint 7 at 2.27 rad/s. Now the hand turns at `max_ee_angular_speed` (0.5 rad/s), no fault."""
    pytest.importorskip("franky")
    from dm1.control.franky_backend import FrankyBackend
    from franky_sim_arm import SimArm

    arm = SimArm()
    backend = FrankyBackend(arm.host, gripper=False)
    try:
        ex = ChunkExecutor(backend, SafetyLimits(), lambda: arm.time, mode="cartesian", tick_period_s=DT)
        start = backend.read_state()
        goal = quat_mul(np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)]), start.ee_quat_xyzw)
        tfs = np.arange(4) * 0.05
        t0 = next_chunk = arm.time
        joint_speeds = []
        while (now := arm.time) - t0 < 1.0:
            if now >= next_chunk:
                pos, quats = np.tile(start.ee_pos, (4, 1)), np.tile(goal, (4, 1))
                ex.on_chunk(TimedChunk(now, tfs, pos, np.zeros(4), quat_xyzw=quats))
                next_chunk += 0.05
            ex.tick(now)
            joint_speeds.append(arm.joint_speed())
            arm.wait_sim(DT)
        turned = angle_between(backend.read_state().ee_quat_xyzw, start.ee_quat_xyzw)
        assert ex.status().fault is None and ex.counters["accepted"] >= 15
        assert max(joint_speeds) < 1.0, f"a joint at {max(joint_speeds):.2f} rad/s"
        assert 0.3 < turned < 0.55, f"the hand turned {turned:.3f} rad in 1 s (limit 0.5 rad/s)"
        assert "ee_angular_speed" in ex.last_clamp.reasons
    finally:
        backend.close()
        arm.close()
