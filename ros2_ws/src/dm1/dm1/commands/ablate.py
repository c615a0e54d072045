"""`dm1 ablate --runs DIR... [--episodes N] [--steps 1,5] [--fm-steps 1,5,10]`: the issue-6 ablation table.

Evaluates every trained run directory in-process on the twin (same core, same twin, no ROS transport) at each
number of sampler steps, times one inference of every configuration in the same process, and writes
`ablation.json`, `ablation.md` and plots to `--out` (a directory that holds an ablation report already needs
`--force`). Exits 1 when every episode of some configuration ended in an error (its row measures nothing), 130
when interrupted (a partial report). See `dm1.evaluation.ablation`.
"""

from __future__ import annotations

import argparse
import sys

from dm1 import interrupts
from dm1.commands.arg_types import (
    fraction,
    loopback_host,
    non_negative_int,
    output_dir,
    positive_float,
    positive_fraction,
    positive_int,
    positive_int_list,
)
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA

#: the files whose presence makes a directory hold an ablation report (`--out` refuses it without `--force`)
REPORT_MARKERS: tuple[str, ...] = ("ablation.json", "ablation.md")


def report_problem(out: str, force: bool) -> str | None:
    """Why `out` cannot take the new report (it holds an earlier one, and no `force`), or None."""
    from pathlib import Path

    held = [name for name in REPORT_MARKERS if (Path(out) / name).exists()]
    if not held or force:
        return None
    return (
        f"--out {out}: expected a directory without an ablation report, found {' and '.join(held)} of an "
        "earlier ablation (pass --force to replace that report, or choose another --out)"
    )


def _handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dm1.evaluation.ablation import AblationConfig, run_ablation
    from dm1.evaluation.inprocess import InProcessConfig, TwinContext

    if problem := report_problem(args.out, args.force):  # now, not after hours of episodes
        print(f"dm1 ablate: error: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = AblationConfig(
            episodes=args.episodes,
            seed=args.seed,
            steps=args.steps,
            fm_steps=args.fm_steps,
            onnx_one_step=not args.torch_only,
            timing_iters=args.timing_iters,
            threads=args.threads,
            oracle=args.oracle,
        )
        context = TwinContext(
            InProcessConfig(
                max_sim_s=args.max_sim_s, noise_scale=args.noise_scale, ensemble_alpha=args.ensemble_alpha
            ),
            host=args.host,
        )
        result = run_ablation(args.runs, args.out, cfg, context=context)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dm1 ablate: error: {exc}", file=sys.stderr)
        return 2
    except (
        KeyboardInterrupt
    ) as exc:  # before the first configuration finished (later: a partial report, below)
        print("dm1 ablate: interrupted before a configuration finished; no report written", file=sys.stderr)
        return interrupts.exit_code(exc)
    print((Path(args.out) / "ablation.md").read_text())
    print(f"{len(result['rows'])} rows; wrote {Path(args.out) / 'ablation.json'}")
    errors = result["meta"].get("episode_errors")
    if errors:
        print(
            f"dm1 ablate: {errors['errored']} of {errors['episodes']} episodes ended in an error (counted as "
            f"failures); first, {errors['first']['configuration']} episode {errors['first']['index']}: "
            f"{errors['first']['error']}",
            file=sys.stderr,
        )
    interrupted = result["meta"].get("interrupted")
    if interrupted:
        print(
            f"dm1 ablate: interrupted during {interrupted['during']}: the report is partial, it covers the "
            f"{interrupted['finished']} of {interrupted['planned']} configurations that finished",
            file=sys.stderr,
        )
        return 130  # a script must not take a partial table for the whole ablation
    failed = result["meta"].get("failed_configurations")
    if failed:  # a table whose rows measured nothing is no result: a script must not take it for one
        print(
            f"dm1 ablate: error: every episode of {len(failed)} of {len(result['records'])} configurations "
            f"ended in an error ({', '.join(failed)})",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 ablate`."""
    p = sub.add_parser(
        "ablate", help="in-process ablation table (DM1 / MeanFlow / flow matching)", description=__doc__
    )
    p.add_argument("--runs", nargs="+", required=True, help="`dm1 train` run directories")
    p.add_argument("--episodes", type=positive_int, default=20, help="seeded episodes per run and K")
    p.add_argument(
        "--steps",
        type=positive_int_list,
        default=(1, 5),
        help="sampler steps for MeanFlow models (default 1,5)",
    )
    p.add_argument(
        "--fm-steps", type=positive_int_list, default=(1, 5, 10), help="steps for flow matching (1,5,10)"
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=1000, help="first cube/noise seed (differs from training)"
    )
    p.add_argument(
        "--max-sim-s", type=positive_float, default=20.0, help="time limit per episode (simulation s)"
    )
    p.add_argument(
        "--timing-iters", type=positive_int, default=200, help="timed inferences per configuration"
    )
    p.add_argument(
        "--threads", type=positive_int, default=1, help="inference threads (torch and onnxruntime)"
    )
    p.add_argument("--torch-only", action="store_true", help="run K = 1 in torch instead of the ONNX export")
    p.add_argument("--oracle", action="store_true", help="also evaluate the privileged scripted expert")
    p.add_argument(
        "--noise-scale", type=fraction, default=1.0, help="sampler noise scale (policy temperature)"
    )
    p.add_argument(
        "--ensemble-alpha",
        type=positive_fraction,
        default=DEFAULT_ENSEMBLE_ALPHA,
        help="chunk ensembling weight in (0, 1], 1 = off; default %(default)s",
    )
    p.add_argument(
        "--host",
        type=loopback_host,
        default=None,
        help="loopback address for franky-sim (default: first free)",
    )
    p.add_argument(
        "-o",
        "--out",
        type=output_dir,
        default="runs/ablation/eval",
        help="output directory (created; one that holds an ablation report needs --force)",
    )
    p.add_argument("--force", action="store_true", help="replace an ablation report already in --out")
    p.set_defaults(func=_handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m dm1.commands.ablate ...` (works before `ablate` is listed in `dm1.cli.COMMAND_MODULES`)."""
    parser = argparse.ArgumentParser(prog="dm1")
    register(parser.add_subparsers())
    args = parser.parse_args(["ablate", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
