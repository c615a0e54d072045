"""`SafetyFilter`: pure functions that turn a requested target into a safe one, with a report.

Order for every target: reject non-finite input; clip to the joint limits / workspace box; limit the rate of
change of the commanded target (velocity limit x control period, vs the previous *commanded* target; for
joints the FR3's position-dependent limits, `dm1.control.fr3_velocity`, which shrink toward each bound);
near a box wall, limit its approach speed so that the target stream brakes into the wall (EE targets); and
finally limit the distance from the *measured* state (max step), which always wins, so a command never jumps
away from where the arm actually is. Joint targets then obey the EE limits too, through forward kinematics
(`dm1.control.joint_ee_limits`): speed, wall approach, step and the workspace box. The EE orientation
(`filter_orientation`) likewise: a rate limit vs the previous commanded orientation, then a step limit vs
the measured one. `limit_feedforward` applies the
same limits to the velocity sent with one, and `wall_braking` gives the deceleration of a target stream
braking into a wall (acceleration feed-forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dm1.control.fr3_velocity import fr3_velocity_bounds
from dm1.control.joint_ee_limits import limit_joint_by_ee
from dm1.control.limits import SafetyLimits
from dm1.control.orientation import turn_toward


@dataclass
class SafetyReport:
    """What the filter did to one target: `original` vs `safe`, and the reasons for each clip."""

    original: np.ndarray
    safe: np.ndarray
    reasons: list[str] = field(default_factory=list)

    @property
    def clipped(self) -> bool:
        """True when the safe target differs from the requested one."""
        return bool(self.reasons)


def pose_report(position: SafetyReport | None, orientation: SafetyReport) -> SafetyReport:
    """One Cartesian tick's clamp report: the pose (7,) [x, y, z, qx, qy, qz, qw] requested and sent, with
    the reasons of both filters (no position report on activation: the position is the measured one)."""
    if position is None:
        return orientation
    return SafetyReport(
        original=np.concatenate([position.original, orientation.original]),
        safe=np.concatenate([position.safe, orientation.safe]),
        reasons=[*position.reasons, *orientation.reasons],
    )


def nonfinite_reason(**arrays: np.ndarray) -> str | None:
    """None when every array is finite, else a message naming the first offending array and index."""
    for name, arr in arrays.items():
        a = np.asarray(arr, dtype=float)
        bad = np.argwhere(~np.isfinite(a))
        if bad.size:
            return f"non-finite value in {name} at index {tuple(int(i) for i in bad[0])}: {a[tuple(bad[0])]}"
    return None


def _limit_step(target: np.ndarray, reference: np.ndarray, max_norm: float) -> tuple[np.ndarray, bool]:
    """Scale (target - reference) so its Euclidean norm is <= max_norm. Shapes: (D,)."""
    delta = target - reference
    norm = float(np.linalg.norm(delta))
    if norm <= max_norm:
        return target, False
    return reference + delta * (max_norm / norm), True


def _limit_elementwise(
    target: np.ndarray, reference: np.ndarray, max_abs: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Clip each element of (target - reference) to [-max_abs, max_abs]. Shapes: (D,)."""
    delta = np.clip(target - reference, -max_abs, max_abs)
    limited = reference + delta
    return limited, bool(np.any(np.abs(limited - target) > 1e-12))


