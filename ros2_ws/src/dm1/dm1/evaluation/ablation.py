"""The issue-6 ablation: trained runs × sampler steps K × N seeded in-process episodes, plus inference timing.

For every run directory (a `dm1 train` output: `config.yaml` + `checkpoints/step_*/`) the method is read from
its config: MeanFlow + dispersive → `DM1 λ=<lam>`, MeanFlow without a regularizer → `MeanFlow λ=0`, objective
`flow_matching` → `Flow matching`. MeanFlow models run at K ∈ `steps` (K = 1 through the exported ONNX graph,
the deployed path), flow-matching models at K ∈ `fm_steps` (torch, Euler on the instantaneous velocity).
Runs of one method with different training seeds are pooled: the table shows pooled success ± binomial s.e.
and the per-seed rates. The wall time of one inference is measured for every (run, K, backend) in the same
process, interleaved in rounds, before any episode runs. Every policy sees the same cube and noise seeds.

Outputs in `out_dir`: `ablation.json` (meta, rows, per-configuration summaries, timings, per-episode records),
`ablation.md` (the table) and `report/` (`dm1.evaluation.report.write_report`: plots and pooled summaries).
Episodes that ended in an error (a franky error, a refused setting) count as failures and are listed above the
table. Ctrl-C during the episodes writes a partial report of the configurations that finished
(`meta["interrupted"]`); the interrupted configuration's episodes are not in it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dm1.evaluation.ablation_report import (  # noqa: F401 - re-exported: the ablation's API
    Row,
    aggregate,
    episode_errors,
    failed_configurations,
    markdown_table,
)
from dm1.evaluation.policies import PolicyFn
from dm1.evaluation.report import summarize, write_report
from dm1.evaluation.report_dir import clear_report_dir


@dataclass(frozen=True)
class RunInfo:
    """One trained run directory and the method its config describes; `label` names it in the report (its
    directory name, or more of its path where runs share a name: `run_labels`)."""

    run_dir: str
    method: str
    objective: str
    variant: str
    lam: float
    train_seed: int
    train_steps: int
    label: str = ""


@dataclass(frozen=True)
class MatrixEntry:
    """One evaluated configuration: a run, K sampler steps, and the backend that runs it (onnx | torch)."""

    run: RunInfo
    steps: int
    backend: str

    @property
    def key(self) -> str:
        """Unique name, e.g. `dm1_l05_s0 K=1 onnx` (`runs/tiny K=1 onnx` where runs share a name)."""
        return f"{self.run.label or Path(self.run.run_dir).name} K={self.steps} {self.backend}"

    @property
    def row(self) -> tuple[str, int]:
        """Table row it pools into: (method, K)."""
        return (self.run.method, self.steps)


@dataclass(frozen=True)
class AblationConfig:
    """Matrix and timing settings.

    Args:
        episodes: seeded episodes per configuration (cube seeds `seed + i`).
        seed: first cube/noise seed (differs from the demo-collection seeds).
        steps: K for MeanFlow models (DM1 and MeanFlow λ=0).
        fm_steps: K for flow-matching models.
        onnx_one_step: run MeanFlow K = 1 through the exported ONNX graph (exported on demand).
        timing_iters: timed inferences per configuration; timing_warmup: untimed ones first.
        threads: torch / onnxruntime intra-op threads (the same for every backend, for a fair timing).
        oracle: also evaluate the privileged scripted expert (upper bound; checks the success signal).
    """

    episodes: int = 20
    seed: int = 1000
    steps: tuple[int, ...] = (1, 5)
    fm_steps: tuple[int, ...] = (1, 5, 10)
    onnx_one_step: bool = True
    timing_iters: int = 200
    timing_warmup: int = 20
    threads: int = 1
    oracle: bool = False

    def __post_init__(self) -> None:
        for name in ("episodes", "timing_iters", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"AblationConfig.{name}: expected an int >= 1, found {getattr(self, name)!r}"
                )
        if self.timing_warmup < 0:
            raise ValueError(f"AblationConfig.timing_warmup: expected >= 0, found {self.timing_warmup!r}")
        for name in ("steps", "fm_steps"):
            ks = getattr(self, name)
            if not ks or any(int(k) < 1 for k in ks) or len(set(ks)) != len(ks):
                raise ValueError(f"AblationConfig.{name}: expected distinct ints >= 1, found {ks!r}")
            object.__setattr__(self, name, tuple(int(k) for k in ks))


def method_label(objective: str, variant: str, lam: float) -> str:
    """`DM1 λ=0.5` (+ variant when not infonce_l2), `MeanFlow λ=0`, or `Flow matching`."""
    if objective == "flow_matching":
        return "Flow matching"
    if variant == "none" or lam == 0.0:
        return "MeanFlow λ=0"
    return f"DM1 λ={lam:g}" + ("" if variant == "infonce_l2" else f" ({variant})")


def describe_run(run_dir: str | Path) -> RunInfo:
    """Read `<run_dir>/config.yaml` (written by `dm1 train`) and name the method."""
    from dm1.config import load_train_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: expected a `dm1 train` run directory with config.yaml")
    cfg = load_train_config(path)
    d = cfg.dispersive
    lam = d.lam if d.enabled else 0.0
    return RunInfo(
        str(run_dir),
        method_label(cfg.objective, d.variant, lam),
        cfg.objective,
        d.variant,
        lam,
        cfg.seed,
        cfg.steps,
    )


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """A distinct label per run directory: its name, or as many of its last path parts as tell it from the
    others (`runs/tiny`, `other/tiny`). ValueError naming a directory given twice, however spelt."""
    resolved = [Path(d).resolve() for d in run_dirs]
    first: dict[Path, str | Path] = {}
    for given, path in zip(run_dirs, resolved, strict=True):
        if path in first:
            twice = f"{path} given twice (as {first[path]} and {given})"
            raise ValueError(f"run directories: expected each once, found {twice}")
        first[path] = given
    for depth in range(1, max((len(p.parts) for p in resolved), default=0) + 1):
        labels = [Path(*p.parts[-depth:]).as_posix() for p in resolved]
        if len(set(labels)) == len(labels):
            return labels
    return [p.as_posix() for p in resolved]  # not reached: distinct paths differ in some part


def plan_matrix(runs: Sequence[RunInfo], cfg: AblationConfig) -> list[MatrixEntry]:
    """Every (run, K) to evaluate, in a stable order (method, K, run)."""
    entries = []
    for run in runs:
        ks = cfg.fm_steps if run.objective == "flow_matching" else cfg.steps
        for k in ks:
            onnx = k == 1 and cfg.onnx_one_step and run.objective == "meanflow"
            entries.append(MatrixEntry(run, k, "onnx" if onnx else "torch"))
    return sorted(entries, key=lambda e: (e.run.method, e.steps, e.run.run_dir))


def load_policy(entry: MatrixEntry, threads: int = 1) -> PolicyFn:
    """The `PolicyFn` of an entry: ONNX (exported to `<run>/export/<step>` when missing) or torch K-step."""
    from dm1.evaluation.policies import OnnxPolicy, TorchCheckpointPolicy, resolve_checkpoint

    if entry.backend == "onnx":
        ckpt = resolve_checkpoint(entry.run.run_dir)
        out = Path(entry.run.run_dir) / "export" / ckpt.name
        if not (out / "model.onnx").is_file():
            from dm1.export import export_model

            export_model(ckpt, out, name=Path(entry.run.run_dir).name)
        return OnnxPolicy.load(out, num_threads=threads, name=entry.key)
    return TorchCheckpointPolicy(entry.run.run_dir, entry.steps, name=entry.key, num_threads=threads)


def sample_observation(card: Any, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A fixed random observation: images (H, W, 3) uint8, proprio (P,) inside the training range."""
    rng = np.random.default_rng(seed)
    images = {c.name: rng.integers(0, 256, tuple(c.shape), dtype=np.uint8) for c in card.cameras}
    norm = (card.normalization or {}).get("proprio") or {}
    lo = np.asarray(norm.get("min", np.zeros(card.proprio.dim)), dtype=np.float32)
    hi = np.asarray(norm.get("max", np.zeros(card.proprio.dim)), dtype=np.float32)
    return images, (lo + (hi - lo) * rng.uniform(size=lo.shape)).astype(np.float32)


