"""The teleop node's parts built from its parameters (`dm1_ros.teleop_params`): the ROS-free loop with its
device and recorder, the raw MCAP mirror's subscriptions, and the chunk a tick publishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from dm1.control.backend import TOP_DOWN_XYZW
from dm1.policy.step import ActionChunk
from dm1.teleop.devices import make_device
from dm1.teleop.loop import TeleopConfig, TeleopLoop
from dm1.teleop.mcap_mirror import McapMirror
from dm1.teleop.recorder import EE_ACTION_NAMES, EpisodeRecorder, RecorderConfig
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dm1_ros.chunk_qos import CARTESIAN_TOPIC
from dm1_ros.conversions import chunk_to_multidof_trajectory


def build_loop(p: dict[str, Any]) -> TeleopLoop:
    """The teleop loop: config, device, the recorder when `record`, the MCAP mirror when `mcap`."""
    keys = ("control_rate_hz", "deadman_timeout_s", "require_enable", "max_speed")
    cfg = TeleopConfig(**{k: p[k] for k in keys})
    bounded = {k: p[k] for k in ("control_rate_hz", "min_free_mb")}  # by their parameter descriptors
    rc = RecorderConfig(Path(p["out_dir"]), p["cameras"], p["proprio_keys"], **bounded)
    mirror = McapMirror(Path(p["out_dir"]) / "mcap") if p["mcap"] else None
    scripted = {"recovery_fraction": p["scripted_recovery_fraction"], "seed": p["scripted_seed"]}
    device = make_device(p["device"], **(scripted if p["device"] == "scripted" else {}))
    return TeleopLoop(cfg, device, EpisodeRecorder(rc) if p["record"] else None, mirror)


def mirror_raw_topics(node: Node, mirror: McapMirror, cameras: list[str], qos: QoSProfile) -> None:
    """Subscribe the cameras, `/joint_states` and the chunks as raw CDR bytes, written straight into the open
    episode's MCAP file (stamped with the node's clock)."""
    topics: dict[str, type] = {f"/camera/{c}/color/image_raw": Image for c in cameras}
    topics |= {"/joint_states": JointState, CARTESIAN_TOPIC: MultiDOFJointTrajectory}
    for topic, msg_type in topics.items():
        name = f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"

        def write(raw: bytes, topic: str = topic, name: str = name) -> None:
            mirror.write(topic, name, raw, node.get_clock().now().nanoseconds)

        node.create_subscription(msg_type, topic, write, qos, raw=True)


def held_target_chunk(
    action: np.ndarray, now: float, dt: float, lead_s: float, points: int
) -> MultiDOFJointTrajectory:
    """A short chunk of the held target `action` (4,) [x, y, z, gripper], its first point due `lead_s` after
    `now`: robust to transport delay, since the controller drops only the points already past."""
    acts = np.repeat(np.asarray(action)[None, :], points, axis=0)  # (N, 4)
    chunk = ActionChunk(now + lead_s, dt, acts, 0, now, "ee_position", EE_ACTION_NAMES)
    return chunk_to_multidof_trajectory(chunk, TOP_DOWN_XYZW)
