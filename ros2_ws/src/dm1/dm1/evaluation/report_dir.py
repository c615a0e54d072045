"""The report directory of `dm1 eval`: which files an evaluation writes there, and how a new run replaces an
earlier one's (only once the new run has an episode, so a run that fails first leaves the earlier report).

ROS-free; `dm1.commands.eval_checks` checks the directory (`check_report_dir`) and `dm1.commands.eval` runs
the evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path

from dm1.evaluation.report import REPORT_FILES

#: what `dm1 eval` writes into its report directory besides the report (`REPORT_FILES`): the graph's log
EVAL_LOG = "launch.log"
#: the new graph's log while an earlier report in the directory is kept (EVAL_LOG from the first episode on)
PENDING_LOG = "launch.new.log"
#: the files whose presence makes a directory hold a report (`--out` refuses it without `--force`)
REPORT_MARKERS: tuple[str, ...] = ("eval.json", "episodes.json")


def creation_problem(out: Path) -> str | None:
    """Why the missing directory `out` cannot be created (a path the permission bits allow but the file
    system refuses, e.g. /proc/x), as `expected ..., found ...`; None when it can (or exists). Probes by
    creating `out` and its missing parents, then removes what it created."""
    full = Path(os.path.abspath(out))  # `..` collapsed as mkdir(parents=True) would walk it
    missing = [d for d in (full, *full.parents) if not d.exists()]
    made: list[Path] = []
    try:
        for d in reversed(missing):  # the topmost first
            d.mkdir()
            made.append(d)
    except OSError as exc:
        return f"expected a directory that can be created, found that {d} cannot be ({exc.strerror})"
    finally:
        for d in reversed(made):
            d.rmdir()
    return None


def evaluation_files(out: Path) -> list[str]:
    """The files of an earlier evaluation in `out`: its report's `REPORT_FILES` and the graph's logs."""
    return [name for name in (*REPORT_FILES, EVAL_LOG, PENDING_LOG) if (out / name).exists()]


def clear_report_dir(out: Path) -> None:
    """Remove the files an evaluation writes (`evaluation_files`) from `out`; other files stay."""
    for name in evaluation_files(out):
        (out / name).unlink(missing_ok=True)


def new_run_log(out: Path) -> Path:
    """Where a new run's graph logs: EVAL_LOG, or PENDING_LOG while `out` holds an earlier evaluation's files
    (kept until `replace_earlier_report`)."""
    return out / (PENDING_LOG if evaluation_files(out) else EVAL_LOG)


def replace_earlier_report(out: Path, log: Path) -> Path:
    """Once the new run has an episode: remove the earlier evaluation's report from `out` and give the new
    graph's `log` the name EVAL_LOG (a rename: the running graph keeps writing to the same file); returns the
    log's path. Nothing to do when `log` is EVAL_LOG already (there was no earlier evaluation)."""
    if log.name != PENDING_LOG:
        return log
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    os.replace(log, out / EVAL_LOG)
    return out / EVAL_LOG
