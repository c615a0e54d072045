"""The FR3's position-dependent joint velocity limits (`dm1.control.fr3_velocity`) and their use in
`SafetyFilter.filter_joint` (reliability row 5: "FR3 position-dependent velocity limits x a dynamics
factor")."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EE_LIMITS_WIDEST
from dm1.control.backend import HOME_Q
from dm1.control.fr3_velocity import fr3_velocity_bounds
from dm1.control.limits import FR3_DQ_MAX, SafetyLimits
from dm1.control.safety import SafetyFilter

CAP = np.array(FR3_DQ_MAX)
JOINT_ONLY = SafetyLimits(**EE_LIMITS_WIDEST, max_joint_step=1.0)  # the per-joint clamps alone


def test_far_from_the_position_limits_the_bounds_are_the_flat_caps() -> None:
    upper, lower = fr3_velocity_bounds(np.array([0, 0, 0, -1.5, 0, 2.53, 0]), CAP)
    np.testing.assert_allclose(upper, CAP)
    np.testing.assert_allclose(lower, -CAP)


def test_joint_one_near_its_upper_limit_follows_the_braking_curve_in_that_direction_only() -> None:
    """At q1 = 2.6 rad: -0.30 + sqrt(12 (2.7501 - 2.6)) = 1.0416 rad/s upward; downward the flat 2.62."""
    q = HOME_Q.copy()
    q[0] = 2.6
    upper, lower = fr3_velocity_bounds(q, CAP)
    assert upper[0] == pytest.approx(-0.30 + np.sqrt(12.0 * (2.7501 - 2.6)))
    assert lower[0] == pytest.approx(-CAP[0])


def test_the_bound_toward_a_limit_shrinks_to_zero_before_it() -> None:
    """The curve reaches 0 at q_limit - c^2 / k (joint 1: 2.7426 rad) and stays 0 past it; symmetric below."""
    speeds = [fr3_velocity_bounds(np.r_[q, HOME_Q[1:]], CAP)[0][0] for q in np.linspace(2.0, 2.76, 40)]
    assert np.all(np.diff(speeds) <= 1e-12) and speeds[0] == pytest.approx(CAP[0])
    at_zero = np.r_[2.7501 - 0.09 / 12.0, HOME_Q[1:]]
    assert fr3_velocity_bounds(at_zero, CAP)[0][0] == pytest.approx(0.0, abs=1e-9)
    assert fr3_velocity_bounds(-at_zero * np.r_[1, np.ones(6) * -1], CAP)[1][0] == pytest.approx(
        0.0, abs=1e-9
    )


def test_a_lower_flat_cap_still_caps_the_curve() -> None:
    upper, lower = fr3_velocity_bounds(HOME_Q, CAP * 0.1)
    np.testing.assert_allclose(upper, CAP * 0.1)
    np.testing.assert_allclose(lower, -CAP * 0.1)


def test_a_joint_target_stream_brakes_on_the_curve_into_its_bound() -> None:
    """Joint 1 streamed toward 3.5 rad with a perfectly tracking arm: every step stays within velocity_scale
    x the curve at the previous target, the stream slows near the bound (0.25 rad/s there against 0.79 on
    the flat), and it still arrives at the bound."""
    filt, dt = SafetyFilter(JOINT_ONLY), 0.01
    scale = JOINT_ONLY.velocity_scale
    q, speeds = HOME_Q.copy(), []
    for _ in range(600):
        target = q.copy()
        target[0] = 3.5
        safe = filt.filter_joint(target, q, q, dt).safe
        assert safe[0] - q[0] <= scale * fr3_velocity_bounds(q, JOINT_ONLY.dq_max)[0][0] * dt + 1e-12
        speeds.append((safe[0] - q[0]) / dt)
        q = safe
    bound = JOINT_ONLY.q_upper[0]
    assert q[0] == pytest.approx(bound)
    assert max(speeds) == pytest.approx(scale * CAP[0])
    last = next(s for s in reversed(speeds) if s > 1e-9)
    assert last < 0.4 * scale * CAP[0], f"arrived at {last:.2f} rad/s"


def test_the_feedforward_velocity_obeys_the_curve_too() -> None:
    q = HOME_Q.copy()
    q[0] = 2.6
    vel = SafetyFilter(JOINT_ONLY).limit_feedforward(np.full(7, 10.0), q, "joint")
    assert vel[0] == pytest.approx(JOINT_ONLY.velocity_scale * (-0.30 + np.sqrt(12.0 * (2.7501 - 2.6))))
    assert vel[1] == pytest.approx(JOINT_ONLY.velocity_scale * CAP[1])
