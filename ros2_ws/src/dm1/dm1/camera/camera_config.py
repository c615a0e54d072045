"""RealSense camera settings without pyrealsense2: the node's parameter table, `CameraConfig` (one stream,
validated), `camera_configs` (the node's parameters checked and turned into configs) and the errors the
camera raises. `dm1.camera.realsense` opens the streams.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Parameters of `dm1_ros.realsense_node`: name -> (default, description, bounds) for `dm1_ros.params`.
NODE_PARAMETERS: dict[str, tuple[Any, str, tuple[float, float] | None]] = {
    "camera_names": (["front"], "camera names: topics /camera/<name>/color/...", None),
    "serials": ([], "device serial per camera, in camera_names order; empty = the first device", None),
    "width": (640, "color/depth width [px]", (1, 4096)),
    "height": (480, "color/depth height [px]", (1, 4096)),
    "fps": (30, "color/depth frame rate [Hz]", (1, 300)),
    "enable_depth": (False, "also publish depth (16UC1)", None),
    "align_depth": (
        True,
        "true: depth aligned to color on .../aligned_depth_to_color/image_raw; false: at its own size on "
        ".../depth/image_rect_raw (+ depth/camera_info)",
        None,
    ),
    "playback_file": ("", ".db3 recording to replay instead of a device; {name} = camera name", None),
    "playback_realtime": (True, "pace playback at the recorded rate", None),
    "playback_repeat": (False, "loop the recording", None),
    "diagnostics_period_s": (1.0, "period of /diagnostics [s]", (0.05, 60.0)),
}


class NoDeviceError(RuntimeError):
    """No RealSense device (or not the requested serial) is connected."""


class PlaybackFileError(ValueError):
    """A `playback_file` librealsense cannot replay: corrupt, truncated, empty, not a RealSense recording."""


#: A camera name is one ROS name token: it becomes part of topics (`/camera/<name>/...`) and frame ids.
NAME_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

_SERIAL_HINT = "quote them in YAML: ['012345678901']; an unquoted number loses its leading zeros"


def _not_a_file(path: Path) -> str | None:
    """Why `path` cannot be a recording ("does not exist", "is not a regular file (a directory)"), or None."""
    try:
        mode = path.stat().st_mode  # follows symlinks: a link to /dev/null is a character device
    except OSError:
        return "does not exist" + (" (a broken symbolic link)" if path.is_symlink() else "")
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"))
    kind = next((name for test, name in kinds if test(mode)), "not a file")
    return f"is not a regular file ({kind}{', via a symbolic link' if path.is_symlink() else ''})"


def _typed(value: object) -> str:
    """`int 12345678901`: the type and value of a wrongly typed setting, for error messages."""
    return f"{type(value).__name__} {value!r}"


@dataclass
class CameraConfig:
    """One RealSense camera stream.

    Args:
        name: camera name (topics `/camera/<name>/...`): one ROS name token, `[A-Za-z][A-Za-z0-9_]*`.
        serial: device serial number; "" = the first device found.
        width, height, fps: color (and depth) stream mode.
        enable_depth: also stream depth (z16).
        align_depth: align depth to the color frame (`rs.align`), so pixel (u, v) matches in both.
        playback_file: replay this `.db3` recording instead of opening a device.
        playback_realtime: pace playback at the recorded rate (False: as fast as the reader consumes).
        playback_repeat: loop the recording.
    """

    name: str
    serial: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    enable_depth: bool = False
    align_depth: bool = True
    playback_file: str = ""
    playback_realtime: bool = True
    playback_repeat: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_TOKEN.fullmatch(self.name):
            raise ValueError(
                "CameraConfig.name: expected a ROS name token like 'front' (a letter, then letters, digits "
                f"or _), found {_typed(self.name)}"
            )
        if not isinstance(self.serial, str):
            raise ValueError(
                f"CameraConfig.serial ({self.name}): expected a string ({_SERIAL_HINT}), "
                f"found {_typed(self.serial)}"
            )
        for key in ("width", "height", "fps"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"CameraConfig.{key} ({self.name}): expected a positive int, found {value!r}"
                )
        if self.playback_file:
            path = Path(self.playback_file)
            if path.suffix != ".db3":
                raise ValueError(
                    f"CameraConfig.playback_file ({self.name}): expected a .db3 file, found {path}"
                )
            if reason := _not_a_file(path):
                raise ValueError(f"CameraConfig.playback_file ({self.name}): {path} {reason}")


def camera_configs(params: Mapping[str, Any]) -> list[CameraConfig]:
    """The `CameraConfig` of every camera from the values of `dm1_ros.realsense_node`'s `NODE_PARAMETERS`.

    Raises:
        ValueError: naming the parameter, what was expected and what was found: no or duplicate camera names,
            non-string serials (unquoted numbers in YAML), one serial per camera, a serial repeated, a
            `{name}` placeholder in `playback_file` for several cameras; or a `CameraConfig` field (e.g. a
            missing playback file).
    """
    names, serials, playback = (
        list(params["camera_names"] or []),
        list(params["serials"] or []),
        params["playback_file"],
    )
    if not names:
        raise ValueError("parameter camera_names: expected at least one camera name, found []")
    if wrong := [v for v in names if not isinstance(v, str)]:
        raise ValueError(f"parameter camera_names: expected strings, found {_typed(wrong[0])}")
    if dupes := [n for i, n in enumerate(names) if n in names[:i]]:
        raise ValueError(
            f"parameter camera_names: expected unique names, found {dupes[0]!r} more than once in {names}"
        )
    if wrong := [v for v in serials if not isinstance(v, str)]:
        raise ValueError(f"parameter serials: expected strings ({_SERIAL_HINT}), found {_typed(wrong[0])}")
    if serials and len(serials) != len(names):
        raise ValueError(f"parameter serials: expected one per camera {names}, found {serials}")
    if dupes := [s for i, s in enumerate(serials) if s in serials[:i]]:
        raise ValueError(
            f"parameter serials: expected one device per camera, found {dupes[0]!r} more than once in "
            f"{serials}"
        )
    if playback and len(names) > 1 and "{name}" not in playback:
        raise ValueError(
            f"parameter playback_file: expected a {{name}} placeholder for {len(names)} cameras, "
            f"found {playback!r}"
        )
    keys = ("width", "height", "fps", "enable_depth", "align_depth", "playback_realtime", "playback_repeat")
    common = {k: params[k] for k in keys}
    return [
        CameraConfig(
            name, serials[i] if serials else "", playback_file=playback.replace("{name}", name), **common
        )
        for i, name in enumerate(names)
    ]
