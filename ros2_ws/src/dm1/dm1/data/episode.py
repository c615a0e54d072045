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

`EpisodeWriter` lives in `dm1.data.episode_writer`, `DatasetIndex` in `dm1.data.index`; both are importable
from here too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm1.data.episode_checks import (
    H5_ERRORS,
    EpisodeFormatError,
    h5_array,
    h5_dataset,
    h5_errors,
    read_attrs,
)

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
    # EpisodeWriter lives in dm1.data.episode_writer (file size; it imports this module's constants).
    if name == "EpisodeWriter":
        from dm1.data import episode_writer

        return episode_writer.EpisodeWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
