"""Dataset tools behind `dm1 data {info,validate,stats,plot,convert}`.

- `dataset_info` (`dm1 data info`, which adds the index's hash and counts): episodes, steps, lengths,
  cameras and shapes, action space, rate, success rate, recovery demos, duration, incomplete files.
- `validate`: per-episode QA — format, timestamp monotonicity, gaps (a step interval above 1.5 control
  periods), dropped/repeated camera frames (from the recorder's `timing/<cam>_capture`), non-finite or
  out-of-range actions (gripper outside [0, 1], positions outside the workspace box), a layout (cameras,
  image size, proprio keys, actions, rate) other than the first episode's; incomplete `.partial` files and
  files that fail the episode format are quarantined. Writes `qa_report.json` and `qa_report.md`.
- `stats`: min / max / mean / std of actions and proprio keys (JSON).
- `plot`: one PNG per episode with the action and joint (or EE) trajectories (all written, or none).
`register_tools` adds the command-line actions of this module (all but `info`) to `dm1 data`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm1.commands.arg_types import positive_int
from dm1.data.episode import _EPISODE_RE as EPISODE_NAME_RE
from dm1.data.episode import PARTIAL_SUFFIX, EpisodeFormatError, read_episode
from dm1.data.episode_checks import H5_ERRORS
from dm1.data.schema import layout_differences
from dm1.data.staging import staged_output

#: Default workspace box (m, fr3_link0) for out-of-range `ee_position` actions.
WORKSPACE_MIN = (0.15, -0.6, -0.05)
WORKSPACE_MAX = (0.95, 0.6, 0.9)
GAP_FACTOR = 1.5


@dataclass
class EpisodeQA:
    """QA result of one episode file."""

    file: str
    length: int = 0
    duration_s: float = 0.0
    success: bool | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gaps: int = 0
    max_interval_s: float = 0.0
    dropped_frames: dict[str, int] = field(default_factory=dict)
    out_of_range_actions: int = 0
    recorder_qa: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors


def episode_files(directory: Path) -> list[Path]:
    """Complete episode files in `directory`, sorted by name."""
    if directory.is_file():
        raise NotADirectoryError(f"{directory}: expected a dataset directory, found a file")
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset directory {directory} does not exist")
    return sorted(directory.glob("episode_*.h5"))


def require_episode_files(directory: Path) -> list[Path]:
    """`episode_files`, or ValueError naming `directory` when it holds none."""
    files = episode_files(directory)
    if not files:
        raise ValueError(f"no episodes in {directory} (expected episode_*.h5 files)")
    return files


def check_episode(
    path: Path,
    workspace_min: tuple[float, ...] = WORKSPACE_MIN,
    workspace_max: tuple[float, ...] = WORKSPACE_MAX,
) -> EpisodeQA:
    """Run every QA check on one episode file (never raises for a bad file: errors are collected)."""
    qa = EpisodeQA(file=path.name)
    try:
        with h5py.File(path, "r") as f:
            _qa_checks(f, qa, workspace_min, workspace_max)
    except (*H5_ERRORS, IndexError) as exc:
        # a damaged file or field: the episode reader below says which, naming the file
        qa.warnings.append(f"QA checks stopped early ({type(exc).__name__}: {exc})")
    try:
        ep = read_episode(path, load_images=False)
    except EpisodeFormatError as exc:
        qa.errors.append(str(exc))
        return qa
    from dm1.config import PROPRIO_KEY_DIMS

    for key, values in ep.proprio.items():  # the loader refuses these: say so here first
        width = values.shape[1] if values.ndim == 2 else None
        if key in PROPRIO_KEY_DIMS and width != PROPRIO_KEY_DIMS[key]:
            qa.errors.append(f"{path}: obs/{key}: expected width {PROPRIO_KEY_DIMS[key]}, found {width}")
    return qa


def _qa_checks(
    f: h5py.File, qa: EpisodeQA, workspace_min: tuple[float, ...], workspace_max: tuple[float, ...]
) -> None:
    """The checks of `check_episode` on the raw file (timing, dropped frames, action ranges), into `qa`."""
    ts = np.asarray(f["timestamps"][()]) if "timestamps" in f else np.zeros(0)
    actions = np.asarray(f["actions"][()]) if "actions" in f else np.zeros((0, 0))
    rate = f.attrs.get("control_rate_hz", 0.0)
    rate = float(rate) if isinstance(rate, float | int | np.number) and np.isfinite(rate) else 0.0
    space = str(f.attrs.get("action_space", ""))
    qa.length = int(len(ts)) if ts.ndim == 1 else 0
    if qa.length:
        qa.duration_s = float(ts[-1] - ts[0])
    success = f.attrs.get("success")
    if isinstance(success, bool | np.bool_ | np.integer):  # anything else: the episode reader's error
        qa.success = bool(success)
    if qa.length > 1:
        dt = np.diff(ts)
        if not np.all(np.isfinite(ts)) or np.any(dt <= 0):
            qa.errors.append(f"timestamps: not strictly increasing ({int(np.sum(dt <= 0))} steps)")
        qa.max_interval_s = float(np.nanmax(dt))
        if rate > 0:
            qa.gaps = int(np.sum(dt > GAP_FACTOR / rate))
            if qa.gaps:
                qa.warnings.append(
                    f"{qa.gaps} gaps longer than {GAP_FACTOR / rate * 1e3:.0f} ms "
                    f"(max {qa.max_interval_s * 1e3:.0f} ms)"
                )
    for cam in json.loads(f.attrs.get("camera_names", "[]")):
        key = f"timing/{cam}_capture"
        if key in f and len(f[key]) > 1:
            cap = np.asarray(f[key][()])
            qa.dropped_frames[cam] = int(np.sum(np.diff(cap) == 0))
            if qa.dropped_frames[cam]:
                qa.warnings.append(f"camera {cam}: {qa.dropped_frames[cam]} repeated (dropped) frames")
    if "timing/control" in f and "qa" in f["timing/control"].attrs:
        qa.recorder_qa = json.loads(f["timing/control"].attrs["qa"])
    if actions.ndim == 2 and actions.size:  # another shape: the episode reader names it
        bad = ~np.all(np.isfinite(actions), axis=1)
        if space == "ee_position" and actions.shape[1] == 4:
            grip = actions[:, 3]
            bad |= (grip < 0) | (grip > 1)
            pos = actions[:, :3]
            bad |= np.any((pos < np.asarray(workspace_min)) | (pos > np.asarray(workspace_max)), axis=1)
        elif space == "joint_position" and actions.shape[1] == 8:
            bad |= (actions[:, 7] < 0) | (actions[:, 7] > 1)
        qa.out_of_range_actions = int(np.sum(bad))
        if qa.out_of_range_actions:
            qa.errors.append(f"{qa.out_of_range_actions} actions non-finite or out of range")


def validate_dataset(directory: Path, quarantine: bool = True, progress: bool = False) -> dict[str, Any]:
    """QA every episode of `directory`; quarantine `.partial` (and invalid, with `quarantine`) files.

    Returns the report dict (also written to `qa_report.json` / `qa_report.md` in `directory`).
    """
    from tqdm import tqdm

    from dm1.data.index import DatasetIndex

    files = episode_files(directory)
    results = [check_episode(p) for p in tqdm(files, desc="validate", unit="ep", disable=not progress)]
    _flag_mixed_layout(files, results)
    changed = DatasetIndex(directory).changed_in_place()
    for q in results:
        if q.file in changed:
            q.errors.append(changed[q.file])
    unexpected = sorted(
        p.name for p in directory.glob("*.h5") if p.is_file() and not EPISODE_NAME_RE.match(p.name)
    )
    partial = sorted(p.name for p in directory.glob(f"*.h5{PARTIAL_SUFFIX}"))
    moved: list[str] = []
    if quarantine:
        index = DatasetIndex(directory)
        moved = [p.name for p in index.quarantine(include_invalid=True)]
    report = {
        "directory": str(directory),
        "num_episodes": len(results),
        "num_valid": sum(q.ok for q in results),
        "total_steps": sum(q.length for q in results if q.ok),
        "incomplete": partial,
        "unexpected_files": unexpected,  # *.h5 not named episode_NNNNNN.h5: training refuses the directory
        "quarantined": moved,
        "episodes": [q.__dict__ | {"ok": q.ok} for q in results],
    }
    (directory / "qa_report.json").write_text(json.dumps(report, indent=1) + "\n")
    (directory / "qa_report.md").write_text(report_markdown(report))
    return report


def _flag_mixed_layout(files: list[Path], results: list[EpisodeQA]) -> None:
    """Add an error to every readable episode whose layout differs from the first readable one's."""
    eps = []
    for p in files:
        try:
            eps.append(read_episode(p, load_images=False))
        except EpisodeFormatError:
            continue  # already an error of its own
    qa = {q.file: q for q in results}
    for name, diffs in layout_differences(eps).items():
        qa[name].errors.append(f"layout differs from {eps[0].path.name}: {'; '.join(diffs)}")


