"""Validated configuration of the franky-sim digital twin (scene, cameras, cube, success criterion).

Everything is checked at construction: a bad value raises `ValueError` naming the field, what was expected and
what was found, before any simulator or thread starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Camera poses checked on the franky FR3 scene. A MuJoCo camera looks along its own -z axis.
#: `parent` is the body the camera is attached to (`world` or a franky-sim body name).
CAMERA_PRESETS: dict[str, dict[str, Any]] = {
    "front": {
        "parent": "world",
        "pos": (1.1, 0.0, 0.6),
        "xyaxes": (0.0, 1.0, 0.0, -0.57, 0.0, 0.82),
        "fovy": 50.0,
    },
    "wrist": {
        "parent": "robot0_hand",
        "pos": (0.07, 0.0, 0.02),
        "xyaxes": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
        "fovy": 70.0,
    },
}

#: Largest offscreen frame the scene is compiled for (MJCF `visual/global offwidth/offheight`).
MAX_IMAGE_SIZE = 1920


def _bad(field_name: str, expected: str, found: object) -> ValueError:
    return ValueError(f"TwinConfig: {field_name}: expected {expected}, found {found!r}")


def _check_range(name: str, value: tuple[float, float], lo: float = -math.inf, hi: float = math.inf) -> None:
    if len(value) != 2 or not all(math.isfinite(float(v)) for v in value):
        raise _bad(name, "a (min, max) pair of finite numbers", value)
    if not (lo <= value[0] <= value[1] <= hi):
        raise _bad(name, f"min <= max within [{lo}, {hi}]", value)


@dataclass(frozen=True)
class CameraSpec:
    """One rendered camera.

    Args:
        width: Image width in pixels (1..MAX_IMAGE_SIZE).
        height: Image height in pixels (1..MAX_IMAGE_SIZE).
        fps: Frames per second of *simulation* time (> 0).
        preset: A key of `CAMERA_PRESETS` ('front', 'wrist'); None = explicit pos/xyaxes, or, without them,
            the preset named like the camera.
        pos: Camera position in the parent body frame (m); overrides the preset's.
        xyaxes: Camera x and y axes in the parent frame (6 numbers); overrides the preset's.
        fovy: Vertical field of view (degrees, 1..179); overrides the preset's.
        parent: Body the camera is attached to ('world' or e.g. 'robot0_hand'); overrides the preset's.
        depth: Also render depth (not yet published by the node).
    """

    width: int = 96
    height: int = 96
    fps: float = 20.0
    preset: str | None = None
    pos: tuple[float, float, float] | None = None
    xyaxes: tuple[float, float, float, float, float, float] | None = None
    fovy: float | None = None
    parent: str | None = None
    depth: bool = False

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_IMAGE_SIZE:
                raise _bad(f"camera.{name}", f"an integer in [1, {MAX_IMAGE_SIZE}]", value)
        if not isinstance(self.fps, int | float) or not math.isfinite(self.fps) or self.fps <= 0:
            raise _bad("camera.fps", "a finite number > 0", self.fps)
        if self.preset is not None and self.preset not in CAMERA_PRESETS:
            raise _bad("camera.preset", f"one of {sorted(CAMERA_PRESETS)} or None", self.preset)
        if self.preset is None and (self.pos is None) != (self.xyaxes is None):
            raise _bad(
                "camera.xyaxes" if self.xyaxes is None else "camera.pos", "pos and xyaxes together", None
            )
        if self.pos is not None and (len(self.pos) != 3 or not all(math.isfinite(v) for v in self.pos)):
            raise _bad("camera.pos", "3 finite numbers", self.pos)
        if self.xyaxes is not None:
            if len(self.xyaxes) != 6 or not all(math.isfinite(v) for v in self.xyaxes):
                raise _bad("camera.xyaxes", "6 finite numbers", self.xyaxes)
            if math.hypot(*self.xyaxes[:3]) < 1e-6 or math.hypot(*self.xyaxes[3:]) < 1e-6:
                raise _bad("camera.xyaxes", "two non-zero axes", self.xyaxes)
        if self.fovy is not None and not 1.0 <= self.fovy <= 179.0:
            raise _bad("camera.fovy", "degrees in [1, 179]", self.fovy)

    def resolved(self) -> dict[str, Any]:
        """Parent body, pos, xyaxes and fovy after applying the preset and explicit overrides."""
        base = dict(CAMERA_PRESETS[self.preset]) if self.preset else {"parent": "world", "fovy": 45.0}
        for key in ("pos", "xyaxes", "fovy", "parent"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        return base

    def intrinsics(self) -> tuple[float, float, float, float]:
        """Pinhole intrinsics (fx, fy, cx, cy) in pixels; MuJoCo cameras have square pixels."""
        fovy = math.radians(float(self.resolved()["fovy"]))
        fy = 0.5 * self.height / math.tan(0.5 * fovy)
        return fy, fy, 0.5 * self.width, 0.5 * self.height


@dataclass(frozen=True)
class TableSpec:
    """The table the robot stands on. The robot base (fr3_link0) sits on the table top.

    Args:
        center_xy: Table centre in fr3_link0 (m).
        size_xy: Full table extent along x and y (m, > 0).
        top_z: Height of the table top in fr3_link0 (m).
        thickness: Table slab thickness (m, > 0).
        floor_depth: Floor height below the table top (m, > thickness).
    """

    center_xy: tuple[float, float] = (0.35, 0.0)
    size_xy: tuple[float, float] = (1.1, 1.2)
    top_z: float = 0.0
    thickness: float = 0.04
    floor_depth: float = 0.75

    def __post_init__(self) -> None:
        if len(self.size_xy) != 2 or min(self.size_xy) <= 0:
            raise _bad("table.size_xy", "two positive lengths (m)", self.size_xy)
        if len(self.center_xy) != 2:
            raise _bad("table.center_xy", "an (x, y) pair", self.center_xy)
        if self.thickness <= 0:
            raise _bad("table.thickness", "> 0 m", self.thickness)
        if self.floor_depth <= self.thickness:
            raise _bad("table.floor_depth", f"> thickness ({self.thickness} m)", self.floor_depth)

    def xy_bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x_min, x_max), (y_min, y_max)) of the table top."""
        cx, cy = self.center_xy
        hx, hy = 0.5 * self.size_xy[0], 0.5 * self.size_xy[1]
        return (cx - hx, cx + hx), (cy - hy, cy + hy)


