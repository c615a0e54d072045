"""Foxglove live bridge: images, joint states, action chunks and diagnostics → websocket (+ optional MCAP).

Monitoring only: every subscription is best effort (a slow monitor never back-pressures a reliable
publisher), images are decimated, and the node runs in its own process. Core: `dm1.monitor.foxglove_bridge`.
Open https://app.foxglove.dev → "Open connection" → `ws://<host>:<port>`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from dm1.control.executor import STATUS_TOPIC
from dm1.monitor.foxglove_bridge import BridgeConfig, BridgeStartError, FoxgloveBridge
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from dm1_ros.chunk_qos import CARTESIAN_TOPIC, JOINT_TOPIC
from dm1_ros.node_signals import stopped_by_signals
from dm1_ros.params import ParamTable, declare_table, init_ros


def _stamp(header) -> float:  # noqa: ANN001
    return header.stamp.sec + header.stamp.nanosec * 1e-9


PARAMETERS: ParamTable = {
    "image_topics": (
        ["/camera/front/color/image_raw", "/camera/wrist/color/image_raw"],
        "sensor_msgs/Image topics to bridge",
        None,
    ),
    "host": ("127.0.0.1", "websocket address", None),
    "port": (8765, "websocket port; 0 = any, -1 = none", (-1, 65535)),
    "mcap_path": ("", "also write the stream to this .mcap file", None),
    "max_image_rate_hz": (10.0, "per-topic image decimation (0 = every frame)", (0.0, 1000.0)),
}


class FoxgloveNode(Node):
    """Subscribes to the dm1 topics and logs them through a `FoxgloveBridge`."""

    def __init__(self) -> None:
        super().__init__("foxglove_node")
        p = declare_table(self, PARAMETERS, read_only=True)
        cfg = BridgeConfig(
            host=p["host"],
            port=None if p["port"] < 0 else p["port"],
            mcap_path=p["mcap_path"],
            max_image_rate_hz=p["max_image_rate_hz"],
        )
        images = list(p["image_topics"])
        subs = [(Image, t, functools.partial(self._image, t)) for t in images]
        subs += [
            (JointState, "/joint_states", self._joints),
            (JointTrajectory, JOINT_TOPIC, self._joint_chunk),
        ]
        subs += [(MultiDOFJointTrajectory, CARTESIAN_TOPIC, self._cart_chunk)]
        subs += [
            (DiagnosticArray, t, functools.partial(self._diag, t)) for t in ("/diagnostics", STATUS_TOPIC)
        ]
        for msg_type, topic, handler in subs:  # best effort, depth 5: never back-pressures a publisher
            self.create_subscription(msg_type, topic, self._guarded(topic, handler), qos_profile_sensor_data)
        self.bridge = FoxgloveBridge(cfg)  # last: its server thread runs once nothing else here can fail
        where = f"ws://{cfg.host}:{self.bridge.port}" if self.bridge.port is not None else "no server"
        self.get_logger().info(f"Foxglove server on {where}; mcap={cfg.mcap_path or 'off'}; images {images}")

    def _guarded(self, topic: str, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        """A monitor must not die on an odd message: log (throttled) and carry on."""

        def call(msg: Any) -> None:
            try:
                handler(msg)
            except Exception as exc:
                self.get_logger().warning(
                    f"{topic}: not bridged ({type(exc).__name__}: {exc})", throttle_duration_sec=5
                )

        return call

    def _image(self, topic: str, msg: Image) -> None:
        data, stamp = bytes(msg.data), _stamp(msg.header)
        self.bridge.log_raw_image(
            topic, stamp, msg.header.frame_id, data, msg.width, msg.height, msg.step, msg.encoding
        )

    def _joints(self, msg: JointState) -> None:
        vel = np.asarray(msg.velocity) if len(msg.velocity) else None
        eff = np.asarray(msg.effort) if len(msg.effort) else None
        self.bridge.log_joint_state(
            "/joint_states", _stamp(msg.header), list(msg.name), np.asarray(msg.position), vel, eff
        )

    def _joint_chunk(self, msg: JointTrajectory) -> None:
        points = np.array([list(pt.positions) for pt in msg.points])  # (T, D)
        self.bridge.log_chunk(JOINT_TOPIC, _stamp(msg.header), list(msg.joint_names), points, _dt(msg.points))

    def _cart_chunk(self, msg: MultiDOFJointTrajectory) -> None:
        # per point and joint: translation (x, y, z); the gripper "joint" carries its command in x
        xyz = [
            [(tf.translation.x, tf.translation.y, tf.translation.z) for tf in pt.transforms]
            for pt in msg.points
        ]
        # (T, 3 * joints); T = 0 for the policy's hold (an empty chunk), bridged as such
        points = np.asarray(xyz, dtype=np.float64).reshape(len(msg.points), 3 * len(msg.joint_names))
        self.bridge.log_chunk(
            CARTESIAN_TOPIC, _stamp(msg.header), list(msg.joint_names), points, _dt(msg.points)
        )

    def _diag(self, topic: str, msg: DiagnosticArray) -> None:
        statuses = [
            {
                "name": s.name,
                "level": _level(s.level),
                "message": s.message,
                "values": {v.key: v.value for v in s.values},
            }
            for s in msg.status
        ]
        self.bridge.log_json(topic, _stamp(msg.header), {"status": statuses})


def _level(level: bytes | int) -> int:
    return level[0] if isinstance(level, bytes) else int(level)


def _dt(points) -> float:  # noqa: ANN001
    if len(points) < 2:
        return 0.0
    a, b = points[0].time_from_start, points[1].time_from_start
    return (b.sec - a.sec) + (b.nanosec - a.nanosec) * 1e-9


def main(args: list[str] | None = None) -> int:
    """`ros2 run dm1_ros foxglove_node` / `python -m dm1_ros.foxglove_node`."""
    node = None
    try:
        with stopped_by_signals(), init_ros("foxglove_node", args):  # Ctrl-C: see node_signals
            executor = SingleThreadedExecutor()  # before the node: see dm1_sim.twin_node.main
            node = FoxgloveNode()
            rclpy.spin(node, executor)
    except (ValueError, BridgeStartError) as exc:  # a bad setting, a taken port: one line, no traceback
        print(f"[foxglove_node] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if node is not None:
            node.bridge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
