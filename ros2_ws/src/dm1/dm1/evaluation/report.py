"""Summaries and reports of closed-loop evaluations: JSON, Markdown and PNG plots.

Inputs are plain per-episode records (`success`, `sim_duration_s`, `wall_s`, `ledger_ms` lists), so the same
code serves the full-ROS evaluation (`dm1 eval`) and in-process ablations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dm1.evaluation.progress import FAILURE_MODES, failure_mode


def binomial_stderr(successes: int, n: int) -> float:
    """Standard error sqrt(p(1-p)/n) of a success rate (0 for n = 0)."""
    if n <= 0:
        return 0.0
    p = successes / n
    return math.sqrt(p * (1.0 - p) / n)


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {"median": float("nan"), "p99": float("nan"), "mean": float("nan"), "count": 0}
    return {
        "median": float(np.median(arr)),
        "p99": float(np.percentile(arr, 99)),
        "mean": float(arr.mean()),
        "count": int(arr.size),
    }


@dataclass
class EvalSummary:
    """The JSON written by `dm1 eval` (and stored in a model card's `evaluation`)."""

    model: str
    episodes: int
    successes: int
    success_rate: float
    stderr: float
    through_ros: bool
    episode_sim_s: dict[str, float]
    episode_wall_s: dict[str, float]
    latency_ms: dict[str, dict[str, float]]
    past_stamped_chunks: int
    chunks: int
    seed: int
    machine: str
    outcomes: dict[str, int] = field(default_factory=dict)  # episodes per `FAILURE_MODES` entry
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def summarize(
    records: Sequence[dict[str, Any]], model: str, through_ros: bool, seed: int, machine: str
) -> EvalSummary:
    """Aggregate per-episode records into an `EvalSummary`."""
    n = len(records)
    wins = sum(bool(r["success"]) for r in records)
    ledger: dict[str, list[float]] = {}
    modes = [failure_mode(r) for r in records]
    for r in records:
        for key, vals in r.get("ledger_ms", {}).items():
            ledger.setdefault(key, []).extend(vals)
    return EvalSummary(
        model=model,
        episodes=n,
        successes=wins,
        success_rate=wins / n if n else 0.0,
        stderr=binomial_stderr(wins, n),
        through_ros=through_ros,
        episode_sim_s=_stats([r["sim_duration_s"] for r in records]),
        episode_wall_s=_stats([r["wall_s"] for r in records]),
        latency_ms={k: _stats(v) for k, v in sorted(ledger.items())},
        past_stamped_chunks=sum(int(r.get("past_stamped_chunks", 0)) for r in records),
        chunks=sum(int(r.get("chunks", 0)) for r in records),
        seed=seed,
        machine=machine,
        outcomes={m: modes.count(m) for m in FAILURE_MODES if modes.count(m)},
    )


#: the files `write_report` writes into a report directory (`dm1 eval --force` removes exactly these)
REPORT_FILES: tuple[str, ...] = (
    "eval.json",
    "episodes.json",
    "episodes.json.tmp",
    "report.md",
    "success.png",
    "latency.png",
)


def write_episodes(out_dir: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Atomically (re)write `out_dir/episodes.json` (a crash mid-write leaves the previous file)."""
    out = Path(out_dir)
    tmp = out / "episodes.json.tmp"
    tmp.write_text(json.dumps(list(records), indent=1) + "\n")
    tmp.replace(out / "episodes.json")


def _pose(record: dict[str, Any]) -> str:
    if record.get("seed") is not None:
        return str(record["seed"])
    if record.get("stream"):
        return f"stream {record['stream'][0]} #{record['stream'][1]}"
    return f"episode {record.get('index', '?')}"


def _outcome(record: dict[str, Any]) -> str:
    mode = failure_mode(record)
    fault = str(record.get("fault") or "").replace("|", "/")  # a table cell
    return f"{mode}: {fault}" if mode == "controller_fault" else mode


def failure_table(records: Sequence[dict[str, Any]], max_rows: int = 50) -> list[str]:
    """Markdown rows, one per failed episode: its seed, outcome and where it ended (empty if none failed)."""
    failed = [r for r in records if not r.get("success")]
    if not failed:
        return []

    def cm(r: dict[str, Any], key: str) -> str:
        value = float(r.get(key, float("nan")))
        return f"{100 * value:.1f}" if math.isfinite(value) else "-"

    lines = [
        "",
        "| failed episode (cube seed) | outcome | closest TCP–cube cm | highest lift cm | at the end: "
        "TCP–cube cm | at the end: gripper cm | grasps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in failed[:max_rows]:
        lines.append(
            f"| {_pose(r)} | {_outcome(r)} | {cm(r, 'min_ee_cube_m')} | "
            f"{cm(r, 'max_cube_lift_m')} | {cm(r, 'final_ee_cube_m')} | {cm(r, 'final_gripper_width_m')} | "
            f"{r.get('grasps', '-')} |"
        )
    if len(failed) > max_rows:
        lines.append(f"| … {len(failed) - max_rows} more in episodes.json | | | | | | |")
    return lines


def write_report(
    summary: EvalSummary,
    out_dir: str | Path,
    records: Sequence[dict[str, Any]] = (),
    configurations: dict[str, EvalSummary] | None = None,
) -> Path:
    """Write `eval.json`, `episodes.json`, `report.md` and plots into `out_dir`; returns the Markdown path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    write_episodes(out, records)
    configs = configurations or {summary.model: summary}

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(configs)
    rates = [100 * configs[k].success_rate for k in names]
    errs = [100 * configs[k].stderr for k in names]
    ax.bar(range(len(names)), rates, yerr=errs, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Lift success per configuration (± binomial s.e.)")
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    samples = [v for r in records for v in r.get("ledger_ms", {}).get("published_ms", [])]
    if samples:
        ax.hist(samples, bins=40, color="#dd8452")
    ax.set_xlabel("observation → chunk published (ms)")
    ax.set_ylabel("ticks")
    ax.set_title("Policy latency ledger")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=120)
    plt.close(fig)

    lines = [
        f"# Evaluation: {summary.model}",
        "",
        f"- episodes: {summary.episodes}, successes: {summary.successes}, "
        f"success rate: {100 * summary.success_rate:.1f} % ± {100 * summary.stderr:.1f} (binomial s.e.)",
        f"- through the full ROS 2 stack: {summary.through_ros}; seed {summary.seed}",
        f"- machine: {summary.machine}",
        f"- episode duration (sim s): median {summary.episode_sim_s['median']:.2f}, "
        f"wall s median {summary.episode_wall_s['median']:.2f}",
        f"- chunks: {summary.chunks}, stamped in the past on arrival: {summary.past_stamped_chunks}",
        "- outcomes: "
        + (", ".join(f"{k} {v}" for k, v in summary.outcomes.items()) or "-")
        + " (reach: TCP within 3 cm of the cube centre; lift: cube 2 cm up; success: 10 cm, held)",
        "",
        "| latency stage (ms) | median | p99 | samples |",
        "|---|---|---|---|",
    ]
    for key, st in summary.latency_ms.items():
        lines.append(f"| {key} | {st['median']:.2f} | {st['p99']:.2f} | {st['count']} |")
    lines += failure_table(records)
    if len(configs) > 1:
        lines += ["", "| configuration | episodes | success % | s.e. |", "|---|---|---|---|"]
        for name, s in configs.items():
            lines.append(f"| {name} | {s.episodes} | {100 * s.success_rate:.1f} | {100 * s.stderr:.1f} |")
    lines += ["", "![success](success.png)", "![latency](latency.png)", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    return md
