"""In-process demo collection on the twin: scripted expert → franky → franky-sim, recorded to episodes.

This is the fast path for bulk data (no ROS transport): the same `Twin`, `FrankyBackend`, expert and
`EpisodeWriter` that the teleop node uses, stepped in simulation time at the control rate. Each step
records the newest rendered frame of every camera, the proprio (`ee_pos`, `gripper_width`) computed from the
measured joints by `dm1.proprio` (as the teleop recorder and the policy node do) and the commanded
`ee_position` action. Only successful episodes are kept unless `keep_failures`. Episodes carry the same
metadata as those recorded through the teleop node (`dm1 data collect --via-teleop`: `LIFT_PROPRIO_KEYS`,
`EE_ACTION_NAMES`, `episode_units`), and neither path appends to a directory holding a different dataset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dm1.data.episode_writer import EpisodeWriter
from dm1.data.index import next_episode_path
from dm1.data.schema import EpisodeSchema, check_append_compatible
from dm1.proprio import compute_proprio, proprio_dims
from dm1.sim.config import TwinConfig
from dm1.sim.expert import apply_ee_position_action, check_recovery_fraction, expert_for
from dm1.teleop.recorder import EE_ACTION_NAMES, episode_units

#: Proprio keys of the Lift demos (both collection paths; `configs/lift_twin.yaml` trains on them).
LIFT_PROPRIO_KEYS = ("ee_pos", "gripper_width")
ACTION_NAMES = EE_ACTION_NAMES
PROPRIO_SPEC = dict(zip(LIFT_PROPRIO_KEYS, proprio_dims(LIFT_PROPRIO_KEYS), strict=True))
UNITS = episode_units("ee_position", LIFT_PROPRIO_KEYS)


def lift_schema(
    cameras: tuple[str, ...], image_size: tuple[int, int] | None, rate_hz: float
) -> EpisodeSchema:
    """The episode schema both Lift collection paths write (cameras and image size from the twin)."""
    return EpisodeSchema(tuple(cameras), image_size, LIFT_PROPRIO_KEYS, "ee_position", ACTION_NAMES, rate_hz)


@dataclass(frozen=True)
class CollectionSummary:
    """What `collect_expert_demos` did."""

    attempted: int
    kept: int
    successes: int
    wall_s: float
    sim_s: float


def collect_expert_demos(
    out_dir: str | Path,
    episodes: int,
    seed: int = 0,
    cfg: TwinConfig | None = None,
    rate_hz: float = 20.0,
    max_sim_s: float = 20.0,
    post_success_s: float = 0.5,
    keep_failures: bool = False,
    progress: bool = True,
    recovery_fraction: float = 0.0,
) -> CollectionSummary:
    """Record `episodes` scripted-expert Lift episodes into `out_dir/episode_XXXXXX.h5` (seeded cubes).

    With `recovery_fraction` f > 0 about a fraction f of the episodes are recovery demonstrations: the
    expert's first grasp is a deliberate miss (`ScriptedLiftExpert.start_demo`), recorded with
    `perturbed` steps, then it re-tries. Which episodes, and their misses, follow from the cube seed alone.
    """
    check_recovery_fraction(recovery_fraction)
    from dm1.control.backend import TWIN_HOME_DYNAMICS
    from dm1.control.franky_backend import FrankyBackend
    from dm1.sim.twin import Twin

    out = Path(out_dir)
    cfg = cfg or TwinConfig(seed=seed)
    cams = tuple(cfg.cameras)
    sizes = {(c.height, c.width) for c in cfg.cameras.values()}
    check_append_compatible(out, lift_schema(cams, sizes.pop() if len(sizes) == 1 else None, rate_hz))
    out.mkdir(parents=True, exist_ok=True)
    wall0 = time.monotonic()
    kept = successes = 0
    sim_total = 0.0
    with Twin(cfg) as twin:
        backend = FrankyBackend(twin.robot_host, relative_dynamics_factor=TWIN_HOME_DYNAMICS)
        expert = expert_for(cfg)
        try:
            bar = tqdm(range(episodes), desc="expert demos", disable=not progress)
            for i in bar:
                path = next_episode_path(out)
                ok, sim_s = _record_episode(
                    twin,
                    backend,
                    expert,
                    path,
                    cams,
                    seed + i,
                    rate_hz,
                    max_sim_s,
                    post_success_s,
                    keep_failures,
                    recovery_fraction,
                )
                successes += ok
                kept += ok or keep_failures
                sim_total += sim_s
                bar.set_postfix(success=f"{successes}/{i + 1}")
        finally:
            backend.close()
    return CollectionSummary(episodes, kept, successes, time.monotonic() - wall0, sim_total)


def _proprio(state) -> dict[str, np.ndarray]:
    """`LIFT_PROPRIO_KEYS` from the measured joints through `dm1.proprio` (numpy FK, one source of truth)."""
    vec = compute_proprio(LIFT_PROPRIO_KEYS, state.q, state.gripper_width)
    ends = np.cumsum(list(PROPRIO_SPEC.values()))
    return {k: vec[e - d : e] for (k, d), e in zip(PROPRIO_SPEC.items(), ends, strict=True)}


def _record_episode(
    twin,
    backend,
    expert,
    path: Path,
    cams: tuple[str, ...],
    seed: int,
    rate_hz: float,
    max_sim_s: float,
    post_success_s: float,
    keep_failures: bool,
    recovery_fraction: float = 0.0,
) -> tuple[bool, float]:
    backend.set_gripper(False)
    backend.home()
    twin.reset(seed=seed)
    rng = np.random.default_rng([seed, 0x5EC0])  # own stream: the cube pose does not depend on it
    expert.start_demo(recovery_fraction, rng)
    period = 1.0 / rate_hz
    writer = EpisodeWriter(path, cams, PROPRIO_SPEC, ACTION_NAMES, "ee_position", rate_hz, units=UNITS)
    t0 = twin.sim_time()
    success_at: float | None = None
    step = 0
    try:
        while True:
            if not twin.wait_sim_time(t0 + step * period, timeout_s=30.0):
                raise TimeoutError(f"twin simulation time stalled at {twin.sim_time():.3f} s")
            now = twin.sim_time()
            if success_at is None and twin.is_success():
                success_at = now
            if (success_at is not None and now - success_at >= post_success_s) or now - t0 >= max_sim_s:
                break
            frames = {c: twin.latest_frame(c) for c in cams}
            if any(f is None for f in frames.values()):
                step += 1
                continue  # cameras not rendered yet (first tick after start)
            state = backend.read_state()
            action = expert.act(state.ee_pos, state.gripper_width, twin.cube_pose().pos, now - t0)
            apply_ee_position_action(backend, action)
            images = {c: f.rgb for c, f in frames.items()}
            writer.append(images, _proprio(state), action, now, perturbed=expert.perturbed)
            step += 1
    except BaseException:
        writer.discard()
        raise
    success = success_at is not None
    if success or keep_failures:
        writer.close(success=success)
    else:
        writer.discard()
    return success, twin.sim_time() - t0
