"""Observation assembly: newest camera frames + joint state → one synchronised, fresh policy input (no ROS).

Rules (reliability-tests.md rows 1 and 2):
- every stream the model card needs (each camera + the joint state) must have a frame;
- each frame must be younger than its age limit (`max_age_s`, overridable per camera);
- the newest frames of all streams must lie within `sync_tolerance_s` of each other;
- stamps must not run backwards within a stream, nor lie clearly in the future of `now` (a frame stamped
  ahead of the clock when it arrived does not block the on-time frames after it);
- joint states must be physically possible (FR3 joint limits + 0.05 rad, gripper width -1 mm to 85 mm);
- images must have the card's shape (H, W, 3) uint8, unless `resize=True` (nearest-neighbour resampling).

Any violation yields a `StaleReason` naming the stream, its age and the limit, instead of an `Observation`.
Times are plain float seconds on one clock (ROS time: simulation time on the twin); the caller passes `now`.

After a lapse, inference resumes only once N consecutive ticks had a fresh, complete observation
(`ResumeGate`, reliability row 1): a stream that flickers back for one frame does not restart the arm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dm1.control.limits import FR3_Q_MAX, FR3_Q_MIN
from dm1.proprio import compute_proprio, validate_keys

JOINT_STREAM = "joint_states"
# A measured joint beyond the FR3's limits by more than this, or a gripper width outside GRIPPER_WIDTH_RANGE
# (the Franka Hand opens to 0.08 m; proprio clips readings down to -1 mm to 0), is not a real arm state.
JOINT_LIMIT_SLACK_RAD = 0.05
GRIPPER_WIDTH_RANGE = (-1e-3, 0.085)


@dataclass
class ObservationConfig:
    """Freshness and synchronisation limits of the assembler.

    Args:
        max_age_s: default age limit of every stream [s] (reliability row 1: 0.1 s ≈ 3 frames at 30 fps).
        camera_max_age_s: per-camera overrides of `max_age_s`, by camera name.
        joint_max_age_s: age limit of the joint state; None → `max_age_s`.
        sync_tolerance_s: largest allowed spread between the newest stamps of all streams [s].
        future_tolerance_s: a stamp more than this ahead of `now` is rejected (clock jump or mismatch) [s].
        resize: resample images of the wrong size to the card's size instead of rejecting them.
    """

    max_age_s: float = 0.1
    camera_max_age_s: dict[str, float] = field(default_factory=dict)
    joint_max_age_s: float | None = None
    sync_tolerance_s: float = 0.1
    future_tolerance_s: float = 0.05
    resize: bool = False

    def __post_init__(self) -> None:
        limits = {"max_age_s": self.max_age_s, "sync_tolerance_s": self.sync_tolerance_s}
        limits.update({f"camera_max_age_s[{k!r}]": v for k, v in self.camera_max_age_s.items()})
        if self.joint_max_age_s is not None:
            limits["joint_max_age_s"] = self.joint_max_age_s
        for name, value in limits.items():
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise ValueError(
                    f"ObservationConfig.{name}: expected a positive finite number, found {value!r}"
                )
        if not (np.isfinite(self.future_tolerance_s) and self.future_tolerance_s >= 0):
            found = self.future_tolerance_s
            raise ValueError(
                f"ObservationConfig.future_tolerance_s: expected a finite number >= 0, found {found!r}"
            )


@dataclass(frozen=True)
class Observation:
    """One policy input. `stamp` is the joint-state stamp: the robot state the action chunk continues from."""

    stamp: float
    images: dict[str, np.ndarray]  # name -> (H, W, 3) uint8
    proprio: np.ndarray  # (P,) float32, keys in card order
    q: np.ndarray  # (7,) rad
    gripper_width: float
    stamps: dict[str, float]  # stream -> capture stamp
    received: dict[str, float]  # stream -> receive time (same clock)

    @property
    def oldest_stamp(self) -> float:
        """Capture stamp of the oldest stream in this observation."""
        return min(self.stamps.values())


@dataclass(frozen=True)
class StaleReason:
    """Why no observation could be assembled; `stream` names the offending camera or `joint_states`."""

    stream: str
    kind: str  # "missing" | "stale" | "future" | "unsynced" | "backwards" | "bad_input"
    message: str
    age_s: float | None = None
    limit_s: float | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class _Frame:
    stamp: float
    received: float
    data: Any


class ObservationAssembler:
    """Keeps the newest frame per stream and assembles observations for a model card.

    Args:
        card: a `dm1.modelcard.ModelCard` (uses `cameras[i].name/shape` and `proprio.keys`).
        config: freshness limits (defaults: 0.1 s age, 0.1 s sync spread).
    """

    def __init__(self, card: Any, config: ObservationConfig | None = None) -> None:
        self.config = config or ObservationConfig()
        self.camera_shapes: dict[str, tuple[int, int, int]] = {c.name: tuple(c.shape) for c in card.cameras}
        unknown = set(self.config.camera_max_age_s) - set(self.camera_shapes)
        if unknown:
            raise ValueError(
                f"ObservationConfig.camera_max_age_s: unknown camera(s) {sorted(unknown)}; "
                f"the model card has {sorted(self.camera_shapes)}"
            )
        self.proprio_keys: list[str] = list(card.proprio.keys)
        validate_keys(self.proprio_keys)
        self._frames: dict[str, _Frame] = {}
        self._rejections: dict[str, StaleReason] = {}
        self.rejected_counts: dict[str, int] = {}

    # ----------------------------------------------------------------------------------------- input
    def limit_for(self, stream: str) -> float:
        """Age limit of `stream` [s]."""
        if stream == JOINT_STREAM:
            return self.config.joint_max_age_s or self.config.max_age_s
        return self.config.camera_max_age_s.get(stream, self.config.max_age_s)

    def on_image(
        self, name: str, stamp: float, rgb: np.ndarray, received: float | None = None
    ) -> StaleReason | None:
        """Offer a camera frame (H, W, 3) uint8. Returns None if accepted, else the reason it was rejected."""
        if name not in self.camera_shapes:
            return self._reject(name, "bad_input", f"camera {name!r} is not an input of the model card")
        expected = self.camera_shapes[name]
        img = np.asarray(rgb)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            return self._reject(
                name, "bad_input", f"camera {name!r}: expected (H, W, 3) uint8, found {img.shape} {img.dtype}"
            )
        if img.shape != expected:
            if img.shape[0] == 0 or img.shape[1] == 0:
                return self._reject(name, "bad_input", f"camera {name!r}: empty frame {img.shape}")
            if not self.config.resize:
                return self._reject(
                    name,
                    "bad_input",
                    f"camera {name!r}: frame shape {img.shape} != model card shape {expected} (resize off)",
                )
            img = resize_nearest(img, expected[0], expected[1])
        return self._store(name, stamp, received, img)

    def on_joint_state(
        self, stamp: float, q: np.ndarray, gripper_width: float, received: float | None = None
    ) -> StaleReason | None:
        """Offer an arm state: q (7,) rad and gripper width [m]. Returns None if accepted, else the reason."""
        qa = np.asarray(q, dtype=np.float64)
        if qa.shape != (7,) or not np.all(np.isfinite(qa)) or not np.isfinite(gripper_width):
            return self._reject(
                JOINT_STREAM,
                "bad_input",
                f"joint state: expected 7 finite joint angles and a finite gripper "
                f"width, found q={qa.tolist()} width={gripper_width}",
            )
        lo, hi = np.array(FR3_Q_MIN) - JOINT_LIMIT_SLACK_RAD, np.array(FR3_Q_MAX) + JOINT_LIMIT_SLACK_RAD
        outside = np.flatnonzero((qa < lo) | (qa > hi))
        if outside.size:
            j = int(outside[0])
            return self._reject(
                JOINT_STREAM,
                "bad_input",
                f"joint state: fr3_joint{j + 1} = {qa[j]:.4g} rad is outside the FR3's range "
                f"[{lo[j]:.4f}, {hi[j]:.4f}] (limits + {JOINT_LIMIT_SLACK_RAD} rad)",
            )
        if not GRIPPER_WIDTH_RANGE[0] <= gripper_width <= GRIPPER_WIDTH_RANGE[1]:
            return self._reject(
                JOINT_STREAM,
                "bad_input",
                f"joint state: gripper width {gripper_width:.4g} m is outside "
                f"[{GRIPPER_WIDTH_RANGE[0]}, {GRIPPER_WIDTH_RANGE[1]}] m",
            )
        return self._store(JOINT_STREAM, stamp, received, (qa.copy(), float(gripper_width)))

    def reject_input(self, stream: str, message: str) -> StaleReason:
        """Record a message of `stream` that could not even be decoded (e.g. a wrong image encoding): it is
        counted in `rejected_counts` and named in the stream's next stale reason."""
        return self._reject(stream, "bad_input", message)

    def reset(self) -> None:
        """Forget all frames (e.g. after the clock jumped backwards because the simulation restarted)."""
        self._frames.clear()
        self._rejections.clear()

    # ----------------------------------------------------------------------------------------- output
    def assemble(self, now: float) -> Observation | StaleReason:
        """Newest frame of every stream, if all are present, fresh, synchronised; else why not."""
        streams = [*self.camera_shapes, JOINT_STREAM]
        for s in streams:
            frame = self._frames.get(s)
            last = self._rejections.get(s)  # frames offered since the stored one, all rejected: say why
            detail = f" (last frame rejected: {last.message})" if last else ""
            if frame is None:
                return StaleReason(s, "missing", f"{_label(s)}: no frame received yet{detail}")
            age = now - frame.stamp
            limit = self.limit_for(s)
            if age > limit:
                return StaleReason(
                    s,
                    "stale",
                    f"{_label(s)}: newest frame is {age * 1e3:.0f} ms old, limit {limit * 1e3:.0f} ms"
                    f"{detail}",
                    age,
                    limit,
                )
            if -age > self.config.future_tolerance_s:
                return StaleReason(
                    s,
                    "future",
                    f"{_label(s)}: stamp is {-age * 1e3:.0f} ms ahead of the clock "
                    f"(tolerance {self.config.future_tolerance_s * 1e3:.0f} ms)",
                    age,
                    self.config.future_tolerance_s,
                )
        stamps = {s: self._frames[s].stamp for s in streams}
        oldest, newest = min(stamps, key=stamps.__getitem__), max(stamps, key=stamps.__getitem__)
        spread = stamps[newest] - stamps[oldest]
        if spread > self.config.sync_tolerance_s:
            return StaleReason(
                oldest,
                "unsynced",
                f"{_label(oldest)} lags {_label(newest)} by {spread * 1e3:.0f} ms, "
                f"sync tolerance {self.config.sync_tolerance_s * 1e3:.0f} ms",
                spread,
                self.config.sync_tolerance_s,
            )
        q, width = self._frames[JOINT_STREAM].data
        return Observation(
            stamp=stamps[JOINT_STREAM],
            images={c: self._frames[c].data for c in self.camera_shapes},
            proprio=compute_proprio(self.proprio_keys, q, width),
            q=q,
            gripper_width=width,
            stamps=stamps,
            received={s: self._frames[s].received for s in streams},
        )

    # ----------------------------------------------------------------------------------------- internals
    def _store(self, stream: str, stamp: float, received: float | None, data: Any) -> StaleReason | None:
        if not np.isfinite(stamp):
            return self._reject(stream, "backwards", f"{_label(stream)}: non-finite stamp {stamp}")
        prev = self._frames.get(stream)
        arrived = stamp if received is None else received
        if (
            prev is not None
            and stamp < prev.stamp
            and prev.stamp - prev.received <= self.config.future_tolerance_s
        ):
            return self._reject(
                stream,
                "backwards",
                f"{_label(stream)}: stamp went backwards by "
                f"{(prev.stamp - stamp) * 1e3:.1f} ms ({prev.stamp:.3f} -> {stamp:.3f})",
            )
        # (a stored frame stamped ahead of the clock when it arrived is replaced, not defended: see assemble)
        self._frames[stream] = _Frame(float(stamp), float(arrived), data)
        self._rejections.pop(stream, None)
        return None

    def _reject(self, stream: str, kind: str, message: str) -> StaleReason:
        reason = StaleReason(stream, kind, message)
        self._rejections[stream] = reason
        self.rejected_counts[stream] = self.rejected_counts.get(stream, 0) + 1
        return reason


