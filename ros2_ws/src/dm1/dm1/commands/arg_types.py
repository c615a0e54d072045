"""Argument types shared by the `dm1` subcommands (argparse `type=` callables)."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    """A number > 0; otherwise argparse reports `expected a number > 0, found <text>`."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text}")
    return value
