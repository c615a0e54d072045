"""`EpisodeWriter`: appends one episode step by step, crash-safe, to the HDF5 format of `dm1.data.episode`.

Each step is validated before it is written (`EpisodeFormatError` names the offending field); the file is
``<name>.h5.partial`` until `EpisodeWriter.close` flushes, fsyncs and renames it to ``<name>.h5``. The writer
stops with ``OSError(ENOSPC)`` before HDF5 meets a full disk (`dm1.data.episode.require_free_space`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm1.data.episode import DISK_RESERVE_BYTES, FORMAT_VERSION, PARTIAL_SUFFIX, require_free_space
from dm1.data.episode_checks import ACTION_SPACE_DIMS, EpisodeFormatError, bad_camera_names
from dm1.paths import sync_dir


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
        """Drop the open episode: close and delete its ``.partial`` file (deleted even when closing fails,
        e.g. HDF5 cannot flush on a full disk)."""
        try:
            if self._file is not None:
                file, self._file = self._file, None
                file.close()
        finally:
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
