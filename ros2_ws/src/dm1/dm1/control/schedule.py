"""Timestamped action chunks: `TimedChunk`, `Watchdog` and `ChunkSchedule` (latest wins, drop past actions).

A chunk's point i executes at the absolute time `stamp + time_from_start[i]` (node clock, simulation time on
the twin). `ChunkSchedule.target_at(now)` interpolates linearly between the two points around `now`, so the
target moves continuously across chunk boundaries; it returns None (the watchdog: hold) when the newest chunk
was received longer than `chunk_timeout_s` ago or all of its points lie in the past. Before a chunk's first
point is due the target blends from where it was (the running target, or the arm's hold target) to that
point, reaching it exactly at its time; with neither, it holds (None) until the first point is due.
Only positions (and orientations, gripper commands) and their times are used: a trajectory point's
velocities / accelerations are ignored (timing comes from `time_from_start`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dm1.control.backend import RobotBackend, RobotStateSnapshot

#: Most points a chunk may hold (a policy chunk has 8-16): a 20,000-point one stalled the controller's
#: executor while its message was converted point by point. Checked before that conversion too.
MAX_CHUNK_POINTS = 1000
#: s; the longest chunk (`time_from_start[-1]`) accepted: a policy's chunk spans 0.8-1.6 s, teleop's less; a
#: 20 s one (a stale stream replayed) is no policy output and is refused.
MAX_CHUNK_SPAN_S = 10.0
#: A quaternion whose norm differs from 1 by more than this is refused, not normalised: norm 0.002 (noise) or
#: 5 (not a rotation) named a different orientation than meant. The policy's card holds a unit quaternion
#: (checked to 1e-3); within the tolerance the orientation is normalised.
QUAT_NORM_TOL = 0.01
#: Gripper commands up to this far outside [0, 1] are clipped into it (a policy's de-normalised output:
#: 1 + 1e-6 from the normaliser's EPS, [-1, 1] for the reference random-weight network; the thresholds act
#: alike on both); further out (5.0, a width in mm) the chunk is refused.
GRIPPER_CLIP_MARGIN = 1.0


def _first_outside(values: np.ndarray, ok: np.ndarray) -> int | None:
    """Index of the first finite value whose `ok` is False, else None (non-finite ones are the executor's)."""
    bad = np.flatnonzero(np.isfinite(values) & ~ok)
    return int(bad[0]) if bad.size else None


def quaternion_norms(quat: np.ndarray) -> np.ndarray:
    """(N,) norms of (N, 4) quaternions without overflow (scaled by the largest component first): 1e200 is
    1e200, not inf; NaN where a component is not finite (the executor's to count)."""
    finite = np.all(np.isfinite(quat), axis=1)
    q = np.where(finite[:, None], quat, 0.0)
    mag = np.max(np.abs(q), axis=1)  # (N,)
    scaled = q / np.where(mag > 0, mag, 1.0)[:, None]  # components in [-1, 1]
    with np.errstate(over="ignore"):
        norms = mag * np.sqrt(np.sum(scaled * scaled, axis=1))  # inf only beyond float range
    return np.where(finite, norms, np.nan)


@dataclass(frozen=True)
class TimedChunk:
    """One chunk of N timed targets.

    stamp: absolute time (s) of the first action; time_from_start: (N,) s, strictly increasing from 0;
    positions: (N, D) targets (D = 3 EE position m, or 7 joint rad); gripper: (N,) command in [0, 1];
    quat_xyzw: (N, 4) EE orientation (cartesian chunks) or None; kind: "cartesian" | "joint".
    Shapes, N <= `MAX_CHUNK_POINTS`, times from 0, strictly increasing and spanning at most
    `MAX_CHUNK_SPAN_S`, unit quaternions (within `QUAT_NORM_TOL`; normalised) and gripper commands (clipped
    into [0, 1] within `GRIPPER_CLIP_MARGIN`) are validated here (ValueError);
    finiteness is checked by the executor (so NaN chunks are counted, not raised).
    """

    stamp: float
    time_from_start: np.ndarray
    positions: np.ndarray
    gripper: np.ndarray
    kind: str = "cartesian"
    quat_xyzw: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.time_from_start, dtype=float)
        pos = np.asarray(self.positions, dtype=float)
        grip = np.asarray(self.gripper, dtype=float)
        dim = {"cartesian": 3, "joint": 7}.get(self.kind)
        if dim is None:
            raise ValueError(f"TimedChunk.kind: expected 'cartesian' or 'joint', found {self.kind!r}")
        if t.ndim != 1 or t.size == 0:
            raise ValueError(f"TimedChunk.time_from_start: expected shape (N>0,), found {t.shape}")
        if t.size > MAX_CHUNK_POINTS:
            raise ValueError(
                f"TimedChunk.time_from_start: expected at most {MAX_CHUNK_POINTS} points, found {t.size}"
            )
        if pos.shape != (t.size, dim):
            raise ValueError(f"TimedChunk.positions: expected shape ({t.size}, {dim}), found {pos.shape}")
        if grip.shape != (t.size,):
            raise ValueError(f"TimedChunk.gripper: expected shape ({t.size},), found {grip.shape}")
        if np.all(np.isfinite(t)) and (i := _first_outside(np.diff(t), np.diff(t) > 0)) is not None:
            raise ValueError(
                f"TimedChunk.time_from_start[{i + 1}]: expected strictly increasing times, found "
                f"{t[i + 1]} after {t[i]}"
            )
        if np.isfinite(t[0]) and t[0] < 0:
            raise ValueError(f"TimedChunk.time_from_start[0]: expected >= 0 s (times from 0), found {t[0]}")
        if np.isfinite(t[-1]) and t[-1] > MAX_CHUNK_SPAN_S:
            raise ValueError(
                f"TimedChunk.time_from_start[-1]: expected a chunk spanning at most {MAX_CHUNK_SPAN_S:g} s, "
                f"found {t[-1]:.3f} s"
            )
        lo, hi = -GRIPPER_CLIP_MARGIN, 1.0 + GRIPPER_CLIP_MARGIN
        if (i := _first_outside(grip, (grip >= lo) & (grip <= hi))) is not None:
            raise ValueError(
                f"TimedChunk.gripper[{i}]: expected a command in [0, 1] (within {GRIPPER_CLIP_MARGIN:g} "
                f"of it clipped), found {grip[i]}"
            )
        grip = np.clip(grip, 0.0, 1.0)  # NaN stays NaN
        quat = None
        if self.quat_xyzw is not None:
            quat = np.asarray(self.quat_xyzw, dtype=float)
            if quat.shape != (t.size, 4):
                raise ValueError(f"TimedChunk.quat_xyzw: expected shape ({t.size}, 4), found {quat.shape}")
            norms = quaternion_norms(quat)  # (N,) NaN where a component is not finite
            unit = np.abs(norms - 1.0) <= QUAT_NORM_TOL  # False for an inf norm
            if (i := _first_outside(np.where(np.isnan(norms), np.nan, 0.0), unit)) is not None:
                raise ValueError(
                    f"TimedChunk.quat_xyzw[{i}]: expected a unit quaternion (|norm - 1| <= "
                    f"{QUAT_NORM_TOL:g}), found norm {norms[i]:.3g} ({quat[i].tolist()})"
                )
            quat = quat / np.where(np.isnan(norms), 1.0, norms)[:, None]  # NaN rows stay NaN
        object.__setattr__(self, "stamp", float(self.stamp))
        object.__setattr__(self, "time_from_start", t)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "gripper", grip)
        object.__setattr__(self, "quat_xyzw", quat)

    @property
    def times(self) -> np.ndarray:
        """(N,) absolute execution times (s)."""
        return self.stamp + self.time_from_start


