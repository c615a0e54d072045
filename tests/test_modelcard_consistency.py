"""Model-card checks that span fields: a card that `load_card` accepts must be one the policy node can run.

Each case below once loaded (even in `PolicyRuntime.load`) and was refused only later, by the running policy
node: an action space with the wrong width, proprio keys the code base cannot compute, widths that disagree
with the keys, NaN normalisation statistics, a field the card format does not have.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dm1.modelcard import load_card
from dm1.modelcard_checks import ModelCardError
from test_modelcard import example_card

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, mutate) -> Path:
    data = example_card().to_dict()
    mutate(data)
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(data))  # allow_nan: a NaN is written as the bare token NaN
    return path


def _joint_space_with_four_names(d: dict) -> None:
    d["action"].update(space="joint_position", orientation_xyzw=None)


def _nan_in_action_min(d: dict) -> None:
    d["normalization"]["action"]["min"][1] = float("nan")


def _proprio_stats_of_the_wrong_width(d: dict) -> None:
    d["normalization"]["proprio"] = {"min": [0.0, 0.0, 0.0], "max": [1.0, 1.0, 1.0]}


@pytest.mark.parametrize(
    ("mutate", "field", "expected", "found"),
    [
        (_joint_space_with_four_names, "action.names", "8 names for space 'joint_position'", "4 names"),
        (
            lambda d: d["inputs"]["proprio"].update(keys=["foo", "bar"]),
            "inputs.proprio.keys",
            "keys among ['ee_pos', 'ee_quat_xyzw', 'gripper_width', 'joint_pos']",
            "['foo', 'bar']",
        ),
        (
            lambda d: d["inputs"]["proprio"].update(dims=[2, 2]),
            "inputs.proprio.dims",
            "[3, 1] (the dims of keys ['ee_pos', 'gripper_width'])",
            "[2, 2]",
        ),
        (
            lambda d: d["inputs"]["proprio"].update(units=["rad", "m"]),
            "inputs.proprio.units",
            "['m', 'm'] (the units of keys ['ee_pos', 'gripper_width'])",
            "['rad', 'm']",
        ),
        (_nan_in_action_min, "normalization.action.min", "finite numbers", "nan"),
        (_proprio_stats_of_the_wrong_width, "normalization.proprio", "4 values", "3"),
        (lambda d: d.update(extra=1), "extra", "only the fields", "an unknown field"),
        (lambda d: d["action"].update(gain=2.0), "action.gain", "only the fields", "an unknown field"),
        (lambda d: d["inputs"]["proprio"].update(scale=[1]), "inputs.proprio.scale", "only", "unknown"),
    ],
    ids=[
        "joint-space-with-4-names",
        "unknown-proprio-keys",
        "dims-that-disagree-with-the-keys",
        "units-that-disagree-with-the-keys",
        "nan-normalization",
        "normalization-of-the-wrong-width",
        "unknown-top-level-field",
        "unknown-action-field",
        "unknown-proprio-field",
    ],
)
def test_a_card_the_policy_node_would_refuse_is_refused_at_load_naming_file_field_expected_and_found(
    tmp_path: Path, mutate, field: str, expected: str, found: str
) -> None:
    path = _write(tmp_path, mutate)
    with pytest.raises(ModelCardError) as err:
        load_card(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: field '{field}': expected "), msg
    assert expected in msg and found in msg, msg


def test_the_bundled_model_card_passes_the_consistency_checks() -> None:
    card = load_card(REPO / "models" / "dm1_lift")
    assert card.proprio.keys == ["ee_pos", "gripper_width"] and card.action.dim == 4
