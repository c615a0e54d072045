"""`dm1 ablate` faults found by exploratory testing: runs given twice or sharing a directory name, an earlier
ablation report in `--out`, and an ablation whose episodes all ended in an error.

The policies and the episode runner are the fakes of tests/test_ablation.py; no twin starts here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dm1.cli import main
from dm1.evaluation.ablation import MatrixEntry, run_ablation
from test_ablation import ALPHA_ERROR, CONFIGS, SMALL, ErrorContext, FakeContext, FakePolicy, fake_loader, run


@pytest.fixture
def cli_ablation(monkeypatch: pytest.MonkeyPatch) -> dict:
    """`dm1 ablate` with the real `run_ablation` over fake runs (`runs`) and a context (`context`) set per
    test (as in tests/test_ablation.py)."""
    import dm1.evaluation.ablation as ablation

    real = ablation.run_ablation
    setup: dict = {}

    def fake(run_dirs, out_dir, cfg, context=None):
        return real(
            run_dirs, out_dir, SMALL, context=setup["context"], loader=fake_loader, runs=setup["runs"]
        )

    monkeypatch.setattr(ablation, "run_ablation", fake)
    return setup


def _run_dir(path: Path, config: str = "dm1_l05") -> Path:
    """A run directory as far as the ablation reads it before loading a policy: its config.yaml."""
    path.mkdir(parents=True)
    shutil.copy(CONFIGS / f"{config}.yaml", path / "config.yaml")
    return path


class CountingLoader:
    """`fake_loader` that remembers which configurations it loaded."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def __call__(self, entry: MatrixEntry, threads: int) -> FakePolicy:
        self.loaded.append(entry.key)
        return fake_loader(entry, threads)


class AnyNameContext(FakeContext):
    """Every episode succeeds, whatever the policy's name."""

    def __init__(self) -> None:
        super().__init__({"": 1})


# ------------------------------------------------------------------------------ runs given twice / same name
@pytest.mark.parametrize("second", ["{a}", "{a}/", "{a}/../tiny", "./runs/tiny"])
def test_a_run_given_twice_is_refused_before_any_policy_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    monkeypatch.chdir(tmp_path)
    a = _run_dir(tmp_path / "runs" / "tiny")
    loader = CountingLoader()
    with pytest.raises(ValueError, match=r"run directories: expected each once, found .*tiny given twice"):
        run_ablation([str(a), second.format(a=a)], tmp_path / "out", SMALL, AnyNameContext(), loader)
    assert loader.loaded == [] and not (tmp_path / "out").exists()


def test_cli_run_given_twice_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    a = _run_dir(tmp_path / "runs" / "tiny")
    assert main(["ablate", "--runs", str(a), str(a), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dm1 ablate: error: run directories: expected each once") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_runs_that_share_a_directory_name_are_told_apart_by_their_parents(tmp_path: Path) -> None:
    runs = [_run_dir(tmp_path / "runs" / "tiny"), _run_dir(tmp_path / "other" / "tiny", "meanflow")]
    result = run_ablation(
        runs, tmp_path / "out", SMALL, AnyNameContext(), CountingLoader(), log=lambda _: None
    )
    assert sorted(result["records"]) == ["other/tiny K=1 onnx", "runs/tiny K=1 onnx"]
    assert {r["method"]: r["episodes"] for r in result["rows"]} == {"DM1 λ=0.5": 4, "MeanFlow λ=0": 4}
    assert [r["label"] for r in result["meta"]["runs"]] == ["runs/tiny", "other/tiny"]


def test_runs_with_distinct_names_keep_their_names_as_labels(tmp_path: Path) -> None:
    runs = [_run_dir(tmp_path / "runs" / "a"), _run_dir(tmp_path / "runs" / "b")]
    result = run_ablation(
        runs, tmp_path / "out", SMALL, AnyNameContext(), CountingLoader(), log=lambda _: None
    )
    assert sorted(result["records"]) == ["a K=1 onnx", "b K=1 onnx"]


# ------------------------------------------------------------------------------ an earlier report in --out
@pytest.mark.parametrize("marker", ["ablation.json", "ablation.md"])
def test_cli_out_holding_an_ablation_report_is_refused_without_force(
    tmp_path: Path, cli_ablation: dict, capsys, marker: str
) -> None:
    cli_ablation.update(runs=[run("a")], context=FakeContext({"a": 1}))
    out = tmp_path / "ab1"
    out.mkdir()
    (out / marker).write_text("earlier\n")
    assert main(["ablate", "--runs", "a", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dm1 ablate: error: --out {out}: expected a directory without an ablation report")
    assert f"found {marker}" in err and "--force" in err and err.count("\n") == 1
    assert (out / marker).read_text() == "earlier\n" and sorted(p.name for p in out.iterdir()) == [marker]


def test_cli_force_replaces_an_earlier_ablation_report(tmp_path: Path, cli_ablation: dict) -> None:
    cli_ablation.update(runs=[run("a")], context=FakeContext({"a": 1}))
    out = tmp_path / "ab1"
    assert main(["ablate", "--runs", "a", "-o", str(out)]) == 0
    (out / "report" / "latency.png").write_bytes(b"stale")  # a plot the new report would not write
    cli_ablation.update(context=FakeContext({"a": 2}))
    assert main(["ablate", "--runs", "a", "-o", str(out), "--force"]) == 0
    assert json.loads((out / "ablation.json").read_text())["rows"][0]["successes"] == 2
    assert (out / "report" / "latency.png").read_bytes() != b"stale"


# ------------------------------------------------------------------------------ every episode errored
def test_cli_exits_1_when_every_episode_errored(tmp_path: Path, cli_ablation: dict, capsys) -> None:
    cli_ablation.update(runs=[run("a")], context=ErrorContext({"a": 1}, failing=("a",), error=ALPHA_ERROR))
    assert main(["ablate", "--runs", "a", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "dm1 ablate: 4 of 4 episodes ended in an error" in err
    assert "dm1 ablate: error: every episode of 1 of 1 configurations ended in an error (a K=1 onnx)" in err


def test_cli_exits_1_when_every_episode_of_one_configuration_errored(
    tmp_path: Path, cli_ablation: dict, capsys
) -> None:
    context = ErrorContext({"a": 1, "b": 1}, failing=("b",), error=ALPHA_ERROR)
    cli_ablation.update(runs=[run("a"), run("b", seed=1)], context=context)
    assert main(["ablate", "--runs", "a", "b", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "4 of 8 episodes ended in an error" in err
    assert "every episode of 1 of 2 configurations ended in an error (b K=1 onnx)" in err


def test_cli_exits_0_when_only_some_episodes_of_each_configuration_errored(
    tmp_path: Path, cli_ablation: dict, capsys
) -> None:
    class OneErrorContext(FakeContext):
        def evaluate(self, policy, episodes: int, seed: int) -> list[dict]:
            recs = super().evaluate(policy, episodes, seed)
            recs[0].update(success=False, index=0, error=ALPHA_ERROR)
            return recs

    cli_ablation.update(runs=[run("a")], context=OneErrorContext({"a": 1}))
    assert main(["ablate", "--runs", "a", "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "1 of 4 episodes ended in an error" in err and "every episode" not in err
