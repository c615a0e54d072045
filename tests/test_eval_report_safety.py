"""`dm1 eval` never loses an earlier report to a run that produced nothing.

A setting the launched graph would refuse is refused by `dm1 eval` itself, before anything runs; and with
`--force` (or the default report directory) the earlier report stays until the new run's first episode has
finished. The ROS graph and the episode driver are stand-ins (`fake_stack`): no process or node starts here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dm1.cli import main
from dm1.evaluation import summarize, write_report
from policy_toy_model import build_toy_model

OLD_SEED = 1000


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A valid model directory (toy ONNX + card) with the twin's cameras."""
    return build_toy_model(tmp_path / "models" / "toy")


def _old_report(out: Path, model: Path, seed: int = OLD_SEED) -> dict[str, str]:
    """A finished 3-episode evaluation in `out` (as `dm1 eval` writes it); returns its files' contents."""
    records = [
        {"index": i, "seed": seed + i, "success": True, "sim_duration_s": 3.0, "wall_s": 9.0,
         "ledger_ms": {"published_ms": [5.0]}}
        for i in range(3)
    ]  # fmt: skip
    summary = summarize(records, model=str(model), through_ros=True, seed=seed, machine="test host")
    summary.extra.update({"max_sim_s": 20.0, "noise_scale": 1.0, "ensemble_alpha": 0.5})
    write_report(summary, out, records)
    (out / "launch.log").write_text("old graph\n")
    return _contents(out)


def _contents(out: Path) -> dict[str, str]:
    return {p.name: p.read_bytes().decode(errors="replace") for p in sorted(out.iterdir()) if p.is_file()}


@dataclass
class FakeGraph:
    """The launched graph as `run_ros_eval` sees it: alive until `exit_code` is set."""

    log_path: Path
    exit_code: int | None = None
    pid: int = -1

    def poll(self) -> int | None:
        return self.exit_code

    @property
    def returncode(self) -> int | None:
        return self.exit_code


@dataclass
class FakeStack:
    """What the fake graph and driver did: `plan[i]` is episode i's outcome (True/False: success; a function:
    called instead, it raises); `seen_at_start` lists the files of `out` when the graph started."""

    out: Path = Path()
    plan: list[Any] = field(default_factory=lambda: [True, True])
    graphs: list[FakeGraph] = field(default_factory=list)
    seen_at_start: list[list[str]] = field(default_factory=list)


@pytest.fixture
def fake_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStack]:
    """Replace the launched graph, its readiness wait and the episode driver of the real `run_ros_eval`."""
    import contextlib

    import dm1.commands.graph_process as graph_process
    import dm1_ros.evaluate as evaluate
    import rclpy
    from dm1_ros.evaluate import EpisodeOutcome

    stack = FakeStack()

    def start(model: str, seed: int, log_path: Path, extra: list[str] | None = None) -> FakeGraph:
        stack.seen_at_start.append(sorted(os.listdir(stack.out)))
        log_path.write_text(f"new graph, seed {seed}\n")
        stack.graphs.append(FakeGraph(log_path))
        return stack.graphs[-1]

    class Driver:
        def run_episode(self, i: int, max_sim_s: float) -> EpisodeOutcome:
            outcome = stack.plan[i]
            if callable(outcome):
                outcome()  # raises
            return EpisodeOutcome(i, outcome, 2.0, 3.0, 10, 0, {"published_ms": [4.0]}, seed=2000 + i)

        def close(self) -> None:
            pass

    monkeypatch.setattr(graph_process, "start_graph", start)
    monkeypatch.setattr(graph_process, "stop_graph", lambda graph: None)
    monkeypatch.setattr(graph_process, "wait_graph_ready", lambda *args, **kwargs: 0.0)
    monkeypatch.setattr(evaluate, "EvalDriver", Driver)
    monkeypatch.setattr(rclpy, "init", lambda **kwargs: contextlib.nullcontext())
    yield stack


def _ctrl_c() -> None:
    raise KeyboardInterrupt


def _eval(model: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(model), "--out", str(out), "--json", *extra])


# ------------------------------------------------------------------------ settings the graph would refuse
@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--seed", "-5", "expected an integer >= 0, found -5"),
        ("--ensemble-alpha", "0", "expected a number in (0, 1], found 0"),
        ("--ensemble-alpha", "1.5", "expected a number in (0, 1], found 1.5"),
        ("--sim-host", "8.8.8.8", "expected auto or a loopback address 127.x.y.z, found 8.8.8.8"),
        ("--sim-host", "localhost", "expected auto or a loopback address 127.x.y.z, found localhost"),
    ],
)
def test_a_setting_the_launched_graph_would_refuse_is_refused_before_the_old_report_is_touched(
    model: Path, tmp_path: Path, fake_stack: FakeStack, capsys, option: str, value: str, expected: str
) -> None:
    out = fake_stack.out = tmp_path / "evA"
    before = _old_report(out, model)
    with pytest.raises(SystemExit) as exited:
        _eval(model, out, "--episodes", "1", "--force", option, value)
    assert exited.value.code == 2
    assert f"argument {option}: {expected}" in capsys.readouterr().err
    assert fake_stack.graphs == [] and _contents(out) == before


