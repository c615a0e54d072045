"""The frames `dm1.camera.realsense` delivers, without pyrealsense2: `Intrinsics` and `CameraFrame`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Intrinsics:
    """Pinhole intrinsics of a stream (`rs.intrinsics`): the color stream, or depth when not aligned."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    model: str
    coeffs: list[float]

    def camera_info_fields(self) -> dict[str, object]:
        """`sensor_msgs/CameraInfo` fields (width, height, distortion_model, d, k, r, p) as plain values."""
        plumb_bob = self.model in ("none", "brown_conrady", "modified_brown_conrady")
        return {
            "width": self.width,
            "height": self.height,
            "distortion_model": "plumb_bob" if plumb_bob else self.model,
            "d": [float(c) for c in self.coeffs],
            "k": [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        }


@dataclass
class CameraFrame:
    """One color frame (and the depth frame when enabled: aligned to color, or at its own size)."""

    name: str
    color: np.ndarray  # (H, W, 3) uint8, RGB
    depth: (
        np.ndarray | None
    )  # (H, W) uint16 in `depth_scale` metres per unit, aligned to color when `align_depth`
    stamp_s: float  # host/ROS time of exposure (ClockMapper)
    device_ts_ms: float  # the device's own timestamp
    frame_number: int
    intrinsics: Intrinsics
    depth_scale: float  # metres per depth unit (0.0 without depth)
    depth_intrinsics: Intrinsics | None = None  # of the depth stream when depth is not aligned to color
