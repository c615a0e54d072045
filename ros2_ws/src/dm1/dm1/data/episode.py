"""One-file-per-episode HDF5 format: crash-safe writer, validating reader and a directory index.

Layout (docs/architecture.md): ``obs/<camera>`` uint8 (T,H,W,3); ``obs/<proprio key>`` float32 (T,d);
``actions`` float32 (T,Da); ``timestamps`` float64 (T,); file attributes ``control_rate_hz``,
``action_space``, ``action_names``, ``camera_names``, ``proprio_keys``, ``units`` (JSON), ``frame``,
``success``, ``created``, ``format_version``. Optional: ``perturbed`` bool (T,), steps whose action is a
deliberate mistake of a recovery demonstration (``dm1.sim.expert``; written only when some step is; training
learns from the steps after it, never the mistake).

Durability: an episode is written to ``<name>.h5.partial`` and renamed to ``<name>.h5`` only by
``EpisodeWriter.close``. A process killed mid-episode therefore leaves at most one ``.partial`` file,
which ``DatasetIndex`` reports as incomplete and can move to ``quarantine/``; every completed episode is its
own file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm1.data.episode_checks import (
    ACTION_SPACE_DIMS,
    H5_ERRORS,
    EpisodeFormatError,
    bad_camera_names,
    h5_array,
    h5_dataset,
    h5_errors,
    read_attrs,
)
from dm1.paths import sync_dir

FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"
INDEX_FILE = "index.json"
DISK_RESERVE_BYTES = 16 << 20  # free space EpisodeWriter keeps (16 MiB), see its reserve_bytes
QUARANTINE_DIR = "quarantine"
_EPISODE_RE = re.compile(r"^episode_(\d+)\.h5$")


def require_free_space(path: Path, need_bytes: int, reserve_bytes: int = DISK_RESERVE_BYTES) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``path`` unless its disk has ``need_bytes`` + ``reserve_bytes`` free.

    For HDF5 output: HDF5 does not survive a full disk (writes fail inside deallocators, the next flush
    crashes the process), so writers stop before it.
    """
    free = shutil.disk_usage(path.parent).free
    need = need_bytes + reserve_bytes
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"disk nearly full: {free / 1e6:.1f} MB free, {need / 1e6:.1f} MB needed "
            f"({reserve_bytes / 1e6:.0f} MB kept in reserve)",
            str(path),
        )


