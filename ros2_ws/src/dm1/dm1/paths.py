"""Path and file helpers shared by the core and the commands: path identity, durable atomic writes,
file hashes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: File suffixes that are (or usually are) Python pickles (`.bin`: torch.save'd weights). No dm1 loader ever
#: opens one, by design: checkpoints are safetensors + JSON, exports ONNX + JSON.
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file or directory, however spelled (`./models/m/` is `models/m`)."""
    return os.fspath(a) == os.fspath(b) or Path(a).resolve() == Path(b).resolve()


def sync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename inside it survives a power loss (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Replace `path` by `text` all at once: a uniquely named temporary file in the same directory, fsync,
    rename, fsync of the directory. A crash leaves the old file or the new one, never a half-written one;
    a failed write removes its temporary file. `mode`: the new file's permissions (mkstemp's are 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def file_sha256(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
