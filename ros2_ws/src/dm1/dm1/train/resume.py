"""What a resumed or fine-tuned run must share with the checkpoint it starts from, and loading its state.

Resuming (``dm1 train --resume``) continues a run exactly, so the config may change only in keys that do not
change what the checkpoint's weights, optimizer and random states mean (`RESUMABLE_KEYS`): the step count and
learning-rate schedule (a function of the step alone), the logging and checkpoint cadence, threads, the
device name and where the run and dataset live (the dataset's content is verified by its sha256). Each such
change is logged as ``resume: <key>: <old> -> <new>``. Any other change (objective, meanflow.*, dispersive.*,
data.*, model.*, seed, batch_size, weight_decay, ema_*) is refused, naming each key with both values: start a
new run from the checkpoint's weights with ``--init-from`` instead.

Resuming and fine-tuning both refuse a checkpoint whose observation or action layout (proprio keys, cameras,
action space and names) differs from the run's: its normalizers would be applied to the wrong columns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dm1.checkpoint import META_FILE, MODEL_FILE, RAW_FILE, STATE_FILE, Checkpoint, CheckpointError
from dm1.config import TrainConfig

RESUMABLE_KEYS: tuple[str, ...] = (
    "steps",
    "warmup_steps",
    "lr",
    "min_lr",
    "log_every",
    "checkpoint_every",
    "num_threads",
    "sample_steps_eval",
    "device",
    "out_dir",
    "data.dataset_dir",
)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: TrainConfig, new: TrainConfig) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every config key that differs, in field order."""
    a, b = _flat(old.to_dict()), _flat(new.to_dict())
    return [(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


def check_resume_config(cfg: TrainConfig, ckpt: Checkpoint, log: Callable[[str], None]) -> None:
    """Refuse changes outside `RESUMABLE_KEYS` (naming each with both values); log the allowed ones.

    ``cfg.init_from`` must already be the run's own record (see `Trainer`).
    """
    changes = config_changes(ckpt.train_config, cfg)
    refused = [(k, a, b) for k, a, b in changes if k not in RESUMABLE_KEYS]
    if refused:
        listing = "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, a, b in refused)
        raise ValueError(
            f"{ckpt.path / META_FILE}: cannot resume with a changed training config ({listing}); a resume "
            f"continues the run exactly, so only {', '.join(RESUMABLE_KEYS)} may change. Restore these "
            f"values, or start a new run from its weights with --init-from {ckpt.path}"
        )
    for key, old, new in changes:
        log(f"resume: {key}: {old!r} -> {new!r}")


def check_observation_layout(cfg: TrainConfig, ckpt: Checkpoint) -> None:
    """Refuse a checkpoint whose proprio keys or cameras (order included) differ from ``cfg``'s."""
    mine, theirs = cfg.data, ckpt.train_config.data
    for name in ("proprio_keys", "camera_names"):
        want, have = list(getattr(mine, name)), list(getattr(theirs, name))
        if want != have:
            raise ValueError(
                f"{ckpt.path / META_FILE}: data.{name}: expected {want} (the run config), found {have}; "
                "the checkpoint's weights and normalizers are for that layout, in that order"
            )


def check_action_layout(
    ckpt: Checkpoint, dataset_dir: str, action_space: str, action_names: list[str]
) -> None:
    """Refuse a checkpoint trained on another action space or action order than the dataset's (if stored)."""
    schema = ckpt.extra.get("dataset_schema")
    if not isinstance(schema, dict):
        return
    for name, here in (("action_space", action_space), ("action_names", list(action_names))):
        if name in schema and schema[name] != here:
            raise ValueError(
                f"{ckpt.path / META_FILE}: extra.dataset_schema.{name}: expected {here!r} (the dataset "
                f"{dataset_dir}), found {schema[name]!r}; the "
                "checkpoint's action normalizer and outputs are for that layout"
            )


def check_device(ckpt: Checkpoint, device: torch.device) -> None:
    """Refuse resuming a CUDA-trained checkpoint on the CPU or the reverse (generator states differ)."""
    trained_on_cuda = "cuda_rng_state" in ckpt.extra_tensors
    if trained_on_cuda != (device.type == "cuda"):
        raise ValueError(
            f"{ckpt.path / META_FILE}: device: expected a {'CUDA' if trained_on_cuda else 'CPU'} device (the "
            f"checkpoint's random-generator states are from one), found {device}; resume on that device or "
            f"start a new run with --init-from {ckpt.path}"
        )


def _load(module: Any, state: Any, where: Path, what: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:  # size mismatch, missing keys, another optimizer
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:4] if len(lines) > 1 else lines)
        raise CheckpointError(f"{where}: does not fit {what}: {detail}") from None


def load_weights(net: torch.nn.Module, ema: torch.nn.Module, ckpt: Checkpoint, raw: bool) -> None:
    """Load the EMA weights into ``ema`` and the raw (``raw``) or EMA weights into ``net``."""
    what = "DM1Network(train_config.model)"
    _load(
        net, ckpt.raw_state if raw else ckpt.model_state, ckpt.path / (RAW_FILE if raw else MODEL_FILE), what
    )
    _load(ema, ckpt.model_state, ckpt.path / MODEL_FILE, what)


def load_training_state(
    opt: torch.optim.Optimizer, gens: dict[str, torch.Generator], device: torch.device, ckpt: Checkpoint
) -> None:
    """Restore the optimizer and the random-generator states (``gens``: name -> generator)."""
    where = ckpt.path / STATE_FILE
    _load(opt, ckpt.optimizer_state, where, "the AdamW optimizer of this network")
    states = ckpt.extra_tensors
    try:
        for name, gen in gens.items():
            gen.set_state(states[name])
        torch.set_rng_state(states["torch_rng_state"])
        if device.type == "cuda" and "cuda_rng_state" in states:
            torch.cuda.set_rng_state(states["cuda_rng_state"], device)
    except KeyError as exc:
        raise CheckpointError(f"{where}: missing random-generator state extra.{exc.args[0]}") from None
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{where}: unusable random-generator state ({exc})") from None


def model_differences(checkpoint: Any, config: Any) -> str:
    """`model.<field>: checkpoint X, config Y` for each `ModelConfig` field that differs, joined by '; '."""
    mine, theirs = checkpoint.to_dict(), config.to_dict()
    return "; ".join(
        f"model.{k}: checkpoint {mine.get(k)!r}, config {theirs.get(k)!r}"
        for k in sorted(set(mine) | set(theirs))
        if mine.get(k) != theirs.get(k)
    )
