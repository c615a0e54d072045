"""DM1 behaviour-cloning trainer: AdamW, warm-up + cosine LR, EMA, random-shift augmentation, MeanFlow (+
dispersive) or flow-matching objective, CSV metrics, periodic safetensors checkpoints and exact resume.

Run directory layout: ``config.yaml`` (resolved config), ``metrics.csv``, ``loss.png``,
``checkpoints/step_<N>/`` (see ``dm1.checkpoint``) and ``.dm1-train.lock`` (held while a trainer uses it;
see ``dm1.train.rundir``). What a resume may change is in ``dm1.train.resume``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dm1.augment import random_shift_dict
from dm1.checkpoint import Checkpoint, checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from dm1.config import TrainConfig, save_train_config
from dm1.data.dataset import WindowDataset
from dm1.dispersive import dispersive_forward
from dm1.errors import ReportedError
from dm1.meanflow import flow_matching_loss, meanflow_loss
from dm1.network import count_parameters
from dm1.paths import same_path
from dm1.train.resume import (
    check_action_layout,
    check_device,
    check_observation_layout,
    check_resume_config,
    load_training_state,
    load_weights,
    model_differences,
)
from dm1.train.rundir import LOCK_FILE, RunDirLock, check_run_dir, truncate_csv
from dm1.train.schedule import lr_at
from dm1.train.setup import EMA, build_network, resolve_device

__all__ = [
    "CSV_FIELDS",
    "EMA",
    "LOCK_FILE",
    "Trainer",
    "TrainingDivergedError",
    "model_differences",
    "resolve_device",
]

CSV_FIELDS = (
    "step",
    "lr",
    "loss",
    "loss_mf",
    "loss_disp",
    "grad_disp_enc",
    "mse_flow",
    "mse_mean",
    "samples_per_s",
)


class TrainingDivergedError(ReportedError, FloatingPointError):
    """The training loss became NaN/inf (usually a learning rate too high for the data and network)."""


class Trainer:
    """Trains a ``DM1Network`` on the episodes of ``cfg.data.dataset_dir``.

    Args:
        cfg: the validated training config.
        out_dir: run directory (default ``cfg.out_dir``).
        resume: continue from the latest checkpoint in ``out_dir`` (exact step, optimizer, EMA, RNG states).
            Without it an ``out_dir`` that already holds checkpoints is refused. ``cfg.steps`` below the
            checkpoint's step is refused; the run keeps the ``init_from`` its checkpoint records. Only the
            schedule, cadence and location keys of ``dm1.train.resume.RESUMABLE_KEYS`` may differ from the
            checkpoint's config (each change is logged); other changes are refused.
        progress: show a tqdm progress bar.
        log: where one-line messages go.

    ``out_dir`` must not be a file, a dataset or an exported model directory. The trainer holds the run
    directory's lock from construction until ``fit`` returns: a second trainer on it is refused.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg, self.progress, self.log = cfg, progress, log
        self.out_dir = Path(out_dir or cfg.out_dir)
        check_run_dir(self.out_dir)
        self._lock = RunDirLock(self.out_dir)
        self._lock.acquire()  # creates the run directory (and missing parents)
        try:
            self._setup(cfg, resume)
        except BaseException:
            self._lock.release(remove_created=True)  # a refused run leaves no empty directory behind
            raise

    def close(self) -> None:
        """Release the run directory (for a trainer used without `fit`, e.g. `dm1 bench train`)."""
        self._lock.release()

    def _setup(self, cfg: TrainConfig, resume: bool) -> None:
        """Load the checkpoint to resume or fine-tune from, the dataset, the network and the optimizer."""
        log = self.log
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        ckpt_path = latest_checkpoint(self.out_dir)
        if ckpt_path is not None and not resume:
            raise FileExistsError(
                f"{self.out_dir} already holds checkpoints ({ckpt_path.name}); "
                "pass --resume or choose another --out"
            )
        ckpt = load_checkpoint(ckpt_path) if (resume and ckpt_path is not None) else None
        if resume and ckpt is None:
            log(f"resume: no checkpoint in {self.out_dir}, starting from step 0")
        if ckpt is not None:
            cfg = self.cfg = self._resumed_config(cfg, ckpt)
        # fine-tuning starts from another run's weights and normalizers (a resumed run has its own)
        init = load_checkpoint(cfg.init_from) if (cfg.init_from and ckpt is None) else None
        if init is not None and init.train_config.model != cfg.model:  # before loading the dataset
            raise ValueError(
                f"init_from {init.path}: model config differs from the run config "
                f"({model_differences(init.train_config.model, cfg.model)})"
            )
        if init is not None:
            check_observation_layout(cfg, init)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        self.dataset = WindowDataset(
            cfg.data.dataset_dir,
            cfg.model,
            cfg.data,
            normalizers=ckpt.normalizers if ckpt else init.normalizers if init else None,
        ).to(self.device)
        source = ckpt if ckpt is not None else init
        if source is not None:
            ds = self.dataset
            check_action_layout(source, cfg.data.dataset_dir, ds.action_space, ds.action_names)
        self.net, self.ema = build_network(cfg.model, self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)  # noise, (t, r), augmentation
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)  # batch indices (CPU)
        self.encoder_params = [*self.net.encoders.parameters(), *self.net.spatial.parameters()]
        self.step = 0
        self._ckpt_metrics: dict[str, Any] = {}  # the resumed checkpoint's last logged metrics
        if ckpt is not None:
            self._restore(ckpt)
        elif init is not None:
            self._init_weights(init)

    def _resumed_config(self, cfg: TrainConfig, ckpt: Checkpoint) -> TrainConfig:
        """``cfg`` checked against the checkpoint it resumes, with the run's own ``init_from`` record kept.

        ``steps`` below the checkpoint's step is refused (the run is already past it; nothing would be
        trained and ``config.yaml`` would disagree with the checkpoints). The weights come from ``ckpt``, so
        ``init_from`` is never loaded again; it stays what the run was fine-tuned from ("" or that path).
        """
        if cfg.steps < ckpt.step:
            raise ValueError(
                f"TrainConfig.steps: expected at least {ckpt.step} to resume the run {self.out_dir} (its "
                f"newest checkpoint {ckpt.path.name} is at step {ckpt.step}), found {cfg.steps}"
            )
        recorded = ckpt.train_config.init_from
        if cfg.init_from and not (recorded and same_path(cfg.init_from, recorded)):
            what = (
                f"{recorded!r} (what it was fine-tuned from) or ''"
                if recorded
                else "'' (trained from scratch)"
            )
            raise ValueError(
                f"TrainConfig.init_from: expected {what} to resume {self.out_dir}, whose weights come from "
                f"its checkpoint {ckpt.path.name}; found {cfg.init_from!r}"
            )
        cfg = dataclasses.replace(cfg, init_from=recorded)
        check_observation_layout(cfg, ckpt)
        check_resume_config(cfg, ckpt, self.log)
        check_device(ckpt, self.device)
        return cfg

    def _init_weights(self, init: Checkpoint) -> None:
        """Start from ``init``'s EMA weights (network and EMA); optimizer, schedule and step start fresh."""
        load_weights(self.net, self.ema.model, init, raw=False)
        self.log(f"fine-tuning from {init.path} (step {init.step}, its normalizers)")

    def _restore(self, ckpt: Checkpoint) -> None:
        if ckpt.dataset_sha256 != self.dataset.dataset_sha256:
            raise ValueError(
                f"{ckpt.path}: dataset changed since the checkpoint (dataset_sha256 expected "
                f"{ckpt.dataset_sha256}, found {self.dataset.dataset_sha256}); start a new run instead"
            )
        load_weights(self.net, self.ema.model, ckpt, raw=True)
        gens = {"gen_state": self.gen, "data_gen_state": self.data_gen}
        load_training_state(self.opt, gens, self.device, ckpt)
        self.step = ckpt.step
        self._ckpt_metrics = dict(ckpt.metrics)
        self.log(f"resumed from {ckpt.path} at step {self.step}")

    # -- one optimisation step -------------------------------------------------------------------------------
    def train_step(self, measure_grad: bool = False) -> dict[str, float]:
        """One AdamW step on a random batch; returns float metrics (``grad_disp_enc`` when measured)."""
        cfg = self.cfg
        lr = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        batch = self.dataset.sample_batch(cfg.batch_size, self.data_gen)
        pad = cfg.data.random_shift_pad
        images = random_shift_dict(batch["images"], pad, self.gen) if pad > 0 else batch["images"]
        self.net.train()
        objective = meanflow_loss if cfg.objective == "meanflow" else flow_matching_loss
        loss_mf, metrics = objective(
            self.net, batch["actions"], images, batch["proprio"], cfg.meanflow, self.gen
        )
        out = {"lr": lr, "loss_mf": float(loss_mf.detach())}
        out.update({k: float(v) for k, v in metrics.items() if k in ("mse_flow", "mse_mean")})
        total = loss_mf
        if cfg.dispersive.enabled:
            term, _ = dispersive_forward(
                self.net, batch["images"], batch["proprio"], cfg.dispersive, self.gen, shift_pad=pad
            )
            total = total + term
            out["loss_disp"] = float(term.detach())
            if measure_grad:
                out["grad_disp_enc"] = self._grad_norm(term)
        if not torch.isfinite(total):
            value = float(total.detach())
            raise TrainingDivergedError(
                f"training diverged at step {self.step + 1}: non-finite loss {value} at lr {lr:.3g}; "
                f"lower lr (now {cfg.lr:g}, e.g. --set lr={cfg.lr / 10:g}) and start a new run"
            )
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        self.step += 1
        self._update_ema()
        out["loss"] = float(total.detach())
        return out

    def _grad_norm(self, term: torch.Tensor) -> float:
        """||d term / d encoder params||_2 (the dispersive gradient that reaches the observation encoder)."""
        if not term.requires_grad:
            return 0.0
        grads = torch.autograd.grad(term, self.encoder_params, retain_graph=True, allow_unused=True)
        return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))

    def _update_ema(self) -> None:
        cfg = self.cfg
        if self.step <= cfg.ema_start_step:
            self.ema.update(self.net, 0.0)  # hard copy until EMA starts
        elif self.step % cfg.ema_every == 0:
            self.ema.update(self.net, cfg.ema_decay)

    # -- loop ------------------------------------------------------------------------------------------------
    def fit(self, until: int | None = None, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Train up to ``cfg.steps`` (or stop early at step ``until``, with a checkpoint there, as a
        preempted job would); returns a summary (final step, last metrics, paths, ``stopped``).

        ``stop`` is asked after every step (e.g. "was Ctrl-C pressed"); once it says True, training ends
        at that step with a checkpoint and the plot (none while no metric row is logged), so ``--resume``
        continues from there.

        A run already at that step (a finished run resumed) trains nothing and writes nothing: the summary
        has ``trained_steps`` 0 and the metrics of its newest checkpoint.

        Raises:
            TrainingDivergedError: the loss became non-finite; the metric rows logged before it are kept,
                the plot is drawn from them and no checkpoint of the diverged weights is written.
        """
        self._lock.acquire()  # held since construction; taken again if fit() is called once more
        try:
            return self._fit(until, stop)
        finally:
            self._lock.release()

    def _fit(self, until: int | None, stop: Callable[[], bool] | None) -> dict[str, Any]:
        from tqdm import tqdm

        from dm1.train.plots import plot_metrics_if_any

        cfg = self.cfg
        end = cfg.steps if until is None else min(until, cfg.steps)
        if self.step >= end:  # a finished run resumed: change nothing (config, metrics, plot, checkpoints)
            plot = self.out_dir / "loss.png"
            return {
                "step": self.step,
                "metrics": dict(self._ckpt_metrics),
                "checkpoint": latest_checkpoint(self.out_dir),
                "metrics_csv": self.out_dir / "metrics.csv",
                "plot": plot if plot.is_file() else None,
                "stopped": False,
                "trained_steps": 0,
            }
        start = self.step
        self.out_dir.mkdir(parents=True, exist_ok=True)
        csv_path = self.out_dir / "metrics.csv"
        truncate_csv(csv_path, self.step, CSV_FIELDS)  # before config.yaml: a garbled CSV changes nothing
        save_train_config(cfg, self.out_dir / "config.yaml")
        self.log(
            f"training {count_parameters(self.net):,} parameters on {len(self.dataset)} windows from "
            f"{len(self.dataset.episode_files)} episodes, device {self.device}, "
            f"steps {self.step}->{cfg.steps}"
        )
        acc: dict[str, list[float]] = {}
        last: dict[str, Any] = {}
        t0 = time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, dynamic_ncols=True)
        try:
            with open(csv_path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                if f.tell() == 0:
                    writer.writeheader()
                stopped = False
                while self.step < end and not stopped:
                    m = self.train_step(measure_grad=(self.step + 1) % cfg.log_every == 0)
                    for k, v in m.items():
                        acc.setdefault(k, []).append(v)
                    bar.update(1)
                    bar.set_postfix(loss=f"{m['loss']:.4f}", l_mf=f"{m['loss_mf']:.4f}")
                    if self.step % cfg.log_every == 0 or self.step == end:
                        elapsed = time.perf_counter() - t0
                        last = {k: float(np.mean(v)) for k, v in acc.items() if k != "grad_disp_enc"}
                        last.update(step=self.step, lr=m["lr"], grad_disp_enc=m.get("grad_disp_enc", ""))
                        last["samples_per_s"] = len(acc["loss"]) * cfg.batch_size / max(elapsed, 1e-9)
                        writer.writerow({k: last.get(k, "") for k in CSV_FIELDS})
                        f.flush()
                        acc, t0 = {}, time.perf_counter()
                    stopped = stop is not None and stop()
                    if self.step % cfg.checkpoint_every == 0 or self.step == end or stopped:
                        self.save(last)
        except TrainingDivergedError as exc:
            bar.close()
            plot = plot_metrics_if_any(csv_path, self.out_dir / "loss.png")
            newest = latest_checkpoint(self.out_dir)
            raise TrainingDivergedError(
                f"{exc}; the metrics logged before it are in {csv_path}"
                f"{f' (plot {plot})' if plot else ''}; newest checkpoint: {newest or 'none'}"
            ) from None
        bar.close()
        plot_path = plot_metrics_if_any(csv_path, self.out_dir / "loss.png")
        final = latest_checkpoint(self.out_dir)
        return {
            "step": self.step,
            "metrics": last,
            "checkpoint": final,
            "metrics_csv": csv_path,
            "plot": plot_path,
            "stopped": stopped,
            "trained_steps": self.step - start,
        }

    def _rng_states(self) -> dict[str, torch.Tensor]:
        # The global torch RNG drives dropout; the generators drive noise, (t, r), augmentation and batches.
        states = {
            "gen_state": self.gen.get_state(),
            "data_gen_state": self.data_gen.get_state(),
            "torch_rng_state": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            states["cuda_rng_state"] = torch.cuda.get_rng_state(self.device)
        return states

    def save(self, metrics: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint for the current step."""
        return save_checkpoint(
            checkpoint_dir(self.out_dir, self.step),
            self.net.state_dict(),
            self.ema.model.state_dict(),
            self.opt.state_dict(),
            self.step,
            self.cfg,
            self.dataset.normalizers,
            self.dataset.dataset_sha256,
            metrics or {},
            extra_tensors=self._rng_states(),
            extra={
                "dataset_schema": {  # read by dm1.export for the model card
                    "action_space": self.dataset.action_space,
                    "action_names": self.dataset.action_names,
                    "control_rate_hz": self.dataset.control_rate_hz,
                    "units": self.dataset.units,
                    "frame": self.dataset.frame,
                    "proprio_keys": list(self.cfg.data.proprio_keys),
                },
                "episodes": self.dataset.episode_files,
                "parameters": count_parameters(self.net),
            },
        )
