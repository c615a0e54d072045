"""Optional MCAP mirror of the raw ROS 2 topics, one file per episode (ROS-free: bytes in, bytes out).

The teleop node subscribes to the mirrored topics with `raw=True` and hands the CDR bytes to
`McapMirror.write`: nothing is deserialized again. Files follow the MCAP `ros2` profile (schema encoding
`ros2msg`: the message's `.msg` text followed by every nested type's, as `ros2 bag` writes them), so
Foxglove and `mcap_ros2.reader` decode them. Each episode is written to `<name>.mcap.partial` and renamed on
`close`, like the HDF5 episodes, so a crash loses at most the open file (readable by a fallback scan).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

PRIMITIVES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
    "int64", "uint64", "string", "wstring",
}  # fmt: skip
_SEPARATOR = "=" * 80


def _share_dirs() -> list[Path]:
    dirs = [Path(sys.prefix) / "share"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share")
    return dirs


def _msg_text(pkg: str, name: str) -> str:
    for share in _share_dirs():
        path = share / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(f"message definition {pkg}/msg/{name}.msg not found under {_share_dirs()}")


def _deps(pkg: str, text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or "=" in line.split()[0]:
            continue
        base = re.sub(r"(\[.*\]|<=\d+)$", "", line.split()[0])
        base = re.sub(r"<=\d+", "", base)
        if base in PRIMITIVES:
            continue
        if base == "Header":
            out.append(("std_msgs", "Header"))
        elif "/" in base:
            parts = base.split("/")
            out.append((parts[0], parts[-1]))
        else:
            out.append((pkg, base))
    return out


def ros2_msg_definition(type_name: str) -> str:
    """Full `ros2msg` schema text for e.g. `sensor_msgs/msg/Image` (nested types after separators)."""
    pkg, _, name = type_name.split("/")
    root = _msg_text(pkg, name)
    parts, seen, queue = [root], set(), _deps(pkg, root)
    while queue:
        dep = queue.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        text = _msg_text(*dep)
        parts.append(f"{_SEPARATOR}\nMSG: {dep[0]}/{dep[1]}\n{text}")
        queue.extend(_deps(dep[0], text))
    return "\n".join(parts)


class McapMirror:
    """Writes raw CDR messages into one MCAP file per episode under `directory`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._writer: Any = None
        self._stream: Any = None
        self._path: Path | None = None
        self._channels: dict[str, int] = {}
        self._schemas: dict[str, int] = {}
        self.messages = 0

    @property
    def is_open(self) -> bool:
        """True while an episode file is open."""
        return self._writer is not None

    def open(self, name: str) -> Path:
        """Start `<directory>/<name>.mcap` (written as `.partial`); raises FileExistsError if it exists."""
        from mcap.writer import CompressionType, Writer

        self.close() if self.is_open else None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._path = self.directory / f"{name}.mcap"
        partial = self._path.with_name(self._path.name + ".partial")
        if self._path.exists() or partial.exists():
            raise FileExistsError(f"refusing to overwrite MCAP mirror {self._path}")
        self._stream = open(partial, "xb")  # noqa: SIM115 - closed in close()/discard()
        self._writer = Writer(self._stream, compression=CompressionType.NONE)
        self._writer.start(profile="ros2", library="dm1")
        self._channels, self._schemas, self.messages = {}, {}, 0
        return self._path

    def write(
        self, topic: str, type_name: str, data: bytes, log_time_ns: int, publish_time_ns: int = 0
    ) -> None:
        """Append one serialized message (`type_name` like `sensor_msgs/msg/Image`); no-op when closed."""
        if self._writer is None:
            return
        if topic not in self._channels:
            if type_name not in self._schemas:
                text = ros2_msg_definition(type_name).encode()
                self._schemas[type_name] = self._writer.register_schema(type_name, "ros2msg", text)
            self._channels[topic] = self._writer.register_channel(topic, "cdr", self._schemas[type_name])
        self._writer.add_message(
            self._channels[topic], int(log_time_ns), bytes(data), int(publish_time_ns or log_time_ns)
        )
        self.messages += 1

    def close(self) -> Path | None:
        """Finish the file and rename it to its final name; returns the path."""
        if self._writer is None or self._path is None:
            return None
        self._writer.finish()
        self._stream.close()
        os.replace(self._path.with_name(self._path.name + ".partial"), self._path)
        self._writer = self._stream = None
        return self._path

    def discard(self) -> None:
        """Drop the open file."""
        if self._writer is None or self._path is None:
            return
        self._stream.close()
        self._path.with_name(self._path.name + ".partial").unlink(missing_ok=True)
        self._writer = self._stream = None

    def abandon(self) -> None:
        """Close the open file but keep it as `.partial` (process exit mid-episode)."""
        if self._stream is not None:
            self._stream.close()
        self._writer = self._stream = None
