"""Joint mode obeys the Cartesian limits: `SafetyFilter.filter_joint` scales joint steps through the FR3's FK
so the EE keeps to `max_ee_speed`, `max_ee_step`, `max_ee_angular_speed`, `max_ee_rotation_step` and the
workspace box; `OverspeedWatch` watches the EE."""

from __future__ import annotations

import numpy as np
import pytest
from dm1.control.backend import HOME_Q
from dm1.control.limits import SafetyLimits
from dm1.control.safety import OVERSPEED_TICKS, OverspeedWatch, SafetyFilter
from dm1.kinematics import fr3_fk, fr3_fk_matrix, fr3_tcp_poses, rotation_angles
from dm1.kinematics import fr3_tcp_positions as ee_positions

LIM = SafetyLimits()
POSITION_ONLY = SafetyLimits(max_ee_angular_speed=2.5, max_ee_rotation_step=1.0)  # the hand may turn freely
DT = 0.01
LO, HI = np.array(LIM.workspace_min), np.array(LIM.workspace_max)


def ee(q: np.ndarray) -> np.ndarray:
    return fr3_fk(np.asarray(q, dtype=float))[0]


def hand_rotation(q: np.ndarray) -> np.ndarray:
    """(..., 3, 3) the TCP's rotation matrices (the hand's yaw included)."""
    return fr3_fk_matrix(np.asarray(q, dtype=float))[..., :3, :3]


def stream(
    target: np.ndarray, ticks: int, start: np.ndarray = HOME_Q, lim: SafetyLimits = LIM
) -> tuple[np.ndarray, list[str]]:
    """Stream one joint target for `ticks` control ticks with a perfectly tracking arm (measured = the
    previous commanded target); returns the commanded targets (ticks + 1, 7), the start first, and every
    reason."""
    filt, q, out, reasons = SafetyFilter(lim), np.asarray(start, dtype=float), [], []
    out.append(q)
    for _ in range(ticks):
        report = filt.filter_joint(target, q, q, DT)
        q = report.safe
        out.append(q)
        reasons += report.reasons
    return np.array(out), reasons


def test_the_lean_fk_matches_the_kinematics_module() -> None:
    q = HOME_Q + np.random.default_rng(0).normal(0.0, 0.8, (64, 7))
    np.testing.assert_allclose(ee_positions(q), fr3_fk(q)[0], atol=1e-12)
    _, r = fr3_tcp_poses(q)  # joint 7's rotation: the angle between two of them is the TCP's
    r_tcp = hand_rotation(q)
    np.testing.assert_allclose(
        rotation_angles(r[:32], r[32:]), rotation_angles(r_tcp[:32], r_tcp[32:]), atol=1e-9
    )
    rel = np.einsum("nji,njk->nik", r_tcp[:32], r_tcp[32:])  # (32, 3, 3): a^T b
    by_trace = np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0))
    np.testing.assert_allclose(rotation_angles(r[:32], r[32:]), by_trace, atol=1e-6)


def test_a_joint_step_within_every_limit_is_unchanged() -> None:
    target = HOME_Q + 0.0005
    report = SafetyFilter(LIM).filter_joint(target, HOME_Q, HOME_Q, DT)
    assert report.reasons == [] and np.array_equal(report.safe, target)


def test_joint_step_is_scaled_to_the_ee_speed_limit() -> None:
    """Joints 1, 2 and 4 each stepping just under their own cap x dt move the EE 2.5x `max_ee_speed` x dt: the
    step is scaled down to the EE speed limit (not stopped), along the same joint direction."""
    step = np.array([1, 1, 0, -1, 0, 0, 0]) * 0.0075  # rad; caps x dt: 0.0079 for joints 1-4
    report = SafetyFilter(POSITION_ONLY).filter_joint(HOME_Q + step, HOME_Q, HOME_Q, DT)
    moved = np.linalg.norm(ee(report.safe) - ee(HOME_Q))
    assert np.linalg.norm(ee(HOME_Q + step) - ee(HOME_Q)) > 1.5 * LIM.max_ee_speed * DT  # the case is real
    assert 0.97 * LIM.max_ee_speed * DT <= moved <= LIM.max_ee_speed * DT + 1e-9, moved
    assert "ee_speed" in report.reasons
    moving = step != 0
    fraction = (report.safe - HOME_Q)[moving] / step[moving]
    np.testing.assert_allclose(fraction, fraction[0])  # scaled, not bent
    np.testing.assert_allclose(report.safe[~moving], HOME_Q[~moving])  # the other joints stay put