class EpisodeWriter:
    """Appends one episode step by step to ``<path>.partial`` and publishes it as ``<path>`` on ``close``.

    Args:
        path: final file name, e.g. ``data/episode_000012.h5``. Neither it nor its ``.partial`` may exist.
        camera_names: camera names; every step must carry exactly these images, uint8 (H, W, 3).
        proprio_spec: proprio key -> dimension, e.g. ``{"ee_pos": 3, "gripper_width": 1}``.
        action_names: one name per action dimension (length must match ``action_space``).
        action_space: ``ee_position`` or ``joint_position``.
        control_rate_hz: rate at which actions were issued.
        units: field -> unit string (JSON-serialisable), recorded for audit.
        frame: reference frame of positions (``fr3_link0``).
        flush_every: flush HDF5 buffers to disk every this many steps.
        reserve_bytes: free disk space kept beyond what the buffered steps need. Below it the writer raises
            ``OSError(ENOSPC)`` itself, before HDF5 meets a full disk: HDF5 does not survive ENOSPC (its
            writes fail in deallocators and the next flush crashes the process, measured on a full tmpfs).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        camera_names: tuple[str, ...] | list[str],
        proprio_spec: dict[str, int],
        action_names: tuple[str, ...] | list[str],
        action_space: str,
        control_rate_hz: float,
        units: dict[str, Any] | None = None,
        frame: str = "fr3_link0",
        flush_every: int = 20,
        reserve_bytes: int = DISK_RESERVE_BYTES,
    ) -> None:
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        if self.path.suffix != ".h5":
            raise ValueError(f"episode path {self.path} must end with .h5")
        if action_space not in ACTION_SPACE_DIMS:
            raise ValueError(
                f"action_space must be one of {sorted(ACTION_SPACE_DIMS)}, found {action_space!r}"
            )
        if len(action_names) != ACTION_SPACE_DIMS[action_space]:
            raise ValueError(
                f"action_names for {action_space!r} must have {ACTION_SPACE_DIMS[action_space]} entries, "
                f"found {len(action_names)}"
            )
        problem = bad_camera_names(camera_names)
        if problem:
            raise ValueError(f"camera_names: {problem}")
        if not proprio_spec or any(int(d) < 1 for d in proprio_spec.values()):
            raise ValueError(f"proprio_spec must map keys to dimensions >= 1, found {proprio_spec}")
        clash = set(camera_names) & set(proprio_spec)
        if clash:
            raise ValueError(f"camera and proprio names must differ, both contain {sorted(clash)}")
        if not (np.isfinite(control_rate_hz) and control_rate_hz > 0):
            raise ValueError(f"control_rate_hz must be > 0, found {control_rate_hz}")
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, found {flush_every}")
        for p in (self.path, self.partial_path):
            if p.exists():
                raise FileExistsError(f"refusing to overwrite existing episode file {p}")
        self.camera_names = tuple(camera_names)
        self.proprio_spec = {k: int(v) for k, v in proprio_spec.items()}
        self.action_names = tuple(action_names)
        self.action_space = action_space
        self.control_rate_hz = float(control_rate_hz)
        self.units = dict(units or {})
        self.frame = frame
        self.flush_every = flush_every
        self.reserve_bytes = int(reserve_bytes)
        self.length = 0
        self._perturbed: list[bool] = []
        self._last_t = -np.inf
        self._image_shapes: dict[str, tuple[int, int, int]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_space(0)
        # "x" mode fails if the file appeared in between (second writer on the same name).
        self._file: h5py.File | None = h5py.File(self.partial_path, "x")
        self._write_attrs(success=False)

    def _write_attrs(self, success: bool) -> None:
        assert self._file is not None
        a = self._file.attrs
        a["control_rate_hz"] = self.control_rate_hz
        a["action_space"] = self.action_space
        a["action_names"] = json.dumps(list(self.action_names))
        a["camera_names"] = json.dumps(list(self.camera_names))
        a["proprio_keys"] = json.dumps(list(self.proprio_spec))
        a["proprio_dims"] = json.dumps(list(self.proprio_spec.values()))
        a["units"] = json.dumps(self.units)
        a["frame"] = self.frame
        a["success"] = bool(success)
        a.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat())
        a["format_version"] = FORMAT_VERSION

    def _create(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        assert self._file is not None
        chunk_rows = 1 if len(shape) == 3 else 256  # one image per chunk; small vectors in blocks
        self._file.create_dataset(
            name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(chunk_rows, *shape)
        )

    def append(
        self,
        images: dict[str, np.ndarray],
        proprio: dict[str, np.ndarray],
        action: np.ndarray,
        timestamp: float,
        perturbed: bool = False,
    ) -> None:
        """Validate one step and append it. Raises ``EpisodeFormatError`` naming the offending field.

        ``perturbed`` marks the step's action as a deliberate mistake (a recovery demo's injected miss).
        """
        if self._file is None:
            raise RuntimeError(f"episode {self.path} is already closed")
        if set(images) != set(self.camera_names):
            raise EpisodeFormatError(
                f"images: expected cameras {list(self.camera_names)}, found {list(images)}"
            )
        if set(proprio) != set(self.proprio_spec):
            raise EpisodeFormatError(
                f"proprio: expected keys {list(self.proprio_spec)}, found {list(proprio)}"
            )
        step_images = {}
        for cam in self.camera_names:
            img = np.asarray(images[cam])
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise EpisodeFormatError(
                    f"images[{cam!r}]: expected uint8 (H, W, 3), found {img.dtype} {tuple(img.shape)}"
                )
            expected = self._image_shapes.get(cam, img.shape)
            if img.shape != expected:
                raise EpisodeFormatError(f"images[{cam!r}]: expected shape {expected}, found {img.shape}")
            step_images[cam] = img
        step_proprio = {
            k: _finite_vector(f"proprio[{k!r}]", proprio[k], d) for k, d in self.proprio_spec.items()
        }
        step_action = _finite_vector("action", action, len(self.action_names))
        t = float(timestamp)
        if not np.isfinite(t) or t <= self._last_t:
            raise EpisodeFormatError(f"timestamp: expected finite and > {self._last_t}, found {timestamp}")
        if self.length == 0:
            for cam, img in step_images.items():
                self._image_shapes[cam] = img.shape
                self._create(f"obs/{cam}", img.shape, np.uint8)
            for k, d in self.proprio_spec.items():
                self._create(f"obs/{k}", (d,), np.float32)
            self._create("actions", (len(self.action_names),), np.float32)
            self._create("timestamps", (), np.float64)
        n = self.length
        rows = {f"obs/{c}": v for c, v in step_images.items()}
        rows.update({f"obs/{k}": v for k, v in step_proprio.items()})
        rows["actions"] = step_action
        rows["timestamps"] = np.float64(t)
        # everything HDF5 may still hold in its buffers when the next flush comes
        self._check_space(self.flush_every * sum(np.asarray(v).nbytes for v in rows.values()))
        for name, value in rows.items():
            ds = self._file[name]
            ds.resize(n + 1, axis=0)
            ds[n] = value
        self.length = n + 1
        self._perturbed.append(bool(perturbed))
        self._last_t = t
        if self.length % self.flush_every == 0:
            self._file.flush()

    def _check_space(self, pending_bytes: int) -> None:
        require_free_space(self.partial_path, pending_bytes, self.reserve_bytes)

    def close(self, success: bool) -> Path:
        """Finish the episode: record ``success``, flush, fsync and rename ``.partial`` to the final name."""
        if self._file is None:
            raise RuntimeError(f"episode {self.path} is already closed")
        if self.length == 0:
            self.discard()
            raise EpisodeFormatError(f"{self.path}: refusing to save an episode with no steps")
        self._write_attrs(success=success)
        if any(self._perturbed):
            self._file.create_dataset("perturbed", data=np.asarray(self._perturbed, dtype=bool))
        self._file.flush()
        self._file.close()
        self._file = None
        with open(self.partial_path, "rb+") as f:
            os.fsync(f.fileno())
        if self.path.exists():
            raise FileExistsError(f"refusing to overwrite existing episode file {self.path}")
        os.replace(self.partial_path, self.path)
        sync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Drop the open episode: close and delete its ``.partial`` file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial_path.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Close the file handle but leave the ``.partial`` on disk (as a crash would) for inspection."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Not closed explicitly (error or forgotten close): keep the evidence as .partial, never publish it.
        self.abandon()


def _finite_vector(name: str, value: Any, dim: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise EpisodeFormatError(f"{name}: expected a numeric vector of {dim}, found dtype {arr.dtype}")
    arr = arr.astype(np.float32).reshape(-1) if arr.ndim <= 1 else arr
    if arr.shape != (dim,):
        raise EpisodeFormatError(f"{name}: expected shape ({dim},), found {np.shape(value)}")
    if not np.all(np.isfinite(arr)):
        raise EpisodeFormatError(f"{name}: expected finite values, found {arr.tolist()}")
    return arr


@dataclass
class Episode:
    """One episode read from disk; arrays are numpy, images uint8 (T, H, W, 3) (empty dict if not loaded)."""

    path: Path
    images: dict[str, np.ndarray]
    proprio: dict[str, np.ndarray]
    actions: np.ndarray  # (T, Da) float32
    timestamps: np.ndarray  # (T,) float64
    camera_names: list[str]
    proprio_keys: list[str]
    action_names: list[str]
    action_space: str
    control_rate_hz: float
    units: dict[str, Any]
    frame: str
    success: bool
    created: str
    format_version: int
    image_shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    perturbed: np.ndarray | None = None  # (T,) bool; None = no step perturbed

    @property
    def length(self) -> int:
        """Number of steps T."""
        return int(self.actions.shape[0])


def read_episode(path: str | os.PathLike[str], load_images: bool = True) -> Episode:
    """Read and validate one complete episode file.

    Raises:
        EpisodeFormatError: naming the file and what is wrong (partial, unreadable, bad attribute or dataset);
            any h5py error while reading (a damaged file) becomes one, naming the dataset being read.
    """
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        raise EpisodeFormatError(f"{path}: incomplete episode (.partial, the writer never closed it)")
    if not path.is_file():
        raise EpisodeFormatError(f"{path}: episode file not found")
    try:
        f = h5py.File(path, "r")
    except H5_ERRORS as exc:
        raise EpisodeFormatError(f"{path}: not a readable HDF5 episode ({exc})") from exc
    try:
        with h5_errors(path):  # anything not caught nearer to the dataset it concerns
            return _read_open(path, f, load_images)
    finally:
        with contextlib.suppress(*H5_ERRORS):  # a damaged file may fail to close too; the error above counts
            f.close()


def _read_open(path: Path, f: h5py.File, load_images: bool) -> Episode:
    def bad(msg: str) -> EpisodeFormatError:
        return EpisodeFormatError(f"{path}: {msg}")

    meta = read_attrs(path, f.attrs, FORMAT_VERSION)
    cams, keys, names = meta.camera_names, meta.proprio_keys, meta.action_names
    for name in ["actions", "timestamps", *[f"obs/{c}" for c in cams], *[f"obs/{k}" for k in keys]]:
        h5_dataset(path, f, name)
    actions = h5_array(path, f, "actions")
    timestamps = h5_array(path, f, "timestamps")
    if actions.dtype != np.float32 or actions.ndim != 2 or actions.shape[1] != len(names):
        raise bad(f"actions: expected float32 (T, {len(names)}), found {actions.dtype} {actions.shape}")
    T = actions.shape[0]
    if T == 0:
        raise bad("episode has no steps")
    if timestamps.dtype != np.float64 or timestamps.ndim != 1:
        raise bad(f"timestamps: expected float64 (T,), found {timestamps.dtype} {timestamps.shape}")
    if timestamps.shape[0] != T:
        raise bad(
            f"actions and timestamps: lengths disagree (actions has {T} steps, "
            f"timestamps has {timestamps.shape[0]})"
        )
    if T > 1 and not np.all(np.diff(timestamps) > 0):
        raise bad("timestamps: expected strictly increasing")
    proprio = {}
    for k in keys:
        arr = h5_array(path, f, f"obs/{k}")
        if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] != T:
            raise bad(f"obs/{k}: expected float32 ({T}, d), found {arr.dtype} {arr.shape}")
        proprio[k] = arr
    for name, arr in [
        ("actions", actions),
        ("timestamps", timestamps),
        *[(f"obs/{k}", v) for k, v in proprio.items()],
    ]:
        if not np.all(np.isfinite(arr)):
            raise bad(f"{name}: contains non-finite values")
    perturbed = None
    with h5_errors(path, "perturbed"):
        has_perturbed = "perturbed" in f
    if has_perturbed:
        perturbed = h5_array(path, f, "perturbed")
        if perturbed.dtype != np.bool_ or perturbed.shape != (T,):
            raise bad(f"perturbed: expected bool ({T},), found {perturbed.dtype} {perturbed.shape}")
    images, shapes = {}, {}
    for c in cams:
        ds = h5_dataset(path, f, f"obs/{c}")
        if ds.dtype != np.uint8 or ds.ndim != 4 or ds.shape[0] != T or ds.shape[3] != 3:
            raise bad(f"obs/{c}: expected uint8 ({T}, H, W, 3), found {ds.dtype} {ds.shape}")
        shapes[c] = tuple(int(s) for s in ds.shape[1:])
        if load_images:
            images[c] = h5_array(path, f, f"obs/{c}")
    return Episode(
        path=path,
        images=images,
        proprio=proprio,
        actions=actions,
        timestamps=timestamps,
        camera_names=cams,
        proprio_keys=keys,
        action_names=names,
        action_space=meta.action_space,
        control_rate_hz=meta.control_rate_hz,
        units=meta.units,
        frame=meta.frame,
        success=meta.success,
        created=meta.created,
        format_version=meta.format_version,
        image_shapes=shapes,
        perturbed=perturbed,
    )


def __getattr__(name: str) -> Any:
    # DatasetIndex lives in dm1.data.index (file size); `from dm1.data.episode import DatasetIndex` works.
    if name in ("DatasetIndex", "file_sha256", "next_episode_path"):
        from dm1.data import index

        return getattr(index, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