# ------------------------------------------------------------------------ --force keeps the old report
def test_force_keeps_the_earlier_report_while_the_graph_starts(
    model: Path, tmp_path: Path, fake_stack: FakeStack
) -> None:
    out = fake_stack.out = tmp_path / "evA"
    before = _old_report(out, model)
    fake_stack.plan = [_ctrl_c]  # Ctrl-C before the first episode finished
    assert _eval(model, out, "--episodes", "1", "--force") == 130
    assert fake_stack.seen_at_start == [sorted(before)]  # nothing removed before the graph started
    assert {k: v for k, v in _contents(out).items() if k in before} == before


def test_a_graph_that_dies_before_the_first_episode_leaves_the_earlier_report_and_names_its_log(
    model: Path, tmp_path: Path, fake_stack: FakeStack, capsys
) -> None:
    out = fake_stack.out = tmp_path / "evA"
    before = _old_report(out, model)

    def lose_the_graph() -> None:
        fake_stack.graphs[-1].exit_code = 1
        raise RuntimeError("the launched graph exited (code 1)")  # as `raise_if_exited` ends a wait

    fake_stack.plan = [lose_the_graph]
    assert _eval(model, out, "--episodes", "1", "--force") == 2
    err = capsys.readouterr().err
    new_log = fake_stack.graphs[-1].log_path
    assert "the launched graph exited during episode 0 (code 1)" in err and f"full log: {new_log}" in err
    assert new_log.read_text() == "new graph, seed 1000\n" and new_log != out / "launch.log"
    assert {k: v for k, v in _contents(out).items() if k in before} == before


def test_force_replaces_the_earlier_report_once_the_new_run_has_an_episode(
    model: Path, tmp_path: Path, fake_stack: FakeStack
) -> None:
    out = fake_stack.out = tmp_path / "evA"
    _old_report(out, model)
    (out / "notes.txt").write_text("mine\n")
    fake_stack.plan = [True, False]
    assert _eval(model, out, "--episodes", "2", "--force", "--seed", "2000") == 0
    saved = json.loads((out / "eval.json").read_text())
    assert (saved["episodes"], saved["successes"], saved["seed"]) == (2, 1, 2000)
    assert [r["seed"] for r in json.loads((out / "episodes.json").read_text())] == [2000, 2001]
    assert (out / "launch.log").read_text() == "new graph, seed 2000\n"  # the new run's log, under its name
    assert (out / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("launch")) == ["launch.log"]


def test_an_eval_into_a_new_directory_logs_to_launch_log_from_the_start(
    model: Path, tmp_path: Path, fake_stack: FakeStack
) -> None:
    out = tmp_path / "fresh" / "report"
    fake_stack.out = tmp_path / "fresh"
    (tmp_path / "fresh").mkdir()
    assert _eval(model, out, "--episodes", "1") == 0
    assert fake_stack.graphs[0].log_path == out / "launch.log"
    assert json.loads((out / "eval.json").read_text())["episodes"] == 1


# ------------------------------------------------------------------------ an --out that cannot be made
@pytest.mark.parametrize("merge", [False, True], ids=["eval", "merge"])
def test_an_out_that_cannot_be_created_is_one_line_naming_out(
    model: Path, tmp_path: Path, fake_stack: FakeStack, capsys, merge: bool
) -> None:
    """/proc passes the permission checks (root may write anywhere) but refuses every new directory (dm1
    runs on Linux only: ROS 2 from wheels, franky)."""
    assert Path("/proc/self").is_dir()
    fake_stack.out = tmp_path
    argv = ["eval", "--model", str(model), "-o", "/proc/x"]
    if merge:
        parts = []
        for name, seed in (("a", 1000), ("b", 1003)):
            _old_report(tmp_path / name, model, seed)
            parts.append(str(tmp_path / name))
        argv += ["--merge", *parts]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dm1 eval: error: --out /proc/x: expected a directory that can be created"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert fake_stack.graphs == []


def test_an_out_through_a_missing_directory_and_dotdot_can_be_created(tmp_path: Path) -> None:
    """`newdir/../report` is created by mkdir(parents=True); the probe must not refuse it (it tried to make
    `newdir/..`, which exists)."""
    from dm1.evaluation.report_dir import creation_problem

    out = tmp_path / "newdir" / ".." / "report"
    assert creation_problem(out) is None
    assert not (tmp_path / "newdir").exists() and not (tmp_path / "report").exists()  # the probe cleans up