def test_a_huge_joint_jump_streams_the_ee_at_the_speed_limit() -> None:
    """Every joint told to jump 2 rad (the tester's chunk): the EE never moves faster than `max_ee_speed`."""
    targets, reasons = stream(HOME_Q + 2.0, 60, lim=POSITION_ONLY)
    speeds = np.linalg.norm(np.diff(ee(targets), axis=0), axis=1) / DT  # (60,) m/s
    assert speeds.max() <= LIM.max_ee_speed + 1e-6, speeds.max()
    assert speeds[10:].min() > 0.9 * LIM.max_ee_speed, "the stream should keep moving at the limit"
    assert "ee_speed" in reasons


def test_the_wrist_joints_turn_the_hand_at_most_at_the_angular_speed_limit() -> None:
    """Joints 5-7 told to turn 2 rad (each within its own cap: up to 1.58 rad/s): the hand turns at most
    `max_ee_angular_speed` (0.5 rad/s), keeps turning at that speed, and stays where it is."""
    targets, reasons = stream(HOME_Q + np.array([0, 0, 0, 0, 2.0, 2.0, 2.0]), 60)
    r = hand_rotation(targets)
    turn = rotation_angles(r[1:], r[:-1]) / DT  # (60,) rad/s
    assert turn.max() <= LIM.max_ee_angular_speed + 1e-6, turn.max()
    assert turn[5:].min() > 0.9 * LIM.max_ee_angular_speed, "the stream should keep turning at the limit"
    assert "ee_angular_speed" in reasons
    unlimited, _ = stream(HOME_Q + np.array([0, 0, 0, 0, 2.0, 2.0, 2.0]), 60, lim=POSITION_ONLY)
    r = hand_rotation(unlimited)
    assert (rotation_angles(r[1:], r[:-1]) / DT).max() > 2.0 * LIM.max_ee_angular_speed  # the case is real


def test_joint_one_at_its_cap_is_slowed_to_the_hand_angular_speed() -> None:
    """Joint 1 alone at its cap turns the hand 0.79 rad/s about the base's z axis: scaled to 0.5 rad/s."""
    step = np.array([0.0078, 0, 0, 0, 0, 0, 0])  # cap x dt: 0.00786
    report = SafetyFilter(LIM).filter_joint(HOME_Q + step, HOME_Q, HOME_Q, DT)
    turned = float(rotation_angles(hand_rotation(report.safe), hand_rotation(HOME_Q)))
    assert 0.97 * LIM.max_ee_angular_speed * DT <= turned <= LIM.max_ee_angular_speed * DT + 1e-9, turned
    assert report.reasons == ["ee_angular_speed"]


def test_the_hand_rotation_step_from_the_measured_arm_always_wins() -> None:
    """A lagging wrist: the previous target turned the hand 0.16 rad ahead (joints 5-7 each 0.09 rad, under
    `max_joint_step`) and a slow tick (dt = 1 s) would let the rate through; the target stays within
    `max_ee_rotation_step` (0.1 rad) of the measured hand."""
    ahead = HOME_Q + np.array([0, 0, 0, 0, 0.09, 0.09, 0.09])
    assert (
        float(rotation_angles(hand_rotation(ahead), hand_rotation(HOME_Q))) > 1.5 * LIM.max_ee_rotation_step
    )
    report = SafetyFilter(LIM).filter_joint(ahead, HOME_Q, ahead, 1.0)
    turned = float(rotation_angles(hand_rotation(report.safe), hand_rotation(HOME_Q)))
    assert turned <= LIM.max_ee_rotation_step + 1e-9, turned
    assert "ee_rotation" in report.reasons


