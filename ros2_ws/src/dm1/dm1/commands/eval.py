"""`dm1 eval`: N seeded episodes of a model on the twin through the full ROS 2 stack, with a report.

Starts `dm1 launch franka --use-sim --model M` (twin, controller, policy node) as a child process group,
drives episodes with `dm1_ros.evaluate.EvalDriver` (reset → home → activate → success or time limit),
then writes `eval.json` (success rate ± binomial s.e., episode time, latency ledger), `report.md` and plots.
Every argument (model, output directory, a writable card for `--update-card`, the settings the launched graph
would refuse) is checked before the graph starts; a report directory that already holds a report is replaced
only with `--force`, and only once the new run's first episode finished (until then the new graph logs to
`launch.new.log`): a run that ends earlier leaves the earlier report as it was. An interrupted evaluation
never updates the model card.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dm1 import interrupts
from dm1.commands.arg_types import (
    fraction,
    loopback_host_or_auto,
    non_negative_int,
    positive_float,
    positive_fraction,
    positive_int,
)
from dm1.commands.eval_checks import check_card_writable, check_launch_settings, check_model, check_report_dir
from dm1.paths import same_path
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA


def run_ros_eval(
    model: str,
    episodes: int,
    seed: int,
    out_dir: Path,
    max_sim_s: float,
    progress: bool = True,
    sim_host: str = "auto",
    noise_scale: float = 1.0,
    ensemble_alpha: float = DEFAULT_ENSEMBLE_ALPHA,
    replace: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the evaluation; returns (summary dict, per-episode records).

    `model`, the graph's settings and `out_dir` are checked first (`check_model`, `check_launch_settings`,
    `check_report_dir`): a report already in `out_dir` is an EvalArgumentError, unless `replace`; it is then
    kept (the new graph logs to `launch.new.log`) until the first episode finished, and replaced only then.
    """
    import rclpy
    from dm1_ros.evaluate import EvalDriver
    from dm1_ros.service_calls import checked_while_waiting
    from rclpy.signals import SignalHandlerOptions
    from tqdm import tqdm

    from dm1.commands.bench import machine_description
    from dm1.commands.graph_process import (
        graph_exited,
        graph_stopped_after,
        policy_launch_args,
        raise_if_exited,
        start_graph,
        wait_graph_ready,
    )
    from dm1.evaluation import summarize, write_report
    from dm1.evaluation.report import write_episodes
    from dm1.evaluation.report_dir import new_run_log, replace_earlier_report

    check_model(model)  # a missing model or an invalid card: an error now, not a graph that fails to start
    check_launch_settings(seed, sim_host, noise_scale, ensemble_alpha)
    check_report_dir(out_dir, replace)  # never a report of two evaluations
    out_dir.mkdir(parents=True, exist_ok=True)
    log = new_run_log(out_dir)  # an earlier evaluation stays until this run has an episode
    policy = policy_launch_args(noise_scale, ensemble_alpha)
    graph = start_graph(model, seed, log, ["--sim-host", sim_host, *policy])
    records: list[dict[str, Any]] = []
    interrupted = ""  # what stopped the run (a KeyboardInterrupt's message), "" while nothing did
    lost_in: int | None = None  # the episode during which the graph exited
    with graph_stopped_after(graph), rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
        driver = EvalDriver()
        try:
            # RuntimeError too: the policy node may still be configuring (loading the model)
            wait_graph_ready(graph, driver, log, 180.0, (TimeoutError, RuntimeError))
            bar = tqdm(range(episodes), desc="eval episodes", disable=not progress)
            wins = 0
            for i in bar:
                try:
                    with checked_while_waiting(raise_if_exited(graph)):  # a dead graph ends a wait at once
                        outcome = driver.run_episode(i, max_sim_s=max_sim_s)
                except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM: report the episodes that finished
                    interrupted = str(exc) or "received SIGINT"
                    bar.write(f"interrupted during episode {i}: reporting the {len(records)} finished ones")
                    break
                except Exception:  # a call that timed out because the graph is gone: say so, report
                    if graph.poll() is None:
                        raise
                    lost_in = i
                    break
                wins += outcome.success
                records.append(asdict(outcome))
                log = replace_earlier_report(out_dir, log)
                write_episodes(out_dir, records)  # a crash later loses no finished episode
                bar.set_postfix(success=f"{wins}/{i + 1}")
        finally:
            driver.close()
    if interrupted and not records:
        raise KeyboardInterrupt(f"interrupted before the first episode finished ({interrupted})")
    lost = None
    if lost_in is not None:
        finished = f"; the report covers the {len(records)} finished episodes" if records else ""
        lost = graph_exited(graph, log, f"during episode {lost_in}", finished)
        if not records:
            raise lost
    summary = summarize(records, model=str(model), through_ros=True, seed=seed, machine=machine_description())
    summary.extra["max_sim_s"] = max_sim_s
    summary.extra["noise_scale"] = noise_scale
    summary.extra["ensemble_alpha"] = ensemble_alpha
    summary.extra["onnx_sha256"] = _card(Path(model)).get("onnx_sha256")
    if interrupted:
        summary.extra["interrupted_after"] = len(records)
    write_report(summary, out_dir, records)
    if lost is not None:
        raise lost
    return summary.to_dict(), records


def replaces_report(args: argparse.Namespace) -> bool:
    """Whether a report already in the output directory is replaced: with `--force`, or when no `--out` was
    given (the command's default directory is its scratch report, rewritten by each run)."""
    return bool(args.force) or args.out is None


