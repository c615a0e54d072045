"""One control tick's safety pipeline: a scheduled target → what the backend is sent (ROS-free, numpy only).

`safe_step` applies `SafetyFilter` in the executor's order: the position (joint limits or workspace box, rate
and step limits), the feed-forward velocity (the clipped stream's own velocity, or the chunk's limited),
the EE orientation (rate vs the previous commanded one, step vs the measured one) and, in Cartesian mode,
the acceleration feed-forward of a stream braking into a wall. On (re)activation the command is the
measured state, whatever the chunk says: activation never jumps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dm1.control.backend import RobotStateSnapshot
from dm1.control.safety import SafetyFilter, SafetyReport, pose_report
from dm1.control.schedule import ScheduledTarget


@dataclass(frozen=True)
class SafeStep:
    """What one tick sends: position (3,) m EE or (7,) rad joints; quat_xyzw (4,) (Cartesian, else None);
    velocity feed-forward (3,) m/s or (7,) rad/s and acceleration (3,) m/s² (Cartesian), both None on
    activation; report: the clamp report (the pose's (7,) in Cartesian mode; on a Cartesian activation the
    orientation's alone), None on a joint-mode activation (nothing is filtered then)."""

    position: np.ndarray
    quat_xyzw: np.ndarray | None
    velocity: np.ndarray | None
    acceleration: np.ndarray | None
    report: SafetyReport | None


def safe_step(
    safety: SafetyFilter,
    mode: str,
    target: ScheduledTarget,
    state: RobotStateSnapshot,
    previous: tuple[np.ndarray, np.ndarray | None] | None,
    dt: float,
) -> SafeStep:
    """The safe command for `target` given the measured `state`.

    mode: "cartesian" or "joint"; previous: (target (D,), quat (4,) or None) commanded on the previous tick,
    None on (re)activation (the measured state is sent); dt: seconds since that tick (the rate limits' step).
    """
    measured = state.ee_pos if mode == "cartesian" else state.q
    if previous is None:
        position, velocity, report = measured.copy(), None, None
    else:
        filt = safety.filter_ee if mode == "cartesian" else safety.filter_joint
        report = filt(target.position, measured, previous[0], dt)
        position = report.safe
        velocity = (
            safety.clipped_velocity(report, previous[0], dt, mode)
            if report.clipped
            else safety.limit_feedforward(target.velocity, position, mode)
        )
    if mode != "cartesian":
        return SafeStep(position, None, velocity, None, report)
    quat = state.ee_quat_xyzw if previous is None or target.quat_xyzw is None else target.quat_xyzw
    turn = safety.filter_orientation(quat, state.ee_quat_xyzw, None if previous is None else previous[1], dt)
    acceleration = None if velocity is None else safety.wall_braking(velocity, position)
    return SafeStep(position, turn.safe, velocity, acceleration, pose_report(report, turn))
