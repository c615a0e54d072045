"""How far a Lift episode got: the closest approach of the gripper to the cube and the highest lift.

`EpisodeProgress` is fed the cube position and the end-effector (TCP) position as they arrive (from
`/twin/cube_pose` and FK of `/joint_states` in `dm1 eval`, from the twin directly in-process) and
`failure_mode` turns the numbers into the reason an episode failed, so a report says *why* the success rate
is what it is (the arm never reached the cube, reached it but never lifted it, or lifted it and lost it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

REACH_M = 0.03  # TCP within this distance of the cube centre counts as "reached" (cube: 5 cm)
OPEN_M = 0.065  # gripper wider than this: open (cube 5 cm, FR3 hand 8 cm)
CLOSED_M = 0.055  # narrower than this after being open: a grasp attempt (on the cube it stops at ~5 cm)
LIFT_M = 0.02  # the cube's centre this far above its start counts as "lifted" (success needs 0.10 m)
FAILURE_MODES: tuple[str, ...] = (
    "success",
    "controller_fault",  # the controller latched a fault (a reflex) and the episode ended there
    "did_not_reach",
    "did_not_lift",
    "lifted_not_held",
    "unknown",
)


@dataclass(kw_only=True)
class ProgressFields:
    """How far an episode got, as stored in every episode record (`EpisodeProgress.as_record()` fills them).

    Keyword-only, so episode record dataclasses can inherit these fields after their positional ones.
    """

    min_ee_cube_m: float = float("nan")  # closest TCP-to-cube-centre distance (dm1.evaluation.progress)
    max_cube_lift_m: float = float("nan")  # highest rise of the cube above its start
    final_ee_cube_m: float = float("nan")  # TCP-to-cube distance when the episode ended
    final_gripper_width_m: float = float("nan")  # measured gripper width when the episode ended
    grasps: int = 0  # open → closed transitions of the gripper


@dataclass
class EpisodeProgress:
    """Running minima/maxima over one episode (positions in fr3_link0, metres)."""

    min_ee_cube_m: float = math.inf
    max_cube_lift_m: float = -math.inf
    final_ee_cube_m: float = math.nan  # TCP-to-cube distance at the last sample (where a failure ended)
    final_gripper_width_m: float = math.nan  # ~0: closed on nothing; ~0.05: on the cube; > OPEN_M: open
    grasps: int = 0  # open → closed transitions of the gripper (attempts to grasp)
    _cube_start_z: float | None = None
    _cube: np.ndarray | None = None
    _was_open: bool = False

    def on_cube(self, pos: np.ndarray) -> None:
        """A cube position (3,); the first one of the episode is its start."""
        p = np.asarray(pos, dtype=float)
        if self._cube_start_z is None:
            self._cube_start_z = float(p[2])
        self._cube = p
        self.max_cube_lift_m = max(self.max_cube_lift_m, float(p[2]) - self._cube_start_z)

    def on_ee(self, pos: np.ndarray, gripper_width: float | None = None) -> None:
        """A TCP position (3,) and the measured gripper width (m); measured against the latest cube pose."""
        if self._cube is not None:
            dist = float(np.linalg.norm(np.asarray(pos, dtype=float) - self._cube))
            self.min_ee_cube_m = min(self.min_ee_cube_m, dist)
            self.final_ee_cube_m = dist
        if gripper_width is not None and math.isfinite(gripper_width):
            self.final_gripper_width_m = float(gripper_width)
            if gripper_width > OPEN_M:
                self._was_open = True
            elif gripper_width < CLOSED_M and self._was_open:
                self._was_open, self.grasps = False, self.grasps + 1

    def as_record(self) -> dict[str, float | int]:
        """The episode record's progress fields (`min_ee_cube_m`, `max_cube_lift_m`, `final_ee_cube_m`,
        `final_gripper_width_m`, `grasps`); nan where nothing arrived."""

        def finite(v: float) -> float:
            return v if math.isfinite(v) else float("nan")

        return {
            "min_ee_cube_m": finite(self.min_ee_cube_m),
            "max_cube_lift_m": finite(self.max_cube_lift_m),
            "final_ee_cube_m": finite(self.final_ee_cube_m),
            "final_gripper_width_m": finite(self.final_gripper_width_m),
            "grasps": self.grasps,
        }


def failure_mode(record: dict[str, Any]) -> str:
    """One of `FAILURE_MODES` for an episode record (keys `success`, `fault`, `min_ee_cube_m`,
    `max_cube_lift_m`)."""
    if record.get("success"):
        return "success"
    if record.get("fault"):
        return "controller_fault"
    reach = float(record.get("min_ee_cube_m", float("nan")))
    lift = float(record.get("max_cube_lift_m", float("nan")))
    if not (math.isfinite(reach) and math.isfinite(lift)):
        return "unknown"
    if lift >= LIFT_M:
        return "lifted_not_held"
    return "did_not_reach" if reach > REACH_M else "did_not_lift"
