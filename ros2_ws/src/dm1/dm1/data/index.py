"""Directory index of episode files (``index.json``), sha256s, and quarantine of incomplete episodes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from dm1.data.episode import (
    _EPISODE_RE,
    FORMAT_VERSION,
    INDEX_FILE,
    PARTIAL_SUFFIX,
    QUARANTINE_DIR,
    EpisodeFormatError,
    read_episode,
)
from dm1.paths import atomic_write_text, file_sha256, sync_dir

log = logging.getLogger(__name__)


def next_episode_path(directory: str | os.PathLike[str]) -> Path:
    """``episode_<n>.h5`` with n above every number already used (complete, partial, quarantined)."""
    d = Path(directory)
    used = [-1]
    for p in [*d.glob("episode_*"), *(d / QUARANTINE_DIR).glob("episode_*")]:
        m = _EPISODE_RE.match(p.name.removesuffix(PARTIAL_SUFFIX))
        if m:
            used.append(int(m.group(1)))
    return d / f"episode_{max(used) + 1:06d}.h5"


class DatasetIndex:
    """Index of a directory of episode files, kept in ``index.json`` (rewritten atomically).

    ``scan()`` validates every ``*.h5`` (reusing sha256s of unchanged files from the previous index), lists
    ``*.h5.partial`` files as incomplete and unreadable ``*.h5`` files as invalid. Episodes the previous
    index listed but the directory no longer holds are in ``missing``; ``write()`` warns about them (stderr).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"dataset directory {self.directory} does not exist")
        self.episodes: list[dict[str, Any]] = []
        self.incomplete: list[str] = []
        self.invalid: list[dict[str, str]] = []
        self.missing: list[str] = []

    @property
    def index_path(self) -> Path:
        """Path of ``index.json``."""
        return self.directory / INDEX_FILE

    def _previous(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.index_path.read_text())
            return {e["file"]: e for e in data.get("episodes", [])}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def scan(self) -> DatasetIndex:
        """Re-read the directory (validating episodes); returns self."""
        previous = self._previous()
        self.missing = sorted(name for name in previous if not (self.directory / name).is_file())
        self.episodes, self.invalid = [], []
        for p in sorted(self.directory.glob("*.h5")):
            if not _EPISODE_RE.match(p.name):  # the tools and the loader must agree on what an episode is
                expected = "episode_NNNNNN.h5 (an episode file), or moved out of the dataset directory"
                self.invalid.append({"file": p.name, "error": f"{p}: file name: expected {expected}"})
                continue
            st = p.stat()
            old = previous.get(p.name)
            if _cached_entry_ok(old) and old["size"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns:
                self.episodes.append(old)
                continue
            try:
                ep = read_episode(p, load_images=False)
            except EpisodeFormatError as exc:
                self.invalid.append({"file": p.name, "error": str(exc)})
                continue
            self.episodes.append(
                {
                    "file": p.name,
                    "length": ep.length,
                    "success": ep.success,
                    "sha256": file_sha256(p),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                }
            )
        self.incomplete = sorted(p.name for p in self.directory.glob(f"*.h5{PARTIAL_SUFFIX}"))
        return self

    def changed_in_place(self) -> dict[str, str]:
        """Episode files whose content no longer hashes to the sha256 ``index.json`` recorded although their
        size and mtime are the ones recorded (bit rot, or an edit that restored the mtime): {file name: why}.
        A file with a new size or mtime is not listed: the next ``scan`` re-reads and re-hashes it."""
        changed = {}
        for name, e in self._previous().items():
            path = self.directory / str(name)
            if not (_cached_entry_ok(e) and path.is_file()):
                continue
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) != (e["size"], e["mtime_ns"]):
                continue
            actual = file_sha256(path)
            if actual != e["sha256"]:
                changed[path.name] = (
                    f"{path}: sha256: expected {e['sha256']} ({INDEX_FILE}), found {actual} with the "
                    "indexed size and mtime: the file changed in place (bit rot?)"
                )
        return changed

    @property
    def dataset_sha256(self) -> str:
        """Stable hash of the dataset: sha256 over the sorted (file name, file sha256) pairs."""
        h = hashlib.sha256()
        for e in sorted(self.episodes, key=lambda e: e["file"]):
            h.update(f"{e['file']}:{e['sha256']}\n".encode())
        return h.hexdigest()

    @property
    def total_steps(self) -> int:
        """Sum of episode lengths."""
        return sum(int(e["length"]) for e in self.episodes)

    def to_dict(self) -> dict[str, Any]:
        """The ``index.json`` content."""
        return {
            "format_version": FORMAT_VERSION,
            "dataset_sha256": self.dataset_sha256,
            "num_episodes": len(self.episodes),
            "total_steps": self.total_steps,
            "episodes": self.episodes,
            "incomplete": self.incomplete,
            "invalid": self.invalid,
        }

    def write(self) -> Path:
        """Atomically (re)write ``index.json``; warns (logging) when listed episodes have disappeared."""
        if self.missing:
            log.warning(
                "warning: %s listed %d episode(s) that are no longer in %s: %s; "
                "the index is rebuilt without them",
                self.index_path,
                len(self.missing),
                self.directory,
                ", ".join(self.missing),
            )
        atomic_write_text(self.index_path, json.dumps(self.to_dict(), indent=1) + "\n")
        return self.index_path

    def update(self) -> DatasetIndex:
        """``scan()`` then ``write()``; returns self."""
        self.scan().write()
        return self

    def quarantine(self, include_invalid: bool = True) -> list[Path]:
        """Move incomplete (and by default invalid) episode files into ``quarantine/``; returns new paths."""
        self.scan().write()  # so that files moved below are not reported as disappeared
        invalid = [e["file"] for e in self.invalid if _EPISODE_RE.match(e["file"])]  # not others' files
        names = list(self.incomplete) + (invalid if include_invalid else [])
        moved = []
        if names:
            qdir = self.directory / QUARANTINE_DIR
            qdir.mkdir(exist_ok=True)
            for name in names:
                target = qdir / name
                if target.exists():
                    target = qdir / f"{name}.{_dt.datetime.now(_dt.UTC).strftime('%Y%m%dT%H%M%S%f')}"
                os.replace(self.directory / name, target)
                moved.append(target)
            sync_dir(self.directory)
        self.update()
        return moved

    def episode_paths(self, success_only: bool = False) -> list[Path]:
        """Paths of the indexed complete episodes (optionally only successful ones), sorted by name."""
        return [self.directory / e["file"] for e in self.episodes if e["success"] or not success_only]


def _cached_entry_ok(entry: Any) -> bool:
    """An index.json entry of the expected types (else the file is read again, not trusted)."""
    if not isinstance(entry, dict):
        return False
    sha = entry.get("sha256")
    return (
        isinstance(entry.get("length"), int)
        and not isinstance(entry.get("length"), bool)
        and entry["length"] >= 0
        and isinstance(entry.get("success"), bool)
        and isinstance(sha, str)
        and len(sha) == 64
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("mtime_ns"), int)
    )