@dataclass(frozen=True)
class ScheduledTarget:
    """Interpolated target at one instant: position (D,), velocity (D,) per s, gripper, quat (4,) or None.
    A hold target (`ChunkSchedule.offer`) may carry a NaN gripper: not known, the chunk's first is used."""

    position: np.ndarray
    velocity: np.ndarray
    gripper: float
    quat_xyzw: np.ndarray | None


class Watchdog:
    """Freshness timer on an injected clock: `kick(now)` on fresh input; `expired(now)` after the timeout."""

    def __init__(self, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"Watchdog.timeout_s: expected > 0, found {timeout_s}")
        self.timeout_s = timeout_s
        self.last_kick = -np.inf

    def kick(self, now: float) -> None:
        """Record fresh input at time `now`."""
        self.last_kick = now

    def reset(self) -> None:
        """Forget the last input (expired until the next kick)."""
        self.last_kick = -np.inf

    def expired(self, now: float) -> bool:
        """True when no input arrived within `timeout_s` before `now`."""
        return now - self.last_kick > self.timeout_s


class ChunkSchedule:
    """Holds the newest accepted chunk and answers "what is the target now?"."""

    ACCEPTED = "accepted"
    OLDER = "older_stamp"
    FUTURE = "too_far_in_future"
    STALE = "too_old"
    LATE = "late"

    def __init__(self, chunk_timeout_s: float, max_future_s: float, max_age_s: float = 1.0) -> None:
        if not chunk_timeout_s > 0 or not max_future_s > 0 or not max_age_s > 0:
            raise ValueError(
                f"ChunkSchedule: expected chunk_timeout_s > 0, max_future_s > 0 and max_age_s > 0, "
                f"found {chunk_timeout_s}, {max_future_s}, {max_age_s}"
            )
        self.chunk_timeout_s = chunk_timeout_s
        self.max_future_s = max_future_s
        self.max_age_s = max_age_s
        self.watchdog = Watchdog(chunk_timeout_s)
        self._chunk: TimedChunk | None = None
        # Where the target was when the newest chunk arrived: the blend starts there, so a new chunk whose
        # first point lies one period ahead does not make the target jump (prefix-consistent hand-over).
        self._anchor: tuple[float, ScheduledTarget] | None = None

    @property
    def chunk(self) -> TimedChunk | None:
        """The newest accepted chunk (None after `clear()`)."""
        return self._chunk

    def clear(self) -> None:
        """Forget the current chunk (the next target is None until a new chunk arrives)."""
        self._chunk = None
        self._anchor = None
        self.watchdog.reset()

    def offer(
        self, chunk: TimedChunk, now: float, hold: Callable[[], ScheduledTarget | None] | None = None
    ) -> str:
        """Offer a chunk received at `now`; returns ACCEPTED or the reason it was ignored.

        An older-or-equal stamp than the current chunk is ignored (latest wins); a chunk whose first action is
        more than `max_future_s` ahead is refused; a chunk whose every action already passed is LATE; one
        stamped more than `max_age_s` before `now` (a stale stream) is STALE.

        `hold`: returns where the arm is held (its measured pose), asked only when no target is running and
        the chunk's first point lies ahead: the chunk then blends from there and reaches the point at its
        time. Without a running target or a hold target the target is None (hold) until the first point is
        due: it never jumps ahead.
        """
        if self._chunk is not None and chunk.stamp <= self._chunk.stamp:
            return self.OLDER
        times = chunk.times
        if times[0] - now > self.max_future_s:
            return self.FUTURE
        if times[-1] < now:
            return self.LATE
        if now - chunk.stamp > self.max_age_s:
            return self.STALE
        start = None
        if now < times[0]:  # the first point lies ahead: blend to it from the running target or the hold
            start = self.target_at(now)
            if start is None and hold is not None:
                start = hold()
        self._anchor = None if start is None else (now, start)
        self._chunk = chunk
        self.watchdog.kick(now)
        return self.ACCEPTED

    def waiting(self, now: float) -> bool:
        """Whether a fresh chunk is waiting for its first point, with nothing to blend from (target None)."""
        chunk = self._chunk
        return (
            chunk is not None
            and self._anchor is None
            and not self.watchdog.expired(now)
            and now < float(chunk.times[0])
        )

    def no_target_reason(self, now: float) -> str:
        """Why `target_at(now)` is None (the hold's reason): no chunk, the watchdog, or the chunk ran out."""
        chunk = self._chunk
        if chunk is None:
            return "no chunk"
        if self.watchdog.expired(now):
            since = 1e3 * (now - self.watchdog.last_kick)
            return f"watchdog: no fresh chunk for {since:.0f} ms (limit {1e3 * self.chunk_timeout_s:.0f} ms)"
        late = 1e3 * (now - float(chunk.times[-1]))
        return f"chunk ran out: its last point was due {late:.0f} ms ago and no newer chunk came"

    def target_at(self, now: float) -> ScheduledTarget | None:
        """Interpolated target at `now`, or None when there is no fresh chunk (watchdog -> hold)."""
        chunk = self._chunk
        if chunk is None or self.watchdog.expired(now):
            return None
        times = chunk.times
        if now > times[-1]:
            return None
        # Points before `now` are dropped: i = index of the last point at or before now (bracket [i, i+1]).
        i = int(np.searchsorted(times, now, side="right")) - 1
        if i < 0 and self._anchor is not None:  # blend from the hand-over target to the first point
            return _blend(self._anchor, now, chunk)
        if i < 0:  # the chunk starts in the (near) future with nothing to blend from: hold until it is due
            return None
        j = min(i + 1, times.size - 1)
        span = times[j] - times[i]
        f = 0.0 if span <= 0 else (now - times[i]) / span
        pos = (1.0 - f) * chunk.positions[i] + f * chunk.positions[j]  # (D,)
        vel = np.zeros_like(pos) if span <= 0 else (chunk.positions[j] - chunk.positions[i]) / span
        grip = chunk.gripper[i] if f < 0.5 else chunk.gripper[j]
        quat = None
        if chunk.quat_xyzw is not None:
            qa, qb = chunk.quat_xyzw[i], chunk.quat_xyzw[j]
            qb = qb if np.dot(qa, qb) >= 0 else -qb  # shortest path; nlerp is enough between nearby points
            quat = (1.0 - f) * qa + f * qb
        return ScheduledTarget(pos, vel, float(grip), quat)


