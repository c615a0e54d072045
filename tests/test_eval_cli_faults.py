"""`dm1 eval` and `dm1 demo` refuse what they cannot use before anything runs (one line, exit code 2), never
mix two evaluations in one report directory, and never store a partial evaluation in the model card.

No ROS graph starts here: the evaluation itself is replaced by a fake (`fake_run`), or the real
`run_ros_eval` is stopped where it would start the graph (`graph_start`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dm1.cli import main
from dm1.evaluation import summarize, write_report
from policy_toy_model import build_toy_model

ONE_LINE_ERROR = "dm1 {command}: error: "


class GraphStarted(Exception):
    """Raised by the stand-in for `start_graph`: the checks passed and the evaluation would start now."""


def _records(seed: int, n: int) -> list[dict[str, Any]]:
    return [
        {"index": i, "seed": seed + i, "success": True, "sim_duration_s": 3.0, "wall_s": 9.0,
         "min_ee_cube_m": 0.01, "max_cube_lift_m": 0.12, "ledger_ms": {"published_ms": [5.0]}}
        for i in range(n)
    ]  # fmt: skip


def _report(out: Path, model: Path, seed: int, n: int = 2, **extra: object) -> Path:
    """A finished evaluation's report directory, as `dm1 eval` writes it."""
    records = _records(seed, n)
    summary = summarize(records, model=str(model), through_ros=True, seed=seed, machine="test host")
    summary.extra.update({"max_sim_s": 20.0, "noise_scale": 1.0, "ensemble_alpha": 0.5, **extra})
    write_report(summary, out, records)
    return out


