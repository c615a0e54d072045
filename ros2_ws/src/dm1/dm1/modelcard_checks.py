"""What a valid model card is (`dm1.modelcard`): its format rules, and the checks that enforce them.

Holds the format version, the action spaces and their widths, the fields each object of `model_card.json` may
have, the error type (`ModelCardError`), the field helpers `ModelCard.from_dict` parses with, and
`validate_card`, the type, range and cross-field check every card passes on construction and before it is
saved. No torch, no rclpy.

Every validation error names the file, the field, what was expected and what was found.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from dm1.errors import ReportedError
from dm1.proprio import PROPRIO_KEYS

if TYPE_CHECKING:
    from dm1.modelcard import ModelCard

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
