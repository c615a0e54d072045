"""`dm1 bench`, `dm1 sim` and `dm1 demo` faults found by exploratory testing: bad input is refused in one line
(exit code 2) before any benchmark, twin or graph starts, and options do what their help says or are refused.

Nothing here starts the simulator or a ROS graph: the benchmarks, the twin and the evaluation are replaced by
fakes that fail the test if they are reached when they must not be.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from dm1.cli import build_parser, main


class Started(AssertionError):
    """Raised by a fake that must not be reached (a benchmark, a twin, a ROS node)."""


@pytest.fixture
def bench_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`dm1 bench`'s benchmark replaced by a fake that records the kinds it ran and returns a small result."""
    import dm1.commands.bench as bench

    ran: list[str] = []

    def fake_run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
        ran.append(kind)
        return {"median_ms": 1.5}

    monkeypatch.setattr(bench, "_run", fake_run)
    return ran


@pytest.fixture
def no_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    """`dm1 sim` must start neither a twin nor the twin node."""
    import dm1.sim.twin
    import dm1_sim.runner

    def started(*args: Any, **kwargs: Any) -> Any:
        raise Started("the twin was started")

    monkeypatch.setattr(dm1.sim.twin, "Twin", started)
    monkeypatch.setattr(dm1_sim.runner, "run_with_twin_node", started)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `dm1 argv`, expect exit code 2 without a traceback; returns stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


# --- dm1 bench --report -------------------------------------------------------------------------------------


def test_bench_report_that_is_a_directory_is_refused_before_the_benchmark_runs(
    tmp_path: Path, bench_runs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["bench", "inference", "--report", str(tmp_path)], capsys)
    assert f"argument --report: expected a file, found the directory {tmp_path}" in err
    assert bench_runs == []