def _one_line_error(err: str, command: str = "eval") -> str:
    assert err.startswith(ONE_LINE_ERROR.format(command=command)), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A valid model directory (toy ONNX + card) with the twin's cameras."""
    return build_toy_model(tmp_path / "models" / "toy")


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[Path]]:
    """Replace the evaluation by one that writes a 2-episode report (`interrupted`: after 1 episode).

    Returns a setter `(interrupted=False) -> calls`, `calls` being the out dirs of the runs that started."""
    import dm1.commands.eval as eval_command

    def install(interrupted: bool = False) -> list[Path]:
        calls: list[Path] = []

        def run(args: Any, out: Path, *_: Any, **__: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            calls.append(out)
            records = _records(args.seed, 1 if interrupted else 2)
            summary = summarize(records, model=args.model, through_ros=True, seed=args.seed, machine="x")
            if interrupted:
                summary.extra["interrupted_after"] = len(records)
            write_report(summary, out, records)
            return summary.to_dict(), records

        monkeypatch.setattr(eval_command, "run_from_args", run)
        return calls

    return install


@pytest.fixture
def graph_start(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Stop the real `run_ros_eval` where it starts the graph; returns, per start, the report directory's
    files at that moment."""
    import dm1.commands.graph_process as graph_process

    seen: list[list[str]] = []

    def start(model: str, seed: int, log_path: Path, extra: list[str] | None = None) -> None:
        seen.append(sorted(os.listdir(log_path.parent)))
        raise GraphStarted

    monkeypatch.setattr(graph_process, "start_graph", start)
    return seen


def _card_evaluation(model: Path) -> Any:
    return json.loads((model / "model_card.json").read_text())["evaluation"]


# ------------------------------------------------------------------------------------------ --update-card
def test_an_interrupted_eval_reports_but_never_updates_the_model_card(
    model: Path, tmp_path: Path, fake_run, capsys
) -> None:
    fake_run(interrupted=True)
    out = tmp_path / "report"
    assert main(["eval", "--model", str(model), "--out", str(out), "--update-card"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: the report covers the 1 finished episodes" in err
    assert "the model card was not updated" in err
    assert _card_evaluation(model) is None  # not the partial result
    assert json.loads((out / "eval.json").read_text())["extra"]["interrupted_after"] == 1


def test_a_finished_eval_stores_its_summary_in_the_model_card(model: Path, tmp_path: Path, fake_run) -> None:
    fake_run()
    assert main(["eval", "--model", str(model), "--out", str(tmp_path / "r"), "--update-card"]) == 0
    assert _card_evaluation(model)["episodes"] == 2


def test_a_statistic_with_nothing_measured_is_stored_in_the_card_as_null_not_nan(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Episodes in which the policy published no chunk leave the latency without a sample (nan): the card
    must stay strict JSON (other parsers reject NaN) and must still load."""
    import dm1.commands.eval as eval_command
    from dm1.modelcard import load_card

    def run(args: Any, out: Path, *_: Any, **__: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        records = [{**r, "ledger_ms": {"published_ms": []}} for r in _records(args.seed, 2)]
        summary = summarize(records, model=args.model, through_ros=True, seed=args.seed, machine="x")
        write_report(summary, out, records)
        return summary.to_dict(), records

    monkeypatch.setattr(eval_command, "run_from_args", run)
    assert main(["eval", "--model", str(model), "--out", str(tmp_path / "r"), "--update-card"]) == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"model card holds {constant}")

    card = json.loads((model / "model_card.json").read_text(), parse_constant=refuse)
    assert card["evaluation"]["latency_ms"]["published_ms"] == {
        "median": None, "p99": None, "mean": None, "count": 0
    }  # fmt: skip
    assert card["evaluation"]["episodes"] == 2
    assert load_card(model).evaluation == card["evaluation"]


@pytest.mark.parametrize("read_only", ["model directory", "model card"])
@pytest.mark.parametrize("merge", [False, True], ids=["eval", "merge"])
def test_update_card_of_a_read_only_model_is_refused_before_anything_runs(
    model: Path,
    tmp_path: Path,
    fake_run,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    read_only: str,
    merge: bool,
) -> None:
    calls = fake_run()
    denied = model if read_only == "model directory" else model / "model_card.json"
    access = os.access

    def no_write_access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and Path(path) == denied:
            return False  # as on a read-only file system (root ignores permission bits)
        return access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", no_write_access)
    out = tmp_path / "report"
    argv = ["eval", "--model", str(model), "--out", str(out), "--update-card"]
    if merge:
        parts = [_report(tmp_path / n, model, s) for n, s in (("a", 1000), ("b", 1002))]
        argv += ["--merge", *map(str, parts)]
    assert main(argv) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert f"--update-card: expected a writable model card, found {denied} read-only" in err
    assert calls == [] and not out.exists()  # nothing evaluated, merged or written
    assert _card_evaluation(model) is None


# ------------------------------------------------------------------------------------------ --out
@pytest.mark.parametrize("marker", ["eval.json", "episodes.json"])
def test_an_out_directory_holding_a_report_is_refused_without_force(
    model: Path, tmp_path: Path, fake_run, capsys, marker: str
) -> None:
    """E.g. a killed run's episodes.json beside an older run's eval.json: one report of two evaluations."""
    calls = fake_run()
    out = tmp_path / "report"
    out.mkdir()
    (out / marker).write_text("[]\n")
    assert main(["eval", "--model", str(model), "--out", str(out), "--seed", "1300"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert f"--out {out}: expected a directory without a report, found {marker}" in err and "--force" in err
    assert calls == [] and sorted(os.listdir(out)) == [marker]


def test_force_removes_nothing_before_the_graph_starts(
    model: Path, tmp_path: Path, graph_start: list[list[str]]
) -> None:
    """The earlier report is replaced only once the new run has an episode (tests/test_eval_report_safety.py):
    a graph that fails to start, or a Ctrl-C before the first episode, leaves it as it was."""
    out = _report(tmp_path / "report", model, 1000)
    (out / "launch.log").write_text("old graph\n")
    (out / "episodes.json.tmp").write_text("[]\n")
    (out / "notes.txt").write_text("mine\n")
    before = sorted(os.listdir(out))
    with pytest.raises(GraphStarted):
        main(["eval", "--model", str(model), "--out", str(out), "--episodes", "1", "--force"])
    assert graph_start == [before] and (out / "launch.log").read_text() == "old graph\n"


def test_demo_replaces_its_own_scratch_report_but_not_a_report_in_another_out(
    model: Path, tmp_path: Path, graph_start: list[list[str]], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    _report(tmp_path / "runs" / "demo", model, 1000)  # the previous `dm1 demo`
    with pytest.raises(GraphStarted):  # not refused; kept until the new run has an episode
        main(["demo", "--model", str(model)])
    assert len(graph_start) == 1 and "eval.json" in graph_start[0]
    kept = _report(tmp_path / "kept", model, 1000)
    assert main(["demo", "--model", str(model), "--out", str(kept)]) == 2
    assert "--force" in _one_line_error(capsys.readouterr().err, "demo")
    assert len(graph_start) == 1 and (kept / "eval.json").exists()


def test_report_files_name_everything_a_report_writes(tmp_path: Path) -> None:
    """`--force` removes exactly REPORT_FILES: a file `write_report` adds and the list lacks would survive it
    and make a report of two runs."""
    from dm1.evaluation import summarize, write_report
    from dm1.evaluation.report import REPORT_FILES

    records = _records(1000, 2)
    write_report(summarize(records, "m", through_ros=True, seed=1000, machine="test"), tmp_path, records)
    assert {p.name for p in tmp_path.iterdir()} <= set(REPORT_FILES)


def test_eval_replaces_its_default_report_but_not_a_report_in_a_given_out(
    model: Path, tmp_path: Path, graph_start: list[list[str]], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    _report(tmp_path / "runs" / "eval" / model.name, model, 1000)  # the previous plain `dm1 eval`
    with pytest.raises(GraphStarted):  # not refused; kept until the new run has an episode
        main(["eval", "--model", str(model)])
    assert len(graph_start) == 1 and "eval.json" in graph_start[0]
    kept = _report(tmp_path / "kept", model, 1000)
    assert main(["eval", "--model", str(model), "--out", str(kept)]) == 2
    assert "--force" in _one_line_error(capsys.readouterr().err)
    assert len(graph_start) == 1 and (kept / "eval.json").exists()


@pytest.mark.parametrize("merge", [False, True], ids=["eval", "merge"])
def test_an_out_that_is_a_file_is_refused_in_one_line_before_anything_runs(
    model: Path, tmp_path: Path, fake_run, capsys, merge: bool
) -> None:
    calls = fake_run()
    out = tmp_path / "report.txt"
    out.write_text("not a directory\n")
    argv = ["eval", "--model", str(model), "--out", str(out)]
    if merge:
        argv += [
            "--merge",
            str(_report(tmp_path / "a", model, 1000)),
            str(_report(tmp_path / "b", model, 1002)),
        ]
    assert main(argv) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert f"--out {out}: expected a directory, found the file {out}" in err
    assert calls == [] and out.read_text() == "not a directory\n"


@pytest.mark.parametrize("spelling", ["{b}", "{b}/", "./b", "{a}/../b"])
def test_merge_refuses_an_out_that_is_one_of_its_inputs(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, spelling: str
) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = _report(tmp_path / "a", model, 1000), _report(tmp_path / "b", model, 1002)
    before = (b / "eval.json").read_text()
    out = spelling.format(a=a, b=b)
    expected = f"--out {Path(out)}: expected a directory other than the --merge inputs, found the input {b}"
    for force in ([], ["--force"]):  # --force replaces an earlier report, never an input
        assert main(["eval", "--merge", str(a), str(b), "--out", out, *force]) == 2
        assert expected in _one_line_error(capsys.readouterr().err)
        assert (b / "eval.json").read_text() == before


def test_merge_with_force_replaces_the_report_in_out_and_keeps_other_files(
    model: Path, tmp_path: Path
) -> None:
    a, b = _report(tmp_path / "a", model, 1000), _report(tmp_path / "b", model, 1002)
    out = _report(tmp_path / "merged", model, 2000, n=5)
    (out / "notes.txt").write_text("mine\n")
    argv = ["eval", "--merge", str(a), str(b), "--out", str(out)]
    assert main(argv) == 2  # a report is there: not without --force
    assert json.loads((out / "eval.json").read_text())["episodes"] == 5
    assert main([*argv, "--force"]) == 0
    assert json.loads((out / "eval.json").read_text())["episodes"] == 4
    assert (out / "notes.txt").read_text() == "mine\n"


# ------------------------------------------------------------------------------------------ --model
@pytest.mark.parametrize("name", ["model.onnx", "model_card.json"])
def test_a_model_file_is_refused_as_not_a_model_directory(
    model: Path, tmp_path: Path, graph_start: list[list[str]], capsys, name: str
) -> None:
    out = tmp_path / "report"
    assert main(["eval", "--model", str(model / name), "--out", str(out)]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert (
        f"--model {model / name}: expected a model directory (model.onnx + model_card.json), found a file"
        in err
    )
    assert graph_start == [] and not out.exists()


def test_a_missing_model_directory_is_named_as_missing(tmp_path: Path, graph_start, capsys) -> None:
    missing = tmp_path / "no_model"
    assert main(["eval", "--model", str(missing), "--out", str(tmp_path / "report")]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert f"error: {missing}: no such directory" in err and "model card not found" not in err
    assert graph_start == []


def test_a_model_whose_cameras_the_twin_lacks_is_refused_without_suggesting_an_option_eval_lacks(
    tmp_path: Path, graph_start: list[list[str]], capsys
) -> None:
    side = build_toy_model(tmp_path / "side", cameras={"front": (24, 32, 3), "side": (24, 32, 3)})
    assert main(["eval", "--model", str(side), "--out", str(tmp_path / "report")]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert f"--model {side}: expected a model of the twin's cameras ['front', 'wrist']" in err
    assert "lacking ['side']" in err and "--cameras" not in err
    assert graph_start == []
