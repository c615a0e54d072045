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

Every validation error names the file, the field, what was expected and what was found.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dm1.errors import ReportedError
from dm1.paths import atomic_write_text, file_sha256
from dm1.proprio import PROPRIO_KEYS

FORMAT_VERSION = 1
#: Per-step action width of each action space: [x, y, z, gripper] | [fr3_joint1..7, gripper]; the episode
#: format (`dm1.data.episode_checks`) uses this table too.
ACTION_SPACE_DIMS: dict[str, int] = {"ee_position": 4, "joint_position": 8}
ACTION_SPACES: tuple[str, ...] = tuple(ACTION_SPACE_DIMS)
#: The fields of each object of the on-disk layout; any other field is refused (a typo, another format).
_FIELDS: dict[str, tuple[str, ...]] = {
    "": ("format_version", "name", "inputs", "action", "normalization", "training_config",
         "dataset_sha256", "onnx_sha256", "parameters", "evaluation"),
    "inputs.": ("cameras", "proprio", "noise"),
    "inputs.cameras[]": ("name", "shape", "dtype", "topic"),
    "inputs.proprio.": ("keys", "dims", "units"),
    "action.": ("space", "names", "units", "frame", "chunk_length", "control_rate_hz", "orientation_xyzw"),
}  # fmt: skip
CARD_FILENAME = "model_card.json"
ONNX_FILENAME = "model.onnx"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelCardError(ReportedError, ValueError):
    """A model card is malformed or inconsistent; the message names file, field, expected and found."""


def _fail(source: str, fieldname: str, expected: str, found: Any) -> ModelCardError:
    return _refuse(source, fieldname, expected, repr(found))


def _refuse(source: str, fieldname: str, expected: str, found: str) -> ModelCardError:
    """The error for `fieldname`, with `found` already in words."""
    return ModelCardError(f"{source}: field '{fieldname}': expected {expected}, found {found}")


def _only_known_fields(d: dict[str, Any], source: str, prefix: str, layout: str | None = None) -> None:
    """Refuse a field of `d` (the object at `prefix`) that the card format does not have."""
    known = _FIELDS[prefix if layout is None else layout]
    unknown = [k for k in d if k not in known]
    if unknown:
        raise _refuse(source, f"{prefix}{unknown[0]}", f"only the fields {list(known)}", "an unknown field")


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