def test_joint_target_that_would_leave_the_workspace_is_stopped_at_the_wall() -> None:
    """Joint 1 streamed forward swings the hand along +y: it brakes into the box's y wall and stays there."""
    targets, reasons = stream(HOME_Q + np.array([2.0, 0, 0, 0, 0, 0, 0]), 400)
    p = ee(targets)
    assert p[:, 1].max() <= HI[1] + 1e-9 and p[:, 0].min() >= LO[0] - 1e-9, (p[:, 1].max(), p[:, 0].min())
    assert p[-1, 1] > HI[1] - 0.005, f"stopped short of the wall: y = {p[-1, 1]:.3f}"
    assert "wall_approach" in reasons or "workspace" in reasons


def test_joint_target_toward_the_table_stops_above_the_floor() -> None:
    """Joints 2, 4 and 6 streamed toward a pose whose hand lies 8 cm under the table top: the hand stops on
    the box's floor (0.02 m), and the joint target stops with it."""
    target = HOME_Q + np.array([0, 0.9, 0, -0.3, 0, 0.5, 0])
    assert ee(target)[2] < LO[2] - 0.05
    targets, reasons = stream(target, 400)
    p = ee(targets)
    assert np.all(p >= LO - 1e-9) and np.all(p <= HI + 1e-9), (p.min(0), p.max(0))
    assert p[-1, 2] < LO[2] + 0.005, f"stopped short of the floor: z = {p[-1, 2]:.3f}"
    assert "wall_approach" in reasons or "workspace" in reasons


def test_an_arm_outside_the_box_may_move_back_toward_it_but_not_further_out() -> None:
    """Measured outside the box (y = 0.45): a joint step back toward the box is kept whole; a step further out
    is stopped where the measured EE is (no farther out than the arm already is)."""
    q = HOME_Q.copy()
    q[0] = np.arcsin(0.45 / np.linalg.norm(ee(HOME_Q)[:2]))  # joint 1 swings the hand to y = 0.45
    assert ee(q)[1] > HI[1] + 0.04
    back = q - np.array([0.005, 0, 0, 0, 0, 0, 0])
    report = SafetyFilter(LIM).filter_joint(back, q, q, DT)
    assert report.reasons == [] and np.array_equal(report.safe, back)
    out = q + np.array([0.005, 0, 0, 0, 0, 0, 0])
    report = SafetyFilter(LIM).filter_joint(out, q, q, DT)
    assert ee(report.safe)[1] <= ee(q)[1] + 1e-9 and "workspace" in report.reasons


def test_the_ee_step_from_the_measured_arm_always_wins() -> None:
    """A lagging arm: the previous target ran ahead, and a slow tick (dt = 1 s) would let the rate limits
    through; the target's EE is still kept within `max_ee_step` of the measured EE."""
    ahead = HOME_Q + np.array([0.09, 0.09, 0.0, -0.09, 0.0, 0.0, 0.0])  # EE 10 cm away
    report = SafetyFilter(LIM).filter_joint(ahead + 0.005, HOME_Q, ahead, 1.0)
    assert np.linalg.norm(ee(report.safe) - ee(HOME_Q)) <= LIM.max_ee_step + 1e-9
    assert "ee_step" in report.reasons


@pytest.mark.parametrize("speed, faults", [(0.9, False), (1.1, True)])
def test_a_sustained_ee_overspeed_in_joint_mode_latches_a_fault(speed: float, faults: bool) -> None:
    """Joint mode watches the EE speed too (3 x 0.35 m/s), even with every joint below 3x its own cap."""
    watch = OverspeedWatch(LIM, "joint")
    dq = np.array(LIM.dq_max) * LIM.velocity_scale * 1.5  # (7,) rad/s: half the joint trip
    results = [watch.check(np.array([0.0, speed, 0.0]), dq) for _ in range(OVERSPEED_TICKS)]
    assert (results[-1] is not None) == faults
    if faults:
        assert results[-1].startswith("overspeed: measured EE speed 1.100 m/s"), results[-1]
