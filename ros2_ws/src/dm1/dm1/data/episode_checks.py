"""Checks behind the episode reader and writer (`dm1.data.episode`): file attributes, names, HDF5 errors.

`read_attrs` turns an episode file's attributes into checked Python values or raises `EpisodeFormatError`
as `<file>: <attribute>: expected <what>, found <value>`. `h5_errors` turns what h5py raises while reading a
damaged file (RuntimeError, OSError, ValueError, KeyError, TypeError) into `EpisodeFormatError` naming the
file and the dataset or attribute being read.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm1.errors import ReportedError
from dm1.modelcard_checks import ACTION_SPACE_DIMS  # per-step action width of each action space

#: Camera names: used as HDF5 dataset names (`obs/<camera>`) and in ROS topic names.
CAMERA_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: What h5py raises for a damaged file or an unexpected object (a group where a dataset should be, ...).
H5_ERRORS = (RuntimeError, OSError, ValueError, KeyError, TypeError)
REQUIRED_ATTRS = (
    "control_rate_hz",
    "action_space",
    "action_names",
    "camera_names",
    "proprio_keys",
    "units",
    "frame",
    "success",
    "created",
    "format_version",
)


class EpisodeFormatError(ReportedError, ValueError):
    """An episode file, or a step appended to one, does not match the episode format."""


@dataclass(frozen=True)
class EpisodeAttrs:
    """The checked file attributes of one episode."""

    control_rate_hz: float
    action_space: str
    action_names: list[str]
    camera_names: list[str]
    proprio_keys: list[str]
    units: dict[str, Any]
    frame: str
    success: bool
    created: str
    format_version: int


@contextlib.contextmanager
def h5_errors(path: Path, what: str | None = None) -> Iterator[None]:
    """Re-raise h5py's errors in the block as `EpisodeFormatError` naming `path` and `what` (a dataset)."""
    try:
        yield
    except EpisodeFormatError:
        raise
    except H5_ERRORS as exc:
        where = f"{what}: " if what else ""
        raise EpisodeFormatError(
            f"{path}: {where}corrupt or unreadable HDF5 ({type(exc).__name__}: {exc})"
        ) from exc


def h5_dataset(path: Path, f: h5py.Group, name: str) -> h5py.Dataset:
    """The dataset `name` of `f`; EpisodeFormatError when it is missing, not a dataset or unreadable."""
    with h5_errors(path, name):  # `in`, not `get`: get hides a damaged file's errors as "missing"
        if name not in f:
            raise EpisodeFormatError(f"{path}: missing dataset {name!r}")
        node = f[name]
    if not isinstance(node, h5py.Dataset):
        raise EpisodeFormatError(f"{path}: {name}: expected a dataset, found {type(node).__name__}")
    return node


def h5_array(path: Path, f: h5py.Group, name: str) -> np.ndarray:
    """All of dataset `name`, read with h5py errors named."""
    ds = h5_dataset(path, f, name)
    with h5_errors(path, name):
        return np.asarray(ds[()])


def bad_camera_names(names: tuple[str, ...] | list[str]) -> str | None:
    """Why `names` cannot be an episode's cameras (`expected ..., found ...`), or None when they can."""
    names = list(names)
    if not names or len(set(names)) != len(names):
        return f"expected non-empty and unique names, found {names}"
    odd = [n for n in names if not (isinstance(n, str) and CAMERA_NAME_RE.match(n))]
    if odd:
        return f"expected identifiers ([A-Za-z_][A-Za-z0-9_]*) like 'front', found {odd}"
    return None


def read_attrs(path: Path, attrs: Mapping[str, Any], format_version: int) -> EpisodeAttrs:
    """The checked attributes of the episode file `path` (its h5py `attrs`).

    Raises:
        EpisodeFormatError: `<path>: <attribute>: expected <what>, found <value>` for the first bad attribute
            (missing ones are listed together).
    """

    def bad(name: str, expected: str, value: Any) -> EpisodeFormatError:
        return EpisodeFormatError(f"{path}: {name}: expected {expected}, found {_show(value)}")

    with h5_errors(path, "attributes"):
        missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing:
        raise EpisodeFormatError(f"{path}: missing attributes {missing}")
    raw = {}
    for name in REQUIRED_ATTRS:
        with h5_errors(path, f"attribute {name}"):
            raw[name] = attrs[name]
    version = raw["format_version"]
    if not _is_int(version) or int(version) != format_version:
        raise bad("format_version", str(format_version), version)
    rate = raw["control_rate_hz"]
    if not (_is_real(rate) and math.isfinite(float(rate)) and float(rate) > 0):
        raise bad("control_rate_hz", "a finite number > 0", rate)
    space = _text(raw["action_space"])
    if space not in ACTION_SPACE_DIMS:
        raise bad("action_space", f"one of {sorted(ACTION_SPACE_DIMS)}", raw["action_space"])
    lists = {name: _name_list(raw[name]) for name in ("action_names", "camera_names", "proprio_keys")}
    for name, value in lists.items():
        if value is None:
            raise bad(name, "a JSON list of unique names", raw[name])
    names = lists["action_names"]
    assert names is not None
    if len(names) != ACTION_SPACE_DIMS[space]:
        raise EpisodeFormatError(
            f"{path}: action_names: expected {ACTION_SPACE_DIMS[space]} names for action space {space!r}, "
            f"found {len(names)} ({names})"
        )
    units = _json(raw["units"])
    if not isinstance(units, dict):
        raise bad("units", "a JSON object", raw["units"])
    frame = _text(raw["frame"])
    if not frame:
        raise bad("frame", "a non-empty string", raw["frame"])
    success = _flag(raw["success"])
    if success is None:
        raise bad("success", "a bool (or 0/1)", raw["success"])
    created = _text(raw["created"])
    if created is None:
        raise bad("created", "a string (ISO 8601 time)", raw["created"])
    return EpisodeAttrs(
        control_rate_hz=float(rate),
        action_space=space,
        action_names=names,
        camera_names=lists["camera_names"] or [],
        proprio_keys=lists["proprio_keys"] or [],
        units=units,
        frame=frame,
        success=success,
        created=created,
        format_version=int(version),
    )


def _show(value: Any) -> str:
    if isinstance(value, bytes | str | np.str_):
        return repr(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return repr(value) if not isinstance(value, np.ndarray) else f"array {value.tolist()}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


def _text(value: Any) -> str | None:
    """A string attribute (h5py returns str; older writers: bytes); None for anything else."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value) if isinstance(value, str) else None


def _json(value: Any) -> Any:
    text = _text(value)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _name_list(value: Any) -> list[str] | None:
    """A JSON list of unique non-empty strings, or None."""
    names = _json(value)
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        return None
    return names if len(set(names)) == len(names) else None


def _flag(value: Any) -> bool | None:
    """`success` as written (a bool) or as 0/1; None for anything else ("no" is not False)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if _is_int(value) and int(value) in (0, 1):
        return bool(value)
    return None
