"""One report from several finished evaluations of the same model and settings (`dm1 eval --merge`).

A 200-episode evaluation through the full ROS 2 stack takes over an hour on a 2-core machine, so it is often
run in parts (`--seed 1000 --episodes 50`, `--seed 1050 ...`). `merge_runs` reads each part's `eval.json` and
`episodes.json` (written by `dm1.evaluation.write_report`), checks that the parts evaluated the same model
with the same episode settings on different cube poses (`pose_key`: each episode's seed, or its place in the
twin's reset stream), and summarizes all their episodes as one evaluation
(success rate and binomial s.e. over every episode, latency over every tick).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dm1.evaluation.report import EvalSummary, summarize
from dm1.paths import same_path

#: `extra` entries that must agree between merged parts (episode settings and model identity).
MUST_AGREE = ("max_sim_s", "noise_scale", "ensemble_alpha", "onnx_sha256")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected a finished `dm1 eval` report directory)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


#: `eval.json` fields `merge_runs` reads, with the JSON type each must have
SUMMARY_FIELDS: dict[str, type] = {
    "model": str,
    "through_ros": bool,
    "seed": int,
    "episodes": int,
    "successes": int,
    "machine": str,
    "extra": dict,
}
_JSON_NAMES = {str: "a string", bool: "true or false", int: "an integer", dict: "an object"}
#: per-episode fields `summarize` reads from each `episodes.json` record
RECORD_FIELDS: tuple[str, ...] = ("success", "sim_duration_s", "wall_s")


def _check_fields(path: Path, data: dict[str, Any], types: dict[str, type]) -> None:
    """Raise ValueError naming `path` and the field when a field of `types` is missing or has another type."""
    for name, kind in types.items():
        if name not in data:
            raise ValueError(f"{path}: field '{name}': expected to be present, found it missing")
        value = data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{path}: field '{name}': expected {_JSON_NAMES[kind]}, found {value!r}")


def pose_key(record: dict[str, Any]) -> tuple:
    """What fixes an episode's cube pose: its own seed, or (stream seed, reset index) for a twin without
    `seeded_resets` (and for records written before episodes carried their seed)."""
    if record.get("seed") is not None:
        return ("seed", int(record["seed"]))
    stream, index = record["stream"]
    return ("stream", int(stream), int(index))


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(`eval.json`, `episodes.json` records) of one finished evaluation.

    A record without its own cube `seed` gets `stream: [eval seed, index]`: its pose was the index-th draw of
    the twin's reset stream seeded by the evaluation's seed. Raises ValueError naming the file and the field
    when eval.json lacks a field of `SUMMARY_FIELDS` (or holds another type), or a record one of
    `RECORD_FIELDS` (e.g. a hand-edited report).
    """
    run = Path(run_dir)
    summary = _read_json(run / "eval.json")
    records = _read_json(run / "episodes.json")
    if not isinstance(summary, dict) or not isinstance(records, list):
        raise ValueError(f"{run}: expected eval.json to hold an object and episodes.json a list")
    _check_fields(run / "eval.json", summary, SUMMARY_FIELDS)
    if len(records) != summary.get("episodes"):
        raise ValueError(
            f"{run / 'episodes.json'}: expected {summary.get('episodes')} records (eval.json episodes), "
            f"found {len(records)}"
        )
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"{run / 'episodes.json'}: record {i}: expected an object, found {rec!r}")
        missing = [name for name in RECORD_FIELDS if name not in rec]
        if missing:
            raise ValueError(
                f"{run / 'episodes.json'}: record {i}: field '{missing[0]}': expected to be present, "
                "found it missing"
            )
        if rec.get("seed") is None:
            rec["stream"] = [int(summary["seed"]), int(rec.get("index", i))]
    return summary, records


def merge_runs(run_dirs: Sequence[str | Path], machine: str | None = None) -> tuple[EvalSummary, list[dict]]:
    """One `EvalSummary` over every episode of `run_dirs`, in the given order.

    Raises ValueError naming the directory and field when the parts differ in model (compared as resolved
    paths: `./models/m/` is `models/m`), `through_ros`, or an episode setting (`MUST_AGREE`, compared where
    both parts recorded it), or when a cube pose repeats.
    """
    if len(run_dirs) < 2:
        raise ValueError(f"merge: expected at least 2 evaluation directories, found {len(run_dirs)}")
    parts = [(Path(d), *load_run(d)) for d in run_dirs]
    first_dir, first, _ = parts[0]
    seen: dict[tuple, Path] = {}
    records: list[dict[str, Any]] = []
    for run, summary, recs in parts:
        if not same_path(summary["model"], first["model"]):  # the same directory, however spelled
            raise ValueError(
                f"{run / 'eval.json'}: model: expected {first['model']!r} (as {first_dir}), "
                f"found {summary['model']!r}"
            )
        if summary["through_ros"] != first["through_ros"]:
            raise ValueError(
                f"{run / 'eval.json'}: through_ros: expected {first['through_ros']!r} (as {first_dir}), "
                f"found {summary['through_ros']!r}"
            )
        for name in MUST_AGREE:
            a, b = first["extra"].get(name), summary["extra"].get(name)
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"{run / 'eval.json'}: extra.{name}: expected {a!r} (as {first_dir}), found {b!r}"
                )
        for rec in recs:
            key = pose_key(rec)
            if key in seen:
                what = (
                    f"cube seed {key[1]}"
                    if key[0] == "seed"
                    else f"reset {key[2]} of the stream of seed {key[1]}"
                )
                raise ValueError(
                    f"{run / 'episodes.json'}: {what}: expected cube poses not evaluated before, found it "
                    f"already in {seen[key]}"
                )
            seen[key] = run
        records.extend(recs)
    merged = summarize(
        records,
        model=first["model"],
        through_ros=bool(first["through_ros"]),
        seed=int(first["seed"]),
        machine=machine or first["machine"],
    )
    for name in MUST_AGREE:  # the agreed settings, from whichever part recorded them
        values = [s["extra"][name] for _, s, _ in parts if s["extra"].get(name) is not None]
        if values:
            merged.extra[name] = values[0]
    merged.extra["merged_from"] = [
        {"dir": str(run), "seed": s["seed"], "episodes": s["episodes"], "successes": s["successes"]}
        for run, s, _ in parts
    ]
    return merged, records
