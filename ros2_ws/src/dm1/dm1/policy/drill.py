"""Fault drills: break one input or output of the running policy for a while and watch the arm hold.

On the twin and on the real robot alike (peer-features §4.11: fault injection beyond simulation), an operator
checks the whole safety chain with the arm under policy control: `dm1 operator drill --drill nan_output`
sets the policy node's `drill` parameter, records `/joint_states` and reports how soon the arm stood still
(`analyze_hold`). Every drill fails toward a hold, through the same code a real fault takes:

    freeze_camera:<name>   that camera's frames are dropped: its stream goes stale → the policy publishes an
                           explicit hold (the empty chunk)
    nan_output             the model's output becomes NaN → the chunk is rejected → explicit hold
    stall_inference[:<s>]  each inference hangs <s> seconds (default 0.5; of the node's clock: simulated
                           seconds on the twin) before returning: chunks stop or come late → the
                           controller's watchdog holds
    silence                the policy publishes nothing at all, not even a hold → the controller's watchdog
                           and the chunk topic's QoS deadline hold
    late_chunks            each chunk is held back until its last action is one tick past, then sent unchanged
                           (a network delay or an inference over its budget): the controller refuses every one
                           as late (never executes a stale action), its watchdog holds, and after
                           `max_consecutive_late` in a row it latches a fault ("over budget")

A drill ends by itself after its duration; the policy then infers again and the arm moves on. Except
`late_chunks`: the fault it provokes deactivates the policy, and the operator recovers (`dm1 operator
recover`, then `activate`) as after any latched fault.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DRILL_KINDS: tuple[str, ...] = ("freeze_camera", "nan_output", "stall_inference", "silence", "late_chunks")
#: Drills whose right answer is a latched controller fault (not in `--drill all`: recovery is the operator's).
LATCHING_DRILLS: tuple[str, ...] = ("late_chunks",)
DEFAULT_STALL_S = 0.5
#: A shorter stall stays within the controller's chunk watchdog (0.1 s) and the chunks already sent.
MIN_STALL_S = 0.2
#: Policy node parameters that start a drill (changed at run time, unlike `NODE_PARAMETERS`).
DRILL_PARAMETERS: dict[str, tuple[Any, str, tuple[float, float] | None]] = {
    "drill": (
        "",
        "fault drill to start now (active node only): freeze_camera:<name> | nan_output | "
        "stall_inference[:<s>] | silence | late_chunks; '' = none",
        None,
    ),
    "drill_duration_s": (1.0, "how long a drill lasts [s, node clock]", (0.05, 30.0)),
}


@dataclass(frozen=True)
class Drill:
    """One drill: `kind` from `started` to `until` (node clock, s)."""

    kind: str
    started: float
    until: float
    camera: str | None = None
    stall_s: float = 0.0

    def active(self, now: float) -> bool:
        return self.started <= now < self.until

    @property
    def label(self) -> str:
        """The drill as it was asked for: `freeze_camera:front`, `stall_inference:0.5`, `nan_output`."""
        if self.kind == "freeze_camera":
            return f"{self.kind}:{self.camera}"
        return f"{self.kind}:{self.stall_s:g}" if self.kind == "stall_inference" else self.kind

    def describe(self) -> str:
        """`label for D s started=T` (T: node clock; `dm1 operator drill` reads it back)."""
        return f"{self.label} for {self.until - self.started:g} s started={self.started:.6f}"


def parse_drill(spec: str, cameras: Sequence[str], now: float, duration_s: float) -> Drill | None:
    """`spec` (the `drill` parameter) → a Drill starting `now`; '' → None. ValueError names what is wrong."""
    spec = spec.strip()
    if not spec:
        return None
    kind, _, arg = spec.partition(":")
    if kind not in DRILL_KINDS:
        raise ValueError(f"drill: expected one of {list(DRILL_KINDS)} (with ':<arg>'), found {spec!r}")
    if not (np.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"drill_duration_s: expected a positive number of seconds, found {duration_s!r}")
    until = now + float(duration_s)
    if kind == "freeze_camera":
        if arg not in cameras:
            raise ValueError(
                f"drill freeze_camera: expected one of the cameras {list(cameras)}, found {arg!r}"
            )
        return Drill(kind, now, until, camera=arg)
    if kind == "stall_inference":
        try:
            stall = float(arg) if arg else DEFAULT_STALL_S
        except ValueError:
            stall = float("nan")
        if not (np.isfinite(stall) and MIN_STALL_S <= stall <= 10):
            raise ValueError(
                f"drill stall_inference: expected a stall of {MIN_STALL_S:g}..10 s (shorter ones are "
                f"absorbed by the chunks already sent: nothing to hold), found {arg!r}"
            )
        return Drill(kind, now, until, stall_s=stall)
    if arg:
        raise ValueError(f"drill {kind}: takes no argument, found {arg!r}")
    return Drill(kind, now, until)


def drill_request(changes: dict[str, Any], session: Any, duration_s: float) -> tuple[bool, str]:
    """A parameter change on the policy node → (accepted, reason). A `drill` value starts that drill on
    `session` (a `PolicySession`; None while the node is not active: refused) for `drill_duration_s` from
    the same change, else `duration_s`; '' ends a running drill. Changes without `drill` pass (True, '')."""
    if "drill" not in changes:
        return True, ""
    if session is None:
        return False, "drills run only while the policy is active"
    try:
        drill = session.start_drill(str(changes["drill"]), float(changes.get("drill_duration_s", duration_s)))
    except ValueError as exc:
        return False, str(exc)
    return True, f"fault drill: {drill.describe()}" if drill else "fault drill ended"


class DrilledRuntime:
    """Wraps a runtime: while the current drill says so, `predict` first hangs or returns NaN.

    A stall blocks the calling thread, as a hung inference would, for `stall_s` seconds of the node's clock:
    on the robot the wall clock; on the twin simulated time, whose rate the wall sleep is scaled by (the
    simulation's real-time factor, measured from the calls' node and wall times over the last seconds). A
    0.5 s wall sleep at a real-time factor of 0.5 was only 0.25 s of the simulated world's time: the chunk
    then came back with actions still ahead and the arm moved between the stalls.

    Args:
        runtime: the real runtime (`.card`, `.predict(images, proprio, noise=...)`).
        current: the drill active now, or None.
        sleep: how a stall waits (wall time).
        clock: the node's clock [s]; None = the wall clock (no scaling).
        wall: the wall clock [s] the rate is measured against.
    """

    RATE_WINDOW_S = 2.0  # wall seconds of calls the real-time factor is measured over
    RATE_BOUNDS = (0.05, 2.0)  # a measured factor outside is clipped: a stall never lasts 20x its length

    def __init__(
        self,
        runtime: Any,
        current: Callable[[], Drill | None],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime, self.current, self.sleep = runtime, current, sleep
        self.clock, self.wall = clock, wall
        self.card = runtime.card
        self._samples: deque[tuple[float, float]] = deque()  # (wall, node) at each call, oldest first
        self._factor = 1.0  # the last measured real-time factor (kept through stalls, which pause sampling)

    def real_time_factor(self) -> float:
        """Node seconds per wall second over the recent calls; the last such measure while there are fewer
        than two samples since a stall (1 before any, or without a node clock)."""
        if self.clock is not None and len(self._samples) >= 2:
            (w0, n0), (w1, n1) = self._samples[0], self._samples[-1]
            if w1 - w0 > 0.0:
                self._factor = float(np.clip((n1 - n0) / (w1 - w0), *self.RATE_BOUNDS))
        return self._factor

    def predict(self, images: Any, proprio: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        if self.clock is not None:
            wall_now, node_now = self.wall(), self.clock()
            if self._samples and node_now < self._samples[-1][1]:
                self._samples.clear()  # the clock jumped back (a simulation reset)
            self._samples.append((wall_now, node_now))
            while wall_now - self._samples[0][0] > self.RATE_WINDOW_S:
                self._samples.popleft()
        drill = self.current()
        if drill is not None and drill.kind == "stall_inference":
            self.sleep(drill.stall_s / self.real_time_factor())
            self._samples.clear()  # the node clock stood still meanwhile: not a rate sample
        actions = np.asarray(self.runtime.predict(images, proprio, noise=noise))  # (Ta, Da)
        if drill is not None and drill.kind == "nan_output":
            return np.full_like(actions, np.nan)
        return actions


@dataclass
class HoldReport:
    """How the arm answered a drill, from joint speeds (max |dq| over the joints) stamped in node time."""

    drill: str
    started: float
    duration_s: float
    speed_before: float  # median speed in the half second before the drill (rad/s)
    hold_latency_s: float | None  # from the start until the arm stood still for the rest of the drill
    max_speed_held: float | None  # fastest joint after `max_hold_s`, until the drill ended
    held: bool
    resumed_after_s: float | None  # after the drill ended, until the arm moved again (None: not seen)
    still_speed: float
    max_hold_s: float
    conclusive: bool  # the arm moved before the drill (else a hold proves nothing)

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def summary(self) -> str:
        if self.hold_latency_s is None:
            verdict = f"NOT HELD: the arm never stood still (< {self.still_speed:g} rad/s) during the drill"
        else:
            ms, limit = 1e3 * self.hold_latency_s, 1e3 * self.max_hold_s
            verdict = f"{'held' if self.held else 'held TOO LATE'}: still {ms:.0f} ms after the start"
            verdict += f" (limit {limit:.0f} ms)"
        moving = f"speed before {self.speed_before:.3f} rad/s"
        if not self.conclusive:
            moving += " (INCONCLUSIVE: the arm was not moving before the drill)"
        resumed = (
            "" if self.resumed_after_s is None else f", moving again {self.resumed_after_s:.2f} s after it"
        )
        return f"drill {self.drill} ({self.duration_s:g} s): {verdict}; {moving}{resumed}"


def analyze_hold(
    stamps: Sequence[float],
    speeds: Sequence[float],
    drill: str,
    started: float,
    duration_s: float,
    still_speed: float = 0.02,
    max_hold_s: float = 0.5,
    moving_speed: float = 0.05,
) -> HoldReport:
    """Judge a drill from joint speeds: held when the arm stands still (< `still_speed`) from at most
    `max_hold_s` after `started` until the drill ends. Raises ValueError when the samples do not cover it."""
    t, v = np.asarray(stamps, dtype=float), np.asarray(speeds, dtype=float)  # (N,), (N,)
    end = started + duration_s
    if len(t) == 0 or t[-1] < end:
        last = f"{t[-1]:.3f}" if len(t) else "none"
        raise ValueError(f"joint states: expected samples until the drill's end {end:.3f}, found last {last}")
    before = v[(t >= started - 0.5) & (t < started)]
    speed_before = float(np.median(before)) if len(before) else float("nan")
    during = (t >= started) & (t <= end)
    latency = None
    moving = np.flatnonzero(during & (v >= still_speed))
    after_last_motion = t[moving[-1] + 1 :] if len(moving) else t[during]
    candidates = after_last_motion[after_last_motion <= end]
    if len(candidates):
        latency = float(max(candidates[0], started) - started)
    late = during & (t >= started + max_hold_s)
    resumed = np.flatnonzero((t > end) & (v >= moving_speed))
    return HoldReport(
        drill=drill,
        started=started,
        duration_s=duration_s,
        speed_before=speed_before,
        hold_latency_s=latency,
        max_speed_held=float(v[late].max()) if late.any() else None,
        held=latency is not None and latency <= max_hold_s,
        resumed_after_s=float(t[resumed[0]] - end) if len(resumed) else None,
        still_speed=still_speed,
        max_hold_s=max_hold_s,
        conclusive=bool(speed_before >= moving_speed),
    )
