"""Unit-quaternion helpers (xyzw, numpy only) for the orientation limits of `SafetyFilter.filter_orientation`.

A quaternion and its negative are the same orientation: every angle here is the rotation between the two
orientations (shortest path, in [0, pi]), whatever their signs.
"""

from __future__ import annotations

import numpy as np


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle (rad, [0, pi]) between the unit quaternions `a` and `b` (4,), either sign.

    4 atan2(|a - b|, |a + b|) (b flipped toward a): accurate for tiny angles too, where 2 acos(a.b) is not.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    b = b if float(np.dot(a, b)) >= 0.0 else -b
    return 4.0 * float(np.arctan2(np.linalg.norm(a - b), np.linalg.norm(a + b)))


def turn_toward(start: np.ndarray, goal: np.ndarray, max_angle: float) -> tuple[np.ndarray, bool]:
    """`goal` (4,) unchanged when it lies within `max_angle` (rad) of `start`, else the orientation
    `max_angle` from `start` on the shortest path toward it (slerp); with whether it was limited.
    Both inputs unit quaternions; the result is one too."""
    start, goal = np.asarray(start, dtype=float), np.asarray(goal, dtype=float)
    angle = rotation_angle(start, goal)
    if angle <= max_angle:
        return goal, False
    if max_angle <= 0.0:
        return start.copy(), True
    aligned = goal if float(np.dot(start, goal)) >= 0.0 else -goal
    half, f = angle / 2.0, max_angle / angle  # half: the angle between the two as 4-vectors
    if np.sin(half) < 1e-9:  # numerically the same orientation: a normalised lerp is exact enough
        q = (1.0 - f) * start + f * aligned
    else:
        q = (np.sin((1.0 - f) * half) * start + np.sin(f * half) * aligned) / np.sin(half)
    return q / np.linalg.norm(q), True
