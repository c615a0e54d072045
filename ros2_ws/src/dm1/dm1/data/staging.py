"""Outputs that appear whole or not at all: built under ``<name>.partial``, renamed into place on success.

`dm1 data convert` and `dm1 data plot` write through `staged_output`, so that a failed, interrupted
(Ctrl-C) or refused run leaves neither a half-written output nor a name that blocks the next run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dm1.data.episode import PARTIAL_SUFFIX
from dm1.paths import sync_dir


def partial_path(final: Path) -> Path:
    """The temporary sibling an output is built under: ``<final>.partial``."""
    return final.with_name(final.name + PARTIAL_SUFFIX)


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree; nothing when `path` does not exist."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def staged_output(
    final: str | os.PathLike[str], directory: bool = False, merge: bool = False
) -> Iterator[Path]:
    """Yield ``<final>.partial`` to build an output in; move it to `final` when the block succeeds.

    On any exception, KeyboardInterrupt included, the temporary is removed and the exception re-raised.
    A ``.partial`` left behind by a killed run is replaced.

    Args:
        final: the output path; it must not exist unless `merge`.
        directory: create the temporary as an empty directory (otherwise the block creates the file).
        merge: (directories) `final` may exist: the finished files are moved into it one by one, each an
            atomic rename replacing a file of the same name; other files there are kept.

    Raises:
        FileExistsError: `final` exists (with `merge`: and is not a directory); checked before and again
            just before the rename.
    """
    final = Path(final)
    if final.exists() and not (merge and final.is_dir()):
        raise FileExistsError(f"output {final} already exists" + (" and is not a directory" if merge else ""))
    tmp = partial_path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_path(tmp)
    if directory or merge:
        tmp.mkdir()
    try:
        yield tmp
        if merge and final.is_dir():
            for p in sorted(tmp.iterdir()):
                os.replace(p, final / p.name)
            tmp.rmdir()
        elif final.exists():  # appeared while we were writing: keep it
            raise FileExistsError(f"output {final} appeared while it was being written; not replaced")
        else:
            os.replace(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise
    sync_dir(final.parent)
