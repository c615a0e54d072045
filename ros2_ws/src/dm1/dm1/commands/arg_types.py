"""Argument types shared by the `dm1` subcommands (argparse `type=` callables).

Each refuses a bad value with `expected <what>, found <text>`, which argparse prints after the option's name
(`dm1 sim: error: argument --fps: expected a finite number > 0, found 0`, exit code 2).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from collections.abc import Callable
from pathlib import Path


def _bounded(
    convert: Callable[[str], float], accept: Callable[[float], bool], expected: str, name: str
) -> Callable[[str], float]:
    """An argparse type: `convert(text)` when `accept` holds for it, else `expected ..., found ...`."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text}") from None
        if not accept(value):  # NaN fails every comparison: refused too
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text}")
        return value

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = f"{expected[0].upper()}{expected[1:]}; otherwise `expected {expected}, found <text>`."
    return parse


# inf is refused too: a timeout of inf never ends (`dm1 launch --shutdown-timeout inf` never escalated)
positive_float = _bounded(
    float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0", "positive_float"
)
non_negative_float = _bounded(
    float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0", "non_negative_float"
)
fraction = _bounded(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]", "fraction")
#: A weight that must not be 0, e.g. the chunk ensembling weight `ensemble_alpha` (1 = off).
positive_fraction = _bounded(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]", "positive_fraction")
positive_int = _bounded(int, lambda v: v >= 1, "an integer >= 1", "positive_int")
non_negative_int = _bounded(int, lambda v: v >= 0, "an integer >= 0", "non_negative_int")
episode_length = _bounded(int, lambda v: v >= 2, "an integer >= 2", "episode_length")


def int_in_range(lo: int, hi: int, name: str) -> Callable[[str], float]:
    """An argparse type: an integer in [lo, hi]; otherwise `expected an integer in [lo, hi], found <text>`."""
    return _bounded(int, lambda v: lo <= v <= hi, f"an integer in [{lo}, {hi}]", name)


def positive_int_list(text: str) -> tuple[int, ...]:
    """Comma-separated distinct integers >= 1 (`32,64`); otherwise `expected ..., found <text>`."""
    expected = "comma-separated distinct integers >= 1 like 32,64"
    try:
        values = tuple(int(v) for v in text.split(","))  # an empty item ("2,,", "") is refused too
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text}") from None
    if min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text}")
    return values


def loopback_host(text: str) -> str:
    """An IPv4 loopback address 127.x.y.z (franky-sim binds one); otherwise `expected ..., found <text>`."""
    try:
        ok = ipaddress.ip_address(text) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected a loopback address 127.x.y.z, found {text}")
    return text


def loopback_host_or_auto(text: str) -> str:
    """`auto` (the launcher picks a free address) or an IPv4 loopback address 127.x.y.z, as `dm1 launch
    --sim-host` takes; otherwise `expected ..., found <text>`."""
    if text == "auto":
        return text
    try:
        return loopback_host(text)
    except argparse.ArgumentTypeError:
        expected = "auto or a loopback address 127.x.y.z"
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text}") from None


def output_path_problem(path: str | os.PathLike[str], kind: str) -> str | None:
    """Why `path` cannot be written as a `kind` ("file" or "directory"), as `expected ..., found ...`; None
    when it can (it exists as that kind and is writable, or it can be created: its nearest existing ancestor
    is a writable directory). Nothing is created."""
    path = Path(path)
    expected = f"a writable {kind} path"
    if path.exists():
        if kind == "directory" and not path.is_dir():
            return f"expected a directory, found the file {path}"
        if kind == "file" and path.is_dir():
            return f"expected a file, found the directory {path}"
        if not os.access(path, os.W_OK | (os.X_OK if kind == "directory" else 0)):
            return f"expected {expected}, found {path}, which is not writable"
        return None
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"expected {expected}, found the file {parent} where a directory should be"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"expected {expected}, found {parent}, which is not writable"
    return None


def _output(kind: str, name: str) -> Callable[[str], str]:
    """An argparse type: the text unchanged when `output_path_problem(text, kind)` finds nothing."""

    def parse(text: str) -> str:
        problem = output_path_problem(text, kind)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return text

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = f"A {kind} path that can be written (checked before any work runs; nothing is created)."
    return parse


output_file = _output("file", "output_file")
output_dir = _output("directory", "output_dir")


def settings_problem(settings: tuple[tuple[str, Callable[[str], object], object], ...]) -> str | None:
    """The first of `(option, argument type, value)` that its command-line type refuses, as
    `<option>: <why>`; None when all pass. For library entry points that take the values without argparse
    (`dm1 eval`, `dm1 data collect --via-teleop`) and must refuse them in the command line's words."""
    for option, parse, value in settings:
        try:
            parse(str(value))
        except argparse.ArgumentTypeError as exc:
            return f"{option}: {exc}"
    return None
