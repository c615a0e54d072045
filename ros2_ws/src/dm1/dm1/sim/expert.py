"""Scripted Lift expert in the `ee_position` action space, and the loop that runs it on the twin.

`ScriptedLiftExpert.act(ee_pos, gripper_width, cube_pos, t)` returns `[x, y, z, gripper]`: an absolute EE
target (m, fr3_link0; orientation fixed top-down) and a gripper command in [0, 1] (1 = grasp). Targets move at
most `max_step` per call, so at 20 Hz the commanded path is smooth. `run_expert_episode` drives a
`RobotBackend` with those actions exactly as the controller does with policy or teleop actions
(`apply_ee_position_action`).

Recovery demonstrations: `reset(miss_rng=rng)` makes the episode's first grasp a deliberate miss (aimed
`miss_offset` off the cube centre, closed, lifted for a random while) before the expert notices and re-tries.
While the deliberate miss runs, `expert.perturbed` is True; recorders store it per step so training learns
the recovery and never the miss (`dm1.data.dataset.WindowDataset` drops windows that contain such steps).
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dm1.control.backend import TOP_DOWN_XYZW, RobotBackend


class Phase(enum.Enum):
    """Stages of the scripted lift."""

    APPROACH = "approach"
    DESCEND = "descend"
    CLOSE = "close"
    LIFT = "lift"


def check_recovery_fraction(value: float, name: str = "recovery_fraction") -> None:
    """Raise ValueError naming `name` unless 0 <= value <= 1 (the share of demos that are recovery demos)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a value in [0, 1], found {value!r}")


