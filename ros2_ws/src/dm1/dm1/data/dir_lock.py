"""One writer per dataset directory: an advisory `flock` on `<dir>/.recording.lock` while an episode is open.

Two recorders started on the same directory could otherwise both pass the layout check on an empty directory
and write a mixed-layout dataset. The lock file is deleted on release while still locked; a waiter that got
the lock on a file deleted meanwhile notices (inode check) and tries again, so two holders are impossible.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = ".recording.lock"


class DirectoryBusyError(RuntimeError):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """Non-blocking exclusive lock on a directory (the directory must exist)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock; DirectoryBusyError naming the holder's pid when another process has it."""
        if self._fd is not None:
            return
        for _ in range(5):  # each retry means the holder released and deleted the file in between
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise DirectoryBusyError(
                    f"{self.path.parent} is being recorded to by another process (pid {holder}; lock "
                    f"{self.path}): one recorder per dataset directory"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise DirectoryBusyError(f"{self.path}: could not take the lock (it kept being replaced)")

    def release(self) -> None:
        """Delete the lock file and drop the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(fd)
