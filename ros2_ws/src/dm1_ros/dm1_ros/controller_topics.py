"""The controller node's topics: `/joint_states`, its status and the safety box out, the action chunks in.

Kept out of `dm1_ros.controller_node` so that the node stays a thin shell. The joint-state and status
publishers are guarded (a failing publish, e.g. a DDS writer stuck on a dead peer, drops the message and
rests: it never raises); the chunk topics are subscribed twice each, once for the chunks and once, watch-only,
for their QoS deadline and liveliness events (`dm1_ros.chunk_qos`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from dm1.control.executor import STATUS_NAME, STATUS_TOPIC, ExecutorStatus
from dm1.control.limits import SafetyLimits
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory
from visualization_msgs.msg import MarkerArray

from dm1_ros.chunk_markers import safety_box_markers
from dm1_ros.chunk_qos import CARTESIAN_TOPIC, JOINT_TOPIC, LostCallback, watch_chunk_stream
from dm1_ros.conversions import diagnostic_array, diagnostic_status
from dm1_ros.guarded_publish import GuardedPublisher, node_warning


def controller_publishers(node: Node, limits: SafetyLimits) -> tuple[GuardedPublisher, GuardedPublisher, Any]:
    """`/joint_states` and the status publisher (both guarded), and the latched `/dm1/safety_box` publisher
    for rviz, which publishes `limits`' workspace box once, here."""
    # a failing publish (a DDS writer stuck on a dead peer) drops the message and rests: never raises
    warn = node_warning(node)
    js_pub = GuardedPublisher(node.create_publisher(JointState, "/joint_states", 10), warn)
    status_pub = GuardedPublisher(node.create_publisher(DiagnosticArray, STATUS_TOPIC, 10), warn)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    box_pub = node.create_publisher(MarkerArray, "/dm1/safety_box", latched)  # for rviz
    box_pub.publish(safety_box_markers(limits.workspace_min, limits.workspace_max))
    return js_pub, status_pub, box_pub


def subscribe_chunks(
    node: Node,
    on_chunk: Callable[..., None],
    on_stream_lost: LostCallback,
    deadline_ms: float,
    lease_ms: float,
) -> None:
    """Subscribe `on_chunk(msg, info, topic=...)` to both chunk topics, and watch each for a missed QoS
    deadline or a lapsed liveliness (ms, wall clock; 0 = not requested), which calls `on_stream_lost`."""
    for msg_type, topic in ((MultiDOFJointTrajectory, CARTESIAN_TOPIC), (JointTrajectory, JOINT_TOPIC)):
        node.create_subscription(msg_type, topic, partial(on_chunk, topic=topic), 10)
        watch_chunk_stream(node, msg_type, topic, deadline_ms, lease_ms, on_stream_lost)


def status_message(st: ExecutorStatus, stamp: float) -> DiagnosticArray:
    """The executor's status `st` as the controller's `/dm1/controller/status` message, stamped `stamp` s."""
    diag = diagnostic_status(STATUS_NAME, st.level, st.fault or st.state, st.values())
    return diagnostic_array(stamp, [diag])
