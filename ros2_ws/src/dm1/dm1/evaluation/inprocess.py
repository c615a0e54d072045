"""Closed-loop evaluation of a `PolicyFn` on the twin in one process, without ROS transport.

The same parts as `dm1 eval`, wired by function calls instead of topics: the `dm1.sim.Twin` (franky-sim,
cameras rendered in simulation time), `dm1.policy.PolicySession` (observation assembly with age limits,
proprio through `dm1.proprio.compute_proprio` from the measured joints, noise, chunk timing) and
`dm1.control.ChunkExecutor` (safety filter, schedule, watchdog) on a `FrankyBackend` streaming into franky's
impedance tracker.

Per episode: open the gripper, home the arm, `twin.reset(seed)`, `policy.reset()`; then, on simulation time,
every controller tick (default 100 Hz, as the controller node) publish the measured joint state and new camera
frames to the session and tick the executor; every policy tick (the card's control rate) replan: infer a chunk
and offer it to the executor. The episode ends at `twin.is_success()` (+ `extra_hold_s`) or after `max_sim_s`.
Inference takes wall time while the simulation keeps running, exactly as on the ROS graph; late chunks count.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dm1.control.schedule import TimedChunk
from dm1.evaluation.policies import PolicyFn
from dm1.evaluation.progress import EpisodeProgress, ProgressFields
from dm1.kinematics import fr3_fk
from dm1.policy.session import PolicyConfig, PolicySession
from dm1.policy.step import MODES, ActionChunk
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA

MODE_FOR_SPACE = {"ee_position": "cartesian", "joint_position": "joint"}


@dataclass(frozen=True)
class InProcessConfig:
    """Settings of an in-process evaluation (times in simulation seconds).

    Args:
        max_sim_s: time limit of one episode.
        controller_rate_hz: executor tick rate (the controller node's `control_rate_hz`).
        policy_rate_hz: replanning rate; None → the card's `action.control_rate_hz`.
        mode: `replan_every_tick` (default) or `chunk_then_replan`.
        max_obs_age_s: age limit of every input stream (the policy node's `max_obs_age_s`).
        sync_tolerance_s: largest spread between the streams' stamps.
        resize_images: resample camera frames to the card's size (else sizes must match).
        extra_hold_s: keep running this long after success (0 = stop at success).
        stall_timeout_s: wall seconds without simulation progress before the episode is failed.
        noise_scale: scale of the sampler noise (the policy node's `noise_scale`).
        ensemble_alpha: temporal ensembling weight (the policy node's `ensemble_alpha`; 1 = off).
    """

    max_sim_s: float = 20.0
    controller_rate_hz: float = 100.0
    policy_rate_hz: float | None = None
    mode: str = "replan_every_tick"
    max_obs_age_s: float = 0.1
    sync_tolerance_s: float = 0.1
    resize_images: bool = False
    extra_hold_s: float = 0.0
    stall_timeout_s: float = 30.0
    noise_scale: float = 1.0
    ensemble_alpha: float = DEFAULT_ENSEMBLE_ALPHA

    def __post_init__(self) -> None:
        for name in (
            "max_sim_s",
            "controller_rate_hz",
            "max_obs_age_s",
            "sync_tolerance_s",
            "stall_timeout_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise ValueError(
                    f"InProcessConfig.{name}: expected a positive finite number, found {value!r}"
                )
        rate = self.policy_rate_hz
        if rate is not None and not (np.isfinite(rate) and 0 < rate <= self.controller_rate_hz):
            raise ValueError(
                f"InProcessConfig.policy_rate_hz: expected None or (0, controller_rate_hz="
                f"{self.controller_rate_hz}], found {rate!r}"
            )
        if self.mode not in MODES:
            raise ValueError(f"InProcessConfig.mode: expected one of {list(MODES)}, found {self.mode!r}")
        if not (np.isfinite(self.extra_hold_s) and self.extra_hold_s >= 0):
            raise ValueError(f"InProcessConfig.extra_hold_s: expected >= 0, found {self.extra_hold_s!r}")


@dataclass
class EpisodeRecord(ProgressFields):
    """One evaluated episode; `to_dict()` is the record format of `dm1.evaluation.report.summarize`."""

    index: int
    seed: int
    success: bool
    sim_duration_s: float
    wall_s: float
    chunks: int = 0
    past_stamped_chunks: int = 0
    ledger_ms: dict[str, list[float]] = field(default_factory=dict)
    policy_counts: dict[str, int] = field(default_factory=dict)
    executor_counts: dict[str, int] = field(default_factory=dict)
    success_at_s: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def timed_chunk(chunk: ActionChunk, orientation_xyzw: Any = None) -> TimedChunk:
    """A policy `ActionChunk` as the controller receives it (what the ROS conversion round trip yields)."""
    n = len(chunk.actions)
    tfs = np.arange(n) * chunk.dt  # (N,)
    if chunk.space == "ee_position":
        quat = None if orientation_xyzw is None else np.tile(np.asarray(orientation_xyzw, float), (n, 1))
        return TimedChunk(chunk.t0, tfs, chunk.actions[:, :3], chunk.actions[:, 3], "cartesian", quat)
    if chunk.space == "joint_position":
        return TimedChunk(chunk.t0, tfs, chunk.actions[:, :7], chunk.actions[:, 7], "joint")
    raise ValueError(f"ActionChunk.space: expected 'ee_position' or 'joint_position', found {chunk.space!r}")


def twin_config_for(card: Any, seed: int = 0, **overrides: Any):
    """A `TwinConfig` whose cameras render exactly the card's image sizes (front/wrist presets by name)."""
    from dm1.sim.config import CameraSpec, TwinConfig

    rate = float(card.action.control_rate_hz)
    cams = {c.name: CameraSpec(width=int(c.shape[1]), height=int(c.shape[0]), fps=rate) for c in card.cameras}
    return TwinConfig(cameras=cams, seed=seed, **overrides)


class InProcessEvaluator:
    """Runs episodes of any `PolicyFn` on one started twin; reuses the franky connection across episodes.

    Args:
        twin: a started `dm1.sim.twin.Twin`.
        config: evaluation settings.
        limits: safety envelope (default `SafetyLimits()`: on, FR3 values).
        connect: `(host, mode) -> RobotBackend` (default: `FrankyBackend(host, mode=mode)`).
    """

    def __init__(
        self,
        twin: Any,
        config: InProcessConfig | None = None,
        limits: Any = None,
        connect: Callable[[str, str], Any] | None = None,
    ) -> None:
        from dm1.control.limits import SafetyLimits

        self.twin = twin
        self.config = config or InProcessConfig()
        self.limits = limits or SafetyLimits()
        self._connect = connect or _franky_backend
        self._backend: Any = None
        self._mode: str | None = None

    def backend(self, mode: str) -> Any:
        """The robot backend in `mode` ("cartesian" | "joint"), connected on first use."""
        if self._backend is None or self._mode != mode:
            self.close()
            self._backend, self._mode = self._connect(self.twin.robot_host, mode), mode
        return self._backend

    def close(self) -> None:
        """Release the franky connection (the twin stays up)."""
        if self._backend is not None:
            with contextlib.suppress(Exception):
                self._backend.close()
        self._backend, self._mode = None, None

    def __enter__(self) -> InProcessEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        policy: PolicyFn,
        episodes: int,
        seed: int = 1000,
        on_episode: Callable[[EpisodeRecord], None] | None = None,
    ) -> list[EpisodeRecord]:
        """`episodes` episodes with cube seeds `seed + i` (the same seeds for every policy: paired trials)."""
        if episodes < 1:
            raise ValueError(f"episodes: expected >= 1, found {episodes}")
        records = []
        for i in range(episodes):
            rec = self.run_episode(policy, seed + i, index=i)
            records.append(rec)
            if on_episode is not None:
                on_episode(rec)
        return records

    def run_episode(self, policy: PolicyFn, seed: int, index: int = 0) -> EpisodeRecord:
        """One seeded episode. A franky error fails the episode (recorded) and reconnects the backend."""
        wall0, t_start = time.monotonic(), self.twin.sim_time()
        try:
            return self._episode(policy, seed, index, wall0)
        except Exception as exc:  # noqa: BLE001 - franky NetworkException / RobotFault / stalled sim: count, go on
            self.close()
            return EpisodeRecord(
                index,
                seed,
                False,
                self.twin.sim_time() - t_start,
                time.monotonic() - wall0,
                error=f"{type(exc).__name__}: {exc}",
            )

    def _episode(self, policy: PolicyFn, seed: int, index: int, wall0: float) -> EpisodeRecord:
        from dm1.control.executor import FAULT, ChunkExecutor

        cfg, twin, card = self.config, self.twin, policy.card
        mode = MODE_FOR_SPACE.get(card.action.space)
        if mode is None:
            raise ValueError(f"{policy.name}: card action.space {card.action.space!r} is not supported")
        backend = self.backend(mode)
        if backend.read_state().fault is not None:
            backend.recover()
        backend.set_gripper(False)
        executor = ChunkExecutor(
            backend, self.limits, twin.sim_time, mode=mode
        )  # fresh: no stale gripper state
        executor.home()
        twin.reset(seed=seed)
        session = PolicySession(
            policy,
            twin.sim_time,
            PolicyConfig(
                max_obs_age_s=cfg.max_obs_age_s,
                sync_tolerance_s=cfg.sync_tolerance_s,
                mode=cfg.mode,
                control_rate_hz=cfg.policy_rate_hz,
                seed=seed,
                resize_images=cfg.resize_images,
                noise_scale=cfg.noise_scale,
                ensemble_alpha=cfg.ensemble_alpha,
            ),
        )
        policy.reset()
        ctrl_dt, policy_dt = 1.0 / cfg.controller_rate_hz, session.period_s
        orientation = card.action.orientation_xyzw
        t0 = twin.sim_time()
        next_policy = t0
        fed: dict[str, float] = {}
        rec = EpisodeRecord(index, seed, False, 0.0, 0.0)
        progress = EpisodeProgress()
        k = 0
        while True:
            if not twin.wait_sim_time(t0 + k * ctrl_dt, timeout_s=cfg.stall_timeout_s):
                raise TimeoutError(f"twin simulation time stalled at {twin.sim_time():.3f} s")
            k += 1
            now = twin.sim_time()
            if rec.success_at_s is None and twin.is_success():
                rec.success, rec.success_at_s = True, now - t0
            if rec.success and now - t0 - rec.success_at_s >= cfg.extra_hold_s:
                break
            if now - t0 >= cfg.max_sim_s or executor.state == FAULT:
                break
            state = backend.read_state()
            session.on_joint_state(now, state.q, state.gripper_width)
            progress.on_cube(twin.cube_pose().pos)
            progress.on_ee(fr3_fk(state.q)[0], state.gripper_width)
            for name in session.topics:
                frame = twin.latest_frame(name)
                if frame is not None and frame.stamp_sim_s > fed.get(name, -np.inf):
                    fed[name] = frame.stamp_sim_s
                    session.on_image(name, frame.stamp_sim_s, frame.rgb)
            if now + 1e-9 >= next_policy:
                next_policy += policy_dt * max(1, int(np.floor((now - next_policy) / policy_dt)) + 1)
                out = session.tick()
                if out.chunk is not None:
                    rec.chunks += 1
                    rec.past_stamped_chunks += int(out.chunk.t0 < twin.sim_time())
                    executor.on_chunk(timed_chunk(out.chunk, orientation))
                    ledger = session.step.mark_published(out)
                    for key, value in (ledger.to_dict() if ledger else {}).items():
                        if key.endswith("_ms"):
                            rec.ledger_ms.setdefault(key, []).append(float(value))
            executor.tick(now)
        executor.tick(twin.sim_time())
        if executor.state != FAULT:
            backend.hold()
        status = executor.status()
        rec.sim_duration_s = twin.sim_time() - t0
        rec.wall_s = time.monotonic() - wall0
        rec.policy_counts = dict(session.step.counts)
        for name, value in progress.as_record().items():
            setattr(rec, name, value)
        rec.executor_counts = dict(status.counters)
        if status.fault is not None:
            rec.error = f"executor fault: {status.fault}"
        return rec


class TwinContext:
    """Evaluation context of the ablation: one twin + one `InProcessEvaluator` shared by every policy.

    Args:
        inprocess: `InProcessConfig` of every episode.
        host: loopback address for a twin started here (for the first policy's card).
        twin: an already started twin to use instead (left running by `close()`).
    """

    def __init__(self, inprocess: Any = None, host: str | None = None, twin: Any = None) -> None:
        self.inprocess, self.host = inprocess or InProcessConfig(), host
        self.twin: Any = twin
        self._own = twin is None
        self._ev: Any = None if twin is None else InProcessEvaluator(twin, self.inprocess)

    def evaluate(self, policy: PolicyFn, episodes: int, seed: int) -> list[dict[str, Any]]:
        """Run the episodes; the twin's cameras must match every card."""
        from dm1.sim.twin import Twin

        if self.twin is None:
            self.twin = Twin(twin_config_for(policy.card, seed=seed, host=self.host)).start()
            self._ev = InProcessEvaluator(self.twin, self.inprocess)
        want = {n: (c.height, c.width, 3) for n, c in self.twin.cfg.cameras.items()}
        got = {c.name: tuple(c.shape) for c in policy.card.cameras}
        if got != want:
            raise ValueError(f"{policy.name}: card cameras {got} differ from the twin's cameras {want}")
        return [r.to_dict() for r in self._ev.run(policy, episodes, seed)]

    def oracle(self) -> PolicyFn:
        """The privileged scripted expert on this context's twin."""
        from dm1.evaluation.policies import ScriptedOraclePolicy

        if self.twin is None:
            raise RuntimeError("TwinContext.oracle: evaluate a learned policy first (it starts the twin)")
        return ScriptedOraclePolicy(self.twin)

    def close(self) -> None:
        """Release franky and stop the twin if this context started it."""
        if self._ev is not None:
            self._ev.close()
        if self.twin is not None and self._own:
            self.twin.stop()
        self.twin = self._ev = None


def _franky_backend(host: str, mode: str) -> Any:
    from dm1.control.backend import TWIN_HOME_DYNAMICS
    from dm1.control.franky_backend import FrankyBackend

    return FrankyBackend(host, relative_dynamics_factor=TWIN_HOME_DYNAMICS, mode=mode)


def evaluate_in_process(
    policy: PolicyFn | Callable[[Any], PolicyFn],
    episodes: int,
    seed: int = 1000,
    config: InProcessConfig | None = None,
    twin_config: Any = None,
    host: str | None = None,
) -> list[EpisodeRecord]:
    """Start a twin matched to the policy's card, run `episodes` episodes, stop the twin.

    `policy` may also be a factory `twin -> PolicyFn` (for policies that need the twin, e.g. the oracle); then
    `twin_config` is required.
    """
    from dm1.sim.twin import Twin

    if twin_config is None:
        if callable(policy) and not isinstance(policy, PolicyFn):
            raise ValueError("evaluate_in_process: twin_config is required when policy is a factory")
        twin_config = twin_config_for(policy.card, seed=seed, host=host)
    with Twin(twin_config) as twin, InProcessEvaluator(twin, config) as ev:
        pol = policy if isinstance(policy, PolicyFn) else policy(twin)
        return ev.run(pol, episodes, seed)