def _blend(anchor: tuple[float, ScheduledTarget], now: float, chunk: TimedChunk) -> ScheduledTarget:
    """Linear blend from the target at hand-over time `anchor` to the chunk's first point at `now`."""
    t0, start = anchor
    t1 = float(chunk.times[0])
    f = 0.0 if t1 <= t0 else min(max((now - t0) / (t1 - t0), 0.0), 1.0)
    end = chunk.positions[0]
    pos = (1.0 - f) * start.position + f * end  # (D,)
    vel = np.zeros_like(pos) if t1 <= t0 else (end - start.position) / (t1 - t0)
    quat = None
    if chunk.quat_xyzw is not None:
        qb = chunk.quat_xyzw[0]
        qa = qb if start.quat_xyzw is None else start.quat_xyzw
        qb = qb if np.dot(qa, qb) >= 0 else -qb
        quat = (1.0 - f) * qa + f * qb
    grip = (
        start.gripper if f < 0.5 and np.isfinite(start.gripper) else float(chunk.gripper[0])
    )  # NaN: unknown
    return ScheduledTarget(pos, vel, float(grip), quat)


def measured_target(state: RobotStateSnapshot, mode: str, gripper_closed: bool | None) -> ScheduledTarget:
    """The arm's measured pose as a still target (joint q (7,) in "joint" mode, else EE position (3,) and
    orientation), with the commanded gripper (NaN when none was commanded yet: a blend then takes the
    chunk's own)."""
    grip = np.nan if gripper_closed is None else float(gripper_closed)
    if mode == "joint":
        return ScheduledTarget(np.array(state.q, float), np.zeros(7), grip, None)
    return ScheduledTarget(
        np.array(state.ee_pos, float), np.zeros(3), grip, np.array(state.ee_quat_xyzw, float)
    )


def hold_target(backend: RobotBackend, mode: str, gripper_closed: bool | None) -> ScheduledTarget | None:
    """Where the arm is held now (its measured pose, `measured_target`; the commanded gripper), for a chunk
    that starts ahead to blend from (`ChunkSchedule.offer`); None when the robot is faulted or its state
    cannot be read (the chunk then waits for its first point; the next control tick latches the fault)."""
    try:
        state = backend.read_state()
    except Exception:  # noqa: BLE001 - the next tick latches it; meanwhile the chunk waits for its time
        return None
    return None if state.fault is not None else measured_target(state, mode, gripper_closed)
