"""Typed, bounded, read-only ROS parameters of `teleop_node` (declared with descriptors)."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


def _desc(text: str, lo: float | None = None, hi: float | None = None) -> ParameterDescriptor:
    d = ParameterDescriptor(description=text, read_only=True)
    if lo is not None and hi is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def _int_desc(text: str, lo: int, hi: int) -> ParameterDescriptor:
    d = ParameterDescriptor(description=text, read_only=True)
    d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
    return d


#: name -> (default, descriptor); the default fixes the type.
PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    "device": ("keyboard", _desc("input device: spacemouse | keyboard | gamepad | joy | scripted")),
    "out_dir": ("data/teleop", _desc("dataset directory (one episode_<n>.h5 per episode)")),
    "record": (True, _desc("record episodes (false: teleop only)")),
    "mcap": (False, _desc("also mirror the raw topics to <out_dir>/mcap/episode_<n>.mcap")),
    "cameras": (["front", "wrist"], _desc("camera names, topics /camera/<name>/color/image_raw")),
    "proprio_keys": (
        ["ee_pos", "ee_quat_xyzw", "gripper_width", "joint_pos"],
        _desc("dm1.proprio keys recorded from /joint_states"),
    ),
    "control_rate_hz": (20.0, _desc("control and recording rate (Hz)", 1.0, 200.0)),
    "deadman_timeout_s": (0.1, _desc("no device input for this long -> stop publishing (s)", 0.01, 5.0)),
    "require_enable": (False, _desc("motion also needs the device's enable button held")),
    "max_speed": (0.3, _desc("largest target speed (m/s)", 0.01, 1.0)),
    "lead_s": (
        0.05,
        _desc("the first point of a published chunk is due this long after the tick (s)", 0.0, 0.5),
    ),
    "chunk_points": (
        5,
        _int_desc("points per chunk, all at the held target (robust to transport delay)", 1, 50),
    ),
    "min_free_mb": (100.0, _desc("refuse to start an episode with less free disk (MB)", 0.0, 1e7)),
    "joy_topic": ("/joy", _desc("sensor_msgs/Joy input topic (device joy)")),
    "cube_topic": (
        "/twin/cube_pose",
        _desc("object pose (PoseStamped) for the scripted expert"),
    ),
}


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every teleop parameter on `node`; returns name -> value (out-of-range values are rejected)."""
    return {name: node.declare_parameter(name, default, d).value for name, (default, d) in PARAMETERS.items()}
