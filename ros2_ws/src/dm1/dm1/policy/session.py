"""A running policy: validated settings + ObservationAssembler + PolicyStep behind one `tick()` (no ROS).

The policy node is a thin shell around this class: it feeds decoded messages in and publishes what `tick()`
returns. Keeping the tick logic here makes it testable with a fake clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dm1.control.executor import STATUS_TOPIC
from dm1.control.parameters import CHUNK_LIVELINESS_LEASE_MS
from dm1.policy.drill import Drill, DrilledRuntime, parse_drill
from dm1.policy.observation import ObservationAssembler, ObservationConfig
from dm1.policy.step import MODES, PolicyStep, StepOutcome
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA
from dm1.runtime import SPIN_POLICIES

#: Parameters of the policy node: name -> (default, description, (min, max) or None). Read on configure.
NODE_PARAMETERS: dict[str, tuple[Any, str, tuple[float, float] | None]] = {
    "model_dir": ("", "model directory (model.onnx + model_card.json)", None),
    "camera_topics": ([], "topic overrides 'camera=/topic'; default: the model card's topics", None),
    "joint_states_topic": ("/joint_states", "sensor_msgs/JointState topic", None),
    "controller_status_topic": (
        STATUS_TOPIC,
        "the controller's diagnostics: a reported fault deactivates the policy and blocks activation; "
        "'' = not watched",
        None,
    ),
    "controller_silence_s": (
        2.0,
        "a controller heard before and silent this long is lost: the policy deactivates, and activation "
        "waits for its next report [s, node clock]; 0 = off",
        (0.0, 60.0),
    ),
    "max_obs_age_s": (0.1, "age limit of every input stream [s]", (1e-3, 10.0)),
    "sync_tolerance_s": (0.1, "max spread between the streams' stamps [s]", (1e-3, 10.0)),
    "mode": (
        "replan_every_tick",
        f"one of {list(MODES)}; chunk_then_replan re-sends the rest of its chunk at every tick",
        None,
    ),
    "resume_after_fresh_ticks": (
        3,
        "after a stale or missing input, no chunk until this many ticks in a row had a fresh, complete "
        "observation ('recovering k/N'); 1 = at the first; activation starts at the first fresh one",
        (1, 100),
    ),
    "control_rate_hz": (
        0.0,
        "tick and chunk rate [Hz]; 0 = the model card's, the only rate accepted (another one changes how "
        "fast the arm moves)",
        (0.0, 1000.0),
    ),
    "seed": (-1, "MeanFlow noise seed; -1 = random", (-1, 2**31 - 1)),
    "noise_scale": (
        1.0,
        "scale of the sampler's noise: 1 = trained distribution, 0 = deterministic",
        (0.0, 1.0),
    ),
    "ensemble_alpha": (
        DEFAULT_ENSEMBLE_ALPHA,
        "temporal ensembling of overlapping chunks: weight of the newest prediction; 1 = off",
        (0.01, 1.0),
    ),
    "inference_threads": (0, "onnxruntime intra-op threads; 0 = this host's cores, at most 4", (0, 64)),
    "spinning": (
        "run",
        "onnxruntime idle workers: run = spin only during an inference, always, never",
        None,
    ),
    "rt_priority": (
        5,
        "SCHED_FIFO priority of the node's executor and onnxruntime threads, below the controller's (10): an "
        "inference is not sliced up by other processes; 0 = normal scheduling",
        (0, 98),
    ),
    "chunk_deadline_ms": (
        0.0,
        "QoS deadline offered on the chunk topic (wall clock; the controller holds when it is missed); "
        "0 = two chunk periods (100 ms at 20 Hz, what the controller requests); else more than one period",
        (0.0, 10000.0),
    ),
    "chunk_liveliness_lease_ms": (
        CHUNK_LIVELINESS_LEASE_MS,
        "QoS liveliness lease offered on the chunk topic (the controller holds when it lapses); 0 = none",
        (0.0, 60000.0),
    ),
    "resize_images": (False, "resample wrong-size frames instead of rejecting them", None),
    "autostart": (False, "configure and activate at startup; a failed configure exits (code 1)", None),
}


#: Node parameters read once, when the node starts (its controller watch and status subscription, its thread
#: priority, whether it configures itself): a change is refused in every state, since none would apply it.
READ_AT_START: tuple[str, ...] = (
    "controller_status_topic",
    "controller_silence_s",
    "rt_priority",
    "autostart",
)


def refused_while_configured(names: Sequence[str], configured: bool) -> str | None:
    """Why a change of the node's parameters is refused, or None. `READ_AT_START` parameters never change
    after start; the other `NODE_PARAMETERS` are read on configure: a change while the node is configured
    would silently not apply (lifecycle convention: change, then configure)."""
    if at_start := sorted(set(names) & set(READ_AT_START)):
        return f"{', '.join(at_start)}: read once, at start (read-only); restart the policy node to change it"
    late = sorted(set(names) & {*NODE_PARAMETERS, "use_sim_time"})  # the session's clock: bound on configure
    if not (configured and late):
        return None
    return (
        f"{', '.join(late)}: read on configure, so a change now would not apply; deactivate and clean up "
        "the policy node, set it, configure again"
    )


def offered_deadline_ms(value_ms: float, period_s: float) -> float:
    """The QoS deadline (ms) the policy offers on its chunk topic: `value_ms`, or two chunk periods for 0.

    Raises ValueError when it is not longer than one period: the publisher would miss it on every tick."""
    period_ms = 1000.0 * period_s
    deadline = float(value_ms) or 2.0 * period_ms
    if deadline <= period_ms:
        raise ValueError(
            f"parameter chunk_deadline_ms: expected 0 (two chunk periods) or more than the chunk period "
            f"{period_ms:g} ms, found {deadline:g}"
        )
    return deadline


def parse_camera_topics(items: Sequence[str]) -> dict[str, str]:
    """``["front=/cam/front", ...]`` → ``{"front": "/cam/front"}``; raises ValueError naming a bad entry."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, topic = item.partition("=")
        if not sep or not name or not topic.startswith("/"):
            raise ValueError(f"camera_topics: expected entries 'camera=/absolute/topic', found {item!r}")
        out[name] = topic
    return out


