"""`dm1 bench {inference,train,twin,loop}`: benchmarks that print their result as JSON.

Each benchmark lives beside the code it measures and returns a plain dict; this module only parses arguments,
prints the JSON (indented, or one line with `--json`) and, with `--report FILE`, also writes it to FILE
(replacing it). Bad arguments, a `--report` that cannot be written and a `--model` that is a file are refused
before the benchmark runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from dm1 import interrupts
from dm1.commands.arg_types import (
    fraction,
    non_negative_int,
    output_file,
    positive_float,
    positive_fraction,
    positive_int,
    positive_int_list,
)
from dm1.monitor.host_cpu import CpuTimes, host_cpu_usage
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA


def machine_description() -> str:
    """CPU model and core count, e.g. 'Intel Xeon ... (2 cores)'."""
    import os

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


#: Untimed inferences before the timed ones when `--warmup` is not given (train: `DEFAULT_WARMUP_STEPS`).
DEFAULT_INFERENCE_WARMUP = 50


def _run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    if kind == "inference":
        from dm1.bench_inference import export_reference_network, run_inference_benchmark

        warmup = DEFAULT_INFERENCE_WARMUP if args.warmup is None else args.warmup
        if not args.reference:
            return run_inference_benchmark(
                args.model,
                checkpoint_dir=args.checkpoint,
                iters=args.iters,
                warmup=warmup,
                spinning=args.spinning,
            )
        import tempfile

        with tempfile.TemporaryDirectory(prefix="dm1-reference-") as tmp:
            model, ckpt = export_reference_network(tmp)
            result = run_inference_benchmark(
                model, checkpoint_dir=ckpt, iters=args.iters, warmup=warmup, spinning=args.spinning
            )
        result["model_dir"] = (
            "reference network (random weights, dm1.bench_inference.export_reference_network)"
        )
        return result
    if kind == "train":
        from dm1.train.bench import run_train_benchmark

        return run_train_benchmark(args)
    if kind == "twin":
        from dm1.sim.bench import run_twin_benchmark

        return run_twin_benchmark(args)
    if kind == "loop":
        from dm1_ros.bench_loop import run_loop_benchmark

        return run_loop_benchmark(args)
    raise ValueError(f"unknown benchmark {kind!r}")


def _model_problem(args: argparse.Namespace) -> str | None:
    """`argument --model: expected ..., found ...` when the benchmark reads `--model` and it is a file."""
    uses_model = args.kind == "loop" or (args.kind == "inference" and not args.reference)
    if uses_model and Path(args.model).is_file():  # a missing one: the model loader names what is missing
        return f"argument --model: expected a model directory, found the file {args.model}"
    return None


def _handler(args: argparse.Namespace) -> int:
    problem = _model_problem(args)
    if problem is not None:
        print(f"dm1 bench: error: {problem}", file=sys.stderr)
        return 2
    cpu_before = CpuTimes.read()
    try:
        result = _run(args.kind, args)
    except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM (loop: after its graph was stopped)
        print(f"dm1 bench {args.kind}: interrupted; nothing measured", file=sys.stderr)
        return interrupts.exit_code(exc)
    result.setdefault("machine", machine_description())
    result.setdefault("benchmark", args.kind)
    result.setdefault("date", time.strftime("%Y-%m-%dT%H:%M:%S"))
    # every CPU of the host over the whole run (set-up included): a slow window shows as steal or busy time
    result.setdefault("host_cpu", host_cpu_usage(cpu_before, CpuTimes.read()))
    text = json.dumps(result, indent=None if args.json else 2, sort_keys=False)
    print(text)
    if args.report:  # checked by `output_file` before the run; what fails now still leaves the JSON above
        report = Path(args.report)
        try:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            print(
                f"dm1 bench: error: --report {report}: {exc} (the result is printed above)", file=sys.stderr
            )
            return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 bench`."""
    p = sub.add_parser("bench", help="benchmarks (print JSON)", description=__doc__)
    p.add_argument("kind", choices=["inference", "train", "twin", "loop"])
    p.add_argument("--json", action="store_true", help="print one line of JSON")
    p.add_argument(
        "--report",
        type=output_file,
        default=None,
        metavar="FILE",
        help="also write the JSON result to FILE (replaced if it exists; parent directories are created)",
    )
    p.add_argument("--model", default="models/dm1_lift", help="model directory (inference, loop)")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory for the torch comparison")
    p.add_argument(
        "--reference",
        action="store_true",
        help="inference: time the DM1 reference-size network (one camera, 1.78 M parameters, random weights) "
        "instead of --model",
    )
    p.add_argument("--iters", type=positive_int, default=500)
    p.add_argument(
        "--spinning",
        choices=["run", "always", "never"],
        default="run",
        help="onnxruntime idle-worker policy (inference; see dm1.runtime.session_options)",
    )
    p.add_argument(
        "--warmup",
        type=non_negative_int,
        default=None,
        help="untimed calls before the timed ones (inference: default 50; train: steps, default 10)",
    )
    p.add_argument(
        "--seconds", type=positive_float, default=20.0, help="simulated seconds to run (twin, loop)"
    )
    p.add_argument(
        "--batch-sizes", type=positive_int_list, default=(32, 64), help="training batch sizes (train; 32,64)"
    )
    p.add_argument("--steps", type=positive_int, default=20, help="timed training steps (train)")
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="twin seed (twin: cube poses and episodes; loop)"
    )
    p.add_argument("--noise-scale", type=fraction, default=1.0, help="policy sampler noise scale (loop)")
    p.add_argument(
        "--sim-host",
        default="auto",
        help="loopback address of the twin's franky server (loop; auto: a free one)",
    )
    p.add_argument(
        "--ensemble-alpha",
        type=positive_fraction,
        default=DEFAULT_ENSEMBLE_ALPHA,
        help="policy chunk ensembling weight in (0, 1], 1 = off (loop)",
    )
    p.set_defaults(func=_handler)
