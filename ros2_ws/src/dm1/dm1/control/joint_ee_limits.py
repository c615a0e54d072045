"""The end-effector limits applied to joint targets (joint mode), through the FR3's forward kinematics.

`SafetyFilter.filter_joint` clamps each joint (limits, rate, step); a joint target that obeys them all may
still move the hand far faster than `max_ee_speed` (joints 1, 2 and 4 at their caps: 0.72 m/s) or out of the
workspace box (onto the table). `limit_joint_by_ee` then scales the joint step down, by the largest fraction
in [0, 1] that keeps the EE within the Cartesian limits:

1. from the previous commanded target (the rate): the EE moves at most `max_ee_speed` x dt ("ee_speed"),
   toward each box wall at most at the wall-approach speed of `filter_ee` ("wall_approach"), turns at most
   `max_ee_angular_speed` x dt ("ee_angular_speed"), and stays in the box ("workspace");
2. from the measured joints (the step, which always wins): the EE lies at most `max_ee_step` from the
   measured EE ("ee_step"), turned at most `max_ee_rotation_step` from its orientation ("ee_rotation"), and
   in the box ("workspace").

Without the orientation limits the wrist joints alone, each within its own cap, turn the hand at up to
~2.7 rad/s, against the 0.5 rad/s of Cartesian mode's `filter_orientation`.

"In the box" means: on no axis further outside it than the measured EE (a target that moves back toward the
box is allowed; an arm outside it is never pushed further out). The fraction is found on a grid, refined
once (resolution 1/256); the FK is `dm1.kinematics.fr3_tcp_poses` (~40 us per batch), so a tick costs one
FK batch when nothing is clipped and five at most (~0.1 and ~0.3 ms).
"""

from __future__ import annotations

import numpy as np

from dm1.control.limits import SafetyLimits
from dm1.kinematics import fr3_tcp_poses as ee_poses

Poses = tuple[np.ndarray, np.ndarray]  # EE positions (N, 3) m and rotations (N, 3, 3)

_TOL = 1e-9  # m: a constraint met to within this counts as met (float rounding)
_GRID = np.linspace(0.0, 1.0, 17)  # (17,) the first search grid of the fraction; refined once by 16


def _chord2(angle: float) -> float:
    """||a - b||_F^2 of two rotation matrices `angle` rad apart (8 sin^2(angle / 2)): turns are compared as
    squared chords, without an arcsin per candidate (`dm1.kinematics.rotation_angles`)."""
    return 8.0 * np.sin(min(max(angle, 0.0), np.pi) / 2.0) ** 2