def report_markdown(report: dict[str, Any]) -> str:
    """Human-readable QA table."""
    lines = [
        f"# QA report: {report['directory']}",
        "",
        f"{report['num_valid']}/{report['num_episodes']} episodes valid, {report['total_steps']} steps; "
        f"incomplete: {len(report['incomplete'])}; quarantined: {len(report['quarantined'])}; "
        f"not episode files: {report.get('unexpected_files') or 'none'}",
        "",
        "| episode | ok | steps | duration s | success | gaps | max dt ms | dropped frames | bad actions "
        "| notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report["episodes"]:
        dropped = ", ".join(f"{k}:{v}" for k, v in e["dropped_frames"].items()) or "-"
        notes = "; ".join(e["errors"] + e["warnings"]) or "-"
        lines.append(
            f"| {e['file']} | {'yes' if e['ok'] else 'NO'} | {e['length']} | {e['duration_s']:.2f} | "
            f"{e['success']} | {e['gaps']} | {e['max_interval_s'] * 1e3:.0f} | {dropped} | "
            f"{e['out_of_range_actions']} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def dataset_info(directory: Path) -> dict[str, Any]:
    """Summary of a dataset directory (reads metadata and vectors only); ValueError when it has no episodes.

    The layout (cameras, action space, ...) is the first episode's; `layout_differs` (only present when some
    episode differs) maps the others' file names to their differences.
    """
    eps = [read_episode(p, load_images=False) for p in require_episode_files(directory)]
    first = eps[0]
    lengths = [e.length for e in eps]
    mixed = layout_differences(eps)
    return ({"layout_differs": mixed} if mixed else {}) | {
        "directory": str(directory),
        "num_episodes": len(eps),
        "total_steps": int(sum(lengths)),
        "episode_length": {"min": min(lengths), "max": max(lengths), "mean": float(np.mean(lengths))},
        "success_rate": float(np.mean([e.success for e in eps])),
        "recovery_episodes": sum(e.perturbed is not None for e in eps),  # with a deliberate, unlearned miss
        "cameras": {c: list(first.image_shapes[c]) for c in first.camera_names},
        "proprio_keys": first.proprio_keys,
        "action_space": first.action_space,
        "action_names": first.action_names,
        "control_rate_hz": first.control_rate_hz,
        "duration_s": float(sum(e.timestamps[-1] - e.timestamps[0] for e in eps)),
        "incomplete": sorted(p.name for p in directory.glob(f"*.h5{PARTIAL_SUFFIX}")),
    }


def _summary(x: np.ndarray) -> dict[str, list[float]]:
    return {k: getattr(np, k)(x, axis=0).astype(float).tolist() for k in ("min", "max", "mean", "std")}


def dataset_stats(directory: Path) -> dict[str, Any]:
    """Per-dimension min/max/mean/std of actions and every proprio key over all episodes."""
    eps = [read_episode(p, load_images=False) for p in require_episode_files(directory)]
    out: dict[str, Any] = {"actions": _summary(np.concatenate([e.actions for e in eps]))}
    out["actions"]["names"] = eps[0].action_names
    for k in eps[0].proprio_keys:
        out[f"obs/{k}"] = _summary(np.concatenate([e.proprio[k] for e in eps]))
    return out


def plot_episode(path: Path, out_png: Path) -> Path:
    """PNG with the actions (top) and joint positions, or EE position if not recorded (bottom) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = read_episode(path, load_images=False)
    t = ep.timestamps - ep.timestamps[0]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for i, name in enumerate(ep.action_names):
        ax1.plot(t, ep.actions[:, i], label=name)
    ax1.set_ylabel(f"action ({ep.action_space})")
    ax1.legend(loc="upper right", fontsize=7)
    key = (
        "joint_pos"
        if "joint_pos" in ep.proprio
        else ("ee_pos" if "ee_pos" in ep.proprio else ep.proprio_keys[0])
    )
    for i in range(ep.proprio[key].shape[1]):
        ax2.plot(t, ep.proprio[key][:, i], label=f"{key}[{i}]")
    ax2.set_ylabel(key)
    ax2.set_xlabel("time (s)")
    ax2.legend(loc="upper right", fontsize=7)
    fig.suptitle(f"{path.name} (success={ep.success})")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png


# ---- CLI ---------------------------------------------------------------------------------------------
def _validate(args: argparse.Namespace) -> int:
    report = validate_dataset(Path(args.dataset), quarantine=not args.no_quarantine, progress=True)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(report_markdown(report))
    bad = report["num_episodes"] - report["num_valid"]
    print(
        f"{report['num_valid']}/{report['num_episodes']} valid; incomplete {report['incomplete']}; "
        f"quarantined {report['quarantined']}; report: {Path(args.dataset) / 'qa_report.md'}",
        file=sys.stderr,
    )
    if report["unexpected_files"]:
        print(
            f"not episode files (expected episode_NNNNNN.h5; training refuses the directory while they are "
            f"in it): {report['unexpected_files']}",
            file=sys.stderr,
        )
    unresolved = set(report["incomplete"]) - set(report["quarantined"])  # partial files left in place
    return 1 if bad or unresolved or report["unexpected_files"] or report["num_episodes"] == 0 else 0


def _stats(args: argparse.Namespace) -> int:
    text = json.dumps(dataset_stats(Path(args.dataset)), indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    directory = Path(args.dataset)
    out = Path(args.out) if args.out else directory / "plots"
    files = require_episode_files(directory)[: args.max_episodes]
    with staged_output(out, merge=True) as tmp:  # every plot or none; other files in `out` are kept
        for p in tqdm(files, desc="plot", unit="ep"):
            plot_episode(p, tmp / f"{p.stem}.png")
    print(f"wrote {len(files)} plots to {out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from dm1.data import convert

    if args.to == "lerobot":
        out = convert.export_lerobot(
            args.dataset, args.out, task=args.task, success_only=args.success_only, progress=True
        )
    else:
        out = convert.export_robomimic(args.dataset, args.out, success_only=args.success_only, progress=True)
    print(f"wrote {out}")
    return 0


TOOL_NAMES = ("validate", "stats", "plot", "convert")


def register_tools(data_sub: argparse._SubParsersAction, only: tuple[str, ...] = TOOL_NAMES) -> None:
    """Add `validate`, `stats`, `plot` and `convert` (or the subset `only`) to `dm1 data` (whose `info` is
    `dm1.commands.data`: the index and `dataset_info`)."""
    unknown = sorted(set(only) - set(TOOL_NAMES))
    if unknown:
        raise ValueError(f"register_tools: unknown tools {unknown}, expected some of {list(TOOL_NAMES)}")

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser | None:
        if name not in only:
            return None
        p = data_sub.add_parser(name, help=help_text)
        p.add_argument("dataset", help="directory of episode_*.h5 files")
        p.set_defaults(func=func)
        return p

    if p := add(
        "validate",
        "per-episode QA report; moves incomplete (.partial) files and files that fail the episode format "
        "into <dataset>/quarantine/ (episodes with other errors are reported, not moved)",
        _validate,
    ):
        p.add_argument("--no-quarantine", action="store_true", help="only report, move nothing")
        p.add_argument("--json", action="store_true", help="print the report as JSON instead of Markdown")
    if p := add("stats", "min/max/mean/std of actions and proprio (JSON)", _stats):
        p.add_argument("-o", "--out", help="also write the JSON here")
    if p := add("plot", "PNG of action and joint trajectories per episode", _plot):
        p.add_argument("-o", "--out", help="output directory (default <dataset>/plots)")
        p.add_argument("--max-episodes", type=positive_int, default=50)
    if p := add("convert", "export to LeRobot v3 (parquet) or robomimic HDF5", _convert):
        p.add_argument("out", help="output directory (lerobot) or .hdf5 file (robomimic); must not exist")
        p.add_argument("--to", choices=["lerobot", "robomimic"], required=True)
        p.add_argument("--task", default="lift the cube", help="task description (lerobot)")
        p.add_argument("--success-only", action="store_true", help="export only successful episodes")
