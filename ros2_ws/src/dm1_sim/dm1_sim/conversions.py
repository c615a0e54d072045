"""numpy <-> ROS message helpers for the twin node (no cv_bridge: it is broken with numpy 2).

Candidates to move into `dm1_ros.conversions` once that module exists.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image


def stamp_from_seconds(t: float) -> Time:
    """A `builtin_interfaces/Time` for `t` seconds (simulation time on the twin)."""
    ns = round(float(t) * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def rgb_to_image_msg(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """`sensor_msgs/Image` rgb8 from an (H, W, 3) uint8 array (bit-exact)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_image_msg: expected (H, W, 3) uint8, found {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 array from an rgb8 `sensor_msgs/Image` (honours `step` padding)."""
    if msg.encoding != "rgb8":
        raise ValueError(f"image_msg_to_rgb: expected encoding 'rgb8', found {msg.encoding!r}")
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if buf.size != msg.step * msg.height or msg.step < 3 * msg.width:
        raise ValueError(
            f"image_msg_to_rgb: expected {msg.height} rows of step >= {3 * msg.width}, "
            f"found {buf.size} bytes with step {msg.step}"
        )
    return buf.reshape(msg.height, msg.step)[:, : 3 * msg.width].reshape(msg.height, msg.width, 3)


def camera_info_msg(
    width: int, height: int, intrinsics: tuple[float, float, float, float], stamp: Time, frame_id: str
) -> CameraInfo:
    """`sensor_msgs/CameraInfo` for an undistorted pinhole camera with (fx, fy, cx, cy)."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    msg = CameraInfo(width=int(width), height=int(height), distortion_model="plumb_bob")
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def pose_msg(pos: np.ndarray, quat_xyzw: np.ndarray, stamp: Time, frame_id: str = "fr3_link0") -> PoseStamped:
    """`geometry_msgs/PoseStamped` from a position (3,) and quaternion (4,) x, y, z, w."""
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in pos)
    q.x, q.y, q.z, q.w = (float(v) for v in quat_xyzw)
    return msg
