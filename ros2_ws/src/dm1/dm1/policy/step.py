"""One policy tick: Observation → onnxruntime → checked, time-stamped action chunk + latency ledger (no ROS).

Timing contract (architecture.md, Action spaces): the model's action i belongs to ``obs.stamp + i / rate``.
By the time inference is done, the first actions are already due, so the chunk starts at the *first future
tick* ``t0 = obs.stamp + k / rate`` (smallest k with that time after `now`), dropping actions 0..k-1; point j
of the published chunk has ``time_from_start = j / rate``. If every action is already past, no chunk is
produced and the tick counts as "late" (reliability row 7).

Modes: ``replan_every_tick`` (default; a one-step model is cheap enough to re-infer at every control tick) and
``chunk_then_replan`` (execute the whole chunk, then infer again). Between inferences each tick with fresh
inputs re-publishes the *remainder* of the current chunk: its points not yet due, ``t0`` = the first of them
(a newer stamp than the last one sent, which the controller accepts as the latest chunk), the same plan. So
the controller's chunk watchdog and the topic's QoS deadline see a live stream, and a stale input still stops
it at once (no chunk; the next one is inferred afresh). The next inference runs on the first tick from which
the current chunk's last point lies less than `HANDOVER_TICKS` (2.5) periods ahead, i.e. one and a half to
two and a half periods before it is due, wherever the ticks fall on the chunk's grid: the new chunk reaches
the controller while the current one still has a point ahead, so the hand-over never leaves it without a
target. (With "one tick before the last point", a tick 1 ms before each point inferred 1 ms before the end:
the controller ran out of points before the new chunk arrived and held, in CI on the loaded 2-core VM; with
1.5 periods the worst case left half a period, 25 ms at 20 Hz, for inference and transport on that machine.)

Every chunk sent is stamped later than the one before it (an inferred chunk drops its points up to the last
stamp sent): the controller ignores an older-or-equal stamp, so an equal one would waste the new plan.

After a stale or missing input no chunk is published until `resume_after_fresh_ticks` consecutive ticks had a
fresh, complete observation (`dm1.policy.observation.ResumeGate`; reliability row 1); activation starts at
the first fresh observation.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from dm1.policy.ensemble import ChunkEnsembler
from dm1.policy.observation import Observation, ResumeGate, StaleReason
from dm1.runtime import OutputError

MODES: tuple[str, ...] = ("replan_every_tick", "chunk_then_replan")
KINDS: tuple[str, ...] = ("ok", "stale", "recovering", "nonfinite", "error", "late", "executing")
LEDGER_FIELDS: tuple[str, ...] = ("received_ms", "tick_ms", "preprocessed_ms", "inferred_ms", "published_ms")
#: `chunk_then_replan` infers on the tick from which the current chunk's last point is due within this many
#: periods (see the module docstring): between 1.5 and 2.5 periods of margin for the new chunk to arrive.
HANDOVER_TICKS = 2.5


@dataclass(frozen=True)
class ActionChunk:
    """Actions with absolute times: point j is due at ``t0 + j * dt``."""

    t0: float  # absolute time of actions[0] [s, node clock]
    dt: float  # 1 / control rate [s]
    actions: np.ndarray  # (N, Da) float32, N <= chunk_length
    first_index: int  # index of actions[0] in the model's output chunk
    obs_stamp: float
    space: str
    names: tuple[str, ...]

    @property
    def times(self) -> np.ndarray:
        """Absolute due time of each point (N,)."""
        return self.t0 + np.arange(len(self.actions)) * self.dt

    @property
    def end_time(self) -> float:
        """Due time of the last point."""
        return float(self.t0 + (len(self.actions) - 1) * self.dt)


@dataclass
class LatencyLedger:
    """Milliseconds since the oldest capture stamp of the observation, per stage (cumulative).

    capture → received (last stream arrived) → tick (control tick began) → preprocessed (observation
    assembled) → inferred (onnxruntime returned) → published. The first two use the node clock (sim time on
    the twin); the processing stages are measured with a monotonic clock and added on top.
    """

    capture_stamp: float
    received_ms: float
    tick_ms: float
    preprocessed_ms: float
    inferred_ms: float
    published_ms: float = float("nan")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class StepOutcome:
    """Result of one tick: a chunk to publish, or the reason there is none."""

    chunk: ActionChunk | None
    reason: str | None
    ledger: LatencyLedger | None = None
    kind: str = "ok"  # one of KINDS (or "drill", from the session)
    _t_inferred: float = 0.0


class PolicyStep:
    """Runs the policy on observations and times its chunks.

    Args:
        runtime: a `dm1.runtime.PolicyRuntime` (anything with `.card` and `.predict(images, proprio, noise)`).
        clock: node time [s] (ROS time; simulation time on the twin).
        mode: one of `MODES`.
        control_rate_hz: spacing of the chunk; None → the card's `action.control_rate_hz`.
        seed: seed of the MeanFlow noise generator (None → random).
        noise_scale: scale of the noise ε fed to the one-step sampler (1 = the trained distribution, 0 = its
            deterministic centre; a sampling temperature).
        ensemble_alpha: temporal ensembling of overlapping chunks (`dm1.policy.ensemble`): weight of the
            newest prediction in (0, 1]; 1 = off (each chunk as inferred).
        resume_after_fresh_ticks: after a stale tick, fresh ticks in a row before the next chunk (1..100).
        perf: monotonic clock for processing durations.
        history: ledgers kept for the latency summary.
    """

    def __init__(
        self,
        runtime: Any,
        clock: Callable[[], float],
        mode: str = "replan_every_tick",
        control_rate_hz: float | None = None,
        seed: int | None = None,
        perf: Callable[[], float] = time.perf_counter,
        history: int = 200,
        noise_scale: float = 1.0,
        ensemble_alpha: float = 1.0,
        resume_after_fresh_ticks: int = 3,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"PolicyStep.mode: expected one of {list(MODES)}, found {mode!r}")
        card = runtime.card
        rate = card.action.control_rate_hz if control_rate_hz is None else control_rate_hz
        if not (np.isfinite(rate) and rate > 0):
            raise ValueError(f"PolicyStep.control_rate_hz: expected a positive finite number, found {rate!r}")
        self.runtime, self.clock, self.perf, self.mode = runtime, clock, perf, mode
        self.dt = 1.0 / float(rate)
        self.space: str = card.action.space
        self.names: tuple[str, ...] = tuple(card.action.names)
        self.out_shape = (int(card.action.chunk_length), len(self.names))
        self.noise_shape = tuple(card.noise_shape)
        if not (np.isfinite(noise_scale) and 0.0 <= noise_scale <= 1.0):
            raise ValueError(f"PolicyStep.noise_scale: expected a number in [0, 1], found {noise_scale!r}")
        self.noise_scale = float(noise_scale)
        self.rng = np.random.default_rng(seed)
        self.ensembler = ChunkEnsembler(ensemble_alpha)
        self.gate = ResumeGate(resume_after_fresh_ticks)
        self.ledgers: deque[LatencyLedger] = deque(maxlen=history)
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.stale_streams: dict[str, int] = {}  # stream -> ticks without an observation because of it
        self.last_reason: str | None = None
        self.current: ActionChunk | None = None
        self._last_sent_t0 = -np.inf  # stamp (first point's time) of the last chunk sent, inferred or not

    def reset(self) -> None:
        """Forget the chunk being executed and the input history (on activation / deactivation)."""
        self.current = None
        self._last_sent_t0 = -np.inf  # also after the clock jumped back: stamps start again from there
        self.ensembler.reset()
        self.gate.reset()

    def wants_inference(self, now: float) -> bool:
        """In `chunk_then_replan`, False while the current chunk's last point lies `HANDOVER_TICKS` periods
        or more ahead of `now` (see the module docstring)."""
        if self.mode == "replan_every_tick" or self.current is None:
            return True
        return self.current.end_time < now + HANDOVER_TICKS * self.dt

    def run(self, obs: Observation | StaleReason, preprocess_ms: float = 0.0) -> StepOutcome:
        """Infer one chunk from `obs`, send the current one's remainder (`chunk_then_replan`), or account for
        a tick without a chunk (a stale input, a recovery not yet over)."""
        if isinstance(obs, StaleReason):
            self.stale_streams[obs.stream] = self.stale_streams.get(obs.stream, 0) + 1
            self.gate.update(False)
            return self._fail("stale", str(obs))
        if (recovering := self.gate.update(True)) is not None:
            return self._fail("recovering", recovering)
        now = self.clock()
        if not self.wants_inference(now):
            return self.remainder(now)
        received_ms = (max(obs.received.values()) - obs.oldest_stamp) * 1e3
        tick_ms = (now - obs.oldest_stamp) * 1e3
        noise = self.noise_scale * self.rng.standard_normal(self.noise_shape, dtype=np.float32)  # (Ta, Da)
        t_start = self.perf()
        try:
            actions = np.asarray(self.runtime.predict(obs.images, obs.proprio, noise=noise))  # (Ta, Da)
        except OutputError as exc:  # the runtime's own NaN/Inf check
            return self._fail("nonfinite", f"inference rejected: {exc}")
        except Exception as exc:  # noqa: BLE001 - any model failure must hold the robot, never crash the node
            kind = "error"
            return self._fail(kind, f"inference failed: {type(exc).__name__}: {exc}")
        t_inferred = self.perf()
        if actions.shape != self.out_shape:
            return self._fail("error", f"actions: expected shape {self.out_shape}, found {actions.shape}")
        if not np.all(np.isfinite(actions)):
            return self._fail("nonfinite", f"actions: {int(np.sum(~np.isfinite(actions)))} NaN/Inf values")
        k = max(0, int(np.floor((now - obs.stamp) / self.dt)) + 1)  # first tick strictly after `now`
        while k > 0 and obs.stamp + (k - 1) * self.dt > now:  # float guard
            k -= 1
        while obs.stamp + k * self.dt <= self._last_sent_t0 + 1e-6 * self.dt:  # newer than the last sent
            k += 1
        if k >= self.out_shape[0]:
            return self._fail(
                "late",
                f"all {self.out_shape[0]} actions are past due or not after the last chunk sent "
                f"({(now - obs.stamp) * 1e3:.0f} ms since the observation)",
            )
        chunk = ActionChunk(
            t0=obs.stamp + k * self.dt,
            dt=self.dt,
            actions=actions[k:].astype(np.float32),
            first_index=k,
            obs_stamp=obs.stamp,
            space=self.space,
            names=self.names,
        )
        chunk = self.ensembler.blend(chunk)
        pre = tick_ms + preprocess_ms
        ledger = LatencyLedger(
            obs.oldest_stamp, received_ms, tick_ms, pre, pre + (t_inferred - t_start) * 1e3
        )
        self.current, self._last_sent_t0 = chunk, chunk.t0
        self.counts["ok"] += 1
        self.last_reason = None
        return StepOutcome(chunk, None, ledger, "ok", t_inferred)

    def remainder(self, now: float) -> StepOutcome:
        """A tick of `chunk_then_replan` between inferences: the current chunk's points due after `now`,
        re-stamped to the first of them (same absolute times and actions, `first_index` advanced).

        Each tick starts one point later than the last chunk sent at least: a tick that comes before that
        chunk's first point is due (the timer's jitter against the observation's stamp, a few ms) leaves that
        point out, so the stamp is newer and the controller accepts it (it blends to the next point). Sending
        nothing instead would leave the stream silent for two periods, the controller's chunk watchdog."""
        self.counts["executing"] += 1
        cur = self.current
        if cur is None:
            return StepOutcome(None, "no chunk to execute", None, "executing")
        # the first point after `now` and after the first point of the last chunk sent (one of `cur`'s own
        # times, bit for bit: the chunk inferred, or a remainder sent since)
        i = int(np.searchsorted(cur.times, max(now, self._last_sent_t0), side="right"))
        if i >= len(cur.actions):
            return StepOutcome(None, "executing the current chunk (no point left to send)", None, "executing")
        self._last_sent_t0 = float(cur.times[i])
        rest = replace(cur, t0=float(cur.times[i]), actions=cur.actions[i:], first_index=cur.first_index + i)
        return StepOutcome(rest, None, None, "executing")

    def mark_published(self, outcome: StepOutcome) -> LatencyLedger | None:
        """Close the ledger of a published chunk (call right after `publish`)."""
        if outcome.ledger is None:
            return None
        outcome.ledger.published_ms = outcome.ledger.inferred_ms + (self.perf() - outcome._t_inferred) * 1e3
        self.ledgers.append(outcome.ledger)
        return outcome.ledger

    def latency_summary(self) -> dict[str, float]:
        """Median and p95 of every ledger stage over the recent history (ms)."""
        out: dict[str, float] = {}
        if not self.ledgers:
            return out
        for f in LEDGER_FIELDS:
            vals = np.array([getattr(led, f) for led in self.ledgers])
            out[f"{f}_median"] = float(np.median(vals))
            out[f"{f}_p95"] = float(np.percentile(vals, 95))
        return out

    def _fail(self, kind: str, reason: str) -> StepOutcome:
        """No chunk this tick: the controller holds, and the next chunk is inferred afresh (not blended, and
        in `chunk_then_replan` not the rest of the one the hold cut)."""
        self.counts[kind] += 1
        self.last_reason = reason
        self.ensembler.reset()
        self.current = None
        return StepOutcome(None, reason, None, kind)