def time_policies(
    policies: dict[str, PolicyFn], iters: int, warmup: int, rounds: int = 5, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Wall time (ms) of one `predict` per policy, all in this process, interleaved over `rounds`.

    Exactly `iters` timed calls per policy, spread over at most `rounds` rounds (fewer when `iters` is less).
    """
    obs = {k: sample_observation(p.card, seed) for k, p in policies.items()}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in policies}
    for key, pol in policies.items():
        for _ in range(warmup):
            pol.predict(*obs[key], rng=rng)
    rounds = max(1, min(rounds, iters))
    per_round = [iters // rounds + (r < iters % rounds) for r in range(rounds)]  # sums to iters
    for calls in per_round:
        for key, pol in policies.items():
            images, proprio = obs[key]
            for _ in range(calls):
                noise = rng.standard_normal(tuple(pol.card.noise_shape), dtype=np.float32)
                t = time.perf_counter()
                pol.predict(images, proprio, noise=noise)
                samples[key].append((time.perf_counter() - t) * 1e3)
    return {
        k: {
            "median_ms": float(np.median(v)),
            "p90_ms": float(np.percentile(v, 90)),
            "mean_ms": float(np.mean(v)),
            "iters": len(v),
        }
        for k, v in samples.items()
    }


def episode_config(context: Any) -> dict[str, Any] | None:
    """The in-process episode settings (time limit, noise scale, ensembling) the context ran with."""
    inprocess = getattr(context, "inprocess", None)
    return asdict(inprocess) if is_dataclass(inprocess) else None


def run_ablation(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    cfg: AblationConfig | None = None,
    context: Any = None,
    loader: Callable[[MatrixEntry, int], PolicyFn] = load_policy,
    runs: Sequence[RunInfo] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Plan, time, evaluate and report; returns the `ablation.json` content.

    `context` provides `evaluate(policy, episodes, seed) -> list[record dict]` and `close()` (default
    `TwinContext()`); `runs` overrides `describe_run` (tests). An `out_dir` that cannot be written and a run
    directory given twice are refused (ValueError) before anything runs; runs that share a directory name are
    labelled by their paths' last parts (`run_labels`). A KeyboardInterrupt during the episodes, once a
    configuration finished, writes the report of the finished configurations and returns it with
    `meta["interrupted"]` = `{"during", "finished", "planned"}`; before that, it propagates and nothing is
    written. `meta["failed_configurations"]`: those whose every episode ended in an error.
    """
    from dm1.commands.arg_types import output_path_problem
    from dm1.commands.bench import machine_description

    cfg = cfg or AblationConfig()
    problem = output_path_problem(out_dir, "directory")
    if problem is not None:  # refused now, not after every episode ran
        raise ValueError(f"out_dir: {problem}")
    if runs is None:
        run_labels(run_dirs)  # a run given twice: refused before any config is read
        runs = [describe_run(d) for d in run_dirs]
    if not runs:
        raise ValueError("run_ablation: expected at least one run directory")
    labels = run_labels([r.run_dir for r in runs])
    runs = [dataclasses.replace(r, label=label) for r, label in zip(runs, labels, strict=True)]
    entries = plan_matrix(runs, cfg)
    policies = {e.key: loader(e, cfg.threads) for e in entries}
    # Timing only: torch K = 1 beside ONNX K = 1, so one- vs multi-step is also compared within one backend.
    extra = [MatrixEntry(e.run, 1, "torch") for e in entries if e.backend == "onnx"]
    timed = {**policies, **{e.key: loader(e, cfg.threads) for e in extra}}
    log(f"timing {len(timed)} configurations ({cfg.timing_iters} inferences each, {cfg.threads} thread(s))")
    timings = time_policies(timed, cfg.timing_iters, cfg.timing_warmup)
    for e in extra:
        del timed[e.key]  # free the timing-only models before the episodes
    if context is None:
        from dm1.evaluation.inprocess import TwinContext

        context = TwinContext()
    records: dict[str, list[dict]] = {}
    current, interrupted = "", None
    with_oracle = bool(cfg.oracle and hasattr(context, "oracle"))  # a context without an expert has none
    planned = len(entries) + int(with_oracle)
    try:
        for e in entries:
            current = e.key
            log(f"evaluating {e.key} ({e.run.method}): {cfg.episodes} episodes")
            records[e.key] = context.evaluate(policies[e.key], cfg.episodes, cfg.seed)
        if with_oracle:
            current = "oracle"
            log("evaluating the scripted expert (privileged upper bound)")
            records["oracle"] = context.evaluate(context.oracle(), cfg.episodes, cfg.seed)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: report the configurations that finished
        if not records:
            raise
        interrupted = {"during": current, "finished": len(records), "planned": planned}
        log(f"interrupted during {current}: writing a partial report of {len(records)} configurations")
    finally:
        context.close()
    rows = aggregate([e for e in entries if e.key in records], records, timings)
    if "oracle" in records:
        recs = records["oracle"]
        oracle_errors = [r["error"] for r in recs if r.get("error")]
        rows.append(
            Row(
                "Scripted expert (privileged)",
                0,
                "scripted",
                sum(r["success"] for r in recs),
                len(recs),
                errors=len(oracle_errors),
                first_error=f"oracle: {oracle_errors[0]}" if oracle_errors else None,
            )
        )
    meta = {
        "episodes": cfg.episodes,
        "seed": cfg.seed,
        "threads": cfg.threads,
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": asdict(cfg),
        "episode_config": episode_config(context),
        "runs": [asdict(r) for r in runs],
        "episode_errors": episode_errors(records),
        "failed_configurations": failed_configurations(records),
    }
    if interrupted is not None:
        meta["interrupted"] = interrupted
    summaries = {
        key: summarize(recs, model=key, through_ros=False, seed=cfg.seed, machine=meta["machine"])
        for key, recs in records.items()
    }
    result = {
        "meta": meta,
        "rows": [r.to_dict() for r in rows],
        "timings_ms": timings,
        "summaries": {k: s.to_dict() for k, s in summaries.items()},
        "records": records,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    (out / "ablation.md").write_text(markdown_table(rows, {**meta, "timings_ms": timings}))
    all_recs = [r for recs in records.values() for r in recs]
    overall = summarize(all_recs, model="ablation (all configurations)", through_ros=False, seed=cfg.seed,
                        machine=meta["machine"])  # fmt: skip
    clear_report_dir(out / "report")  # an earlier ablation's plots: none outlives it (`dm1 ablate --force`)
    write_report(overall, out / "report", all_recs, configurations=summaries)
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
