"""The model card: the self-describing JSON that ships beside `model.onnx` (no torch, no rclpy).

Layout of `model_card.json` (see docs/architecture.md, "Model directory")::

    {"format_version": 1, "name": "...",
     "inputs": {"cameras": [{"name": "front", "shape": [H, W, 3], "dtype": "uint8", "topic": "..."}],
                "proprio": {"keys": [...], "dims": [...], "units": [...]},
                "noise": [Ta, Da]},
     "action": {"space": "ee_position", "names": [...], "units": [...], "frame": "fr3_link0",
                "chunk_length": Ta, "control_rate_hz": 10.0, "orientation_xyzw": [1, 0, 0, 0]},
     "normalization": {...}, "training_config": {...}, "dataset_sha256": "...", "onnx_sha256": "...",
     "parameters": 123, "evaluation": null}

Every validation error names the file, the field, what was expected and what was found; the format rules and
the checks behind them (`validate_card`, `ModelCardError`) are in `dm1.modelcard_checks`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dm1.modelcard_checks import (
    FORMAT_VERSION,
    ModelCardError,
    _expect_dict,
    _fail,
    _int_list,
    _only_known_fields,
    _req,
    validate_card,
)
from dm1.paths import atomic_write_text, file_sha256

CARD_FILENAME = "model_card.json"
ONNX_FILENAME = "model.onnx"


def camera_topic(name: str) -> str:
    """Default ROS topic of a camera's colour stream (architecture.md, Cameras)."""
    return f"/camera/{name}/color/image_raw"


@dataclass
class CameraSpec:
    """One camera input: ONNX input `image_<name>` of shape (1, H, W, 3) uint8."""

    name: str
    shape: tuple[int, int, int]
    dtype: str = "uint8"
    topic: str = ""

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        if not self.topic:
            self.topic = camera_topic(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "topic": self.topic}


@dataclass
class ProprioSpec:
    """Proprio input: `keys` concatenated (each `dims[i]` wide, in `units[i]`) → ONNX `proprio` (1, P)."""

    keys: list[str]
    dims: list[int]
    units: list[str]

    @property
    def dim(self) -> int:
        """Total proprio width P."""
        return int(sum(self.dims))

    def to_dict(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "dims": [int(d) for d in self.dims], "units": list(self.units)}


@dataclass
class ActionSpec:
    """Action schema of the chunk the policy outputs: (chunk_length, len(names))."""

    space: str
    names: list[str]
    units: list[str]
    frame: str
    chunk_length: int
    control_rate_hz: float
    orientation_xyzw: list[float] | None = None

    @property
    def dim(self) -> int:
        """Per-step action width Da."""
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "names": list(self.names),
            "units": list(self.units),
            "frame": self.frame,
            "chunk_length": int(self.chunk_length),
            "control_rate_hz": float(self.control_rate_hz),
            "orientation_xyzw": None
            if self.orientation_xyzw is None
            else [float(v) for v in self.orientation_xyzw],
        }


