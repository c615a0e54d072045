"""Path helpers shared by the core and the commands."""

from __future__ import annotations

import os
from pathlib import Path


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file or directory, however spelled (`./models/m/` is `models/m`)."""
    return os.fspath(a) == os.fspath(b) or Path(a).resolve() == Path(b).resolve()