def default_cameras() -> dict[str, CameraSpec]:
    """The two default cameras, `front` and `wrist`, 96x96 at 20 Hz."""
    return {"front": CameraSpec(preset="front"), "wrist": CameraSpec(preset="wrist")}


@dataclass(frozen=True)
class TwinConfig:
    """Configuration of the digital twin.

    Args:
        host: Loopback address for the franky-sim servers; None = first free 127.x address.
        cameras: Camera name -> spec. Names become topics `/camera/<name>/...`; a name without a `preset`
            that matches a preset name uses that preset.
        cube_size: Edge length of the cube (m).
        cube_mass: Cube mass (kg).
        cube_region: ((x_min, x_max), (y_min, y_max)) of the cube centre in fr3_link0; must lie on the table.
        cube_yaw_range: (min, max) yaw of the cube at reset (rad).
        table: Table geometry.
        seed: Seed of the reset random stream.
        success_height: Lift of the cube's bottom face above the table top that counts as success (m).
        success_hold_s: Simulation time the cube must stay lifted (s).
        realtime: Pace the physics to wall time (False = as fast as the CPU allows).
        multisample: MSAA in offscreen rendering (slower).
        shadows: Shadows in offscreen rendering (much slower on software EGL).
        max_render_backlog: Snapshots waiting for the render thread before physics waits for it, so frames
            keep their rate in simulation time even when rendering is slow.
        render_lockstep: Physics waits while a snapshot renders, so frames reach subscribers at the sim time
            they show (instantaneous exposure); False pipelines rendering (faster, tens of ms of sim latency).
    """

    host: str | None = None
    cameras: dict[str, CameraSpec] = field(default_factory=default_cameras)
    cube_size: float = 0.05
    cube_mass: float = 0.05
    cube_region: tuple[tuple[float, float], tuple[float, float]] = ((0.45, 0.6), (-0.12, 0.12))
    cube_yaw_range: tuple[float, float] = (-0.6, 0.6)
    table: TableSpec = field(default_factory=TableSpec)
    seed: int = 0
    success_height: float = 0.10
    success_hold_s: float = 0.5
    realtime: bool = True
    multisample: bool = False
    shadows: bool = False
    max_render_backlog: int = 2
    render_lockstep: bool = True

    def __post_init__(self) -> None:
        if self.host is not None and (not isinstance(self.host, str) or not self.host.startswith("127.")):
            raise _bad("host", "None or a loopback address 127.x.y.z", self.host)
        if not isinstance(self.cameras, dict):
            raise _bad("cameras", "a dict name -> CameraSpec", type(self.cameras).__name__)
        cams: dict[str, CameraSpec] = {}
        for name, spec in self.cameras.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise _bad("cameras", "names that are identifiers (used in topic names)", name)
            if isinstance(spec, dict):
                spec = CameraSpec(**spec)
            if not isinstance(spec, CameraSpec):
                raise _bad(f"cameras.{name}", "a CameraSpec", type(spec).__name__)
            if spec.preset is None and spec.pos is None:
                if name not in CAMERA_PRESETS:
                    raise _bad(
                        f"cameras.{name}",
                        f"a camera named after a preset {sorted(CAMERA_PRESETS)} or pos/xyaxes",
                        name,
                    )
                spec = replace(spec, preset=name)
            cams[name] = spec
        object.__setattr__(self, "cameras", cams)
        if not 0.01 <= self.cube_size <= 0.1:
            raise _bad(
                "cube_size", "an edge length in [0.01, 0.1] m (the gripper opens 0.08 m)", self.cube_size
            )
        if self.cube_mass <= 0:
            raise _bad("cube_mass", "> 0 kg", self.cube_mass)
        if isinstance(self.table, dict):
            object.__setattr__(self, "table", TableSpec(**self.table))
        if len(self.cube_region) != 2:
            raise _bad("cube_region", "((x_min, x_max), (y_min, y_max))", self.cube_region)
        _check_range("cube_region.x", tuple(self.cube_region[0]))
        _check_range("cube_region.y", tuple(self.cube_region[1]))
        half = 0.5 * self.cube_size
        (tx0, tx1), (ty0, ty1) = self.table.xy_bounds()
        _check_range("cube_region.x (on the table)", tuple(self.cube_region[0]), tx0 + half, tx1 - half)
        _check_range("cube_region.y (on the table)", tuple(self.cube_region[1]), ty0 + half, ty1 - half)
        _check_range("cube_yaw_range", tuple(self.cube_yaw_range), -math.pi, math.pi)
        if not 0 < self.success_height < 1.0:
            raise _bad("success_height", "a lift in (0, 1) m", self.success_height)
        if not 0 <= self.success_hold_s <= 60:
            raise _bad("success_hold_s", "seconds in [0, 60]", self.success_hold_s)
        if not isinstance(self.max_render_backlog, int) or self.max_render_backlog < 1:
            raise _bad("max_render_backlog", "an integer >= 1", self.max_render_backlog)

    @property
    def cube_rest_z(self) -> float:
        """Height of the cube centre when it rests on the table (m, fr3_link0)."""
        return self.table.top_z + 0.5 * self.cube_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (cameras and table as nested dicts)."""
        return asdict(self)