@dataclass
class PolicyConfig:
    """Settings of a running policy (the policy node's parameters).

    Args:
        max_obs_age_s: age limit of every input stream [s].
        sync_tolerance_s: largest spread between the newest stamps of all streams [s].
        mode: `replan_every_tick` or `chunk_then_replan`.
        control_rate_hz: tick and chunk rate; None → the model card's.
        seed: MeanFlow noise seed; None → random.
        resize_images: resample wrong-size frames instead of rejecting them.
        camera_topics: per-camera topic overrides; cameras not listed use the card's topic.
        noise_scale: scale of the sampler noise (1 = trained distribution, 0 = deterministic centre).
        ensemble_alpha: weight of the newest chunk where it overlaps the previous one (1 = off).
        inference_threads: onnxruntime intra-op threads; None = the runtime's default.
        spinning: onnxruntime idle-worker policy, one of `dm1.runtime.SPIN_POLICIES`.
        resume_after_fresh_ticks: after a stale tick, fresh ticks in a row before the next chunk (1..100;
            1 = the first fresh tick infers). Activation is not a recovery: it starts at the first fresh one.
    """

    max_obs_age_s: float = 0.1
    sync_tolerance_s: float = 0.1
    mode: str = "replan_every_tick"
    control_rate_hz: float | None = None
    seed: int | None = None
    resize_images: bool = False
    camera_topics: dict[str, str] = field(default_factory=dict)
    noise_scale: float = 1.0
    ensemble_alpha: float = DEFAULT_ENSEMBLE_ALPHA
    inference_threads: int | None = None
    spinning: str = "run"
    resume_after_fresh_ticks: int = 3

    def __post_init__(self) -> None:
        n = self.resume_after_fresh_ticks
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100:
            raise ValueError(
                f"PolicyConfig.resume_after_fresh_ticks: expected an integer in [1, 100], found {n!r}"
            )
        if self.spinning not in SPIN_POLICIES:
            raise ValueError(
                f"PolicyConfig.spinning: expected one of {list(SPIN_POLICIES)}, found {self.spinning!r}"
            )
        if self.inference_threads is not None and self.inference_threads < 1:
            raise ValueError(
                f"PolicyConfig.inference_threads: expected >= 1 or None, found {self.inference_threads}"
            )
        if not (np.isfinite(self.ensemble_alpha) and 0.0 < self.ensemble_alpha <= 1.0):
            raise ValueError(
                f"PolicyConfig.ensemble_alpha: expected a number in (0, 1], found {self.ensemble_alpha!r}"
            )
        if self.mode not in MODES:
            raise ValueError(f"PolicyConfig.mode: expected one of {list(MODES)}, found {self.mode!r}")
        rate = self.control_rate_hz
        if rate is not None and not (np.isfinite(rate) and rate > 0):
            raise ValueError(
                f"PolicyConfig.control_rate_hz: expected a positive number or None, found {rate!r}"
            )
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"PolicyConfig.seed: expected >= 0 or None, found {self.seed}")