def _turn2(r: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(N,) squared chords between rotations r (N, 3, 3) and ref (3, 3)."""
    d = (r - ref).reshape(len(r), 9)
    return np.einsum("ij,ij->i", d, d)


def _outside(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per axis, how far (m) positions p (..., 3) lie outside the box [lo, hi] (0 inside)."""
    return np.maximum(np.maximum(lo - p, p - hi), 0.0)


class _Checks:
    """The EE constraints of one tick, vectorised over candidate EE poses ((N, 3), (N, 3, 3)) -> (N,) bool
    each."""

    def __init__(self, lim: SafetyLimits, meas: Poses, prev: Poses | None, dt: float) -> None:
        self.lo, self.hi = np.asarray(lim.workspace_min), np.asarray(lim.workspace_max)
        (self.p_meas,), (self.r_meas,) = meas
        # (3,) never further out than measured
        self.allowed_out = _outside(self.p_meas, self.lo, self.hi) + _TOL
        self.max_step, self.max_turn2 = lim.max_ee_step, _chord2(lim.max_ee_rotation_step) + _TOL
        if prev is not None:
            (self.p_prev,), (self.r_prev,) = prev
            self.max_move, self.max_rate_turn2 = (
                lim.max_ee_speed * dt,
                _chord2(lim.max_ee_angular_speed * dt) + _TOL,
            )
            to_low = np.sqrt(2.0 * lim.wall_decel * np.maximum(self.p_prev - self.lo, 0.0)) * dt  # (3,) m
            to_high = np.sqrt(2.0 * lim.wall_decel * np.maximum(self.hi - self.p_prev, 0.0)) * dt
            self.approach = (-to_low - _TOL, to_high + _TOL)

    def workspace(self, p: np.ndarray) -> np.ndarray:
        return np.all(_outside(p, self.lo, self.hi) <= self.allowed_out, axis=-1)

    def rate(self, poses: Poses) -> dict[str, np.ndarray]:
        """vs the previous commanded target's EE: speed, wall approach, turn rate and the box."""
        p, r = poses
        move = p - self.p_prev
        return {
            "ee_speed": np.linalg.norm(move, axis=-1) <= self.max_move + _TOL,
            "wall_approach": np.all((move >= self.approach[0]) & (move <= self.approach[1]), axis=-1),
            "ee_angular_speed": _turn2(r, self.r_prev) <= self.max_rate_turn2,
            "workspace": self.workspace(p),
        }

    def step(self, poses: Poses) -> dict[str, np.ndarray]:
        """vs the measured EE: the step, the rotation and the box."""
        p, r = poses
        return {
            "ee_step": np.linalg.norm(p - self.p_meas, axis=-1) <= self.max_step + _TOL,
            "ee_rotation": _turn2(r, self.r_meas) <= self.max_turn2,
            "workspace": self.workspace(p),
        }


def _one(poses: Poses, i: int) -> Poses:
    """The i-th pose of a batch, as a batch of one."""
    return poses[0][i : i + 1], poses[1][i : i + 1]


def _largest_fraction(
    base: np.ndarray, delta: np.ndarray, at_base: Poses, at_full: Poses, check
) -> tuple[float, Poses, list[str]]:
    """The largest s in [0, 1] (to 1/256) such that every constraint of `check` holds at the EE of
    base + s delta (7,), and at each grid point below it; 0 when s = 1/16 already fails. `at_base`, `at_full`:
    the EE poses (batches of one) at s = 0 and s = 1. Returns (s, the EE pose there, the names of the
    constraints that failed just past s; none when s = 1)."""
    failed = check(at_full)
    if all(bool(v[0]) for v in failed.values()):
        return 1.0, at_full, []
    lo_s, hi_s, at_lo = 0.0, 1.0, at_base  # lo_s is taken (0: the base itself), hi_s fails a constraint
    for _ in range(2):  # 16 points up to hi_s, then 16 between the last good one and the first bad one
        s = lo_s + (hi_s - lo_s) * _GRID[1:]  # (16,); s[-1] = hi_s, known to fail
        poses = ee_poses(base[None] + s[:, None] * delta[None])  # (16, 3), (16, 3, 3)
        ok = check(poses)
        good = np.logical_and.reduce(list(ok.values()))  # (16,)
        bad = int(np.argmin(good))  # the first failing point (there is one: s[-1])
        failed = {name: v[bad : bad + 1] for name, v in ok.items()}
        if bad:
            lo_s, at_lo = float(s[bad - 1]), _one(poses, bad - 1)
        hi_s = float(s[bad])
    return lo_s, at_lo, [name for name, v in failed.items() if not bool(v[0])]


def limit_joint_by_ee(
    lim: SafetyLimits, safe: np.ndarray, measured: np.ndarray, previous: np.ndarray | None, dt: float
) -> tuple[np.ndarray, list[str]]:
    """The joint target `safe` (7,) rad (already within the joint clamps), its step scaled so that the EE
    obeys the Cartesian limits (see the module doc): from `previous` (the last commanded target, None on
    activation: no rate limit) over `dt` s, then from `measured` (7,). Returns (target (7,), reasons)."""
    q_meas, safe = np.asarray(measured, dtype=float), np.asarray(safe, dtype=float)
    prev = q_meas if previous is None else np.asarray(previous, dtype=float)
    poses = ee_poses(np.stack([q_meas, prev, safe]))  # one FK batch: (3, 3), (3, 3, 3)
    at_meas, at_prev, at_safe = (_one(poses, i) for i in range(3))
    checks = _Checks(lim, at_meas, None if previous is None else at_prev, max(dt, 0.0))
    reasons: list[str] = []
    if previous is not None:
        s, at_safe, why = _largest_fraction(prev, safe - prev, at_prev, at_safe, checks.rate)
        if s < 1.0:
            safe, reasons = prev + s * (safe - prev), why
    t, _, why = _largest_fraction(q_meas, safe - q_meas, at_meas, at_safe, checks.step)
    if t < 1.0:
        safe = q_meas + t * (safe - q_meas)
        reasons += [r for r in why if r not in reasons]
    return safe, reasons
