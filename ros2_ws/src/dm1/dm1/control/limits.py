"""`SafetyLimits`: the validated safety envelope of the controller (on by default, FR3 values)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from dm1.control.schedule import MAX_CHUNK_SPAN_S

# Franka Research 3 joint limits (rad) and maximum joint velocities (rad/s), from the FR3 datasheet.
FR3_Q_MIN = (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159)
FR3_Q_MAX = (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)
FR3_DQ_MAX = (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)
#: The box the FR3's hand can reach (m, fr3_link0): 0.855 m from the shoulder (z = 0.333) plus the hand
#: (0.21 m), rounded out. A workspace box may be any box inside it; one beyond it switches the box off.
FR3_REACH_MIN = (-1.1, -1.1, -0.8)
FR3_REACH_MAX = (1.1, 1.1, 1.45)

#: The largest value each scalar limit may take (`SafetyLimits` refuses more; the controller's ROS parameter
#: descriptors carry the same ranges). The limits can be narrowed freely but never widened past the robot
#: (FR3 Cartesian rate limits of libfranka: 3.0 m/s, 2.5 rad/s, 9 m/s²) or switched off by a huge value: a
#: watchdog of 1e6 s, an overspeed factor of 1e9.
SCALAR_UPPER_BOUNDS: dict[str, float] = {
    "joint_margin": 0.5,
    "velocity_scale": 1.0,
    "max_joint_step": 1.0,
    "max_ee_step": 0.5,
    "max_ee_speed": 3.0,
    "max_ee_angular_speed": 2.5,
    "max_ee_rotation_step": 1.0,
    "wall_decel": 9.0,
    "chunk_timeout_s": 5.0,
    "max_tick_gap_s": 2.0,
    "max_future_s": MAX_CHUNK_SPAN_S,
    "max_chunk_age_s": MAX_CHUNK_SPAN_S,
    "max_consecutive_late": 1000,
    "overspeed_factor": 10.0,
}


@dataclass(frozen=True)
class SafetyLimits:
    """Safety envelope applied to every commanded target (ON by default; there is no switch to disable it).

    joint_margin: rad kept inside the FR3 joint limits (targets are clipped to [q_min + m, q_max - m]).
    velocity_scale: fraction of FR3 joint velocity limits allowed for the commanded target's rate of change
        (the position-dependent limits of `dm1.control.fr3_velocity`, capped at `dq_max`).
    max_joint_step: max |target - measured q| per joint (rad), i.e. the largest tracking error commanded.
    max_ee_step: max ||target - measured EE position|| (m).
    max_ee_speed: max rate of change of the commanded EE position (m/s); 0.35 by default (teleop and the
        scripted expert move at 0.3), so a hold from full speed settles within 150 ms on the FR3.
    max_ee_angular_speed: max rate of change of the commanded EE orientation (rad/s): each tick the
        commanded orientation turns from the previous commanded one toward the requested one by at most this
        x the control period (slerp, shortest path). 0.5 by default: the policy and teleop hold the card's
        top-down orientation, so only a chunk asking for a turn is slowed (one turning 90° at once spun the
        hand 58° with joint 7 at 2.3 rad/s on the twin). Joint mode obeys it too, through the FK: a joint
        step that would turn the hand faster is scaled down (joint 1 alone at its cap turns it 0.79 rad/s).
    max_ee_rotation_step: max rotation (rad) between the commanded and the *measured* EE orientation, the
        orientation's `max_ee_step` (both modes).
    workspace_min / workspace_max: EE box (m, fr3_link0) the targets are clipped to.
    wall_decel: m/s²; the commanded EE target approaches a box wall at most at sqrt(2 x wall_decel x its
        distance to the wall), and its feed-forward velocity likewise, so the arm, which follows the targets
        with its tracker's lag, stops at the wall instead of overshooting it (at 0.35 m/s the targets start
        slowing 3 cm before the wall).
    chunk_timeout_s: a chunk older than this (receive time, node clock) is stale -> hold.
    max_tick_gap_s: a control tick that comes later than this after the previous one (the controller itself
        was not running: the targets stood still) drops the running chunk and holds; the next fresh chunk
        starts from the measured state. Shorter overruns are counted and rate-limited (`ChunkExecutor`).
    max_future_s: reject chunks whose first action lies further than this in the future.
    max_chunk_age_s: reject chunks whose stamp lies further than this in the past (a stale stream replayed,
        a chunk held up on the way); at most `MAX_CHUNK_SPAN_S` (10 s), the longest chunk accepted.
    max_consecutive_late: fault after this many chunks in a row arrive with every action already past.
    overspeed_factor: latch a fault when the *measured* speed exceeds this multiple of the speed the targets
        may command (Cartesian mode: the EE speed over `max_ee_speed`; joint mode: that, or any joint over
        `velocity_scale` x its FR3 limit, whichever is nearer its limit) on `OVERSPEED_TICKS` (3) ticks in a
        row: far more than the targets ask for, so a push, a collision or an unstable tracker is moving the
        arm. The controller then brakes and holds. At the default 3.0: 1.05 m/s. Measured on franky-sim:
        targets at the speed limit peak at 1.15-1.31x (EE) and, in joint mode without the velocity
        feed-forward (2026-12-02), 1.07-1.14x (joint); a random-weight policy jumping its targets around every
        tick at 1.4-1.9x idle and up to 2.06x (0.72 m/s) with the host's two cores busy.
    gripper_close_above / gripper_open_below: hysteresis thresholds on the [0, 1] gripper command.
    max_overruns_per_s: latch a fault when more than this many control ticks come more than two periods after
        the previous one within 1 s while streaming (`dm1.control.loop_health`): the loop is broken (a
        starved host, a blocking callback), not jittery. 0 = off (still counted: `tick_overruns`,
        `peak_overruns_per_s`). At the default 10 (of ~100 ticks at 100 Hz) a loop stuck at 11-50 Hz trips
        within a second; the twin under the real-process tests peaked at 1 a second (2 with a second process
        busy on one of the VM's two cores, 3 under the bundled policy in `dm1 bench loop` at 91 % CPU busy:
        the simulated clock slows with the host, so few ticks are late).
    min_streaming_success_rate: latch a fault when libfranka's command success rate, averaged over the last
        1 s of streaming (after a stream's first 0.2 s), falls below this: more than 1 command in 10 lost is
        a broken FCI link, far under the 0.95 the controller warns at (`min_command_success_rate`). 0 = off.
        franky-sim reports 1.0.
    """

    joint_margin: float = 0.1
    q_min: tuple[float, ...] = FR3_Q_MIN
    q_max: tuple[float, ...] = FR3_Q_MAX
    dq_max: tuple[float, ...] = FR3_DQ_MAX
    velocity_scale: float = 0.3
    max_joint_step: float = 0.1
    max_ee_step: float = 0.04
    max_ee_speed: float = 0.35
    max_ee_angular_speed: float = 0.5
    max_ee_rotation_step: float = 0.1
    workspace_min: tuple[float, float, float] = (0.25, -0.40, 0.02)
    workspace_max: tuple[float, float, float] = (0.80, 0.40, 0.60)
    wall_decel: float = 2.0
    chunk_timeout_s: float = 0.1
    max_tick_gap_s: float = 0.5
    max_future_s: float = 1.0
    max_chunk_age_s: float = 1.0
    max_consecutive_late: int = 5
    overspeed_factor: float = 3.0
    gripper_close_above: float = 0.6
    gripper_open_below: float = 0.4
    max_overruns_per_s: int = 10
    min_streaming_success_rate: float = 0.9

    def __post_init__(self) -> None:
        def bad(name: str, expected: str, found: object) -> ValueError:
            return ValueError(f"SafetyLimits.{name}: expected {expected}, found {found!r}")

        for name in ("q_min", "q_max", "dq_max"):
            value = getattr(self, name)
            if len(value) != 7 or not np.all(np.isfinite(value)):
                raise bad(name, "7 finite values", value)
            object.__setattr__(self, name, tuple(float(v) for v in value))
        for name in ("workspace_min", "workspace_max"):
            value = getattr(self, name)
            if len(value) != 3 or not np.all(np.isfinite(value)):
                raise bad(name, "3 finite values (x, y, z)", value)
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if np.any(np.array(self.q_min) < np.array(FR3_Q_MIN)) or np.any(
            np.array(self.q_max) > np.array(FR3_Q_MAX)
        ):
            raise bad(
                "q_min/q_max",
                f"within the FR3's joint limits {FR3_Q_MIN} .. {FR3_Q_MAX}",
                (self.q_min, self.q_max),
            )
        if np.any(np.array(self.dq_max) > np.array(FR3_DQ_MAX)):
            raise bad("dq_max", f"at most the FR3's joint velocity limits {FR3_DQ_MAX}", self.dq_max)
        reach_lo, reach_hi = np.array(FR3_REACH_MIN), np.array(FR3_REACH_MAX)
        if np.any(np.array(self.workspace_min) < reach_lo) or np.any(np.array(self.workspace_max) > reach_hi):
            raise bad(
                "workspace_min/workspace_max",
                f"a box inside the FR3's reach {FR3_REACH_MIN} .. {FR3_REACH_MAX} m",
                (self.workspace_min, self.workspace_max),
            )
        for name, upper in SCALAR_UPPER_BOUNDS.items():
            if getattr(self, name) > upper:
                raise bad(
                    name,
                    f"at most {upper:g} (the limit can be narrowed, never switched off)",
                    getattr(self, name),
                )
        if not 0.0 <= self.joint_margin < 0.5:
            raise bad("joint_margin", "0 <= margin < 0.5 rad", self.joint_margin)
        lo, hi = np.array(self.q_min) + self.joint_margin, np.array(self.q_max) - self.joint_margin
        if np.any(lo >= hi):
            raise bad("q_min/q_max", "q_min + joint_margin < q_max - joint_margin for every joint", (lo, hi))
        if np.any(np.array(self.dq_max) <= 0):
            raise bad("dq_max", "positive values", self.dq_max)
        if np.any(np.array(self.workspace_min) >= np.array(self.workspace_max)):
            raise bad(
                "workspace_min/workspace_max",
                "min < max on x, y, z",
                (self.workspace_min, self.workspace_max),
            )
        for name in ("velocity_scale", "max_joint_step", "max_ee_step", "max_ee_rotation_step"):
            value, upper = getattr(self, name), SCALAR_UPPER_BOUNDS[name]
            if not 0.0 < value <= upper:
                raise bad(name, f"0 < value <= {upper}", value)
        speeds = ("max_ee_speed", "max_ee_angular_speed", "wall_decel")
        for name in (*speeds, "chunk_timeout_s", "max_tick_gap_s", "max_future_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0.0):
                raise bad(name, "a positive finite value", value)
        if not 0.0 < self.max_chunk_age_s <= MAX_CHUNK_SPAN_S:
            raise bad("max_chunk_age_s", f"0 < value <= {MAX_CHUNK_SPAN_S:g} s", self.max_chunk_age_s)
        if not (np.isfinite(self.overspeed_factor) and self.overspeed_factor > 1.0):
            raise bad(
                "overspeed_factor",
                "a finite value > 1 (a multiple of the commanded-speed limit)",
                self.overspeed_factor,
            )
        if int(self.max_consecutive_late) < 1:
            raise bad("max_consecutive_late", "an integer >= 1", self.max_consecutive_late)
        overruns = self.max_overruns_per_s
        if (
            isinstance(overruns, bool)
            or not isinstance(overruns, (int, np.integer))
            or not 0 <= overruns <= 1000
        ):
            raise bad("max_overruns_per_s", "an integer 0 <= value <= 1000 (0 = off)", overruns)
        if not 0.0 <= self.min_streaming_success_rate <= 1.0:
            raise bad(
                "min_streaming_success_rate", "0 <= value <= 1 (0 = off)", self.min_streaming_success_rate
            )
        if not 0.0 <= self.gripper_open_below <= self.gripper_close_above <= 1.0:
            raise bad(
                "gripper_open_below/gripper_close_above",
                "0 <= open_below <= close_above <= 1",
                (self.gripper_open_below, self.gripper_close_above),
            )

    def gripper_closed(self, command: float, closed: bool | None) -> bool:
        """The gripper state for a [0, 1] `command`, with hysteresis around the state `closed` now (None: not
        commanded yet, then closed from 0.5 on)."""
        if command >= self.gripper_close_above:
            return True
        if command <= self.gripper_open_below:
            return False
        return command >= 0.5 if closed is None else closed

    @property
    def q_lower(self) -> np.ndarray:
        """(7,) lowest allowed joint target (limit + margin)."""
        return np.array(self.q_min) + self.joint_margin

    @property
    def q_upper(self) -> np.ndarray:
        """(7,) highest allowed joint target (limit - margin)."""
        return np.array(self.q_max) - self.joint_margin

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> SafetyLimits:
        """Build from a dict; unknown keys are an error naming the key."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"SafetyLimits: unknown field(s) {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