@dataclass
class ScriptedLiftExpert:
    """Approach above the cube, descend, close, lift; re-tries when the grasp misses.

    Args:
        table_top_z: Table top height in fr3_link0 (m).
        cube_size: Cube edge length (m).
        hover: Height of the TCP above the cube centre before descending (m).
        grasp_dz: TCP height relative to the cube centre when closing (m, negative = below).
        lift_z: TCP height above the table top at the end of the lift (m).
        max_step: Largest change of the commanded position per `act` call (m).
        xy_tol: Horizontal alignment needed before descending (m).
        z_tol: Height tolerance for reaching the hover and grasp heights (m).
        close_s: Sim time to keep still with the gripper closing before lifting (s).
        min_grasp_width: A closed gripper narrower than this holds nothing (m).
        miss_offset: Horizontal distance of a deliberate miss's grasp point from the cube centre (m, range
            [miss_offset, 1.5 * miss_offset]); only used after `reset(miss_rng=...)`.
        miss_lift_max_s: A deliberate miss lifts the (empty) gripper for up to this long (s) before re-trying.
        miss_descend_s: A deliberate miss closes after this long in the descent even if the fingers rest on
            the cube and the grasp height is never reached (s).
    """

    table_top_z: float = 0.0
    cube_size: float = 0.05
    hover: float = 0.09
    grasp_dz: float = -0.005
    lift_z: float = 0.25
    max_step: float = 0.015
    xy_tol: float = 0.006
    z_tol: float = 0.012
    close_s: float = 0.6
    min_grasp_width: float = 0.01
    miss_offset: float = 0.04
    miss_lift_max_s: float = 1.5
    miss_descend_s: float = 1.2

    def __post_init__(self) -> None:
        if not 0 < self.max_step <= 0.05:
            raise ValueError(f"ScriptedLiftExpert.max_step: expected (0, 0.05] m, found {self.max_step!r}")
        if not 0 < self.miss_offset <= 0.1:
            raise ValueError(
                f"ScriptedLiftExpert.miss_offset: expected (0, 0.1] m, found {self.miss_offset!r}"
            )
        for name in ("miss_lift_max_s", "miss_descend_s"):
            if not 0 < getattr(self, name) <= 10:
                raise ValueError(
                    f"ScriptedLiftExpert.{name}: expected (0, 10] s, found {getattr(self, name)!r}"
                )
        self.reset()

    def start_demo(self, recovery_fraction: float, rng: np.random.Generator) -> bool:
        """Reset for a new demonstration; with probability `recovery_fraction` (drawn from `rng`, which then
        also draws the miss) it is a recovery demo that starts with a deliberate miss. Returns whether it is.
        """
        check_recovery_fraction(recovery_fraction)
        recovery = recovery_fraction > 0 and bool(rng.random() < recovery_fraction)
        self.reset(miss_rng=rng if recovery else None)
        return recovery

    def reset(self, miss_rng: np.random.Generator | None = None) -> None:
        """Forget the episode state (call at every episode start).

        With `miss_rng` the episode's first grasp is a deliberate miss: a grasp point `miss_offset`..1.5 ×
        `miss_offset` off the cube centre in a random direction and a lift of 0..`miss_lift_max_s` before the
        expert re-tries (see `perturbed`).
        """
        self.phase = Phase.APPROACH
        self._cmd: np.ndarray | None = None
        self._phase_t = 0.0
        self._grasp_xy = np.zeros(2)
        self.retries = 0
        self._miss: tuple[np.ndarray, float] | None = None  # (xy offset (2,), lift time) of a planned miss
        self.perturbed = False  # True while a deliberate miss runs (its actions must not be learned)
        if miss_rng is not None:
            angle = miss_rng.uniform(0.0, 2 * np.pi)
            dist = self.miss_offset * miss_rng.uniform(1.0, 1.5)
            offset = dist * np.array([np.cos(angle), np.sin(angle)])
            self._miss = (offset, float(miss_rng.uniform(0.0, self.miss_lift_max_s)))

    def _goal(self, ee: np.ndarray, cube: np.ndarray, width: float, t: float) -> tuple[np.ndarray, float]:
        hover_z = cube[2] + self.hover
        floor_z = self.table_top_z + 0.012  # never push the fingertips into the table
        if self.phase is Phase.APPROACH:
            xy_err = np.linalg.norm(ee[:2] - cube[:2])
            if xy_err > 0.03 and ee[2] < hover_z - 0.03:  # low (after a miss): rise before moving sideways
                return np.array([ee[0], ee[1], hover_z]), 0.0
            if xy_err < self.xy_tol and abs(ee[2] - hover_z) < self.z_tol:
                self._enter(Phase.DESCEND, t)
            return np.array([cube[0], cube[1], hover_z]), 0.0
        if self.phase is Phase.DESCEND:
            goal = np.array([cube[0], cube[1], max(cube[2] + self.grasp_dz, floor_z)])
            if self._miss is not None:  # deliberate miss: aim off the centre, close where the fingers stop
                self.perturbed = True
                goal[:2] += self._miss[0]
                if t - self._phase_t >= self.miss_descend_s:
                    self._grasp_xy = goal[:2].copy()
                    self._enter(Phase.CLOSE, t)
                    return goal, 0.0
            if abs(ee[2] - goal[2]) < 0.006 and np.linalg.norm(ee[:2] - goal[:2]) < 2 * self.xy_tol:
                self._grasp_xy = goal[:2].copy()
                self._enter(Phase.CLOSE, t)
            return goal, 0.0
        if self.phase is Phase.CLOSE:
            goal = self._cmd if self._cmd is not None else ee
            if t - self._phase_t >= self.close_s:
                self._enter(Phase.LIFT, t)
            return goal.copy(), 1.0
        # LIFT
        lost = width < self.min_grasp_width or (ee[2] - cube[2] > 0.05 and t - self._phase_t > 0.5)
        if self._miss is not None:  # deliberate miss: keep lifting the (probably empty) gripper a while
            if t - self._phase_t < self._miss[1]:
                lost = False
            elif lost:  # the expert notices; from here on it demonstrates the recovery
                self._miss, self.perturbed = None, False
        if lost:
            self.retries += 1
            self._enter(Phase.APPROACH, t)
            return np.array([ee[0], ee[1], hover_z]), 0.0
        return np.array([self._grasp_xy[0], self._grasp_xy[1], self.table_top_z + self.lift_z]), 1.0

    def _enter(self, phase: Phase, t: float) -> None:
        self.phase = phase
        self._phase_t = t

    def act(self, ee_pos: np.ndarray, gripper_width: float, cube_pos: np.ndarray, t: float) -> np.ndarray:
        """One action `[x, y, z, gripper]` (4,) float32 for the observed EE position (3,), gripper width (m),
        cube centre (3,) and sim time t (s)."""
        ee = np.asarray(ee_pos, dtype=float).reshape(3)
        cube = np.asarray(cube_pos, dtype=float).reshape(3)
        if self._cmd is None:
            self._cmd = ee.copy()
        goal, grip = self._goal(ee, cube, float(gripper_width), float(t))
        delta = goal - self._cmd
        dist = float(np.linalg.norm(delta))
        if dist > self.max_step:
            delta *= self.max_step / dist
        self._cmd = self._cmd + delta
        return np.array([*self._cmd, grip], dtype=np.float32)


def apply_ee_position_action(
    backend: RobotBackend, action: np.ndarray, quat_xyzw: np.ndarray = TOP_DOWN_XYZW
) -> None:
    """Send one `ee_position` action `[x, y, z, gripper]` to a backend (gripper closes at >= 0.5)."""
    a = np.asarray(action, dtype=float).reshape(-1)
    if a.shape != (4,) or not np.all(np.isfinite(a)):
        raise ValueError(f"ee_position action: expected 4 finite values [x, y, z, gripper], found {a!r}")
    backend.send_ee_target(a[:3], np.asarray(quat_xyzw, dtype=float))
    backend.set_gripper(bool(a[3] >= 0.5))


