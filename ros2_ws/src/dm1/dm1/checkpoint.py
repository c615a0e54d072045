"""Training checkpoints as safetensors + JSON only (never pickle).

A checkpoint is a directory ``<run>/checkpoints/step_<NNNNNNNN>/`` holding:

- ``model.safetensors``: the EMA weights (the weights to evaluate and export);
- ``model_raw.safetensors``: the raw (online) weights;
- ``trainer_state.safetensors``: optimizer tensors (``optim.<param>.<name>``) and extra tensors such as
  generator states (``extra.<name>``);
- ``checkpoint.json``: format version, step, training config, normalizers, dataset sha256, metrics, the
  optimizer's scalar structure (param groups, non-tensor state), extra JSON and the sha256 of every file.

It is written to a hidden temporary directory and renamed into place, so a crash never leaves a half
checkpoint under the final name. ``load_checkpoint`` verifies the file hashes and refuses pickle formats.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dm1.config import TrainConfig
from dm1.errors import ReportedError
from dm1.normalization import Normalizer
from dm1.paths import PICKLE_SUFFIXES, file_sha256, sync_dir

FORMAT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
META_FILE = "checkpoint.json"
MODEL_FILE, RAW_FILE, STATE_FILE = "model.safetensors", "model_raw.safetensors", "trainer_state.safetensors"
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointError(ReportedError, ValueError):
    """A checkpoint is missing, corrupt, or in a refused (pickle) format."""


@dataclass
class Checkpoint:
    """A loaded checkpoint; tensors on the CPU."""

    path: Path
    step: int
    train_config: TrainConfig
    normalizers: dict[str, Normalizer]
    dataset_sha256: str
    metrics: dict[str, Any]
    model_state: dict[str, torch.Tensor]  # EMA weights
    raw_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]  # ready for ``optimizer.load_state_dict``
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _cpu_tensors(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{where}[{k!r}]: expected a tensor, found {type(v).__name__}")
        out[k] = v.detach().to("cpu").contiguous().clone()  # clone: safetensors refuses shared storage
    return out


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able structure."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalar_state": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, scalars in meta.get("scalar_state", {}).items():
        state.setdefault(int(pid), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: str | os.PathLike[str],
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    step: int,
    train_cfg: TrainConfig,
    normalizers: dict[str, Normalizer],
    dataset_sha256: str,
    metrics: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (replacing one of the same name) and return its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    optim_tensors, optim_meta = _flatten_optimizer(optimizer_state)
    state_tensors = dict(optim_tensors)
    state_tensors.update({f"extra.{k}": v for k, v in (extra_tensors or {}).items()})
    save_file(_cpu_tensors(ema_state, "ema_state"), tmp / MODEL_FILE, metadata={"weights": "ema"})
    save_file(_cpu_tensors(model_state, "model_state"), tmp / RAW_FILE, metadata={"weights": "raw"})
    save_file(_cpu_tensors(state_tensors, "trainer_state"), tmp / STATE_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "train_config": train_cfg.to_dict(),
        "normalizers": {k: v.to_dict() for k, v in normalizers.items()},
        "dataset_sha256": dataset_sha256,
        "metrics": metrics or {},
        "optimizer": optim_meta,
        "extra": extra or {},
        "files": {name: file_sha256(tmp / name) for name in (MODEL_FILE, RAW_FILE, STATE_FILE)},
    }
    with open(tmp / META_FILE, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    sync_dir(directory.parent)
    return directory


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a pickle-based checkpoint ({path.suffix}); dm1 checkpoints are "
            f"directories of safetensors + {META_FILE} (pickle can execute code on load)"
        )


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint directory, its ``checkpoint.json``, or a run directory (its newest checkpoint).

    Tensors are loaded on the CPU and every file's hash is verified.

    Raises:
        CheckpointError: pickle formats (``.pt``, ``.pth``, ``.pkl``, ``.ckpt`` ...), a missing or corrupt
            file, a hash mismatch or an unknown format version; the message names the file.
    """
    path = Path(path)
    _refuse_pickle(path)
    if path.is_file() and path.name == META_FILE:
        path = path.parent
    if path.is_dir() and not (path / META_FILE).exists() and (path / CHECKPOINTS_DIR).is_dir():
        latest = latest_checkpoint(path)  # a run directory: its newest complete checkpoint
        path = latest if latest is not None else path
    meta_path = path / META_FILE
    if not meta_path.is_file():
        pickles = (
            sorted(p.name for p in path.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
            if path.is_dir()
            else []
        )
        hint = f"; found pickle files {pickles}, which are refused" if pickles else ""
        raise CheckpointError(f"{path}: not a dm1 checkpoint (missing {META_FILE}){hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: format_version: expected {FORMAT_VERSION}, found {meta.get('format_version')!r}"
        )
    hashes = _field(meta, meta_path, "files", dict, "a mapping of file name to sha256")
    tensors = {}
    for name in (MODEL_FILE, RAW_FILE, STATE_FILE):
        fpath = path / name
        if not fpath.is_file():
            raise CheckpointError(f"{fpath}: missing checkpoint file")
        expected = hashes.get(name)
        found = file_sha256(fpath)
        if expected != found:
            raise CheckpointError(f"{fpath}: sha256 mismatch (expected {expected}, found {found})")
        try:
            tensors[name] = load_file(fpath, device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{fpath}: unreadable safetensors ({exc})") from exc
    return _parse_meta(path, meta_path, meta, tensors)


def _field(meta: dict[str, Any], meta_path: Path, name: str, kind: type, expected: str) -> Any:
    """``meta[name]`` if it is a ``kind`` (not a bool), else a `CheckpointError` naming file and field."""
    if name not in meta:
        raise CheckpointError(f"{meta_path}: missing field {name!r}")
    value = meta[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CheckpointError(f"{meta_path}: {name}: expected {expected}, found {value!r}")
    return value


def _parse_meta(
    path: Path, meta_path: Path, meta: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]
) -> Checkpoint:
    """Validate the fields of ``checkpoint.json`` and build the `Checkpoint`; errors name file and field."""
    step = _field(meta, meta_path, "step", int, "an int >= 0")
    if step < 0:
        raise CheckpointError(f"{meta_path}: step: expected an int >= 0, found {step!r}")
    sha = _field(meta, meta_path, "dataset_sha256", str, "a string")
    raw_cfg = _field(meta, meta_path, "train_config", dict, "a mapping (the training config)")
    raw_norms = _field(meta, meta_path, "normalizers", dict, "a mapping of name to {min, max}")
    optim = _field(meta, meta_path, "optimizer", dict, "a mapping with param_groups and scalar_state")
    metrics = meta.get("metrics", {})
    extra = meta.get("extra", {})
    for name, value in (("metrics", metrics), ("extra", extra)):
        if not isinstance(value, dict):
            raise CheckpointError(f"{meta_path}: {name}: expected a mapping, found {value!r}")
    groups, scalars = optim.get("param_groups"), optim.get("scalar_state", {})
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise CheckpointError(
            f"{meta_path}: optimizer.param_groups: expected a list of mappings, found {groups!r}"
        )
    if not isinstance(scalars, dict) or not all(isinstance(v, dict) for v in scalars.values()):
        raise CheckpointError(f"{meta_path}: optimizer.scalar_state: expected a mapping, found {scalars!r}")
    try:
        cfg = TrainConfig.from_dict(raw_cfg, where="train_config")
        norms = {k: Normalizer.from_dict(v, where=f"normalizers.{k}") for k, v in raw_norms.items()}
    except ValueError as exc:
        raise CheckpointError(f"{meta_path}: {exc}") from None
    state = tensors[STATE_FILE]
    try:
        optimizer_state = _unflatten_optimizer(state, optim)
    except ValueError as exc:  # a tensor name or parameter id that is not optim.<int>.<name>
        raise CheckpointError(
            f"{path / STATE_FILE}: optimizer tensors: expected optim.<id>.<name> ({exc})"
        ) from None
    return Checkpoint(
        path=path,
        step=step,
        train_config=cfg,
        normalizers=norms,
        dataset_sha256=sha,
        metrics=dict(metrics),
        model_state=tensors[MODEL_FILE],
        raw_state=tensors[RAW_FILE],
        optimizer_state=optimizer_state,
        extra_tensors={k[len("extra.") :]: v for k, v in state.items() if k.startswith("extra.")},
        extra=dict(extra),
    )


def checkpoint_dir(run_dir: str | os.PathLike[str], step: int) -> Path:
    """``<run_dir>/checkpoints/step_<step:08d>``."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{step:08d}"


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint with the highest step under ``<run_dir>/checkpoints`` (None if none)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    best: tuple[int, Path] | None = None
    for p in root.glob("step_*") if root.is_dir() else []:
        m = _STEP_RE.match(p.name)
        if m and (p / META_FILE).is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None
