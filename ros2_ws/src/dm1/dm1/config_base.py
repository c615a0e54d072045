"""Validation helpers and the `to_dict` / `from_dict` mixin shared by the config dataclasses (`dm1.config`).

Errors are `ValueError`s of the form `<Class>.<field>: expected <what>, found <value>`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _fail(cls: str, name: str, expected: str, found: Any) -> ValueError:
    return ValueError(f"{cls}.{name}: expected {expected}, found {found!r}")


def _coerce(obj: Any) -> None:
    """Type-check and coerce the fields of dataclass `obj` in place (list -> tuple, int -> float)."""
    cls = type(obj).__name__
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if origin is tuple:
            args = typing.get_args(hint)
            elem = args[0]
            if not isinstance(value, (list, tuple)):
                raise _fail(cls, f.name, f"a list of {elem.__name__}", value)
            if len(args) == 2 and args[1] is not Ellipsis and len(value) != 2:
                raise _fail(cls, f.name, "a list of 2 items", value)
            for item in value:
                if elem is int and (isinstance(item, bool) or not isinstance(item, int)):
                    raise _fail(cls, f.name, "a list of int", value)
                if elem is str and not isinstance(item, str):
                    raise _fail(cls, f.name, "a list of str", value)
            object.__setattr__(obj, f.name, tuple(value))
        elif hint is float:
            if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
                try:
                    value = float(value)
                except ValueError:
                    raise _fail(cls, f.name, "a number", value) from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(cls, f.name, "a number", value)
            try:
                value = float(value)
            except OverflowError:  # an int beyond the float range
                raise _fail(cls, f.name, "a finite number", value) from None
            if not math.isfinite(value):  # YAML .inf / .nan, "1e999"
                raise _fail(cls, f.name, "a finite number", value)
            object.__setattr__(obj, f.name, value)
        elif hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(cls, f.name, "an int", value)
        elif hint is str:
            if not isinstance(value, str):
                raise _fail(cls, f.name, "a string", value)
        elif dataclasses.is_dataclass(hint):
            if isinstance(value, dict):
                object.__setattr__(obj, f.name, hint.from_dict(value, where=f"{cls}.{f.name}"))
            elif not isinstance(value, hint):
                raise _fail(cls, f.name, f"a {hint.__name__}", value)


def _check(cond: bool, cls: str, name: str, expected: str, found: Any) -> None:
    if not cond:
        raise _fail(cls, name, expected, found)


class _ConfigMixin:
    """`to_dict()` / `from_dict()` shared by all config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists) suitable for JSON/YAML."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _ConfigMixin):
                out[f.name] = value.to_dict()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any], where: str | None = None) -> T:
        """Build from a (nested) dict; unknown keys raise `ValueError` naming `where` and the key."""
        where = where or cls.__name__
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping, found {d!r}")
        odd = [k for k in d if not isinstance(k, str)]
        if odd:
            raise ValueError(f"{where}: expected string keys, found {odd[0]!r}")
        d = cls._legacy_keys(d, where)
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys are {names}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            hint = hints[key]
            if dataclasses.is_dataclass(hint) and isinstance(value, dict):
                value = hint.from_dict(value, where=f"{where}.{key}")
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # missing required field
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def _legacy_keys(cls, d: dict[str, Any], where: str) -> dict[str, Any]:
        """`d` without keys that older versions wrote and that are still read (none by default)."""
        return d
