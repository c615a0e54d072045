"""`dm1 demo`: the README's main job — the bundled model drives the twin through the full ROS 2 stack.

A short `dm1 eval` (3 episodes by default) that prints success and the latency ledger (`--json`: the
summary as one line of JSON, as `dm1 eval --json`, and no progress bar).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dm1 import interrupts


def _handler(args: argparse.Namespace) -> int:
    from dm1.commands.eval import run_from_args

    out = Path(args.out or "runs/demo")
    try:
        # runs/demo is the demo's scratch report, replaced on each run; another --out only with --force
        summary, records = run_from_args(args, out, progress=not args.json)
    except KeyboardInterrupt as exc:
        print("dm1 demo: interrupted before an episode finished", file=sys.stderr)
        return interrupts.exit_code(exc)
    interrupted = "interrupted_after" in summary["extra"]
    if args.json:  # successes, rate, latency ledger, ... (the summary `dm1 eval --json` prints)
        if interrupted:
            finished = summary["episodes"]
            print(
                f"dm1 demo: interrupted: the summary covers the {finished} finished episodes", file=sys.stderr
            )
        print(json.dumps(summary))
        return 130 if interrupted else 0
    print(f"\nmodel {args.model} on the franky-sim twin, through twin → policy node → controller → franky")
    for r in records:
        verdict = "success" if r["success"] else "failure"
        print(f"  episode {r['index']}: {verdict} in {r['sim_duration_s']:.1f} sim s")
    print(
        f"success {summary['successes']}/{summary['episodes']} "
        f"({100 * summary['success_rate']:.0f} % ± {100 * summary['stderr']:.0f})"
    )
    print("  latency per tick, ms after the camera captured its image (the frame's age included):")
    for key, st in summary["latency_ms"].items():
        print(f"  latency {key}: median {st['median']:.2f} ms, p99 {st['p99']:.2f} ms")
    print("  (observation -> chunk alone, without the frame age: `dm1 bench loop`, obs_to_chunk_ms)")
    print(f"report: {out / 'report.md'}")
    if interrupted:
        print(f"interrupted: the report covers the {summary['episodes']} finished episodes", file=sys.stderr)
        return 130
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 demo`."""
    from dm1.commands.eval import add_eval_arguments

    p = sub.add_parser(
        "demo", help="run the bundled model on the twin (README main command)", description=__doc__
    )
    add_eval_arguments(p, episodes=3, default_out="runs/demo")
    p.set_defaults(func=_handler)
