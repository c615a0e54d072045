"""Episode recorder: synchronizes the latest camera images, joint state and the commanded action at each
control tick and appends them to one episode file through `dm1.data.episode_writer.EpisodeWriter`.

ROS-free: the teleop node feeds `on_image` / `on_joint_state` from its subscriptions and calls
`tick(now, action)` from its control timer. Every timestamp is kept: per tick the control time (`timestamps`),
and under `timing/` the capture (header) and receive time of each camera frame and of the joint state. A
per-episode QA summary (frame repeats, stale inputs, skipped ticks) is stored as the `qa` attribute (JSON)
of `timing/control`.

Failures (output exists, directory not writable, disk full, a directory that holds episodes of another
layout) raise `RecorderError` with a clear message; the episode is dropped and the caller keeps its robot loop
running in hold. Like every other dataset writer, the recorder refuses to append to a directory of another
layout (`dm1.data.schema.check_append_compatible`): `check_dataset` runs that check (the node calls it once at
startup), and `start` runs it again whenever the directory holds episodes it has not checked yet.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dm1.data.dir_lock import DirectoryBusyError, DirectoryLock
from dm1.data.episode_checks import ACTION_SPACE_DIMS
from dm1.data.episode_writer import EpisodeWriter
from dm1.data.schema import EpisodeSchema, check_append_compatible
from dm1.proprio import compute_proprio, proprio_dims, proprio_units

EE_ACTION_NAMES = ("x", "y", "z", "gripper")


def episode_units(action_space: str, proprio_keys: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The `units` attribute of an episode: per action dimension, per proprio key, and timestamps.

    Shared by the teleop recorder and the in-process twin collection, so both write the same metadata.
    """
    return {
        "actions": ["m", "m", "m", "1"] if action_space == "ee_position" else ["rad"] * 7 + ["1"],
        "proprio": dict(zip(proprio_keys, proprio_units(proprio_keys), strict=True)),
        "timestamps": "s",
    }


class RecorderError(RuntimeError):
    """Recording cannot start or continue (message says which file and why)."""