def config_from_parameters(values: dict[str, Any]) -> PolicyConfig:
    """`PolicyConfig` from node parameter values (0 rate → card's rate, negative seed → random). ValueError
    when `model_dir` is empty: an unset parameter must not load whatever model the working directory holds."""
    if not str(values["model_dir"]).strip():
        raise ValueError(
            "model_dir: expected a model directory (model.onnx + model_card.json), found the parameter "
            "empty (set it: -p model_dir:=/abs/path/models/<name>)"
        )
    seed = int(values["seed"])
    return PolicyConfig(
        max_obs_age_s=float(values["max_obs_age_s"]),
        sync_tolerance_s=float(values["sync_tolerance_s"]),
        mode=str(values["mode"]),
        control_rate_hz=float(values["control_rate_hz"]) or None,
        seed=None if seed < 0 else seed,
        resize_images=bool(values["resize_images"]),
        camera_topics=parse_camera_topics(values["camera_topics"]),
        noise_scale=float(values.get("noise_scale", 1.0)),
        ensemble_alpha=float(values.get("ensemble_alpha", DEFAULT_ENSEMBLE_ALPHA)),
        inference_threads=int(values.get("inference_threads", 0)) or None,
        spinning=str(values.get("spinning", "run")),
        resume_after_fresh_ticks=int(values.get("resume_after_fresh_ticks", 3)),
    )