def run_from_args(
    args: argparse.Namespace, out: Path, progress: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`run_ros_eval` with the arguments of `add_eval_arguments` (shared by `dm1 eval` and `dm1 demo`); a
    report already in `out` is replaced per `replaces_report`."""
    return run_ros_eval(
        args.model,
        args.episodes,
        args.seed,
        out,
        args.max_sim_s,
        progress=progress,
        sim_host=args.sim_host,
        noise_scale=args.noise_scale,
        ensemble_alpha=args.ensemble_alpha,
        replace=replaces_report(args),
    )


def _card(model: Path) -> dict[str, Any]:
    path = model / "model_card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _merge(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """`--merge`: one report over the episodes of finished evaluations; checks the card's model first, and
    replaces a report in `out` (`--force`) only once the merge succeeded."""
    from dm1.evaluation import write_report
    from dm1.evaluation.merge import merge_runs
    from dm1.evaluation.report_dir import clear_report_dir

    merged, records = merge_runs(args.merge)
    if args.update_card:
        want, found = _card(Path(args.model)).get("onnx_sha256"), merged.extra.get("onnx_sha256")
        same_dir = same_path(merged.model, args.model)
        if (found is not None and found != want) or (found is None and not same_dir):
            raise ValueError(
                f"--update-card: the merged runs evaluated {merged.model} (onnx_sha256 {found}); expected "
                f"the model of --model {args.model} (onnx_sha256 {want})"
            )
    if replaces_report(args):
        clear_report_dir(out)
    write_report(merged, out, records)
    return merged.to_dict()


def _update_card(model: str, summary: dict[str, Any]) -> None:
    """Store `summary` as the card's `evaluation` (validated, atomically: `ModelCard.save`). A statistic with
    nothing to measure (nan: no latency sample, say) is stored as null: the card stays strict JSON."""
    from dm1.modelcard import load_card

    card = load_card(model)
    card.evaluation = _finite_or_null(summary)
    card.save(model)


def _finite_or_null(value: Any) -> Any:
    """`value` with every non-finite float (nan, ±inf), however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def _check_args(args: argparse.Namespace, out: Path) -> None:
    """Every check that needs no evaluation, so that no finished evaluation is lost to a late error
    (`run_ros_eval` checks the model and `out` again: it is also the library entry point)."""
    if not args.merge:
        check_model(args.model)
    if args.update_card:
        check_card_writable(args.model)
    check_report_dir(out, replaces_report(args), args.merge or ())


def _handler(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/eval/{Path(args.model).name}{'_merged' if args.merge else ''}")
    _check_args(args, out)
    try:
        summary = _merge(args, out) if args.merge else run_from_args(args, out, progress=not args.json)[0]
    except KeyboardInterrupt as exc:
        print("dm1 eval: interrupted before an episode finished; nothing to report", file=sys.stderr)
        return interrupts.exit_code(exc)
    except (ValueError, FileNotFoundError) as exc:
        if not args.merge:
            raise
        print(f"dm1 eval: error: --merge: {exc}", file=sys.stderr)
        return 2
    interrupted = "interrupted_after" in summary["extra"]
    if interrupted:  # a partial evaluation is no evaluation of the model: the card keeps its own
        kept = "; the model card was not updated" if args.update_card else ""
        print(
            f"dm1 eval: interrupted: the report covers the {summary['episodes']} finished episodes{kept}",
            file=sys.stderr,
        )
    elif args.update_card:
        _update_card(args.model, summary)
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['successes']}/{summary['episodes']} successes "
            f"({100 * summary['success_rate']:.1f} % ± {100 * summary['stderr']:.1f}); "
            f"report: {out / 'report.md'}"
        )
    return 130 if interrupted else 0  # a script must not take a partial report for the whole run


def add_eval_arguments(
    p: argparse.ArgumentParser, episodes: int, default_out: str = "runs/eval/<model name>"
) -> None:
    """Arguments shared by `dm1 eval` and `dm1 demo` (`default_out`: where a run reports without -o)."""
    p.add_argument("--model", default="models/dm1_lift", help="exported model directory")
    p.add_argument("--episodes", type=positive_int, default=episodes)
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=1000,
        help="twin seed (cube poses); differs from training seeds",
    )
    p.add_argument(
        "--max-sim-s", type=positive_float, default=20.0, help="time limit per episode (simulation s)"
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help=f"report directory (default {default_out}, replaced by each run; a given --out that "
        "holds a report needs --force)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a report already in --out (only the files an evaluation writes, and only once the "
        "new run's first episode finished)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one line of JSON")
    p.add_argument(
        "--sim-host",
        type=loopback_host_or_auto,
        default="auto",
        help="loopback address 127.x.y.z of the twin's franky server (auto: a free one)",
    )
    p.add_argument("--noise-scale", type=fraction, default=1.0, help="policy sampler noise scale (0..1)")
    p.add_argument(
        "--ensemble-alpha",
        type=positive_fraction,
        default=DEFAULT_ENSEMBLE_ALPHA,
        help="policy chunk ensembling weight (0..1], 1 = off; default %(default)s",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 eval`."""
    p = sub.add_parser("eval", help="closed-loop evaluation on the twin through ROS 2", description=__doc__)
    add_eval_arguments(p, episodes=200)
    p.add_argument("--update-card", action="store_true", help="store the summary in the model card")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        default=None,
        help="run nothing: one report over finished evaluations (same model and settings, other cube poses)",
    )
    p.set_defaults(func=_handler)