# --------------------------------------------------------------------------------------------- validation
def validate_card(card: ModelCard) -> None:
    """Check types, ranges and cross-field consistency; raise `ModelCardError` naming the field."""
    s = card.source
    if card.format_version != FORMAT_VERSION:
        raise _fail(s, "format_version", f"{FORMAT_VERSION}", card.format_version)
    if not isinstance(card.name, str) or not card.name:
        raise _fail(s, "name", "a non-empty string", card.name)
    names = [c.name for c in card.cameras]
    if not card.cameras or len(set(names)) != len(names):
        raise _fail(s, "inputs.cameras", "a non-empty list of uniquely named cameras", names)
    for i, cam in enumerate(card.cameras):
        f = f"inputs.cameras[{i}]"
        if not isinstance(cam.name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", cam.name):
            raise _fail(s, f + ".name", "an identifier [A-Za-z0-9_]+", cam.name)
        if len(cam.shape) != 3 or cam.shape[2] != 3 or min(cam.shape) < 1:
            raise _fail(s, f + ".shape", "[H, W, 3] with H, W >= 1", list(cam.shape))
        if cam.dtype != "uint8":
            raise _fail(s, f + ".dtype", "'uint8'", cam.dtype)
        if not isinstance(cam.topic, str) or not cam.topic.startswith("/"):
            raise _fail(s, f + ".topic", "an absolute ROS topic name", cam.topic)
    p = card.proprio
    if not _str_list(p.keys) or not p.keys or len(set(p.keys)) != len(p.keys):
        raise _fail(s, "inputs.proprio.keys", "a non-empty list of unique strings", p.keys)
    if any(k not in PROPRIO_KEYS for k in p.keys):  # the policy node could not compute them
        raise _fail(s, "inputs.proprio.keys", f"keys among {sorted(PROPRIO_KEYS)}", p.keys)
    if not _int_list(p.dims, len(p.keys)) or min(p.dims) < 1:
        raise _fail(s, "inputs.proprio.dims", f"{len(p.keys)} positive integers (one per key)", p.dims)
    if not _str_list(p.units) or len(p.units) != len(p.keys):
        raise _fail(s, "inputs.proprio.units", f"{len(p.keys)} strings (one per key)", p.units)
    for what, found in (("dims", list(p.dims)), ("units", list(p.units))):
        want = [getattr(PROPRIO_KEYS[k], what.rstrip("s")) for k in p.keys]
        if found != want:
            raise _fail(s, f"inputs.proprio.{what}", f"{want} (the {what} of keys {p.keys})", found)
    a = card.action
    if a.space not in ACTION_SPACES:
        raise _fail(s, "action.space", f"one of {list(ACTION_SPACES)}", a.space)
    if not _str_list(a.names) or not a.names:
        raise _fail(s, "action.names", "a non-empty list of strings", a.names)
    if len(a.names) != ACTION_SPACE_DIMS[a.space]:
        expected = f"{ACTION_SPACE_DIMS[a.space]} names for space {a.space!r}"
        raise _refuse(s, "action.names", expected, f"{len(a.names)} names {a.names}")
    if not _str_list(a.units) or len(a.units) != len(a.names):
        raise _fail(s, "action.units", f"{len(a.names)} strings (one per action name)", a.units)
    if not isinstance(a.frame, str) or not a.frame:
        raise _fail(s, "action.frame", "a non-empty frame id", a.frame)
    if not isinstance(a.chunk_length, int) or isinstance(a.chunk_length, bool) or a.chunk_length < 1:
        raise _fail(s, "action.chunk_length", "a positive integer", a.chunk_length)
    rate = a.control_rate_hz
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
        raise _fail(s, "action.control_rate_hz", "a positive finite number", rate)
    if a.orientation_xyzw is not None:
        q = a.orientation_xyzw
        ok = isinstance(q, list | tuple) and len(q) == 4 and all(_is_num(v) for v in q)
        if not ok or abs(math.sqrt(sum(float(v) ** 2 for v in q)) - 1.0) > 1e-3:
            raise _fail(s, "action.orientation_xyzw", "a unit quaternion [x, y, z, w]", q)
    elif a.space == "ee_position":
        raise _fail(s, "action.orientation_xyzw", "a unit quaternion for space 'ee_position'", None)
    expected_noise = (a.chunk_length, a.dim)
    if tuple(card.noise_shape) != expected_noise:
        raise _fail(
            s,
            "inputs.noise",
            f"{list(expected_noise)} (action.chunk_length, len(action.names))",
            list(card.noise_shape),
        )
    if not isinstance(card.onnx_sha256, str) or not _SHA256.match(card.onnx_sha256):
        raise _fail(s, "onnx_sha256", "64 lowercase hex digits", card.onnx_sha256)
    if card.dataset_sha256 is not None and (
        not isinstance(card.dataset_sha256, str) or not _SHA256.match(card.dataset_sha256)
    ):
        raise _fail(s, "dataset_sha256", "64 lowercase hex digits or null", card.dataset_sha256)
    if not isinstance(card.parameters, int) or isinstance(card.parameters, bool) or card.parameters < 0:
        raise _fail(s, "parameters", "a non-negative integer", card.parameters)
    if not isinstance(card.normalization, dict):
        raise _fail(s, "normalization", "an object", type(card.normalization).__name__)
    widths = {"proprio": (card.proprio.dim, "inputs.proprio width"), "action": (a.dim, "action width")}
    for key, stats in card.normalization.items():
        _check_stats(s, f"normalization.{key}", stats, widths.get(key))
    if not isinstance(card.training_config, dict):
        raise _fail(s, "training_config", "an object", type(card.training_config).__name__)
    if card.evaluation is not None and not isinstance(card.evaluation, dict):
        raise _fail(s, "evaluation", "an object or null", type(card.evaluation).__name__)


def _check_stats(source: str, fieldname: str, stats: Any, width: tuple[int, str] | None) -> None:
    """One normaliser's statistics (`dm1.normalization.Normalizer.to_dict`): 'min' and 'max' lists of finite
    numbers, max >= min, each `width[0]` long where the width is known."""
    if not isinstance(stats, dict) or set(stats) != {"min", "max"}:
        raise _fail(source, fieldname, "an object with exactly 'min' and 'max'", stats)
    lo, hi = stats["min"], stats["max"]
    for name, values in (("min", lo), ("max", hi)):
        if not isinstance(values, list) or not values or not all(_is_num(v) for v in values):
            raise _fail(source, f"{fieldname}.{name}", "a non-empty list of finite numbers", values)
    if len(lo) != len(hi):
        raise _fail(source, fieldname, "'min' and 'max' lists of equal length", stats)
    if width is not None and len(lo) != width[0]:
        raise _refuse(source, fieldname, f"{width[0]} values (the {width[1]})", f"{len(lo)} values")
    if any(h < m for m, h in zip(lo, hi, strict=True)):
        raise _fail(source, f"{fieldname}.max", "max >= min in every dimension", hi)


def _req(d: dict[str, Any], key: str, source: str, prefix: str = "") -> Any:
    if key not in d:
        raise ModelCardError(f"{source}: field '{prefix}{key}': expected to be present, found it missing")
    return d[key]


def _expect_dict(value: Any, source: str, fieldname: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(source, fieldname, "a JSON object", type(value).__name__)
    return value


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int_list(v: Any, n: int) -> bool:
    return (
        isinstance(v, list | tuple)
        and len(v) == n
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    )


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)