class PolicySession:
    """Observation assembly + inference + chunk timing for one loaded runtime.

    Args:
        runtime: `dm1.runtime.PolicyRuntime`.
        clock: node time [s] (simulation time on the twin).
        config: settings; camera topic overrides must name cameras of the card.
    """

    def __init__(self, runtime: Any, clock: Callable[[], float], config: PolicyConfig | None = None) -> None:
        self.config = cfg = config or PolicyConfig()
        self.card, self.clock = runtime.card, clock
        self.topics = {c.name: c.topic for c in self.card.cameras}
        unknown = sorted(set(cfg.camera_topics) - set(self.topics))
        if unknown:
            raise ValueError(
                f"camera_topics: unknown camera(s) {unknown}; the model card has {sorted(self.topics)}"
            )
        self.topics.update(cfg.camera_topics)
        trained = float(self.card.action.control_rate_hz)
        if cfg.control_rate_hz is not None and not np.isclose(cfg.control_rate_hz, trained, rtol=1e-3):
            raise ValueError(
                f"control_rate_hz: expected 0 or the model card's {trained:g} Hz (its actions are "
                f"{1e3 / trained:g} ms apart: another rate changes how fast the arm moves), "
                f"found {cfg.control_rate_hz:g} Hz"
            )
        obs_cfg = ObservationConfig(
            cfg.max_obs_age_s, sync_tolerance_s=cfg.sync_tolerance_s, resize=cfg.resize_images
        )
        self.assembler = ObservationAssembler(self.card, obs_cfg)
        self.drill: Drill | None = None  # a fault drill (dm1.policy.drill): set by start_drill
        self.drill_counts: dict[str, int] = {"drills": 0, "frames_dropped_by_drill": 0}
        self._held_back: deque[tuple[float, StepOutcome]] = deque()  # late_chunks: (release time, outcome)
        self.step = PolicyStep(
            DrilledRuntime(runtime, self.active_drill, clock=clock),
            clock,
            cfg.mode,
            cfg.control_rate_hz,
            cfg.seed,
            noise_scale=cfg.noise_scale,
            ensemble_alpha=cfg.ensemble_alpha,
            resume_after_fresh_ticks=cfg.resume_after_fresh_ticks,
        )
        self._last_now = -np.inf

    @property
    def period_s(self) -> float:
        """Tick period [s]."""
        return self.step.dt

    def on_image(self, name: str, stamp: float, rgb: np.ndarray) -> None:
        """A decoded camera frame (H, W, 3) uint8 stamped with its capture time."""
        drill = self.active_drill()
        if drill is not None and drill.camera == name:  # freeze_camera: as if the camera had stopped
            self.drill_counts["frames_dropped_by_drill"] += 1
            return
        self.assembler.on_image(name, stamp, rgb, received=self.clock())

    def start_drill(self, spec: str, duration_s: float) -> Drill | None:
        """Start the fault drill `spec` now for `duration_s` ('' ends a running one); ValueError if bad."""
        self.drill = parse_drill(spec, list(self.topics), self.clock(), duration_s)
        self.drill_counts["drills"] += self.drill is not None
        return self.drill

    def active_drill(self) -> Drill | None:
        """The drill running now, or None."""
        return self.drill if self.drill is not None and self.drill.active(self.clock()) else None

    def on_joint_state(self, stamp: float, q: np.ndarray, gripper_width: float) -> None:
        """A decoded arm state: q (7,) rad, gripper width m."""
        self.assembler.on_joint_state(stamp, q, gripper_width, received=self.clock())

    def on_bad_input(self, stream: str, message: str) -> None:
        """A message of `stream` (a camera name or `joint_states`) that could not be decoded: counted, and
        named in the stream's next stale reason."""
        self.assembler.reject_input(stream, message)

    def reset(self) -> None:
        """Forget frames, the current chunk and any drill (activation, or the clock jumped back)."""
        self.assembler.reset()
        self.step.reset()
        self.drill = None
        self._held_back.clear()

    def tick(self) -> StepOutcome:
        """One control tick: assemble → infer → timed chunk (or the reason there is none). The inputs are
        checked at every tick, also between the inferences of `chunk_then_replan`: a stale one stops the
        chunk being executed."""
        now = self.clock()
        if now < self._last_now:  # simulation reset: frames from the old timeline are meaningless
            self.reset()
        self._last_now = now
        drill = self.active_drill()
        if drill is not None and drill.kind == "silence":
            self.step.reset()  # the next chunk after the drill starts afresh, as after any hold
            return StepOutcome(None, f"drill {drill.label}: publishing nothing", None, "drill")
        t = time.perf_counter()
        obs = self.assembler.assemble(now)
        out = self.step.run(obs, preprocess_ms=(time.perf_counter() - t) * 1e3)
        if drill is not None and out.reason is not None:
            out.reason = f"drill {drill.label}: {out.reason}"
        if drill is not None and drill.kind == "late_chunks":
            return self._hold_back(out, now, drill.label)
        self._held_back.clear()  # a drill's chunks still held back when it ends are never sent
        return out

    def _hold_back(self, out: StepOutcome, now: float, label: str) -> StepOutcome:
        """`late_chunks`: keep each chunk until its last action is one tick past, then hand it out unchanged
        (no ledger: a drill's delay is not a latency sample)."""
        if out.chunk is not None:
            self._held_back.append((out.chunk.end_time + self.period_s, out))
            reason = f"drill {label}: chunk held back until its actions are past"
            out = StepOutcome(None, reason, None, "drill")
        if self._held_back and self._held_back[0][0] <= now:
            late = self._held_back.popleft()[1]
            return replace(late, ledger=None, reason=f"drill {label}: sending a chunk whose actions are past")
        return out

    def diagnostic_values(self) -> dict[str, float | int]:
        """Counters (per outcome kind, stale ticks per stream, rejected frames) and latency percentiles."""
        return {
            **self.step.counts,
            **{f"stale_{k}": v for k, v in self.step.stale_streams.items()},
            **{f"rejected_{k}": v for k, v in self.assembler.rejected_counts.items()},
            **self.drill_counts,
            **self.step.latency_summary(),
        }
