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
