"""The run directory of `dm1 train`: where a run may be written, one trainer at a time, and its metrics CSV.

- `check_run_dir` refuses a path that is a file, a dataset directory (``episode_*.h5`` / ``index.json``) or
  an exported model directory (``model.onnx`` / ``model_card.json``): training would mix its files in.
- `RunDirLock` holds an exclusive ``fcntl.flock`` on ``<run>/.dm1-train.lock`` while a trainer uses the
  directory, so a second ``dm1 train`` on it is refused instead of interleaving metrics and checkpoints.
  The kernel drops the lock when its process dies, so a killed run never blocks the directory.
- `truncate_csv` drops metric rows logged after a resumed checkpoint; a garbled file is a one-line error.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
from pathlib import Path

from dm1.errors import ReportedError
from dm1.paths import atomic_write_text

LOCK_FILE = ".dm1-train.lock"
DATASET_MARKERS = ("episode_*.h5", "index.json")
MODEL_MARKERS = ("model.onnx", "model_card.json")


class RunDirError(ReportedError, ValueError):
    """The run directory cannot be used: a file, a dataset or model directory, in use, or a garbled CSV."""


def check_run_dir(path: Path) -> None:
    """Refuse ``path`` as a run directory if it is a file, a dataset or an exported model directory."""
    if path.exists() and not path.is_dir():
        raise RunDirError(
            f"{path}: run directory (--out / out_dir): expected a directory (new or an earlier run), "
            "found a file"
        )
    if not path.is_dir():
        return
    for pattern in DATASET_MARKERS:
        found = sorted(p.name for p in path.glob(pattern))
        if found:
            raise RunDirError(
                f"{path}: run directory (--out / out_dir): expected a run directory, found a dataset "
                f"directory (it holds {found[:3]}); choose another --out"
            )
    found = [name for name in MODEL_MARKERS if (path / name).exists()]
    if found:
        raise RunDirError(
            f"{path}: run directory (--out / out_dir): expected a run directory, found an exported model "
            f"directory (it holds {found}); choose another --out"
        )


class RunDirLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.dm1-train.lock`` (created with the directory)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._fd: int | None = None
        self._created: list[Path] = []  # directories the last `acquire` created, deepest first

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (a no-op if held); `RunDirError` naming the directory if another process has it."""
        if self._fd is not None:
            return
        self._created = [d for d in (self.run_dir, *self.run_dir.parents) if not d.exists()]  # deepest first
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirError(
                    f"{self.run_dir}: run directory in use: another dm1 train holds {LOCK_FILE}; wait for it "
                    "to finish (or stop it), or choose another --out"
                ) from None
            except OSError:
                os.close(fd)
                raise
            try:  # the file we locked must still be the one under that name (not unlinked meanwhile)
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)

    def release(self, remove_created: bool = False) -> None:
        """Drop the lock (the file stays; an unheld lock file blocks nobody). With `remove_created`, also
        remove the lock file and the directories `acquire` created, as far as they are empty."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if remove_created and self._created:
                with contextlib.suppress(OSError):
                    (self.run_dir / LOCK_FILE).unlink()
                for d in self._created:
                    try:
                        d.rmdir()
                    except OSError:  # not empty (or gone): keep it and its parents
                        break
            os.close(fd)  # closing the only descriptor releases the flock

    def __del__(self) -> None:
        self.release()


def truncate_csv(path: Path, step: int, fields: tuple[str, ...]) -> None:
    """Drop the rows of ``path`` logged after ``step`` (a resumed run rewrites them); keep the others.

    Raises:
        RunDirError: the file has no ``step`` column or a row whose step is not a number.
    """
    if not path.exists():
        return
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "step" not in header:
                raise RunDirError(
                    f"{path}: expected a metrics CSV with a 'step' column, found header {header}; move the "
                    "file aside to resume (a new one is started)"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    row_step = int(float(row["step"]))
                except (TypeError, ValueError):
                    raise RunDirError(
                        f"{path}: line {line}: step: expected a number, found {row['step']!r}; move the file "
                        "aside to resume (a new one is started)"
                    ) from None
                if row_step <= step:
                    rows.append(row)
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{path}: expected a metrics CSV, found undecodable bytes ({exc.reason})") from None
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=fields)
    w.writeheader()
    w.writerows({k: r.get(k, "") for k in fields} for r in rows)
    atomic_write_text(path, text.getvalue())  # a crash mid-write keeps the old file, not half of it
