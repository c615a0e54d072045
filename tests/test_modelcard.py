"""Model card: JSON round trip and validation errors that name the file, the field, expected and found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dm1.modelcard import ActionSpec, CameraSpec, ModelCard, ProprioSpec, load_card
from dm1.modelcard_checks import ModelCardError


def example_card(**overrides) -> ModelCard:
    fields: dict = dict(  # noqa: C408 - keyword style mirrors the dataclass
        name="lift",
        cameras=[CameraSpec("front", (96, 96, 3)), CameraSpec("wrist", (96, 96, 3))],
        proprio=ProprioSpec(keys=["ee_pos", "gripper_width"], dims=[3, 1], units=["m", "m"]),
        noise_shape=(4, 4),
        action=ActionSpec(
            space="ee_position",
            names=["x", "y", "z", "gripper"],
            units=["m", "m", "m", "1"],
            frame="fr3_link0",
            chunk_length=4,
            control_rate_hz=10.0,
            orientation_xyzw=[1.0, 0.0, 0.0, 0.0],
        ),
        onnx_sha256="0" * 64,
        normalization={"action": {"min": [0, 0, 0, 0], "max": [1, 1, 1, 1]}},
        training_config={"model": {"mlp_width": 768}},
        dataset_sha256="a" * 64,
        parameters=1234,
    )
    fields.update(overrides)
    return ModelCard(**fields)


def test_card_round_trips_through_json(tmp_path: Path) -> None:
    card = example_card()
    path = card.save(tmp_path)
    loaded = load_card(path)
    assert loaded == card
    assert loaded.camera_names == ["front", "wrist"]
    assert loaded.proprio.dim == 4
    assert loaded.onnx_inputs()["image_front"] == ((1, 96, 96, 3), "uint8")
    assert loaded.onnx_inputs()["noise"] == ((1, 4, 4), "float32")
    assert loaded.onnx_outputs() == {"actions": ((1, 4, 4), "float32")}
    assert loaded.cameras[0].topic == "/camera/front/color/image_raw"
    assert not list(tmp_path.glob("*.tmp")), "atomic save leaves no temp file"


def _write(tmp_path: Path, mutate) -> Path:
    data = example_card().to_dict()
    mutate(data)
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "field", "found"),
    [
        (lambda d: d.pop("onnx_sha256"), "onnx_sha256", "missing"),
        (lambda d: d["inputs"]["cameras"][0].update(shape=[96, 96]), "inputs.cameras[0].shape", "[96, 96]"),
        (lambda d: d["inputs"]["cameras"][1].update(dtype="float32"), "inputs.cameras[1].dtype", "float32"),
        (lambda d: d["inputs"].update(noise=[8, 4]), "inputs.noise", "[8, 4]"),
        (lambda d: d["action"].update(space="torque"), "action.space", "torque"),
        (
            lambda d: d["action"].update(orientation_xyzw=[1, 1, 0, 0]),
            "action.orientation_xyzw",
            "[1, 1, 0, 0]",
        ),
        (lambda d: d["action"].update(control_rate_hz=0), "action.control_rate_hz", "0"),
        (lambda d: d["action"].update(units=["m"]), "action.units", "['m']"),
        (lambda d: d["inputs"]["proprio"].update(dims=[3]), "inputs.proprio.dims", "[3]"),
        (lambda d: d.update(onnx_sha256="xyz"), "onnx_sha256", "xyz"),
        (lambda d: d.update(format_version=99), "format_version", "99"),
    ],
)
def test_invalid_card_error_names_file_field_and_found(
    tmp_path: Path, mutate, field: str, found: str
) -> None:
    path = _write(tmp_path, mutate)
    with pytest.raises(ModelCardError) as err:
        load_card(path)
    msg = str(err.value)
    assert str(path) in msg
    assert f"'{field}'" in msg
    assert "expected" in msg and found in msg


def test_card_that_is_not_json_is_refused_with_file_name(tmp_path: Path) -> None:
    path = tmp_path / "model_card.json"
    path.write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON") as err:
        load_card(tmp_path)
    assert str(path) in str(err.value)


def test_missing_card_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="model card not found"):
        load_card(tmp_path)


def test_joint_space_card_needs_no_orientation() -> None:
    card = example_card(
        noise_shape=(4, 8),
        normalization={"action": {"min": [0.0] * 8, "max": [1.0] * 8}},  # 8 joint-space actions
        action=ActionSpec(
            space="joint_position",
            names=[f"fr3_joint{i}" for i in range(1, 8)] + ["gripper"],
            units=["rad"] * 7 + ["1"],
            frame="fr3_link0",
            chunk_length=4,
            control_rate_hz=10.0,
        ),
    )
    assert card.action_dim == 8
    assert card.onnx_outputs()["actions"][0] == (1, 4, 8)
