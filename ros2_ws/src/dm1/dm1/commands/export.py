"""`dm1 export <checkpoint_dir> -o models/<name>`: checkpoint → verified `model.onnx` + `model_card.json`."""

from __future__ import annotations

import argparse
import json
import sys

from dm1.commands.arg_types import positive_float


def _handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dm1.checkpoint import CheckpointError
    from dm1.export import ExportError, export_model
    from dm1.modelcard_checks import ModelCardError

    out = Path(args.out) if args.out else Path("models") / (args.name or Path(args.checkpoint).resolve().name)
    try:
        result = export_model(
            args.checkpoint,
            out,
            name=args.name,
            opset=args.opset,
            tolerance=args.tolerance,
            overwrite=args.force,
            optimize=not args.no_optimize,
        )
    except (CheckpointError, ExportError, ModelCardError) as exc:
        print(f"dm1 export: error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "model_dir": str(result.path),
        "parameters": result.parameters,
        "onnx_vs_torch_max_abs_diff": result.max_abs_diff,
        "graph_rewrites": result.rewrites,
        "seconds": round(result.seconds, 2),
    }
    print(json.dumps(summary, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 export`."""
    p = sub.add_parser("export", help="export a checkpoint to ONNX + model card", description=__doc__)
    p.add_argument(
        "checkpoint",
        help="a training run directory (its newest checkpoint is exported) or one checkpoint directory "
        "(model.safetensors + checkpoint.json)",
    )
    p.add_argument("-o", "--out", help="output model directory (default: models/<name>)")
    p.add_argument("--name", help="model name in the card (default: the output directory name)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument(
        "--tolerance", type=positive_float, default=1e-4, help="max |ONNX - torch| allowed (default 1e-4)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier export (a directory holding only model.onnx + model_card.json)",
    )
    p.add_argument(
        "--no-optimize",
        action="store_true",
        help="publish the plain traced graph (no export-time rewrites such as the fused Attention)",
    )
    p.set_defaults(func=_handler)