@dataclass
class ModelCard:
    """Everything a consumer needs to run `model.onnx` safely, validated on construction."""

    name: str
    cameras: list[CameraSpec]
    proprio: ProprioSpec
    noise_shape: tuple[int, int]
    action: ActionSpec
    onnx_sha256: str
    normalization: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    dataset_sha256: str | None = None
    parameters: int = 0
    evaluation: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    source: str = field(default="<model card>", repr=False, compare=False)

    def __post_init__(self) -> None:
        self.noise_shape = tuple(int(v) for v in self.noise_shape)  # type: ignore[assignment]
        validate_card(self)

    # ----------------------------------------------------------------------------------------- derived
    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def chunk_length(self) -> int:
        return self.action.chunk_length

    @property
    def action_dim(self) -> int:
        return self.action.dim

    def onnx_inputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Expected ONNX inputs: name → (shape incl. batch 1, numpy dtype name)."""
        spec: dict[str, tuple[tuple[int, ...], str]] = {}
        for cam in self.cameras:
            spec[f"image_{cam.name}"] = ((1, *cam.shape), cam.dtype)
        spec["proprio"] = ((1, self.proprio.dim), "float32")
        spec["noise"] = ((1, *self.noise_shape), "float32")
        return spec

    def onnx_outputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Expected ONNX outputs: name → (shape incl. batch 1, numpy dtype name)."""
        return {"actions": ((1, self.chunk_length, self.action_dim), "float32")}

    # ----------------------------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the on-disk layout."""
        return {
            "format_version": self.format_version,
            "name": self.name,
            "inputs": {
                "cameras": [c.to_dict() for c in self.cameras],
                "proprio": self.proprio.to_dict(),
                "noise": list(self.noise_shape),
            },
            "action": self.action.to_dict(),
            "normalization": self.normalization,
            "training_config": self.training_config,
            "dataset_sha256": self.dataset_sha256,
            "onnx_sha256": self.onnx_sha256,
            "parameters": int(self.parameters),
            "evaluation": self.evaluation,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<model card>") -> ModelCard:
        """Parse the on-disk layout; errors name `source` and the offending field."""
        d = _expect_dict(data, source, "<root>")
        _only_known_fields(d, source, "")
        inputs = _expect_dict(_req(d, "inputs", source), source, "inputs")
        _only_known_fields(inputs, source, "inputs.")
        cams_raw = _req(inputs, "cameras", source, "inputs.")
        if not isinstance(cams_raw, list) or not cams_raw:
            raise _fail(source, "inputs.cameras", "a non-empty list of cameras", cams_raw)
        cameras = []
        for i, c in enumerate(cams_raw):
            c = _expect_dict(c, source, f"inputs.cameras[{i}]")
            _only_known_fields(c, source, f"inputs.cameras[{i}].", "inputs.cameras[]")
            shape = _req(c, "shape", source, f"inputs.cameras[{i}].")
            if not _int_list(shape, 3):
                raise _fail(source, f"inputs.cameras[{i}].shape", "[H, W, 3] integers", shape)
            cameras.append(
                CameraSpec(
                    name=_req(c, "name", source, f"inputs.cameras[{i}]."),
                    shape=tuple(shape),
                    dtype=c.get("dtype", "uint8"),
                    topic=c.get("topic", ""),
                )
            )
        p = _expect_dict(_req(inputs, "proprio", source, "inputs."), source, "inputs.proprio")
        _only_known_fields(p, source, "inputs.proprio.")
        proprio = ProprioSpec(
            keys=_req(p, "keys", source, "inputs.proprio."),
            dims=_req(p, "dims", source, "inputs.proprio."),
            units=_req(p, "units", source, "inputs.proprio."),
        )
        noise = _req(inputs, "noise", source, "inputs.")
        if not _int_list(noise, 2):
            raise _fail(source, "inputs.noise", "[Ta, Da] integers", noise)
        a = _expect_dict(_req(d, "action", source), source, "action")
        _only_known_fields(a, source, "action.")
        action = ActionSpec(
            space=_req(a, "space", source, "action."),
            names=_req(a, "names", source, "action."),
            units=_req(a, "units", source, "action."),
            frame=_req(a, "frame", source, "action."),
            chunk_length=_req(a, "chunk_length", source, "action."),
            control_rate_hz=_req(a, "control_rate_hz", source, "action."),
            orientation_xyzw=a.get("orientation_xyzw"),
        )
        return cls(
            name=_req(d, "name", source),
            cameras=cameras,
            proprio=proprio,
            noise_shape=tuple(noise),
            action=action,
            onnx_sha256=_req(d, "onnx_sha256", source),
            normalization=d.get("normalization", {}),
            training_config=d.get("training_config", {}),
            dataset_sha256=d.get("dataset_sha256"),
            parameters=d.get("parameters", 0),
            evaluation=d.get("evaluation"),
            format_version=_req(d, "format_version", source),
            source=source,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Validate and write the card as JSON, atomically and durably (`dm1.paths.atomic_write_text`)."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILENAME
        validate_card(self)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path


def load_card(path: str | os.PathLike[str]) -> ModelCard:
    """Load and validate `model_card.json` (a file, or a model directory containing one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    if not path.is_file():
        raise ModelCardError(f"{path}: model card not found (expected a JSON file named {CARD_FILENAME})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelCardError(f"{path}: not valid JSON ({exc})") from exc
    return ModelCard.from_dict(data, source=str(path))


def onnx_hash_problem(
    card: ModelCard, onnx_path: str | os.PathLike[str], digest: str | None = None
) -> str | None:
    """Why `onnx_path` is not the graph `card` describes (its SHA-256 is not the card's `onnx_sha256`), or
    None. `digest`: the file's SHA-256 where the caller has it already."""
    digest = digest or file_sha256(onnx_path)
    if digest == card.onnx_sha256:
        return None
    return (
        f"{onnx_path}: SHA-256 mismatch: {CARD_FILENAME} field 'onnx_sha256' expects {card.onnx_sha256}, "
        f"found {digest} (the ONNX file was modified or belongs to another card)"
    )
