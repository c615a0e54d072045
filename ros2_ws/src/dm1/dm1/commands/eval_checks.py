"""The argument checks of `dm1 eval` (and `dm1 demo`), made before anything runs.

What the launched graph would refuse about the model and its settings, whether `--update-card` can replace the
model card, and whether `--out` can take a new report: each problem is an `EvalArgumentError` naming the
argument, raised before the graph starts, so that no finished evaluation is lost to a late error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dm1.commands.arg_types import (
    fraction,
    loopback_host_or_auto,
    non_negative_int,
    output_path_problem,
    positive_fraction,
    settings_problem,
)
from dm1.errors import ReportedError
from dm1.paths import same_path

_MODEL_DIR = "a model directory (model.onnx + model_card.json)"


class EvalArgumentError(ReportedError, ValueError):
    """An argument of `dm1 eval` / `dm1 demo` that cannot be used; raised before anything runs."""


def check_launch_settings(seed: int, sim_host: str, noise_scale: float, ensemble_alpha: float) -> None:
    """What the launched graph (`dm1 launch`'s `LaunchArgs`) would refuse about its settings, as an
    EvalArgumentError now, in the words of the command line's argument types."""
    settings = (
        ("--seed", non_negative_int, seed),
        ("--sim-host", loopback_host_or_auto, sim_host),
        ("--noise-scale", fraction, noise_scale),
        ("--ensemble-alpha", positive_fraction, ensemble_alpha),
    )
    problem = settings_problem(settings)
    if problem:
        raise EvalArgumentError(problem)


def check_model_dir(model: str | os.PathLike[str]) -> Path:
    """`model` as a Path; EvalArgumentError when it is missing or a file (e.g. the model's `model.onnx`)."""
    path = Path(model)
    if path.is_file():
        raise EvalArgumentError(f"--model {model}: expected {_MODEL_DIR}, found a file")
    if not path.is_dir():
        raise EvalArgumentError(
            f"{model}: no such directory (--model expects a model directory: model.onnx + model_card.json)"
        )
    return path


def _twin_cameras() -> tuple[str, ...]:
    """The cameras of the twin `dm1 eval` launches (the launcher's default: eval has no --cameras)."""
    from dataclasses import fields

    from dm1.launch_args import LaunchArgs

    return tuple(next(f.default for f in fields(LaunchArgs) if f.name == "cameras"))


def check_model(model: str | os.PathLike[str]) -> None:
    """What the launched graph would refuse about `model`, checked before it starts: a model directory with a
    valid card (ModelCardError) and `model.onnx`, whose cameras the twin renders, at one size."""
    from dm1.launch_args import twin_image_size
    from dm1.modelcard import ONNX_FILENAME, load_card

    path = check_model_dir(model)
    card = load_card(path)
    if not (path / ONNX_FILENAME).is_file():
        raise EvalArgumentError(f"--model {model}: expected {_MODEL_DIR}, found no {ONNX_FILENAME}")
    cameras = _twin_cameras()
    lacking = [c for c in card.camera_names if c not in cameras]
    if lacking:  # `dm1 launch` would suggest its --cameras, which eval lacks: say what the twin renders
        raise EvalArgumentError(
            f"--model {model}: expected a model of the twin's cameras {list(cameras)}, found cameras "
            f"{card.camera_names}, lacking {lacking}"
        )
    try:
        twin_image_size(path, cameras)
    except ValueError as exc:  # cameras of different sizes, in `dm1 launch`'s words
        raise EvalArgumentError(f"--model: {str(exc).removeprefix('LaunchArgs.model: ')}") from exc


def check_card_writable(model: str | os.PathLike[str]) -> Path:
    """The card `--update-card` replaces (a temporary file in the model directory, then a rename);
    EvalArgumentError when the card is missing, invalid, or it or its directory is not writable."""
    from dm1.modelcard import CARD_FILENAME, load_card
    from dm1.modelcard_checks import ModelCardError

    path = check_model_dir(model)
    card = path / CARD_FILENAME
    if not card.is_file():
        raise EvalArgumentError(f"--update-card: expected a model card {card}, found none")
    try:
        load_card(card)
    except ModelCardError as exc:
        raise EvalArgumentError(f"--update-card: {exc}") from exc
    for target in (path, card):
        if not os.access(target, os.W_OK):
            raise EvalArgumentError(
                f"--update-card: expected a writable model card, found {target} read-only"
            )
    return card


def check_report_dir(out: Path, force: bool, inputs: Sequence[str | os.PathLike[str]] = ()) -> None:
    """EvalArgumentError unless `out` can take a new report: a directory (or none yet) that is none of the
    `--merge` `inputs` and holds no report (`eval.json`, `episodes.json`) unless `force`."""
    from dm1.evaluation.report_dir import REPORT_MARKERS, creation_problem

    if problem := output_path_problem(out, "directory") or creation_problem(out):
        raise EvalArgumentError(f"--out {out}: {problem}")  # a file, a path below one, read-only, /proc/x
    for run in inputs:
        if same_path(out, run):
            raise EvalArgumentError(
                f"--out {out}: expected a directory other than the --merge inputs, found the input {run}"
            )
    held = [name for name in REPORT_MARKERS if (out / name).exists()]
    if held and not force:
        raise EvalArgumentError(
            f"--out {out}: expected a directory without a report, found {' and '.join(held)} of an earlier "
            "evaluation (pass --force to replace that report, or choose another --out)"
        )
