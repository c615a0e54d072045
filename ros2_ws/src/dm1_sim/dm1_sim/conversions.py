"""Twin-specific ROS message helpers (camera info, cube pose); images and stamps use `dm1_ros.conversions`."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo


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
