"""Argument types shared by the `dm1` subcommands (argparse `type=` callables).

Each refuses a bad value with `expected <what>, found <text>`, which argparse prints after the option's name
(`dm1 sim: error: argument --fps: expected a number > 0, found 0`, exit code 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


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


positive_float = _bounded(float, lambda v: v > 0, "a number > 0", "positive_float")
non_negative_float = _bounded(float, lambda v: v >= 0, "a number >= 0", "non_negative_float")
fraction = _bounded(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]", "fraction")
positive_int = _bounded(int, lambda v: v >= 1, "an integer >= 1", "positive_int")
non_negative_int = _bounded(int, lambda v: v >= 0, "an integer >= 0", "non_negative_int")
episode_length = _bounded(int, lambda v: v >= 2, "an integer >= 2", "episode_length")
