"""`dm1 train --config CONFIG [--out DIR] [--steps N] [--resume] [--set key=value ...]`.

Exit codes: 0 done; 2 a one-line error (bad config or `--set`, unusable run directory or checkpoint, a run
directory in use by another `dm1 train`, a diverged run); 128 + signal when Ctrl-C / SIGTERM stopped it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from dm1.commands.arg_types import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train a DM1 policy on recorded or synthetic episodes",
        description="Train a DM1 (MeanFlow + dispersive) policy. Writes config.yaml, metrics.csv, loss.png "
        "and checkpoints/step_<N>/ (safetensors + JSON) into the run directory. One dm1 train at a time per "
        "run directory; a dataset or exported model directory is refused as one.",
        epilog="--resume continues a run exactly. Only these config keys may differ from its checkpoint "
        "(each change is printed as 'resume: KEY: OLD -> NEW'): steps, warmup_steps, lr, min_lr (the "
        "schedule is a function of the step), log_every, checkpoint_every, num_threads, sample_steps_eval, "
        "device (same device type), out_dir, data.dataset_dir (same content). Any other change (objective, "
        "meanflow.*, dispersive.*, data.*, model.*, seed, batch_size, weight_decay, ema_*) is refused: "
        "start a new run from the checkpoint's weights with --init-from instead.",
    )
    p.add_argument("--config", required=True, help="training YAML, e.g. configs/tiny.yaml")
    p.add_argument("-o", "--out", help="run directory (default: out_dir from the config)")
    p.add_argument("--steps", type=positive_int, help="total optimizer steps (overrides the config)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in the run dir (only schedule/cadence keys may change; "
        "see below)",
    )
    p.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="fine-tune: start from this checkpoint's (or run's newest) EMA weights and normalizers, with a "
        "fresh optimizer and schedule (sets init_from in the config)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, dotted for nested keys (e.g. --set model.mlp_width=256); repeatable",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested config dict; values are parsed as YAML scalars/lists."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, found {item!r}")
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {key}: {part!r} is not a config section")
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f"--set {key}: unknown key {parts[-1]!r}; allowed: {sorted(node)}")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(
                f"--set {item}: invalid YAML value {raw!r} ({problem}); expected a scalar like 0.5 or a "
                "list like [a, b]"
            ) from None
    return cfg


def resume_command(args: argparse.Namespace, out_dir: str, init_from: str = "") -> str:
    """The `dm1 train` command line that continues the run `args` started in `out_dir`.

    ``init_from`` is what the run was fine-tuned from ("" if from scratch): the command repeats it so the run
    keeps that record (a resumed run takes its weights from its own checkpoint, not from there).
    """
    import shlex

    cmd = ["dm1", "train", "--config", args.config, "--out", str(out_dir)]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if init_from:
        cmd += ["--init-from", init_from]
    for item in args.set:
        cmd += ["--set", item]
    return shlex.join([*cmd, "--resume"])


def run(args: argparse.Namespace) -> int:
    """Handler of `dm1 train`."""
    from pathlib import Path

    from dm1 import interrupts
    from dm1.checkpoint import CheckpointError
    from dm1.config import TrainConfig, load_train_config
    from dm1.errors import ReportedError

    started = False  # set once training runs with deferred interrupts
    try:
        try:
            loaded = load_train_config(args.config)
        except ValueError as exc:
            raise ValueError(f"--config {exc}") from None
        d = apply_overrides(loaded.to_dict(), args.set)
        if args.steps is not None:
            d["steps"] = args.steps
            d["warmup_steps"] = min(d["warmup_steps"], args.steps)
        if args.out:
            d["out_dir"] = args.out
        if args.init_from:
            d["init_from"] = args.init_from
        cfg = TrainConfig.from_dict(d, where=f"{args.config} (after overrides)")
        if not Path(cfg.data.dataset_dir).is_dir():
            raise ValueError(
                f"data.dataset_dir {cfg.data.dataset_dir!r} does not exist; record episodes or make toy data "
                f"with `dm1 data synth -o {cfg.data.dataset_dir} --episodes 8 "
                f"--image-size {cfg.model.image_size[0]}x{cfg.model.image_size[1]}`"
            )
        from dm1.train.trainer import Trainer

        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
        # Ctrl-C / SIGTERM (a preempted job) end training after the current step, with a checkpoint;
        # a second signal stops at once (the last periodic checkpoint stays)
        with interrupts.deferred_interrupts():
            started = True
            summary = trainer.fit(stop=interrupts.requested)
            signum = interrupts.pending()
    except (ValueError, FileExistsError, CheckpointError, ReportedError) as exc:
        print(f"dm1 train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if not started:  # while loading the config, dataset or checkpoint: nothing trained yet
            print(
                "dm1 train: interrupted before training started: nothing was trained or checkpointed",
                file=sys.stderr,
            )
        else:
            print(
                f"dm1 train: {exc or 'interrupted twice'}: stopped without a checkpoint of this step",
                file=sys.stderr,
            )
        return interrupts.exit_code(exc)
    if summary["stopped"]:  # stopped only when a signal is pending
        sig = signal.Signals(signum)
        plot = f"plot {summary['plot']}" if summary["plot"] else "no plot (no metric row logged yet)"
        print(
            f"dm1 train: stopped by {sig.name} at step {summary['step']}: "
            f"checkpoint {summary['checkpoint']}; {plot}; continue with "
            f"`{resume_command(args, cfg.out_dir, trainer.cfg.init_from)}`",
            file=sys.stderr,
        )
        return 128 + int(sig)
    if summary["trained_steps"] == 0:  # a finished run resumed: nothing rewritten
        print(
            f"dm1 train: {cfg.out_dir} is already at step {summary['step']} >= steps {cfg.steps}: "
            f"nothing to train; checkpoint {summary['checkpoint']}"
        )
        return 0
    m = summary["metrics"]
    print(
        f"done: step {summary['step']}, loss {m.get('loss', float('nan')):.4f} "
        f"(L_MF {m.get('loss_mf', float('nan')):.4f}); checkpoint {summary['checkpoint']}; "
        f"metrics {summary['metrics_csv']}; plot {summary['plot']}"
    )
    return 0
