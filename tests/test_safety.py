"""SafetyLimits validation and SafetyFilter clipping (pure functions, no robot)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EE_LIMITS_WIDEST
from dm1.control.limits import FR3_Q_MAX, FR3_Q_MIN, SafetyLimits
from dm1.control.safety import SafetyFilter, nonfinite_reason

HOME_Q = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
HOME_EE = np.array([0.554, 0.0, 0.521])
JOINT_ONLY = EE_LIMITS_WIDEST  # the per-joint clamps alone


def test_limits_are_on_by_default_with_fr3_values() -> None:
    lim = SafetyLimits()
    assert lim.joint_margin == pytest.approx(0.1)
    np.testing.assert_allclose(lim.q_lower, np.array(FR3_Q_MIN) + 0.1)
    np.testing.assert_allclose(lim.q_upper, np.array(FR3_Q_MAX) - 0.1)
    assert lim.chunk_timeout_s == pytest.approx(0.1)
    assert SafetyLimits.from_dict(lim.to_dict()) == lim


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"workspace_min": (0.8, -0.4, 0.02), "workspace_max": (0.25, 0.4, 0.6)},
            "workspace_min/workspace_max",
        ),
        ({"joint_margin": -0.1}, "joint_margin"),
        ({"chunk_timeout_s": 0.0}, "chunk_timeout_s"),
        ({"max_future_s": float("nan")}, "max_future_s"),
        ({"velocity_scale": 0.0}, "velocity_scale"),
        ({"max_joint_step": -1.0}, "max_joint_step"),
        ({"max_consecutive_late": 0}, "max_consecutive_late"),
        ({"q_min": (0.0,) * 6}, "q_min"),
        ({"gripper_open_below": 0.7, "gripper_close_above": 0.3}, "gripper_open_below/gripper_close_above"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"SafetyLimits.{field}"):
        SafetyLimits(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"q_max": (3.5, *FR3_Q_MAX[1:])}, "q_min/q_max"),
        ({"q_min": (-10.0,) * 7, "q_max": (10.0,) * 7}, "q_min/q_max"),
        ({"dq_max": (100.0,) * 7}, "dq_max"),
        (
            {"workspace_min": (-100.0, -100.0, -100.0), "workspace_max": (100.0, 100.0, 100.0)},
            "workspace_min",
        ),
        ({"chunk_timeout_s": 1e6}, "chunk_timeout_s"),
        ({"max_tick_gap_s": 1e6}, "max_tick_gap_s"),
        ({"max_ee_speed": 1000.0}, "max_ee_speed"),
        ({"max_ee_angular_speed": 100.0}, "max_ee_angular_speed"),
        ({"overspeed_factor": 1e9}, "overspeed_factor"),
        ({"max_consecutive_late": 10**9}, "max_consecutive_late"),
    ],
)
def test_limits_may_be_narrowed_but_never_widened_past_the_robot_or_switched_off(
    kwargs: dict, field: str
) -> None:
    """A value that widens a limit past the FR3 (joint limits, joint speeds, reach) or turns it into no limit
    at all (a 1e6 s watchdog, a 1e9 overspeed factor) is refused naming the field and the bound; the widest
    allowed values are accepted."""
    with pytest.raises(ValueError, match=f"SafetyLimits.{field}") as err:
        SafetyLimits(**kwargs)
    assert "FR3" in str(err.value) or "at most" in str(err.value)
    SafetyLimits(**JOINT_ONLY, max_tick_gap_s=2.0, overspeed_factor=10.0, chunk_timeout_s=5.0)


def test_every_scalar_safety_parameter_carries_its_range_for_ros_tools() -> None:
    """`safety.*` descriptors carry ranges (DescribeParameters shows what is accepted), and those ranges hold
    the defaults and stop at the same bounds as `SafetyLimits`."""
    from dm1.control.limits import SCALAR_UPPER_BOUNDS
    from dm1.control.parameters import SAFETY_PARAMETERS

    for name, (default, _, bounds) in SAFETY_PARAMETERS.items():
        if isinstance(default, tuple):
            continue  # arrays: SafetyLimits checks them (ROS ranges apply to scalars only)
        assert bounds is not None, f"safety.{name} has no range"
        assert bounds[0] <= default <= bounds[1], (name, default, bounds)
        if name in SCALAR_UPPER_BOUNDS:
            assert bounds[1] == SCALAR_UPPER_BOUNDS[name], name


def test_unknown_limit_key_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown field.*max_speed"):
        SafetyLimits.from_dict({"max_speed": 1.0})


def test_out_of_limit_joint_target_is_clipped_to_limit_minus_margin() -> None:
    lim = SafetyLimits(max_joint_step=1.0, **JOINT_ONLY)
    target = HOME_Q.copy()
    target[0] = 3.5  # beyond +2.7437
    measured = target.copy()
    measured[0] = lim.q_upper[0] - 0.05
    report = SafetyFilter(lim).filter_joint(target, measured, None, 0.01)
    assert report.safe[0] == pytest.approx(FR3_Q_MAX[0] - 0.1)
    assert "joint_limit" in report.reasons
    assert report.original[0] == pytest.approx(3.5)


def test_target_outside_workspace_is_clipped_to_box() -> None:
    lim = SafetyLimits(max_ee_step=0.5)
    report = SafetyFilter(lim).filter_ee(np.array([0.5, 0.0, -0.3]), np.array([0.5, 0.0, 0.1]), None, 0.01)
    assert report.safe[2] == pytest.approx(0.02)
    assert report.reasons == ["workspace"]


def test_joint_step_is_clamped_relative_to_measured_state() -> None:
    lim = SafetyLimits(**JOINT_ONLY)
    target = HOME_Q + np.array([0.5, 0, 0, 0, 0, 0, 0])
    report = SafetyFilter(lim).filter_joint(target, HOME_Q, None, 0.01)
    assert report.safe[0] - HOME_Q[0] == pytest.approx(lim.max_joint_step)
    assert "joint_step" in report.reasons


def test_ee_step_is_clamped_relative_to_measured_state_not_previous_target() -> None:
    lim = SafetyLimits()
    measured = HOME_EE
    previous = HOME_EE + np.array([0.0, 0.2, 0.0])  # a stale command far from the arm
    report = SafetyFilter(lim).filter_ee(previous, measured, previous, 0.01)
    assert np.linalg.norm(report.safe - measured) == pytest.approx(lim.max_ee_step)
    assert "ee_step" in report.reasons


def test_commanded_rate_is_limited_by_velocity_limits() -> None:
    lim = SafetyLimits(max_ee_step=0.5)
    report = SafetyFilter(lim).filter_ee(HOME_EE + np.array([0.0, 0.1, 0.0]), HOME_EE, HOME_EE, 0.01)
    assert np.linalg.norm(report.safe - HOME_EE) == pytest.approx(lim.max_ee_speed * 0.01)
    assert report.reasons == ["ee_speed"]
    jl = SafetyFilter(SafetyLimits(max_joint_step=1.0, **JOINT_ONLY))
    rep = jl.filter_joint(HOME_Q + 0.2, HOME_Q, HOME_Q, 0.01)
    np.testing.assert_allclose(rep.safe - HOME_Q, np.array(SafetyLimits().dq_max) * 0.3 * 0.01)


def test_target_within_limits_passes_unchanged() -> None:
    report = SafetyFilter(SafetyLimits()).filter_ee(HOME_EE + 0.001, HOME_EE, HOME_EE, 0.01)
    assert not report.clipped
    np.testing.assert_allclose(report.safe, HOME_EE + 0.001)


def test_nonfinite_target_raises_naming_the_array() -> None:
    with pytest.raises(ValueError, match="non-finite value in target"):
        SafetyFilter(SafetyLimits()).filter_joint(np.full(7, np.nan), HOME_Q, None, 0.01)
    assert (
        nonfinite_reason(a=np.zeros(3), b=np.array([0.0, np.inf]))
        == "non-finite value in b at index (1,): inf"
    )


def test_clipped_velocity_stops_at_a_joint_limit_and_respects_the_velocity_limit() -> None:
    lim = SafetyLimits(**JOINT_ONLY)
    filt = SafetyFilter(lim)
    previous = lim.q_upper - 0.001
    previous[1] = 0.0
    target = previous + np.array([0.5, 0.5, 0, 0, 0, 0, 0])  # joint 0 past its limit, joint 1 far ahead
    report = filt.filter_joint(target, previous, previous, 0.01)
    vel = filt.clipped_velocity(report, previous, 0.01, "joint")
    assert vel[0] == 0.0, "no velocity through the joint limit"
    assert vel[1] == pytest.approx(lim.dq_max[1] * lim.velocity_scale)
    assert filt.clipped_velocity(report, None, 0.01, "joint") is None  # no previous target: arrive at rest


def test_target_stream_brakes_into_a_workspace_wall_and_then_reaches_it() -> None:
    """Requests 5 cm below the floor, from 10 cm above it at full speed: the safe targets never leave the box,
    approach the floor no faster than sqrt(2 a d), and still arrive on it (no stall short of the wall)."""
    lim = SafetyLimits()
    filt, dt, floor = SafetyFilter(lim), 0.01, lim.workspace_min[2]
    prev = np.array([0.5, 0.0, floor + 0.10])
    speeds = []
    for _ in range(100):  # 1 s at 100 Hz
        report = filt.filter_ee(prev - [0.0, 0.0, 0.05], prev, prev, dt)  # measured = previous target
        step = prev[2] - report.safe[2]
        assert report.safe[2] >= floor
        assert step <= np.sqrt(2 * lim.wall_decel * (prev[2] - floor)) * dt + 1e-12
        speeds.append(step / dt)
        prev = report.safe
    assert max(speeds) == pytest.approx(lim.max_ee_speed)  # full speed away from the wall
    assert "wall_approach" in report.reasons or prev[2] == floor
    assert prev[2] - floor < 0.001  # arrived (within 1 mm) within the second


def test_feedforward_velocity_is_capped_and_brakes_near_a_wall() -> None:
    lim = SafetyLimits()
    filt, floor = SafetyFilter(lim), lim.workspace_min[2]
    mid = np.array([0.5, 0.0, 0.3])
    fast = filt.limit_feedforward(np.array([0.0, 1.0, 0.0]), mid, "cartesian")
    assert fast == pytest.approx([0.0, lim.max_ee_speed, 0.0])  # never faster than the safe stream
    near = np.array([0.5, 0.0, floor + 0.005])
    down = filt.limit_feedforward(np.array([0.0, 0.0, -0.3]), near, "cartesian")
    assert down[2] == pytest.approx(-np.sqrt(2 * lim.wall_decel * 0.005))  # 0.14 m/s at 5 mm
    up = filt.limit_feedforward(np.array([0.0, 0.0, 0.3]), near, "cartesian")
    assert up[2] == pytest.approx(0.3)  # away from the wall: untouched
    on = filt.limit_feedforward(np.array([0.1, 0.0, -0.3]), near - [0.0, 0.0, 0.005], "cartesian")
    assert on == pytest.approx([0.1, 0.0, 0.0])  # on the floor: along it only


def test_a_target_braking_into_a_wall_carries_the_braking_deceleration() -> None:
    """The acceleration fed forward with a target is +-wall_decel exactly on the axes where its velocity is at
    the wall-approach cap (the stream brakes at that rate), and 0 for free motion, motion away from a wall,
    a slow approach, the last slow millimetres before the wall and a target already on it."""
    lim = SafetyLimits()
    filt, floor, ceiling = SafetyFilter(lim), lim.workspace_min[2], lim.workspace_max[2]
    near = np.array([0.5, 0.0, floor + 0.005])
    braking = filt.limit_feedforward(np.array([0.1, 0.0, -0.3]), near, "cartesian")
    assert filt.wall_braking(braking, near) == pytest.approx([0.0, 0.0, lim.wall_decel])  # decelerates
    top = np.array([0.5, 0.0, ceiling - 0.005])
    rising = filt.limit_feedforward(np.array([0.0, 0.0, 0.3]), top, "cartesian")
    assert filt.wall_braking(rising, top) == pytest.approx([0.0, 0.0, -lim.wall_decel])
    assert filt.wall_braking(np.array([0.0, 0.0, -0.01]), near) == pytest.approx(np.zeros(3))  # slow enough
    close = near - [0.0, 0.0, 0.003]  # 2 mm above the floor: a jittering policy's short steps
    creeping = filt.limit_feedforward(np.array([0.0, 0.0, -0.3]), close, "cartesian")
    assert creeping[2] < 0 and filt.wall_braking(creeping, close) == pytest.approx(np.zeros(3))
    assert filt.wall_braking(np.array([0.0, 0.0, 0.3]), near) == pytest.approx(np.zeros(3))  # leaving it
    free = np.array([0.5, 0.0, 0.3])
    assert filt.wall_braking(np.array([0.2, -0.2, -0.2]), free) == pytest.approx(np.zeros(3))
    on = near - [0.0, 0.0, 0.005]
    stopped = filt.limit_feedforward(np.array([0.0, 0.0, -0.3]), on, "cartesian")
    assert filt.wall_braking(stopped, on) == pytest.approx(np.zeros(3))  # arrived: nothing to brake


def test_wall_decel_must_be_positive() -> None:
    with pytest.raises(ValueError, match="wall_decel: expected a positive finite value"):
        SafetyLimits(wall_decel=0.0)