def test_bench_report_below_a_file_is_refused_before_the_benchmark_runs(
    tmp_path: Path, bench_runs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plain").write_text("")
    err = refused(["bench", "inference", "--report", str(tmp_path / "plain" / "r.json")], capsys)
    assert "argument --report: expected a writable file path, found the file" in err
    assert bench_runs == []


def test_bench_report_in_an_unwritable_directory_is_refused_before_the_benchmark_runs(
    tmp_path: Path, bench_runs: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dm1.commands.arg_types as arg_types

    monkeypatch.setattr(arg_types.os, "access", lambda path, mode: False)  # tests run as root: chmod is moot
    err = refused(["bench", "inference", "--report", str(tmp_path / "r.json")], capsys)
    assert f"argument --report: expected a writable file path, found {tmp_path}, which is not writable" in err
    assert bench_runs == []


def test_bench_report_writes_the_json_result_and_the_help_says_just_that(
    tmp_path: Path, bench_runs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "new" / "inference.json"
    assert main(["bench", "inference", "--json", "--report", str(report)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(report.read_text()) == printed and printed["median_ms"] == 1.5
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Markdown" not in help_text  # it never wrote one
    assert "also write the JSON result to FILE (replaced if it exists" in help_text


# --- dm1 bench: bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["models/dm1_lift/model.onnx", "a_file"])
@pytest.mark.parametrize("kind", ["inference", "loop"])
def test_bench_model_that_is_a_file_is_refused_before_the_benchmark_runs(
    kind: str,
    model: str,
    tmp_path: Path,
    bench_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    Path(model).parent.mkdir(parents=True, exist_ok=True)
    Path(model).write_text("not a directory")
    err = refused(["bench", kind, "--model", model], capsys)
    assert (
        err.strip()
        == f"dm1 bench: error: argument --model: expected a model directory, found the file {model}"
    )
    assert bench_runs == []


def test_bench_reference_inference_does_not_read_model(tmp_path: Path, bench_runs: list[str]) -> None:
    (tmp_path / "file").write_text("")
    assert main(["bench", "inference", "--reference", "--model", str(tmp_path / "file")]) == 0
    assert bench_runs == ["inference"]


@pytest.mark.parametrize("text", ["abc", "2,,", "0", "-4", "32,32", ""])
def test_bench_batch_sizes_must_be_distinct_positive_integers(
    text: str, bench_runs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["bench", "train", "--batch-sizes", text], capsys)
    assert (
        f"argument --batch-sizes: expected comma-separated distinct integers >= 1 like 32,64, found {text}"
        in err
    )
    assert bench_runs == []


def test_bench_batch_sizes_parse_to_a_tuple() -> None:
    args = build_parser().parse_args(["bench", "train", "--batch-sizes", "8,16"])
    assert args.batch_sizes == (8, 16)
    assert build_parser().parse_args(["bench", "train"]).batch_sizes == (32, 64)


# --- dm1 bench train --warmup, dm1 bench inference --warmup -------------------------------------------------


class FakeTrainer:
    """Counts `train_step` calls; what `run_train_benchmark` reads of a `Trainer`."""

    steps: list[int] = []

    def __init__(self, cfg: Any, progress: bool, log: Any) -> None:
        import torch

        self.cfg, self.device = cfg, torch.device("cpu")
        FakeTrainer.steps.append(0)

    def train_step(self) -> dict[str, float]:
        FakeTrainer.steps[-1] += 1
        return {"loss": 0.0}

    def close(self) -> None:
        """The real one releases the run directory's lock."""


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """`run_train_benchmark` without a dataset or a network: returns the train_step count per batch size."""
    import dm1.data.synthetic
    import dm1.train.trainer

    FakeTrainer.steps = []
    monkeypatch.setattr(dm1.train.trainer, "Trainer", FakeTrainer)
    monkeypatch.setattr(dm1.data.synthetic, "make_synthetic_dataset", lambda *a, **k: None)
    return FakeTrainer.steps


@pytest.mark.parametrize(("argv", "warmup"), [(["--warmup", "0"], 0), ([], 10), (["--warmup", "12"], 12)])
def test_bench_train_runs_exactly_the_warmup_steps_asked_for(
    argv: list[str], warmup: int, fake_training: list[int]
) -> None:
    from dm1.train.bench import run_train_benchmark

    args = build_parser().parse_args(["bench", "train", "--batch-sizes", "2,4", "--steps", "5", *argv])
    result = run_train_benchmark(args)
    assert fake_training == [warmup + 5, warmup + 5]  # it ran 3 for --warmup 0, 10 for --warmup 12
    assert [r["warmup_steps"] for r in result["runs"]] == [warmup, warmup]


def test_bench_inference_warmup_defaults_to_50_and_takes_0(monkeypatch: pytest.MonkeyPatch) -> None:
    import dm1.bench_inference
    from dm1.commands.bench import _run

    seen: list[int] = []
    monkeypatch.setattr(
        dm1.bench_inference, "run_inference_benchmark", lambda *a, **k: seen.append(k["warmup"])
    )
    _run("inference", build_parser().parse_args(["bench", "inference"]))
    _run("inference", build_parser().parse_args(["bench", "inference", "--warmup", "0"]))
    assert seen == [50, 0]


# --- dm1 bench twin --seed ----------------------------------------------------------------------------------


def test_bench_twin_seeds_the_twin_and_its_episodes_with_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    import dm1.sim.expert
    import dm1.sim.twin
    from dm1.sim.bench import run_twin_benchmark

    twins: list[Any] = []
    episode_seeds: list[int] = []

    class FakeRenderer:
        render_ms = [3.0, 4.0]
        frames_rendered, frames_dropped, physics_wait_s = 10, 0, 0.0

    class FakeTwin:
        def __init__(self, cfg: Any) -> None:
            self.cfg, self.renderer = cfg, FakeRenderer()
            twins.append(self)

        def __enter__(self) -> FakeTwin:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def sim_time(self) -> float:
            return 0.0

    def fake_episodes(twin: Any, episodes: int, seed: int, max_sim_s: float) -> list[Any]:
        episode_seeds.append(seed)
        return []

    monkeypatch.setattr(dm1.sim.twin, "Twin", FakeTwin)
    monkeypatch.setattr(dm1.sim.expert, "run_expert_episodes", fake_episodes)
    result = run_twin_benchmark(build_parser().parse_args(["bench", "twin", "--seed", "7", "--seconds", "1"]))
    assert twins[0].cfg.seed == 7 and episode_seeds == [7, 8]  # warm-up, then the timed episodes
    assert result["seed"] == 7


# --- dm1 sim ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "--width", "5000"], "argument --width: expected an integer in [1, 1920], found 5000"),
        (
            ["sim", "--no-ros", "--height", "0"],
            "argument --height: expected an integer in [1, 1920], found 0",
        ),
        (["sim", "--host", "foo"], "argument --host: expected a loopback address 127.x.y.z, found foo"),
        (["sim", "--no-ros", "--host", "foo"], "argument --host: expected a loopback address 127.x.y.z"),
        (
            ["sim", "--host", "10.1.2.3"],
            "argument --host: expected a loopback address 127.x.y.z, found 10.1.2.3",
        ),
        (["sim", "--no-ros", "--host", "127.foo"], "argument --host: expected a loopback address"),
        (["sim", "--no-ros", "--seed", "-1"], "argument --seed: expected an integer >= 0, found -1"),
        (
            ["sim", "--fps", "500"],
            "argument --fps: expected a number in [0.1, 120.0] (the twin node's camera_fps)",
        ),
        (["sim", "--episodes", "3"], "argument --episodes: only used with --expert"),
        (["sim", "--no-ros", "--episodes", "3"], "argument --episodes: only used with --expert"),
        (["sim", "--max-episode-s", "5"], "argument --max-episode-s: only used with --expert"),
        (["sim", "--min-success", "0.5"], "argument --min-success: only used with --expert"),
        (["sim", "--expert", "--seconds", "5"], "argument --seconds: not used with --expert"),
    ],
)
def test_sim_bad_values_and_ignored_options_are_one_line_before_the_twin_starts(
    argv: list[str], message: str, no_twin: None, capsys: pytest.CaptureFixture[str]
) -> None:
    last = refused(argv, capsys).strip().splitlines()[-1]  # argparse prints the usage above it
    assert last.startswith("dm1 sim: error: ") and message in last, last


def test_sim_fills_the_defaults_of_options_it_did_not_get() -> None:
    from dm1.commands.sim import _usage_problem

    args = build_parser().parse_args(["sim", "--expert"])
    assert _usage_problem(args) is None
    assert (args.episodes, args.max_episode_s, args.min_success) == (10, 20.0, 0.0)
    plain = build_parser().parse_args(["sim"])
    assert _usage_problem(plain) is None and plain.seconds == 0.0


def test_sim_no_cameras_with_ros_gives_the_twin_node_no_cameras(ros_env: dict[str, str]) -> None:
    import rclpy
    from dm1.commands.sim import _ros_args
    from dm1_sim.params import declare_parameters, twin_config_from_parameters
    from rclpy.node import Node

    ros_args = _ros_args(build_parser().parse_args(["sim", "--no-cameras"]))
    assert "cameras:=[]" in ros_args
    context = rclpy.Context()
    rclpy.init(args=["dm1_sim", *ros_args], context=context)
    try:
        node = Node("twin_params_probe", context=context)
        assert (
            twin_config_from_parameters(declare_parameters(node)).cameras == {}
        )  # as the twin node reads it
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert "cameras:=[]" not in _ros_args(build_parser().parse_args(["sim"]))


# --- dm1 demo --json ----------------------------------------------------------------------------------------


SUMMARY = {
    "successes": 2,
    "episodes": 3,
    "success_rate": 2 / 3,
    "stderr": 0.27,
    "latency_ms": {"total_ms": {"median": 9.5, "p99": 12.0}},
    "extra": {},
}


@pytest.fixture
def fake_eval(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`dm1 demo`'s evaluation replaced by a fake; returns the keyword arguments of each call."""
    import dm1.commands.eval as eval_command

    calls: list[dict[str, Any]] = []

    def run_from_args(args: argparse.Namespace, out: Path, **kwargs: Any) -> tuple[dict, list]:
        calls.append(kwargs)
        records = [{"index": i, "success": i > 0, "sim_duration_s": 5.0} for i in range(3)]
        return json.loads(json.dumps(SUMMARY)), records

    monkeypatch.setattr(eval_command, "run_from_args", run_from_args)
    return calls


def test_demo_json_prints_one_json_line_of_the_summary_and_no_progress_bar(
    fake_eval: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1, out
    printed = json.loads(out)
    assert (printed["successes"], printed["episodes"]) == (2, 3)
    assert printed["latency_ms"]["total_ms"]["median"] == 9.5
    assert fake_eval[0].get("progress") is False


def test_demo_without_json_keeps_its_text_summary(
    fake_eval: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "success 2/3" in out and "latency total_ms: median 9.50 ms" in out
    assert fake_eval[0].get("progress", True) is True


def test_interrupted_demo_json_still_prints_the_partial_summary_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dm1.commands.eval as eval_command

    partial = SUMMARY | {"episodes": 1, "successes": 1, "extra": {"interrupted_after": 1}}
    monkeypatch.setattr(eval_command, "run_from_args", lambda *a, **k: (partial, []))
    assert main(["demo", "--json"]) == 130
    captured = capsys.readouterr()
    assert json.loads(captured.out)["extra"] == {"interrupted_after": 1}
    assert "interrupted: the summary covers the 1 finished episodes" in captured.err
