"""Training-throughput benchmark (``dm1 bench train``): samples/s of full MeanFlow + dispersive steps."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from typing import Any

import numpy as np

#: Untimed training steps before the timed ones when `warmup` is not given (what `dm1 bench train` ran before
#: `--warmup` was honoured: the shared default 50, capped at 10).
DEFAULT_WARMUP_STEPS = 10


def _machine(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({platform.node()})"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"


def run_train_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Time ``Trainer.train_step`` (MeanFlow JVP + dispersive pass + AdamW + EMA) on synthetic data.

    Args (attributes of ``args``, all optional): ``batch_sizes`` ("32,64" or a sequence of ints >= 1),
    ``steps`` (timed steps per batch size, default 20), ``warmup`` (untimed steps first; None = 10, 0 = none),
    ``device`` (``auto``), ``image_size`` (default 96), ``dispersive`` (variant, default ``infonce_l2``),
    ``threads`` (0 = default).

    Raises:
        ValueError: no batch size, or one < 1, or a negative ``warmup`` (before anything is built).

    Returns:
        ``{"samples_per_s", "step_ms": {"median", "p99"}, "batch_size", "device", "machine", "runs": [...]}``;
        the top-level numbers are those of the largest batch size, ``runs`` has one such dict per batch size.
    """
    import torch

    from dm1.config import DataConfig, DispersiveConfig, ModelConfig, TrainConfig
    from dm1.data.synthetic import make_synthetic_dataset
    from dm1.train.trainer import Trainer

    raw = getattr(args, "batch_sizes", None) or [32, 64]
    try:  # "32,64" or [32, 64]
        batch_sizes = [int(b) for b in (raw.split(",") if isinstance(raw, str) else raw)]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch_sizes: expected comma-separated integers >= 1 like 32,64, found {raw!r}")
    steps = int(getattr(args, "steps", 20) or 20)
    warmup = getattr(args, "warmup", None)  # `dm1 bench --warmup`: None unless given
    warmup = DEFAULT_WARMUP_STEPS if warmup is None else int(warmup)
    if warmup < 0:
        raise ValueError(f"warmup: expected an integer >= 0, found {warmup}")
    size = int(getattr(args, "image_size", 96) or 96)
    variant = getattr(args, "dispersive", None) or "infonce_l2"
    runs = []
    with tempfile.TemporaryDirectory(prefix="dm1-bench-train-") as tmp:
        make_synthetic_dataset(f"{tmp}/data", n_episodes=2, episode_len=40, seed=0, image_size=(size, size))
        for bs in batch_sizes:
            cfg = TrainConfig(
                data=DataConfig(dataset_dir=f"{tmp}/data"),
                model=ModelConfig(image_size=(size, size)),
                dispersive=DispersiveConfig(variant=variant),
                batch_size=bs,
                steps=warmup + steps,
                warmup_steps=1,
                device=getattr(args, "device", None) or "auto",
                num_threads=int(getattr(args, "threads", 0) or 0),
                out_dir=f"{tmp}/run{bs}",
            )
            trainer = Trainer(cfg, progress=False, log=lambda _: None)
            try:
                for _ in range(warmup):
                    trainer.train_step()
                times = []
                for _ in range(steps):
                    t0 = time.perf_counter()
                    trainer.train_step()  # returns Python floats, so the device is synchronised
                    times.append(time.perf_counter() - t0)
            finally:
                trainer.close()
            ms = np.array(times) * 1e3
            runs.append(
                {
                    "samples_per_s": float(bs / np.median(times)),
                    "step_ms": {"median": float(np.median(ms)), "p99": float(np.percentile(ms, 99))},
                    "batch_size": bs,
                    "device": str(trainer.device),
                    "machine": _machine(trainer.device),
                    "dispersive": variant,
                    "timed_steps": steps,
                    "warmup_steps": warmup,
                }
            )
            del trainer
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    top = dict(max(runs, key=lambda r: r["batch_size"]))
    top["runs"] = runs
    return top
