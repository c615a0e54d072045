"""Ablation bookkeeping: run → method mapping, the (method, K) matrix, pooling over seeds, timing, report.

The policies and the episode runner are fakes behind the `PolicyFn` / context interfaces; the real in-process
evaluation on the twin is tested in tests/test_inprocess_eval.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dm1.commands import ablate
from dm1.evaluation.ablation import (
    AblationConfig,
    MatrixEntry,
    RunInfo,
    describe_run,
    episode_config,
    method_label,
    plan_matrix,
    run_ablation,
)
from dm1.evaluation.inprocess import InProcessConfig, TwinContext
from dm1.evaluation.policies import PolicyFn, oracle_card
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "ablation"


class FakePolicy:
    """A `PolicyFn` that returns zeros and counts its calls."""

    def __init__(self, name: str, steps: int) -> None:
        self.name, self.steps, self.card = name, steps, oracle_card({"front": (8, 8, 3)})
        self.calls = 0

    def reset(self) -> None:
        pass

    def predict(self, images, proprio, noise=None, rng=None) -> np.ndarray:
        assert set(images) == {"front"} and proprio.shape == (4,)
        self.calls += 1
        return np.zeros((4, 4), np.float32)


class FakeContext:
    """Episode runner: success when (seed + i) % period == 0, with a period per policy name."""

    def __init__(self, periods: dict[str, int]) -> None:
        self.periods, self.calls, self.closed = periods, [], False

    def evaluate(self, policy: PolicyFn, episodes: int, seed: int) -> list[dict]:
        self.calls.append((policy.name, episodes, seed))
        period = next(p for k, p in self.periods.items() if policy.name.startswith(k))
        return [
            {"success": (seed + i) % period == 0, "sim_duration_s": 5.0, "wall_s": 6.0, "ledger_ms": {}}
            for i in range(episodes)
        ]

    def close(self) -> None:
        self.closed = True


def run(name: str, objective: str = "meanflow", variant: str = "infonce_l2", lam: float = 0.5, seed: int = 0):
    return RunInfo(f"runs/{name}", method_label(objective, variant, lam), objective, variant, lam, seed, 100)


def test_shipped_configs_name_the_intended_methods(tmp_path: Path) -> None:
    expected = {
        "dm1_l01": "DM1 λ=0.1",
        "dm1_l05": "DM1 λ=0.5",
        "dm1_l09": "DM1 λ=0.9",
        "meanflow": "MeanFlow λ=0",
        "flowmatch": "Flow matching",
    }
    for name, label in expected.items():
        run_dir = tmp_path / name
        run_dir.mkdir()
        shutil.copy(CONFIGS / f"{name}.yaml", run_dir / "config.yaml")
        info = describe_run(run_dir)
        assert info.method == label, name
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        describe_run(tmp_path / "missing")


def test_matrix_runs_meanflow_at_1_and_5_and_flow_matching_at_1_5_10() -> None:
    runs = [run("dm1_s0"), run("mf_s0", variant="none", lam=0.0), run("fm_s0", objective="flow_matching")]
    entries = plan_matrix(runs, AblationConfig())
    got = {(Path(e.run.run_dir).name, e.steps, e.backend) for e in entries}
    assert got == {
        ("dm1_s0", 1, "onnx"),
        ("dm1_s0", 5, "torch"),
        ("mf_s0", 1, "onnx"),
        ("mf_s0", 5, "torch"),
        ("fm_s0", 1, "torch"),
        ("fm_s0", 5, "torch"),
        ("fm_s0", 10, "torch"),
    }
    assert len({e.key for e in entries}) == len(entries)
    torch_only = plan_matrix(runs, AblationConfig(onnx_one_step=False, steps=(1,)))
    assert {e.backend for e in torch_only} == {"torch"} and len(torch_only) == 5


def test_seeds_pool_into_one_row_per_method_and_k_with_binomial_stderr(tmp_path: Path) -> None:
    runs = [run("dm1_s0", seed=0), run("dm1_s1", seed=1), run("fm_s0", objective="flow_matching")]
    cfg = AblationConfig(episodes=10, seed=0, fm_steps=(1, 10), timing_iters=10, timing_warmup=2)
    made: dict[str, FakePolicy] = {}

    def loader(entry: MatrixEntry, threads: int) -> FakePolicy:
        made[entry.key] = FakePolicy(entry.key, entry.steps)
        return made[entry.key]

    # dm1_s0 wins every 2nd episode, dm1_s1 every 5th, fm every episode.
    ctx = FakeContext({"dm1_s0": 2, "dm1_s1": 5, "fm_s0": 1})
    ctx.inprocess = InProcessConfig(max_sim_s=12.0, ensemble_alpha=0.5)
    result = run_ablation([], tmp_path, cfg, context=ctx, loader=loader, runs=runs, log=lambda _: None)
    assert ctx.closed and all(c[1:] == (10, 0) for c in ctx.calls)  # same episodes and seeds for everyone
    rows = {(r["method"], r["steps"]): r for r in result["rows"]}
    assert set(rows) == {("DM1 λ=0.5", 1), ("DM1 λ=0.5", 5), ("Flow matching", 1), ("Flow matching", 10)}
    dm1 = rows[("DM1 λ=0.5", 1)]
    assert (dm1["successes"], dm1["episodes"]) == (5 + 2, 20)
    assert dm1["per_seed"] == {"seed 0": 0.5, "seed 1": 0.2}
    assert dm1["stderr"] == pytest.approx(np.sqrt(0.35 * 0.65 / 20))
    assert dm1["seed_std"] == pytest.approx(np.std([0.5, 0.2], ddof=1))
    assert rows[("Flow matching", 10)]["rate"] == 1.0 and np.isnan(rows[("Flow matching", 10)]["seed_std"])
    # Every configuration was timed in this process, with the same number of calls each.
    assert set(result["timings_ms"]) == set(made)
    assert "dm1_s0 K=1 torch" in made and "dm1_s0 K=1 torch" not in result["records"]  # timing-only twin
    assert all(t["iters"] == 10 and t["median_ms"] >= 0 for t in result["timings_ms"].values())
    assert all(p.calls == 2 + 10 for p in made.values())  # warm-up + timed; the fake context never predicts
    saved = json.loads((tmp_path / "ablation.json").read_text())
    # the episode settings that change the outcome are recorded with the numbers
    assert saved["meta"]["episode_config"]["ensemble_alpha"] == 0.5
    assert saved["meta"]["episode_config"]["max_sim_s"] == 12.0
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert saved["summaries"]["dm1_s1 K=5 torch"]["successes"] == 2
    md = (tmp_path / "ablation.md").read_text()
    assert "| DM1 λ=0.5 | 1 | onnx | 35.0 | 10.7 | 20 |" in md
    assert "| Flow matching | 10 | torch | 100.0 | 0.0 | 10 |" in md
    assert "| dm1_s0 K=1 torch |" in md and "| fm_s0 K=10 torch |" in md  # the timing table
    assert (tmp_path / "report" / "success.png").is_file()


def test_default_twin_context_records_the_default_episode_settings() -> None:
    recorded = episode_config(TwinContext())
    assert recorded == dataclasses.asdict(InProcessConfig())
    assert recorded["ensemble_alpha"] == DEFAULT_ENSEMBLE_ALPHA == 0.5


def test_bad_ablation_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="fm_steps"):
        AblationConfig(fm_steps=(1, 1))
    with pytest.raises(ValueError, match="episodes"):
        AblationConfig(episodes=0)
    with pytest.raises(ValueError, match="at least one run"):
        run_ablation([], "unused", runs=[], context=FakeContext({}))


def test_cli_parses_step_lists_and_requires_runs() -> None:
    parser = argparse.ArgumentParser()
    ablate.register(parser.add_subparsers())
    args = parser.parse_args(["ablate", "--runs", "a", "b", "--steps", "1,5", "--fm-steps", "1,10"])
    assert args.runs == ["a", "b"] and args.steps == (1, 5) and args.fm_steps == (1, 10)
    with pytest.raises(SystemExit):
        parser.parse_args(["ablate", "--runs", "a", "--steps", "0"])


# --- faults found by exploratory testing ------------------------------------------------------------


class ErrorContext(FakeContext):
    """Every episode of the policies named in `failing` ends in an error (as a refused setting makes them)."""

    def __init__(self, periods: dict[str, int], failing: tuple[str, ...], error: str) -> None:
        super().__init__(periods)
        self.failing, self.error = failing, error

    def evaluate(self, policy: PolicyFn, episodes: int, seed: int) -> list[dict]:
        recs = super().evaluate(policy, episodes, seed)
        if policy.name.startswith(self.failing):
            for i, r in enumerate(recs):
                r.update(success=False, index=i, error=self.error)
        return recs


class InterruptedContext(FakeContext):
    """Ctrl-C arrives while the policy named `interrupt_at` is being evaluated."""

    def __init__(self, periods: dict[str, int], interrupt_at: str) -> None:
        super().__init__(periods)
        self.interrupt_at = interrupt_at

    def evaluate(self, policy: PolicyFn, episodes: int, seed: int) -> list[dict]:
        if policy.name.startswith(self.interrupt_at):
            raise KeyboardInterrupt
        return super().evaluate(policy, episodes, seed)


def fake_loader(entry: MatrixEntry, threads: int) -> FakePolicy:
    return FakePolicy(entry.key, entry.steps)


SMALL = AblationConfig(episodes=4, seed=0, steps=(1,), timing_iters=2, timing_warmup=0)
ALPHA_ERROR = "ValueError: PolicyConfig.ensemble_alpha: expected a number in (0, 1], found 5.0"


def test_out_that_is_a_file_is_refused_before_any_policy_is_loaded_or_timed(tmp_path: Path) -> None:
    out = tmp_path / "ablation.txt"
    out.write_text("")
    loaded: list[str] = []

    def loader(entry: MatrixEntry, threads: int) -> FakePolicy:
        loaded.append(entry.key)
        return fake_loader(entry, threads)

    with pytest.raises(ValueError, match=f"out_dir: expected a directory, found the file {out}"):
        run_ablation([], out, SMALL, context=FakeContext({"a": 1}), loader=loader, runs=[run("a")])
    assert loaded == []


def test_cli_out_that_is_a_file_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from dm1.cli import main

    out = tmp_path / "ablation.txt"
    out.write_text("")
    with pytest.raises(SystemExit) as exited:
        main(["ablate", "--runs", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"argument -o/--out: expected a directory, found the file {out}" in err


def test_errored_episodes_are_counted_and_shown_above_the_table(tmp_path: Path) -> None:
    ctx = ErrorContext({"a": 1, "b": 1}, failing=("b",), error=ALPHA_ERROR)
    result = run_ablation(
        [],
        tmp_path,
        SMALL,
        context=ctx,
        loader=fake_loader,
        runs=[run("a"), run("b", seed=1)],
        log=lambda _: None,
    )
    assert result["meta"]["episode_errors"] == {
        "episodes": 8,
        "errored": 4,
        "first": {"configuration": "b K=1 onnx", "index": 0, "error": ALPHA_ERROR},
    }
    (row,) = result["rows"]
    assert (row["successes"], row["errors"], row["first_error"]) == (4, 4, f"b K=1 onnx: {ALPHA_ERROR}")
    md = (tmp_path / "ablation.md").read_text()
    assert md.index("**4 of 8 episodes ended in an error**") < md.index("| method | K |")
    assert ALPHA_ERROR in md and "- DM1 λ=0.5 K=1: 4 of 8 episodes errored" in md
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["meta"]["episode_errors"]["errored"] == 4


def test_a_clean_ablation_reports_no_errors(tmp_path: Path) -> None:
    result = run_ablation(
        [], tmp_path, SMALL, context=FakeContext({"a": 2}), loader=fake_loader, runs=[run("a")]
    )
    assert result["meta"]["episode_errors"] is None and result["rows"][0]["errors"] == 0
    assert "ended in an error" not in (tmp_path / "ablation.md").read_text()


def test_ctrl_c_during_the_episodes_writes_a_partial_report_of_the_finished_configurations(
    tmp_path: Path,
) -> None:
    runs = [run("a"), run("b", seed=1), run("f", objective="flow_matching")]
    cfg = dataclasses.replace(SMALL, fm_steps=(1,))
    ctx = InterruptedContext({"a": 1, "b": 2, "f": 1}, interrupt_at="b")
    try:
        result = run_ablation(
            [], tmp_path, cfg, context=ctx, loader=fake_loader, runs=runs, log=lambda _: None
        )
    except KeyboardInterrupt:  # not re-raised: it would end the whole test session
        pytest.fail("Ctrl-C after a finished configuration propagated and wrote no report")
    assert ctx.closed
    assert result["meta"]["interrupted"] == {"during": "b K=1 onnx", "finished": 1, "planned": 3}
    assert set(result["records"]) == {"a K=1 onnx"}
    assert [(r["method"], r["episodes"]) for r in result["rows"]] == [("DM1 λ=0.5", 4)]  # no empty 0 % rows
    md = (tmp_path / "ablation.md").read_text()
    assert "**Partial report: interrupted during `b K=1 onnx`.**" in md and "1 of 3 configurations" in md
    assert "Flow matching" not in md.split("## Inference wall time")[0]
    assert json.loads((tmp_path / "ablation.json").read_text())["meta"]["interrupted"]["finished"] == 1


def test_ctrl_c_before_a_configuration_finished_writes_nothing(tmp_path: Path) -> None:
    ctx = InterruptedContext({"a": 1}, interrupt_at="a")
    with pytest.raises(KeyboardInterrupt):
        run_ablation([], tmp_path / "out", SMALL, context=ctx, loader=fake_loader, runs=[run("a")])
    assert ctx.closed and not (tmp_path / "out").exists()


@pytest.fixture
def cli_ablation(monkeypatch: pytest.MonkeyPatch):
    """`dm1 ablate` with the real `run_ablation` over fake runs, policies and a context set per test."""
    import dm1.evaluation.ablation as ablation

    real = ablation.run_ablation
    setup: dict = {}

    def fake(run_dirs, out_dir, cfg, context=None):
        return real(
            run_dirs, out_dir, SMALL, context=setup["context"], loader=fake_loader, runs=setup["runs"]
        )

    monkeypatch.setattr(ablation, "run_ablation", fake)
    return setup


def test_cli_interrupted_ablation_says_the_report_is_partial_and_exits_130(
    tmp_path: Path, cli_ablation: dict, capsys
) -> None:
    from dm1.cli import main

    cli_ablation.update(runs=[run("a"), run("b", seed=1)], context=InterruptedContext({"a": 1}, "b"))
    assert main(["ablate", "--runs", "a", "b", "-o", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "dm1 ablate: interrupted during b K=1 onnx: the report is partial" in err
    assert "covers the 1 of 2 configurations that finished" in err and (tmp_path / "ablation.json").is_file()


def test_cli_interrupted_before_a_configuration_finished_exits_130_without_report(
    tmp_path: Path, cli_ablation: dict, capsys
) -> None:
    from dm1.cli import main

    cli_ablation.update(runs=[run("a")], context=InterruptedContext({"a": 1}, "a"))
    assert main(["ablate", "--runs", "a", "-o", str(tmp_path / "out")]) == 130
    assert "interrupted before a configuration finished; no report written" in capsys.readouterr().err


def test_cli_summary_names_the_errored_episodes(tmp_path: Path, cli_ablation: dict, capsys) -> None:
    from dm1.cli import main

    cli_ablation.update(runs=[run("a")], context=ErrorContext({"a": 1}, failing=("a",), error=ALPHA_ERROR))
    assert main(["ablate", "--runs", "a", "-o", str(tmp_path)]) == 1  # every episode errored: no result
    captured = capsys.readouterr()
    assert "4 of 4 episodes ended in an error" in captured.out  # ablation.md, printed
    first = f"first, a K=1 onnx episode 0: {ALPHA_ERROR}"
    assert f"dm1 ablate: 4 of 4 episodes ended in an error (counted as failures); {first}" in captured.err


@pytest.mark.parametrize("iters", [1, 2, 7, 10])
def test_timing_makes_exactly_the_requested_number_of_calls(iters: int) -> None:
    from dm1.evaluation.ablation import time_policies

    policy = FakePolicy("a", 1)
    timings = time_policies({"a": policy}, iters=iters, warmup=0)
    assert timings["a"]["iters"] == iters and policy.calls == iters