def _approach_speeds(
    at: np.ndarray, lo: np.ndarray, hi: np.ndarray, decel: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per axis, the highest speed toward the low and the high wall of [lo, hi] from which `decel` still stops
    at the wall: sqrt(2 decel d), d = the distance of `at` to that wall (0 on or past it). Shapes: (D,)."""
    return np.sqrt(2.0 * decel * np.maximum(at - lo, 0.0)), np.sqrt(2.0 * decel * np.maximum(hi - at, 0.0))


def _limit_wall_approach(
    target: np.ndarray, previous: np.ndarray, lo: np.ndarray, hi: np.ndarray, decel: float, dt: float
) -> tuple[np.ndarray, bool]:
    """Per axis, limit the step from `previous` toward a wall to `_approach_speeds(previous)` x dt: the target
    stream brakes into the wall. Shapes: (D,)."""
    toward_low, toward_high = _approach_speeds(previous, lo, hi, decel)  # (D,) m/s
    limited = previous + np.clip(target - previous, -toward_low * dt, toward_high * dt)
    return limited, bool(np.any(np.abs(limited - target) > 1e-12))


BRAKING_FEEDFORWARD_MIN_SPEED = 0.1  # m/s; see SafetyFilter.wall_braking


class SafetyFilter:
    """Applies `SafetyLimits` to joint or EE-position targets. Stateless: all state is passed in."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits

    def filter_joint(
        self, target: np.ndarray, measured: np.ndarray, previous: np.ndarray | None, dt: float
    ) -> SafetyReport:
        """Safe joint target (7,) rad. `previous` = last commanded target (None on activation); dt in s.

        Per joint: the joint limits, the rate vs `previous` (the FR3's position-dependent velocity limits x
        `velocity_scale`), the step vs `measured`; then the EE limits of
        Cartesian mode through forward kinematics (`limit_joint_by_ee`): the joint step is scaled down so that
        the EE moves at most `max_ee_speed` x dt, brakes into the box walls, stays within `max_ee_step` of the
        measured EE and never leaves the workspace box (reasons "ee_speed", "wall_approach", "ee_step",
        "workspace")."""
        lim = self.limits
        original = np.asarray(target, dtype=float).copy()
        measured = np.asarray(measured, dtype=float)
        report = SafetyReport(original=original, safe=original.copy())
        reason = nonfinite_reason(target=original, measured=measured)
        if reason is not None:
            raise ValueError(f"SafetyFilter.filter_joint: {reason}")
        safe = np.clip(original, lim.q_lower, lim.q_upper)
        if np.any(safe != original):
            report.reasons.append("joint_limit")
        if previous is not None:  # the FR3's velocity limits at the previous target, toward each bound
            prev = np.asarray(previous, dtype=float)
            upper, lower = fr3_velocity_bounds(prev, lim.dq_max)  # (7,) rad/s each
            step = lim.velocity_scale * max(dt, 0.0)
            limited = prev + np.clip(safe - prev, lower * step, upper * step)
            if np.any(np.abs(limited - safe) > 1e-12):
                report.reasons.append("joint_velocity")
            safe = limited
        safe, hit = _limit_elementwise(safe, measured, np.full(7, lim.max_joint_step))
        if hit:
            report.reasons.append("joint_step")
        safe, ee_reasons = limit_joint_by_ee(lim, safe, measured, previous, dt)  # the EE limits, via FK
        report.reasons += ee_reasons
        report.safe = safe
        return report

    def filter_ee(
        self, target: np.ndarray, measured: np.ndarray, previous: np.ndarray | None, dt: float
    ) -> SafetyReport:
        """Safe EE position target (3,) m in fr3_link0. `previous` = last commanded target (None at start)."""
        lim = self.limits
        original = np.asarray(target, dtype=float).copy()
        measured = np.asarray(measured, dtype=float)
        report = SafetyReport(original=original, safe=original.copy())
        reason = nonfinite_reason(target=original, measured=measured)
        if reason is not None:
            raise ValueError(f"SafetyFilter.filter_ee: {reason}")
        lo, hi = np.asarray(lim.workspace_min), np.asarray(lim.workspace_max)
        safe = np.clip(original, lo, hi)
        if np.any(safe != original):
            report.reasons.append("workspace")
        if previous is not None:
            prev, dt = np.asarray(previous, dtype=float), max(dt, 0.0)
            safe, hit = _limit_step(safe, prev, lim.max_ee_speed * dt)
            if hit:
                report.reasons.append("ee_speed")
            safe, hit = _limit_wall_approach(safe, prev, lo, hi, lim.wall_decel, dt)
            if hit:
                report.reasons.append("wall_approach")
        safe, hit = _limit_step(safe, measured, lim.max_ee_step)
        if hit:
            report.reasons.append("ee_step")
        report.safe = safe
        return report

    def filter_orientation(
        self, target: np.ndarray, measured: np.ndarray, previous: np.ndarray | None, dt: float
    ) -> SafetyReport:
        """Safe EE orientation (4,) xyzw for the requested `target`: turned from `previous` (the last
        commanded orientation; None at activation) by at most `max_ee_angular_speed` x dt
        ("ee_angular_speed"), then from the `measured` one by at most `max_ee_rotation_step` ("ee_rotation");
        shortest path (slerp). Unlimited, it is the target normalised. ValueError on a non-finite or
        near-zero quaternion."""
        lim = self.limits
        original = np.asarray(target, dtype=float).copy()
        report = SafetyReport(original=original, safe=original.copy())
        safe, measured = self.normalize_quaternion(original), self.normalize_quaternion(measured)
        if previous is not None:
            prev = self.normalize_quaternion(previous)
            safe, hit = turn_toward(prev, safe, lim.max_ee_angular_speed * max(dt, 0.0))
            if hit:
                report.reasons.append("ee_angular_speed")
        safe, hit = turn_toward(measured, safe, lim.max_ee_rotation_step)
        if hit:
            report.reasons.append("ee_rotation")
        report.safe = safe
        return report

    def clipped_velocity(
        self, report: SafetyReport, previous: np.ndarray | None, dt: float, mode: str
    ) -> np.ndarray | None:
        """Feed-forward velocity for a target the filter clipped: the safe target stream's own velocity,
        (safe - previous) / dt, through `limit_feedforward`. Shapes (3,) m/s or (7,) rad/s; None (arrive at
        rest) without a previous target.

        The requested (chunk) velocity no longer matches a clipped target, and dropping it makes the tracker
        brake to a stop at the target: a target jump at a chunk hand-over, ramped over a few ticks by the
        speed limit, then stalls the arm for those ticks although the new chunk keeps it moving.
        """
        if previous is None or not dt > 0:
            return None
        stream = (report.safe - np.asarray(previous, dtype=float)) / dt  # (D,)
        return self.limit_feedforward(stream, report.safe, mode)

    def limit_feedforward(self, velocity: np.ndarray, safe: np.ndarray, mode: str) -> np.ndarray:
        """The feed-forward velocity sent with the safe target `safe`: (3,) m/s (cartesian) or (7,) rad/s.

        Cartesian: at most the EE speed limit, and toward each box wall at most sqrt(2 x wall_decel x the
        target's distance to it) (zero at the wall), so the tracker is never told to arrive at a target near
        a wall faster than the arm can stop there. Joint: within the velocity limit, zero into a joint bound.
        """
        lim = self.limits
        vel = np.array(velocity, dtype=float)
        if mode == "cartesian":
            norm = float(np.linalg.norm(vel))
            if norm > lim.max_ee_speed:
                vel *= lim.max_ee_speed / norm
            lo, hi = np.asarray(lim.workspace_min), np.asarray(lim.workspace_max)
            toward_low, toward_high = _approach_speeds(safe, lo, hi, lim.wall_decel)  # (3,) m/s
            return np.clip(vel, -toward_low, toward_high)
        lo, hi = np.asarray(lim.q_lower), np.asarray(lim.q_upper)
        upper, lower = fr3_velocity_bounds(safe, lim.dq_max)  # (7,) rad/s each
        vel = np.clip(vel, lower * lim.velocity_scale, upper * lim.velocity_scale)
        vel[((safe <= lo) & (vel < 0)) | ((safe >= hi) & (vel > 0))] = 0.0  # never push through a bound
        return vel

    def wall_braking(self, velocity: np.ndarray, safe: np.ndarray) -> np.ndarray:
        """(3,) m/s²: the acceleration feed-forward sent with an EE target `safe` and its feed-forward
        `velocity` (3,) m/s from `limit_feedforward`. On each axis where that velocity is at its wall-approach
        cap, the target stream brakes into the wall at `wall_decel` (d/dt sqrt(2 a d) = -a), so the target
        decelerates at `wall_decel`; elsewhere 0.

        An impedance tracker told only the braking target's pose and velocity lags it by the force needed to
        stop the arm's mass (m a / k: a few mm) and carries that past the wall; with the deceleration fed
        forward (Lambda(q) a in franky's Cartesian tracker) the arm brakes with its target.
        Only from `BRAKING_FEEDFORWARD_MIN_SPEED` (0.1 m/s, 2.5 mm from the wall at 2 m/s²) up: a policy that
        jitters next to a wall sends short braked steps toward it; only their braking halves would be fed
        forward, a net push away from the wall (the arm then settled up to 3 mm above the box floor at the
        grasp).
        """
        lim = self.limits
        vel = np.asarray(velocity, dtype=float)
        lo, hi = np.asarray(lim.workspace_min), np.asarray(lim.workspace_max)
        toward_low, toward_high = _approach_speeds(np.asarray(safe, dtype=float), lo, hi, lim.wall_decel)
        fast = np.abs(vel) >= BRAKING_FEEDFORWARD_MIN_SPEED  # (3,)
        braking_low = fast & (-vel >= toward_low * (1.0 - 1e-9))  # (3,) at the cap toward lo
        braking_high = fast & (vel >= toward_high * (1.0 - 1e-9))
        return lim.wall_decel * (braking_low.astype(float) - braking_high.astype(float))

    @staticmethod
    def normalize_quaternion(quat_xyzw: np.ndarray) -> np.ndarray:
        """Unit quaternion (4,); raises ValueError on non-finite or near-zero input."""
        q = np.asarray(quat_xyzw, dtype=float)
        norm = float(np.linalg.norm(q)) if np.all(np.isfinite(q)) else float("nan")
        if not norm > 1e-6:
            raise ValueError(
                f"SafetyFilter.normalize_quaternion: expected a finite non-zero quaternion, found {q}"
            )
        return q / norm


#: Ticks in a row over `SafetyLimits.overspeed_factor` before the overspeed latches (one sample may be noise).
OVERSPEED_TICKS = 3


class OverspeedWatch:
    """The *measured* speed against what the targets may command: EE speed (Cartesian mode), or each joint's
    speed and the EE speed (joint mode, whose targets obey the EE speed limit too), above `overspeed_factor`
    × its limit on `OVERSPEED_TICKS` ticks in a row is a fault."""

    def __init__(self, limits: SafetyLimits, mode: str) -> None:
        self.limits, self.mode = limits, mode
        self.ticks = 0  # ticks in a row over the limit

    def check(self, ee_vel: np.ndarray, dq: np.ndarray) -> str | None:
        """One tick's measured EE velocity (3,) m/s and joint velocities (7,) rad/s → the fault, or None."""
        lim = self.limits
        speed, cap, what, unit = float(np.linalg.norm(ee_vel)), lim.max_ee_speed, "EE speed", "m/s"
        if self.mode != "cartesian":  # the joint nearest its cap, unless the EE is nearer its own
            caps = np.asarray(lim.dq_max) * lim.velocity_scale  # (7,)
            j = int(np.argmax(np.abs(dq) / caps))
            if abs(dq[j]) / caps[j] >= speed / cap:
                speed, cap, what, unit = float(abs(dq[j])), float(caps[j]), f"joint {j + 1} speed", "rad/s"
        if speed <= lim.overspeed_factor * cap:
            self.ticks = 0
            return None
        self.ticks += 1
        if self.ticks < OVERSPEED_TICKS:
            return None
        return (
            f"overspeed: measured {what} {speed:.3f} {unit} above {lim.overspeed_factor:g} x the commanded "
            f"limit {cap:.3f} {unit} (a push, a collision or an unstable tracker)"
        )
