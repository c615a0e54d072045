"""The end-effector limits applied to joint targets (joint mode), through the FR3's forward kinematics.

`SafetyFilter.filter_joint` clamps each joint (limits, rate, step); a joint target that obeys them all may
still move the hand far faster than `max_ee_speed` (joints 1, 2 and 4 at their caps: 0.72 m/s) or out of the
workspace box (onto the table). `limit_joint_by_ee` then scales the joint step down, by the largest fraction
in [0, 1] that keeps the EE within the Cartesian limits:

1. from the previous commanded target (the rate): the EE moves at most `max_ee_speed` x dt ("ee_speed"),
   toward each box wall at most at the wall-approach speed of `filter_ee` ("wall_approach"), and stays in
   the box ("workspace");
2. from the measured joints (the step, which always wins): the EE lies at most `max_ee_step` from the
   measured EE ("ee_step") and in the box ("workspace").

"In the box" means: on no axis further outside it than the measured EE (a target that moves back toward the
box is allowed; an arm outside it is never pushed further out). The fraction is found on a grid, refined
once (resolution 1/256); the FK is `dm1.kinematics.fr3_tcp_positions`, position only (~40 us per
batch), so a tick costs one FK batch when nothing is clipped and five at most (~0.1 and ~0.3 ms).
"""

from __future__ import annotations

import numpy as np

from dm1.control.limits import SafetyLimits
from dm1.kinematics import fr3_tcp_positions as ee_positions

_TOL = 1e-9  # m: a constraint met to within this counts as met (float rounding)
_GRID = np.linspace(0.0, 1.0, 17)  # (17,) the first search grid of the fraction; refined once by 16


def _outside(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per axis, how far (m) positions p (..., 3) lie outside the box [lo, hi] (0 inside)."""
    return np.maximum(np.maximum(lo - p, p - hi), 0.0)


class _Checks:
    """The EE constraints of one tick, vectorised over candidate EE positions (N, 3) -> (N,) bool each."""

    def __init__(self, lim: SafetyLimits, p_meas: np.ndarray, p_prev: np.ndarray | None, dt: float) -> None:
        self.lo, self.hi = np.asarray(lim.workspace_min), np.asarray(lim.workspace_max)
        self.allowed_out = _outside(p_meas, self.lo, self.hi) + _TOL  # (3,) never further out than measured
        self.p_meas, self.p_prev, self.max_step = p_meas, p_prev, lim.max_ee_step
        if p_prev is not None:
            self.max_move = lim.max_ee_speed * dt
            to_low = np.sqrt(2.0 * lim.wall_decel * np.maximum(p_prev - self.lo, 0.0)) * dt  # (3,) m
            to_high = np.sqrt(2.0 * lim.wall_decel * np.maximum(self.hi - p_prev, 0.0)) * dt
            self.approach = (-to_low - _TOL, to_high + _TOL)

    def workspace(self, p: np.ndarray) -> np.ndarray:
        return np.all(_outside(p, self.lo, self.hi) <= self.allowed_out, axis=-1)

    def rate(self, p: np.ndarray) -> dict[str, np.ndarray]:
        """vs the previous commanded target's EE: speed, wall approach and the box."""
        move = p - self.p_prev
        return {
            "ee_speed": np.linalg.norm(move, axis=-1) <= self.max_move + _TOL,
            "wall_approach": np.all((move >= self.approach[0]) & (move <= self.approach[1]), axis=-1),
            "workspace": self.workspace(p),
        }

    def step(self, p: np.ndarray) -> dict[str, np.ndarray]:
        """vs the measured EE: the step and the box."""
        return {
            "ee_step": np.linalg.norm(p - self.p_meas, axis=-1) <= self.max_step + _TOL,
            "workspace": self.workspace(p),
        }


def _largest_fraction(
    base: np.ndarray, delta: np.ndarray, p_base: np.ndarray, p_full: np.ndarray, check
) -> tuple[float, np.ndarray, list[str]]:
    """The largest s in [0, 1] (to 1/256) such that every constraint of `check` holds at the EE of
    base + s delta (7,), and at each grid point below it; 0 when s = 1/16 already fails. `p_base`, `p_full`:
    the EE (3,) at s = 0 and s = 1. Returns (s, the EE there, the names of the constraints that failed just
    past s; none when s = 1)."""
    failed = check(p_full[None])
    if all(bool(v[0]) for v in failed.values()):
        return 1.0, p_full, []
    lo_s, hi_s, p_lo = 0.0, 1.0, p_base  # lo_s is taken (0: the base itself), hi_s fails a constraint
    for _ in range(2):  # 16 points up to hi_s, then 16 between the last good one and the first bad one
        s = lo_s + (hi_s - lo_s) * _GRID[1:]  # (16,); s[-1] = hi_s, known to fail
        p = ee_positions(base[None] + s[:, None] * delta[None])  # (16, 3)
        ok = check(p)
        good = np.logical_and.reduce(list(ok.values()))  # (16,)
        bad = int(np.argmin(good))  # the first failing point (there is one: s[-1])
        failed = {name: v[bad : bad + 1] for name, v in ok.items()}
        if bad:
            lo_s, p_lo = float(s[bad - 1]), p[bad - 1]
        hi_s = float(s[bad])
    return lo_s, p_lo, [name for name, v in failed.items() if not bool(v[0])]


def limit_joint_by_ee(
    lim: SafetyLimits, safe: np.ndarray, measured: np.ndarray, previous: np.ndarray | None, dt: float
) -> tuple[np.ndarray, list[str]]:
    """The joint target `safe` (7,) rad (already within the joint clamps), its step scaled so that the EE
    obeys the Cartesian limits (see the module doc): from `previous` (the last commanded target, None on
    activation: no rate limit) over `dt` s, then from `measured` (7,). Returns (target (7,), reasons)."""
    q_meas, safe = np.asarray(measured, dtype=float), np.asarray(safe, dtype=float)
    prev = q_meas if previous is None else np.asarray(previous, dtype=float)
    p_meas, p_prev, p_safe = ee_positions(np.stack([q_meas, prev, safe]))  # one FK batch: (3,) each
    checks = _Checks(lim, p_meas, None if previous is None else p_prev, max(dt, 0.0))
    reasons: list[str] = []
    if previous is not None:
        s, p_safe, why = _largest_fraction(prev, safe - prev, p_prev, p_safe, checks.rate)
        if s < 1.0:
            safe, reasons = prev + s * (safe - prev), why
    t, _, why = _largest_fraction(q_meas, safe - q_meas, p_meas, p_safe, checks.step)
    if t < 1.0:
        safe = q_meas + t * (safe - q_meas)
        reasons += [r for r in why if r not in reasons]
    return safe, reasons