@dataclass(frozen=True)
class EpisodeResult:
    """Outcome of one expert episode (times in simulation seconds)."""

    success: bool
    sim_duration_s: float
    steps: int
    retries: int
    wall_s: float
    error: str | None = None


def run_expert_episode(
    twin,  # dm1.sim.twin.Twin
    backend: RobotBackend,
    expert: ScriptedLiftExpert,
    seed: int | None = None,
    max_sim_s: float = 20.0,
    rate_hz: float = 20.0,
    extra_hold_s: float = 0.0,
    home: bool = True,
) -> EpisodeResult:
    """Home the arm, reset the cube, then run the expert at `rate_hz` of sim time until success or timeout.

    Every step waits for the next tick of simulation time, reads the robot state and the cube pose, and
    applies the expert's action through `apply_ee_position_action`. Returns when `twin.is_success()`
    (after `extra_hold_s` more sim seconds) or after `max_sim_s`.
    """
    wall0 = time.monotonic()
    backend.set_gripper(False)
    if home:
        backend.home()
    twin.reset(seed=seed)
    expert.reset()
    period = 1.0 / rate_hz
    t0 = twin.sim_time()
    steps = 0
    success_at: float | None = None
    max_wall_per_step = max(10.0, 50 * period)  # a stalled sim fails the episode instead of hanging
    while True:
        tick = t0 + steps * period
        if not twin.wait_sim_time(tick, timeout_s=max_wall_per_step):
            raise TimeoutError(f"twin simulation time stalled at {twin.sim_time():.3f} s")
        now = twin.sim_time()
        if success_at is None and twin.is_success():
            success_at = now
        if success_at is not None and now - success_at >= extra_hold_s:
            break
        if now - t0 >= max_sim_s:
            break
        state = backend.read_state()
        action = expert.act(state.ee_pos, state.gripper_width, twin.cube_pose().pos, now - t0)
        apply_ee_position_action(backend, action)
        steps += 1
    return EpisodeResult(
        success=success_at is not None,
        sim_duration_s=twin.sim_time() - t0,
        steps=steps,
        retries=expert.retries,
        wall_s=time.monotonic() - wall0,
    )


def run_expert_episodes(
    twin,  # dm1.sim.twin.Twin
    episodes: int,
    seed: int = 0,
    max_sim_s: float = 20.0,
    on_result: Callable[[int, EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """Run `episodes` expert episodes (cube seeds `seed + i`) through a franky backend connected to the twin.

    A franky communication error (e.g. libfranka's 1 s UDP timeout when an overloaded CPU stalls the
    simulation) fails that episode with `error` set; the backend is reconnected and the run goes on.
    """
    expert = expert_for(twin.cfg)
    backend = connect_backend(twin.robot_host)
    results: list[EpisodeResult] = []
    try:
        for i in range(episodes):
            t0, wall0 = twin.sim_time(), time.monotonic()
            try:
                result = run_expert_episode(twin, backend, expert, seed=seed + i, max_sim_s=max_sim_s)
            except Exception as exc:  # franky NetworkException / RobotFault: count it, reconnect, go on
                result = EpisodeResult(
                    False,
                    twin.sim_time() - t0,
                    0,
                    expert.retries,
                    time.monotonic() - wall0,
                    error=f"{type(exc).__name__}: {exc}",
                )
                with contextlib.suppress(Exception):
                    backend.close()
                backend = connect_backend(twin.robot_host)
                backend.recover()
            results.append(result)
            if on_result is not None:
                on_result(i, result)
    finally:
        backend.close()
    return results


def connect_backend(host: str) -> RobotBackend:
    """The controller's franky backend (`FrankyBackend`, Cartesian impedance) connected to `host`."""
    from dm1.control.backend import TWIN_HOME_DYNAMICS
    from dm1.control.franky_backend import FrankyBackend

    return FrankyBackend(host, relative_dynamics_factor=TWIN_HOME_DYNAMICS)


def expert_for(cfg) -> ScriptedLiftExpert:  # cfg: dm1.sim.config.TwinConfig
    """A `ScriptedLiftExpert` matched to a twin configuration (table height, cube size, success height)."""
    lift = max(0.25, cfg.success_height + cfg.cube_size + 0.08)
    return ScriptedLiftExpert(table_top_z=cfg.table.top_z, cube_size=cfg.cube_size, lift_z=lift)
