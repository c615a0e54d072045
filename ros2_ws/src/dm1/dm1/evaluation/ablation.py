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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dm1.evaluation.policies import PolicyFn
from dm1.evaluation.report import binomial_stderr, summarize, write_report


@dataclass(frozen=True)
class RunInfo:
    """One trained run directory and the method its config describes."""

    run_dir: str
    method: str
    objective: str
    variant: str
    lam: float
    train_seed: int
    train_steps: int


@dataclass(frozen=True)
class MatrixEntry:
    """One evaluated configuration: a run, K sampler steps, and the backend that runs it (onnx | torch)."""

    run: RunInfo
    steps: int
    backend: str

    @property
    def key(self) -> str:
        """Unique name, e.g. `dm1_l05_s0 K=1 onnx`."""
        return f"{Path(self.run.run_dir).name} K={self.steps} {self.backend}"

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
    """Wall time (ms) of one `predict` per policy, all in this process, interleaved over `rounds`."""
    obs = {k: sample_observation(p.card, seed) for k, p in policies.items()}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in policies}
    for key, pol in policies.items():
        for _ in range(warmup):
            pol.predict(*obs[key], rng=rng)
    per_round = max(1, -(-iters // rounds))
    for _ in range(rounds):
        for key, pol in policies.items():
            images, proprio = obs[key]
            for _ in range(per_round):
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


@dataclass
class Row:
    """One table row: a method at K steps, pooled over training seeds."""

    method: str
    steps: int
    backend: str
    successes: int = 0
    episodes: int = 0
    per_seed: dict[str, float] = field(default_factory=dict)
    infer_ms: float = float("nan")

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            rate=self.rate, stderr=binomial_stderr(self.successes, self.episodes), seed_std=self.seed_std
        )
        return d

    @property
    def seed_std(self) -> float:
        """Standard deviation of the per-seed success rates (nan with one seed)."""
        v = list(self.per_seed.values())
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def aggregate(
    entries: Sequence[MatrixEntry], records: dict[str, list[dict]], timings: dict[str, dict]
) -> list[Row]:
    """Pool the per-entry episode records into table rows (method, K)."""
    rows: dict[tuple[str, int], Row] = {}
    medians: dict[tuple[str, int], list[float]] = {}
    for e in entries:
        recs = records.get(e.key, [])
        row = rows.setdefault(e.row, Row(e.run.method, e.steps, e.backend))
        if e.backend not in row.backend.split("+"):
            row.backend += f"+{e.backend}"
        wins = sum(bool(r["success"]) for r in recs)
        row.successes += wins
        row.episodes += len(recs)
        if recs:
            row.per_seed[f"seed {e.run.train_seed}"] = wins / len(recs)
        if e.key in timings:
            medians.setdefault(e.row, []).append(timings[e.key]["median_ms"])
    for key, row in rows.items():
        if medians.get(key):
            row.infer_ms = float(np.median(medians[key]))
    return list(rows.values())


def markdown_table(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """The ablation table with its caveats."""
    lines = [
        "# Ablation: DM1 vs MeanFlow λ=0 vs flow matching (in-process, twin Lift)",
        "",
        f"- episodes per configuration and training seed: {meta['episodes']}; cube/noise seeds "
        f"{meta['seed']}..{meta['seed'] + meta['episodes'] - 1} (the same for every row)",
        f"- machine: {meta['machine']}; inference threads: {meta['threads']}; date {meta['date']}",
        "- success ± binomial s.e. pooled over training seeds; per-seed rates in the last column",
        "- inference: median wall ms of one `predict` (batch 1), all rows timed in the same process",
        "",
        "| method | K | backend | success % | s.e. | episodes | inference ms | per seed % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds = ", ".join(f"{100 * v:.0f}" for v in r.per_seed.values()) or "–"
        ms = "–" if np.isnan(r.infer_ms) else f"{r.infer_ms:.2f}"
        se = 100 * binomial_stderr(r.successes, r.episodes)
        cells = [r.method, r.steps, r.backend, f"{100 * r.rate:.1f}", f"{se:.1f}", r.episodes, ms, seeds]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "![success per configuration](report/success.png)", ""]
    timings = meta.get("timings_ms") or {}
    if timings:
        lines += [
            "## Inference wall time (batch 1, every configuration timed in this process, interleaved)",
            "",
            "| configuration | median ms | p90 ms | calls |",
            "|---|---|---|---|",
        ]
        for key in sorted(timings):
            t = timings[key]
            lines.append(f"| {key} | {t['median_ms']:.2f} | {t['p90_ms']:.2f} | {t['iters']} |")
        lines.append("")
    return "\n".join(lines)


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
    `TwinContext()`); `runs` overrides `describe_run` (tests).
    """
    from dm1.commands.bench import machine_description

    cfg = cfg or AblationConfig()
    runs = list(runs) if runs is not None else [describe_run(d) for d in run_dirs]
    if not runs:
        raise ValueError("run_ablation: expected at least one run directory")
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
    try:
        for e in entries:
            log(f"evaluating {e.key} ({e.run.method}): {cfg.episodes} episodes")
            records[e.key] = context.evaluate(policies[e.key], cfg.episodes, cfg.seed)
        if cfg.oracle and hasattr(context, "oracle"):
            log("evaluating the scripted expert (privileged upper bound)")
            records["oracle"] = context.evaluate(context.oracle(), cfg.episodes, cfg.seed)
    finally:
        context.close()
    rows = aggregate(entries, records, timings)
    if "oracle" in records:
        recs = records["oracle"]
        rows.append(
            Row("Scripted expert (privileged)", 0, "scripted", sum(r["success"] for r in recs), len(recs))
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
    }
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
    write_report(overall, out / "report", all_recs, configurations=summaries)
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
