"""Argument types shared by the `dm1` subcommands (argparse `type=` callables)."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    """A number > 0; otherwise argparse reports `expected a number > 0, found <text>`."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0; otherwise argparse reports `expected a number >= 0, found <text>`."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1]; otherwise argparse reports `expected a number in [0, 1], found <text>`."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], found {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1; otherwise argparse reports `expected an integer >= 1, found <text>`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0; otherwise argparse reports `expected an integer >= 0, found <text>`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text}")
    return value
