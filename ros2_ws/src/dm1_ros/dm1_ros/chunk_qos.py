"""The action-chunk topics: their names, and the QoS deadline and liveliness on them (reliability row 15).

The policy node *offers* a deadline and a liveliness lease on its chunk publisher (`chunk_qos`). The
controller *requests* them on a second, watch-only subscription (`watch_chunk_stream`) beside its normal one,
so that a publisher that offers neither (a third-party policy, `ros2 topic pub`, a test) still drives the
robot through the normal subscription; for such a publisher the QoS watch is simply not matched, which is
logged once. Both durations run on the wall clock, whatever clock the nodes use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dm1.control.chunk_sources import ChunkSource
from dm1.control.parameters import CHUNK_DEADLINE_MS, CHUNK_LIVELINESS_LEASE_MS
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import LivelinessPolicy, QoSProfile

CARTESIAN_TOPIC = "/dm1/action_chunk/cartesian"  # trajectory_msgs/MultiDOFJointTrajectory (EE + gripper)
JOINT_TOPIC = "/dm1/action_chunk/joint"  # trajectory_msgs/JointTrajectory (arm joints + gripper)

#: on_lost(counter, reason): counter is "deadline_missed" or "liveliness_lost" (`ChunkExecutor.stream_lost`)
LostCallback = Callable[[str, str], None]


def chunk_qos(deadline_ms: float, lease_ms: float, depth: int = 10) -> QoSProfile:
    """Reliable, volatile, keep-last `depth`, with a deadline and an automatic liveliness lease (ms, wall
    clock; 0 = none: the DDS default, infinite)."""
    qos = QoSProfile(depth=depth)
    if deadline_ms > 0:
        qos.deadline = Duration(nanoseconds=int(deadline_ms * 1e6))
    if lease_ms > 0:
        qos.liveliness = LivelinessPolicy.AUTOMATIC
        qos.liveliness_lease_duration = Duration(nanoseconds=int(lease_ms * 1e6))
    return qos


def offered_chunk_qos() -> QoSProfile:
    """The default deadline and lease, for chunk publishers without parameters of their own (teleop)."""
    return chunk_qos(CHUNK_DEADLINE_MS, CHUNK_LIVELINESS_LEASE_MS)


def watch_chunk_stream(
    node: Node, msg_type: Any, topic: str, deadline_ms: float, lease_ms: float, on_lost: LostCallback
) -> Any | None:
    """Subscribe to `topic` with a requested deadline / liveliness lease (ms; 0 = not requested) only to
    receive the QoS events: a missed deadline, or a matched publisher whose liveliness lapsed, calls
    `on_lost`. The messages themselves are dropped (the node's normal subscription handles them). Returns the
    subscription, or None when neither is requested."""
    if deadline_ms <= 0 and lease_ms <= 0:
        return None
    log = node.get_logger()
    told = False  # said once that a publisher does not match the watch

    def deadline(event) -> None:
        on_lost("deadline_missed", f"no chunk on {topic} within its QoS deadline ({deadline_ms:g} ms)")

    def liveliness(event) -> None:
        if event.not_alive_count_change > 0:
            on_lost("liveliness_lost", f"the publisher of {topic} lost its QoS liveliness (killed or frozen)")

    def incompatible(event) -> None:
        nonlocal told
        if not told:  # once: the chunk watchdog still covers such a publisher
            told = True
            log.info(
                f"a publisher on {topic} offers no matching QoS deadline/liveliness (policy kind "
                f"{event.last_policy_kind}): only the chunk watchdog covers it"
            )

    events = SubscriptionEventCallbacks(
        deadline=deadline, liveliness=liveliness, incompatible_qos=incompatible
    )
    return node.create_subscription(
        msg_type, topic, lambda _msg: None, chunk_qos(deadline_ms, lease_ms), event_callbacks=events
    )


class ChunkPublishers:
    """Names the publisher of each chunk (`ChunkSource`) from its message info's GID, for `SourceGuard`.

    Node names come from the ROS graph, looked up once per new publisher (a GID the graph does not list yet
    is named by its GID and looked up again next time)."""

    def __init__(self, node: Node) -> None:
        self._node, self._names = node, {}

    def source(self, topic: str, info: dict) -> ChunkSource | None:
        """The chunk's publisher, or None when the middleware gives no GID (then nothing is checked)."""
        gid = (info.get("publisher_gid") or {}).get("data")
        if not gid:
            return None
        key = bytes(gid)
        if key not in self._names:
            for endpoint in self._node.get_publishers_info_by_topic(topic):
                name = f"{endpoint.node_namespace.rstrip('/')}/{endpoint.node_name}"
                self._names[bytes(endpoint.endpoint_gid)] = name
        return ChunkSource(key, self._names.get(key, f"publisher {key.hex()}"))
