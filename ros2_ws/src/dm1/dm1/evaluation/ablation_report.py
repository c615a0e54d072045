"""The ablation's table: episode records pooled into rows (`aggregate`), and `ablation.md` with its warnings
(a partial run, episodes that ended in an error). `dm1.evaluation.ablation` runs the matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dm1.evaluation.report import binomial_stderr

if TYPE_CHECKING:
    from dm1.evaluation.ablation import MatrixEntry


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
    errors: int = 0
    first_error: str | None = None

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
        errored = [r["error"] for r in recs if r.get("error")]
        row.errors += len(errored)
        if errored and row.first_error is None:
            row.first_error = f"{e.key}: {errored[0]}"
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
        *_partial_lines(meta.get("interrupted")),
        *_error_lines(meta.get("episode_errors"), rows),
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


def _partial_lines(interrupted: dict[str, Any] | None) -> list[str]:
    """The warning above a partial table (interrupted run), or nothing."""
    if not interrupted:
        return []
    return [
        f"**Partial report: interrupted during `{interrupted['during']}`.** It covers the "
        f"{interrupted['finished']} of {interrupted['planned']} configurations that finished; the "
        "interrupted one's episodes are not included.",
        "",
    ]


def _error_lines(errors: dict[str, Any] | None, rows: Sequence[Row]) -> list[str]:
    """The warning above the table when episodes ended in an error (counted as failures), or nothing."""
    if not errors:
        return []
    first = errors["first"]
    lines = [
        f"**{errors['errored']} of {errors['episodes']} episodes ended in an error** and count as failures; "
        f"first ({first['configuration']}, episode {first['index']}): `{first['error']}`",
        "",
    ]
    lines += [
        f"- {r.method} K={r.steps}: {r.errors} of {r.episodes} episodes errored" for r in rows if r.errors
    ]
    return [*lines, ""]


def episode_errors(records: dict[str, list[dict]]) -> dict[str, Any] | None:
    """`{"episodes", "errored", "first": {"configuration", "index", "error"}}` over every record that has an
    `error`, or None when no episode errored."""
    errored = [(key, r) for key, recs in records.items() for r in recs if r.get("error")]
    if not errored:
        return None
    key, rec = errored[0]
    return {
        "episodes": sum(len(recs) for recs in records.values()),
        "errored": len(errored),
        "first": {"configuration": key, "index": rec.get("index"), "error": rec["error"]},
    }


def failed_configurations(records: dict[str, list[dict]]) -> list[str]:
    """The configurations whose every episode ended in an error: their rows measure nothing."""
    return [key for key, recs in records.items() if recs and all(r.get("error") for r in recs)]
