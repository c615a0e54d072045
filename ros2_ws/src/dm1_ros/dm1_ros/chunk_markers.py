"""Predicted action chunk → visualization_msgs/MarkerArray (EE path ghost for rviz / Foxglove).

`ee_position` chunks are drawn directly; `joint_position` chunks go through numpy FK (`dm1.kinematics`), so
both action spaces show the path the end effector is asked to follow. Points are coloured by the gripper
command (green = open, red = close). Markers expire after `lifetime_s`, so the ghost disappears when the
policy stops publishing (e.g. on stale inputs).
"""

from __future__ import annotations

import numpy as np
from dm1.kinematics import fr3_fk
from dm1.policy.step import ActionChunk
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from dm1_ros.conversions import BASE_FRAME, to_duration_msg, to_time_msg

NAMESPACE = "dm1_predicted_path"


def chunk_ee_path(chunk: ActionChunk) -> tuple[np.ndarray, np.ndarray]:
    """EE positions (N, 3) [m, fr3_link0] and gripper commands (N,) of a chunk."""
    acts = np.asarray(chunk.actions, dtype=np.float64)  # (N, Da)
    if chunk.space == "ee_position":
        return acts[:, :3], acts[:, 3]
    if chunk.space == "joint_position":
        pos, _ = fr3_fk(acts[:, :7])  # (N, 3)
        return pos, acts[:, 7]
    raise ValueError(f"chunk_ee_path: unknown action space {chunk.space!r}")


def _color(r: float, g: float, b: float, a: float = 1.0) -> ColorRGBA:
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


def chunk_to_markers(chunk: ActionChunk, frame_id: str = BASE_FRAME, lifetime_s: float = 1.0) -> MarkerArray:
    """A LINE_STRIP through the predicted EE path plus a SPHERE_LIST of its points (gripper-coloured)."""
    pos, grip = chunk_ee_path(chunk)
    points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in pos]
    closing = np.clip(grip, 0.0, 1.0)
    common = {
        "ns": NAMESPACE,
        "action": Marker.ADD,
        "lifetime": to_duration_msg(lifetime_s),
        "frame_locked": False,
    }

    line = Marker(id=0, type=Marker.LINE_STRIP, points=points, color=_color(0.2, 0.6, 1.0, 0.8), **common)
    line.scale.x = 0.004  # line width [m]
    spheres = Marker(id=1, type=Marker.SPHERE_LIST, points=points, **common)
    spheres.scale.x = spheres.scale.y = spheres.scale.z = 0.012
    spheres.colors = [_color(c, 1.0 - c, 0.1) for c in closing]
    spheres.color = _color(1.0, 1.0, 1.0)
    for m in (line, spheres):
        m.header.frame_id = frame_id
        m.header.stamp = to_time_msg(chunk.t0)
        m.pose.orientation.w = 1.0
    return MarkerArray(markers=[line, spheres])


def clear_markers(frame_id: str = BASE_FRAME) -> MarkerArray:
    """A MarkerArray that deletes the predicted path (e.g. on deactivation)."""
    m = Marker(ns=NAMESPACE, action=Marker.DELETEALL)
    m.header.frame_id = frame_id
    return MarkerArray(markers=[m])


def safety_box_markers(lo: np.ndarray, hi: np.ndarray, frame_id: str = BASE_FRAME) -> MarkerArray:
    """The controller's workspace box (min corner `lo`, max corner `hi`, m) as a translucent CUBE."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    box = Marker(
        ns="dm1_safety_box", id=0, type=Marker.CUBE, action=Marker.ADD, color=_color(1.0, 0.5, 0.0, 0.15)
    )
    box.header.frame_id = frame_id
    center, size = 0.5 * (lo + hi), hi - lo
    box.pose.position = Point(x=float(center[0]), y=float(center[1]), z=float(center[2]))
    box.pose.orientation.w = 1.0
    box.scale.x, box.scale.y, box.scale.z = (float(v) for v in size)
    return MarkerArray(markers=[box])