class ResumeGate:
    """Reliability row 1: after a stale or missing input, resume only after N consecutive fresh ticks.

    Feed it one verdict per tick (`update`): False for a tick without an observation (a `StaleReason`), True
    for a fresh, complete one. After a stale tick the gate is *recovering*: the k-th consecutive fresh tick
    returns ``"recovering k/N"`` (no chunk: the arm keeps holding) until the N-th, which passes (infer).

    Activation is not a recovery: until the first fresh tick after `reset()` (activation, a simulation reset)
    stale ticks (streams not yet received) start no recovery, so the policy starts on its first fresh,
    complete observation. Only an input that lapses after that waits for N fresh ticks.

    Args:
        needed: N, fresh ticks in a row that end a recovery (1..100); 1 = resume on the first fresh tick.
    """

    def __init__(self, needed: int = 3) -> None:
        if isinstance(needed, bool) or not isinstance(needed, int) or not 1 <= needed <= 100:
            raise ValueError(f"ResumeGate.needed: expected an integer in [1, 100], found {needed!r}")
        self.needed = needed
        self._started = False  # a fresh tick was seen since reset: a later stale tick is a lapse
        self._streak: int | None = None  # fresh ticks in a row since the last lapse; None = not recovering

    def reset(self) -> None:
        """Forget the history (activation): the next fresh tick passes at once."""
        self._started, self._streak = False, None

    @property
    def recovering(self) -> bool:
        """Whether a lapse is not yet followed by N fresh ticks."""
        return self._streak is not None

    def update(self, fresh: bool) -> str | None:
        """Account for one tick; returns ``"recovering k/N"`` while a fresh tick must still give no chunk,
        else None (a stale tick: its own `StaleReason` says why; a fresh one: infer)."""
        if not fresh:
            self._streak = 0 if self._started else None
            return None
        self._started = True
        if self._streak is None:
            return None
        self._streak += 1
        if self._streak >= self.needed:
            self._streak = None
            return None
        return (
            f"recovering {self._streak}/{self.needed}: the inputs are fresh again; the policy infers after "
            f"{self.needed} fresh ticks in a row"
        )


def _label(stream: str) -> str:
    return "joint state" if stream == JOINT_STREAM else f"camera {stream!r}"


def resize_nearest(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resample (H, W, C) -> (height, width, C); pixel centres aligned."""
    h, w = img.shape[:2]
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return np.ascontiguousarray(img[rows[:, None], cols[None, :]])
