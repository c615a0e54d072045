"""The FR3's position-dependent joint velocity limits (numpy only).

Franka documents the FR3's joint velocity limits as functions of the joint position ("Limits for Franka
Research 3" in Franka's control-parameter docs; libfranka's `computeUpperLimitsJointVelocity` /
`computeLowerLimitsJointVelocity`): toward each position limit a joint may move at most

    min(dq_max, max(0, -c + sqrt(k (q_limit - q))))

which is a braking curve (constant deceleration k / 2 with an offset c) that reaches 0 just inside the
limit. Far from the limits it is the flat `dq_max`; near one it shrinks, in the direction of that limit only.
`SafetyFilter.filter_joint` scales these bounds by `velocity_scale`, so a joint target stream brakes into a
position limit instead of running into it at the flat cap.
"""

from __future__ import annotations

import numpy as np

# Per joint: offset c (rad/s), gain k (rad/s^2: twice the braking deceleration), and the position the
# curve is measured from (rad) toward the upper and the lower limit (the FR3's hard limits in these formulas).
_OFFSET = np.array([0.30, 0.20, 0.20, 0.30, 0.35, 0.35, 0.35])
_GAIN = np.array([12.0, 5.17, 7.00, 8.00, 34.0, 11.0, 34.0])
_UPPER = np.array([2.75010, 1.79180, 2.90650, -0.14580, 2.81010, 4.52050, 3.01960])
_LOWER = np.array([-2.75010, -1.79180, -2.90650, -3.04810, -2.81010, 0.54092, -3.01960])


def fr3_velocity_bounds(
    q: np.ndarray, dq_max: np.ndarray | tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(upper (7,) >= 0, lower (7,) <= 0) rad/s: the joint velocities allowed at joint positions q (7,) rad,
    each at most the flat cap `dq_max` (7,) in size."""
    q = np.asarray(q, dtype=float)
    cap = np.asarray(dq_max, dtype=float)
    up = -_OFFSET + np.sqrt(np.maximum(_GAIN * (_UPPER - q), 0.0))  # (7,)
    down = -_OFFSET + np.sqrt(np.maximum(_GAIN * (q - _LOWER), 0.0))  # (7,)
    return np.clip(up, 0.0, cap), -np.clip(down, 0.0, cap)
