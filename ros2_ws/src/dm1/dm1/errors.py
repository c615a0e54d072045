"""Errors the `dm1` command line reports in one line (exit code 2) instead of a traceback.

A `ReportedError` says what the user gave that cannot be used (a missing or invalid model, checkpoint, card or
episode file; a launched graph that stopped) and names the file, what was expected and what was found. It is
a mixin: each concrete error keeps its usual base too (`ModelLoadError` is still a `ValueError`).
"""

from __future__ import annotations


class ReportedError(Exception):
    """An error about the user's input or set-up; `dm1.cli.main` prints its message, not a traceback."""