@dataclass
class RecorderConfig:
    """Recorder settings.

    Args:
        out_dir: dataset directory (one `episode_<n>.h5` per episode).
        camera_names: cameras to record (each frame must be (H, W, 3) uint8).
        proprio_keys: keys from `dm1.proprio` computed from the joint state.
        action_space: model action space (`ee_position`: [x, y, z, gripper]).
        action_names: one name per action dimension.
        control_rate_hz: tick rate (recorded as `control_rate_hz`).
        max_image_age_s: frames older than this at a tick count as stale in the QA report.
        max_joint_age_s: joint states older than this count as stale.
        min_free_mb: refuse to start an episode with less free disk space than this.
    """

    out_dir: Path
    camera_names: tuple[str, ...] = ("front", "wrist")
    proprio_keys: tuple[str, ...] = ("ee_pos", "ee_quat_xyzw", "gripper_width", "joint_pos")
    action_space: str = "ee_position"
    action_names: tuple[str, ...] = EE_ACTION_NAMES
    control_rate_hz: float = 20.0
    max_image_age_s: float = 0.25
    max_joint_age_s: float = 0.1
    min_free_mb: float = 100.0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.camera_names = tuple(self.camera_names)
        self.proprio_keys = tuple(self.proprio_keys)
        self.action_names = tuple(self.action_names)
        if not self.camera_names or len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"RecorderConfig.camera_names: expected unique names, found {self.camera_names}")
        proprio_dims(self.proprio_keys)  # raises ValueError naming unknown keys
        if self.action_space not in ACTION_SPACE_DIMS:
            raise ValueError(
                f"RecorderConfig.action_space: expected one of {sorted(ACTION_SPACE_DIMS)}, "
                f"found {self.action_space!r}"
            )
        if len(self.action_names) != ACTION_SPACE_DIMS[self.action_space]:
            raise ValueError(
                f"RecorderConfig.action_names: expected {ACTION_SPACE_DIMS[self.action_space]} names, "
                f"found {self.action_names}"
            )
        for name in ("control_rate_hz", "max_image_age_s", "max_joint_age_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"RecorderConfig.{name}: expected > 0, found {v!r}")
        if self.min_free_mb < 0:
            raise ValueError(f"RecorderConfig.min_free_mb: expected >= 0, found {self.min_free_mb!r}")


class TimedEpisodeWriter(EpisodeWriter):
    """`EpisodeWriter` that can also store whole extra datasets (timing) and attributes before `close`."""

    def write_extra(self, name: str, data: np.ndarray, attrs: dict[str, Any] | None = None) -> None:
        """Write dataset `name` (e.g. `timing/front_capture`, with `attrs`) into the open `.partial` file."""
        if self._file is None:
            raise RuntimeError(f"episode {self.path} is already closed")
        ds = self._file.create_dataset(name, data=np.asarray(data))
        for k, v in (attrs or {}).items():
            ds.attrs[k] = v


@dataclass
class _Latest:
    value: Any = None
    capture: float = float("nan")
    receive: float = float("nan")
    count: int = 0


@dataclass
class _Timing:
    rows: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.rows.setdefault(name, []).append(float(value))


class EpisodeRecorder:
    """Records one episode at a time. Thread-compatible with one caller (the node's executor)."""

    def __init__(self, config: RecorderConfig, writer_factory: type[TimedEpisodeWriter] = TimedEpisodeWriter):
        self.config = config
        self._writer_factory = writer_factory
        self._images = {c: _Latest() for c in config.camera_names}
        self._joints = _Latest()
        self._writer: TimedEpisodeWriter | None = None
        self._lock: DirectoryLock | None = None  # held while an episode is open (`start` to save/drop)
        self._timing = _Timing()
        self._qa: dict[str, Any] = {}
        self._last_capture: dict[str, float] = {}
        self._not_before: float | None = None  # see `start`
        # the last schema `check_dataset` passed, and the episode files it covers (plus those saved since)
        self._checked: tuple[EpisodeSchema, frozenset[str]] | None = None

    # ---- inputs -------------------------------------------------------------------------------------------
    def on_image(self, camera: str, image: np.ndarray, capture: float, receive: float) -> None:
        """Latest frame of `camera` (uint8 (H, W, 3)) with its capture (header) and receive times."""
        if camera in self._images:
            slot = self._images[camera]
            slot.value, slot.capture, slot.receive, slot.count = image, capture, receive, slot.count + 1

    def on_joint_state(self, q: np.ndarray, gripper_width: float, capture: float, receive: float) -> None:
        """Latest arm joint angles (7,) and gripper width (m) with header and receive times."""
        self._joints.value = (np.asarray(q, dtype=np.float64), float(gripper_width))
        self._joints.capture, self._joints.receive = capture, receive
        self._joints.count += 1

    def inputs_ready(self) -> bool:
        """True once every camera and the joint state have delivered at least once."""
        return self._joints.value is not None and all(s.value is not None for s in self._images.values())

    @property
    def recording(self) -> bool:
        """True while an episode file is open."""
        return self._writer is not None

    @property
    def path(self) -> Path | None:
        """Final path of the open episode."""
        return None if self._writer is None else self._writer.path

    # ---- dataset layout ----------------------------------------------------------------------------------
    def schema(self) -> EpisodeSchema:
        """The layout this recorder writes; the image size is that of the latest frames (None before any, or
        when the cameras' sizes differ: then it is not compared)."""
        c, frames = self.config, [s.value for s in self._images.values()]
        sizes = {tuple(int(n) for n in np.shape(f)[:2]) for f in frames if f is not None}
        size = sizes.pop() if len(sizes) == 1 and all(f is not None for f in frames) else None
        rate = c.control_rate_hz
        return EpisodeSchema(c.camera_names, size, c.proprio_keys, c.action_space, c.action_names, rate)

    def check_dataset(self) -> None:
        """Raise `RecorderError` (the message of `check_append_compatible`) when `out_dir` already holds
        episodes of another layout (cameras, image size, proprio keys, action space or names, control rate).

        Episode files already checked against the same schema (or saved by this recorder) are not read again.
        """
        schema, out = self.schema(), self.config.out_dir
        names = frozenset(p.name for p in out.glob("episode_*.h5")) if out.is_dir() else frozenset()
        if self._checked is not None and self._checked[0] == schema and names <= self._checked[1]:
            return
        try:
            check_append_compatible(out, schema)
        except ValueError as exc:
            raise RecorderError(str(exc)) from exc
        self._checked = (schema, names)

    # ---- episode lifecycle -------------------------------------------------------------------------------
    def start(self, index: int, now: float | None = None) -> Path:
        """Open `episode_<index>.h5` (as `.partial`). Raises `RecorderError` with the reason.

        With `now` (the start time, on the clock of the capture stamps), the episode's first step waits for
        a joint state and a frame of every camera captured at or after it: inputs from before the start (the
        previous scene, an arm still being homed, a backlog the node has not yet processed) are not recorded
        (`skipped_before_start` in the QA summary). Refused (`check_dataset`) when `out_dir` holds episodes of
        another layout.
        """
        if self._writer is not None:
            raise RecorderError(f"an episode is already being recorded to {self._writer.partial_path}")
        out = self.config.out_dir
        path = out / f"episode_{index:06d}.h5"
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecorderError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
        self._lock = DirectoryLock(out)
        try:
            self._lock.acquire()
            self._open(path, out, now)
        except DirectoryBusyError as exc:
            self._release()
            raise RecorderError(str(exc)) from exc
        except BaseException:
            self._release()
            raise
        return path

    def _open(self, path: Path, out: Path, now: float | None) -> None:
        """`start` once the directory is locked: layout and disk checks, then the writer."""
        self.check_dataset()
        free_mb = shutil.disk_usage(out).free / 1e6
        if free_mb < self.config.min_free_mb:
            raise RecorderError(
                f"not enough disk space in {out}: {free_mb:.0f} MB free, "
                f"expected >= {self.config.min_free_mb:.0f} MB"
            )
        dims = proprio_dims(self.config.proprio_keys)
        units = episode_units(self.config.action_space, self.config.proprio_keys)
        try:
            self._writer = self._writer_factory(
                path,
                camera_names=self.config.camera_names,
                proprio_spec=dict(zip(self.config.proprio_keys, dims, strict=True)),
                action_names=self.config.action_names,
                action_space=self.config.action_space,
                control_rate_hz=self.config.control_rate_hz,
                units=units,
            )
        except FileExistsError as exc:
            raise RecorderError(f"output already exists: {exc}") from exc
        except OSError as exc:
            raise RecorderError(f"cannot create episode file {path}: {exc.strerror or exc}") from exc
        self._timing = _Timing()
        self._qa = {
            "ticks": 0,
            "frames": 0,
            "skipped_not_ready": 0,
            "skipped_before_start": 0,
            "stale_joint": 0,
        }
        self._not_before = now
        for c in self.config.camera_names:
            self._qa[f"repeat_{c}"] = 0
            self._qa[f"stale_{c}"] = 0
        self._last_capture = {}

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def tick(self, now: float, action: np.ndarray, perturbed: bool = False) -> bool:
        """Append one synchronized step (latest inputs + commanded `action`) if recording; True if added.

        `perturbed` marks the action as a deliberate mistake (recovery demos; see `EpisodeWriter.append`).

        Raises `RecorderError` (and drops the episode) on a write failure such as a full disk.
        """
        if self._writer is None:
            return False
        self._qa["ticks"] += 1
        if not self.inputs_ready():
            self._qa["skipped_not_ready"] += 1
            return False
        if self._not_before is not None:
            captures = [self._joints.capture, *(s.capture for s in self._images.values())]
            if min(captures) < self._not_before:
                self._qa["skipped_before_start"] += 1
                return False
            self._not_before = None  # from here on, staleness is counted (`_record_timing`), not skipped
        q, width = self._joints.value
        images = {c: s.value for c, s in self._images.items()}
        try:
            proprio_vec = compute_proprio(self.config.proprio_keys, q, width)
        except ValueError as exc:
            self._fail(f"joint state unusable: {exc}", keep_partial=True)
        proprio, i = {}, 0
        for k, d in zip(self.config.proprio_keys, proprio_dims(self.config.proprio_keys), strict=True):
            proprio[k] = proprio_vec[i : i + d]
            i += d
        try:
            self._writer.append(
                images, proprio, np.asarray(action, dtype=np.float32), now, perturbed=perturbed
            )
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            reason = f"disk full ({exc.strerror})" if full else (exc.strerror or str(exc))
            self._fail(f"write to {self._writer.partial_path} failed: {reason}", keep_partial=not full)
        except ValueError as exc:  # EpisodeFormatError: a frame changed shape, or the clock went back
            self._fail(f"step refused for {self._writer.partial_path.name}: {exc}", keep_partial=True)
        self._record_timing(now)
        return True

    def _record_timing(self, now: float) -> None:
        t, qa = self._timing, self._qa
        qa["frames"] += 1
        for c, s in self._images.items():
            t.add(f"{c}_capture", s.capture)
            t.add(f"{c}_receive", s.receive)
            if self._last_capture.get(c) == s.capture:
                qa[f"repeat_{c}"] += 1
            self._last_capture[c] = s.capture
            if now - s.capture > self.config.max_image_age_s:
                qa[f"stale_{c}"] += 1
        t.add("joint_capture", self._joints.capture)
        t.add("joint_receive", self._joints.receive)
        if now - self._joints.capture > self.config.max_joint_age_s:
            qa["stale_joint"] += 1

    def _fail(self, message: str, keep_partial: bool) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):  # cleanup only: h5py may raise anything on a full disk
                writer.abandon() if keep_partial else writer.discard()
        self._release()
        raise RecorderError(message)

    def stop_save(self, success: bool) -> Path:
        """Write timing + QA, close and rename the episode. Returns the final path."""
        if self._writer is None:
            raise RecorderError("no episode is being recorded")
        writer = self._writer
        try:
            for name, values in self._timing.rows.items():
                writer.write_extra(f"timing/{name}", np.asarray(values, dtype=np.float64))
            writer.write_extra("timing/control", np.zeros(0), attrs={"qa": json.dumps(self.qa_summary())})
            path = writer.close(success=success)
        except OSError as exc:
            self._fail(f"saving {writer.path} failed: {exc.strerror or exc}", keep_partial=True)
        except Exception as exc:  # EpisodeFormatError (no steps) etc.: the writer already cleaned up
            self._writer = None
            self._release()
            raise RecorderError(f"saving {writer.path} failed: {exc}") from exc
        self._writer = None
        self._release()
        if self._checked is not None:  # written with this schema: no need to read it back at the next start
            self._checked = (self._checked[0], self._checked[1] | {path.name})
        return path

    def discard(self) -> None:
        """Drop the open episode and delete its `.partial` file."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.discard()
        finally:
            self._release()

    def abandon(self) -> None:
        """Close the file but leave the `.partial` (shutdown mid-episode): the dataset tools quarantine it."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.abandon()
        finally:
            self._release()

    def qa_summary(self) -> dict[str, Any]:
        """Counters of the open (or last) episode: ticks, frames, skipped, stale and repeated inputs."""
        return dict(self._qa)
