"""How camera frames leave `dm1.camera` without ROS: color formats turned into RGB, the topics and frame ids
of a camera (the realsense2_camera convention), and the fields of a `sensor_msgs/Image` from a numpy frame.

Color: a device is opened in rgb8; a recording carries whatever format it was recorded in. rgb8 passes,
bgr8 is reordered, rgba8/bgra8 lose their alpha channel; any other format (yuyv, y8, ...) is refused at start
(`check_color_format`), so every published color image is an honest `rgb8`.

Depth: aligned to color it is `/camera/<name>/aligned_depth_to_color/image_raw` in the color optical frame
(same size as color); unaligned it is `/camera/<name>/depth/image_rect_raw` in the depth optical frame, at the
depth stream's own size, with its own `/camera/<name>/depth/camera_info`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: librealsense color format -> converter of its (H, W, C) uint8 data to (H, W, 3) RGB.
COLOR_FORMATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rgb8": lambda a: a,
    "bgr8": lambda a: a[..., ::-1],
    "rgba8": lambda a: a[..., :3],
    "bgra8": lambda a: a[..., 2::-1],
}


def check_color_format(fmt: str, where: str) -> None:
    """Raise ValueError (one line: `where`, the formats expected and `fmt`) unless `fmt` converts to RGB."""
    if fmt not in COLOR_FORMATS:
        raise ValueError(f"{where}: expected a color stream in {', '.join(COLOR_FORMATS)}, found {fmt}")


def to_rgb(data: np.ndarray, fmt: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, a contiguous copy, of a color frame's data in librealsense format `fmt`."""
    return np.array(COLOR_FORMATS[fmt](np.asanyarray(data)), order="C", copy=True)  # not the rs buffer


@dataclass(frozen=True)
class CameraTopics:
    """Topics and optical frame ids of one camera (`depth_*` None without depth; `depth_info` None when
    depth is aligned to color, whose camera_info then applies)."""

    color_image: str
    color_info: str
    color_frame: str
    depth_image: str | None = None
    depth_info: str | None = None
    depth_frame: str | None = None


def camera_topics(name: str, enable_depth: bool, align_depth: bool) -> CameraTopics:
    """The topics and frame ids camera `name` publishes on (see the module docstring)."""
    base, color_frame = f"/camera/{name}", f"camera_{name}_color_optical_frame"
    color = (f"{base}/color/image_raw", f"{base}/color/camera_info", color_frame)
    if not enable_depth:
        return CameraTopics(*color)
    if align_depth:
        return CameraTopics(*color, f"{base}/aligned_depth_to_color/image_raw", None, color_frame)
    return CameraTopics(
        *color,
        f"{base}/depth/image_rect_raw",
        f"{base}/depth/camera_info",
        f"camera_{name}_depth_optical_frame",
    )


def image_fields(arr: np.ndarray) -> dict[str, object]:
    """`sensor_msgs/Image` fields (height, width, encoding, step, data) of an (H, W, 3) uint8 RGB frame
    (`rgb8`) or an (H, W) uint16 depth frame (`16UC1`, little endian), from the frame's own size."""
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        encoding, data = "rgb8", np.ascontiguousarray(arr).tobytes()
    elif arr.dtype == np.uint16 and arr.ndim == 2:
        encoding, data = "16UC1", arr.astype("<u2").tobytes()
    else:
        raise ValueError(
            f"image_fields: expected (H, W, 3) uint8 or (H, W) uint16, found {arr.shape} {arr.dtype}"
        )
    h, w = arr.shape[:2]
    return {"height": h, "width": w, "encoding": encoding, "step": len(data) // h, "data": data}
