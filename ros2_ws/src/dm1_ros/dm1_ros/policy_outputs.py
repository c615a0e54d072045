"""What the policy node publishes: chunks (or an explicit hold), the per-chunk latency ledger, the predicted
path's markers and its `/diagnostics` status. Kept out of the node so that it stays a thin lifecycle shell."""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from dm1.policy import PolicySession
from rclpy.lifecycle import LifecycleNode
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory
from visualization_msgs.msg import MarkerArray

from dm1_ros import conversions as cv
from dm1_ros.chunk_markers import chunk_to_markers, clear_markers
from dm1_ros.chunk_qos import CARTESIAN_TOPIC, JOINT_TOPIC, chunk_qos
from dm1_ros.guarded_publish import PublishGuards, node_warning

# the `/diagnostics` level of each tick kind (`dm1.policy.step.KINDS`, "drill"); any other: error
LEVEL = {"ok": "ok", "executing": "ok"} | dict.fromkeys(("stale", "recovering", "late", "drill"), "warn")


class PolicyOutputs:
    """The node's publishers. `/diagnostics` and the ledger exist for the node's life; the chunk and marker
    publishers (lifecycle: silent while inactive) from `open` (configure) to `close` (cleanup)."""

    def __init__(self, node: LifecycleNode) -> None:
        self.node = node
        self._diag = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._ledger = node.create_publisher(DiagnosticArray, "/dm1/policy/ledger", 50)  # one per chunk
        self._chunks: Any = None
        self._markers: Any = None
        self._chunk_type: type = MultiDOFJointTrajectory
        self._last_diag, self._last_kind = -1.0, ""
        self._publish_guards = PublishGuards(node_warning(node))  # a failing publish drops, never raises

    def open(self, cartesian: bool, deadline_ms: float, lease_ms: float) -> str:
        """Create the chunk publisher (offering the QoS the controller watches) and the markers'; returns the
        chunk topic."""
        self._chunk_type = MultiDOFJointTrajectory if cartesian else JointTrajectory
        topic = CARTESIAN_TOPIC if cartesian else JOINT_TOPIC
        offered = chunk_qos(deadline_ms, lease_ms)
        self._chunks = self.node.create_lifecycle_publisher(self._chunk_type, topic, offered)
        self._markers = self.node.create_lifecycle_publisher(MarkerArray, "/dm1/predicted_path", 10)
        return topic

    def close(self) -> None:
        """Destroy the publishers `open` created (also after an `open` that failed half-way)."""
        for publisher in (self._chunks, self._markers):
            if publisher is not None:
                self.node.destroy_lifecycle_publisher(publisher)
        self._chunks = self._markers = None

    def publish_hold(self, why: str, now: float) -> None:
        """An explicit hold (a chunk without points, `frame_id` "policy: <why>"): the controller holds at once
        instead of running the last chunk until its watchdog. Only while the publisher is active."""
        if self._chunks is None:
            return
        hold = self._chunk_type()
        hold.header.stamp, hold.header.frame_id = cv.to_time_msg(now), f"policy: {why}"
        self._publish_guards.publish(self._chunks, hold)

    def clear_path(self) -> None:
        self._publish_guards.publish(self._markers, clear_markers())

    def publish_tick(self, session: PolicySession, out: Any, now: float) -> None:
        """One tick's output (`PolicySession.tick`): its chunk, ledger (inferred chunks only, not the rest of
        one re-sent by `chunk_then_replan`) and markers; an explicit hold (a chunk without points) when the
        inputs went stale or are still recovering, the output was not finite or it came too late."""
        if out.chunk is not None:
            self._publish_guards.publish(
                self._chunks, cv.chunk_to_msg(out.chunk, session.card.action.orientation_xyzw)
            )
            ledger = session.step.mark_published(out)
            if ledger is not None:
                values = ledger.to_dict()
                status = cv.diagnostic_status("dm1/policy_node/ledger", "ok", "ms since capture", values)
                self._publish_guards.publish(self._ledger, cv.diagnostic_array(now, [status]))
            self._publish_guards.publish(
                self._markers, chunk_to_markers(out.chunk, lifetime_s=2 * session.period_s)
            )
        elif out.kind not in ("executing", "drill"):  # hold now, before the controller's watchdog would
            # (a `silence` drill publishes nothing: the watchdog and the QoS deadline must hold the arm)
            self.publish_hold(out.kind, now)
            self.node.get_logger().warning(f"no chunk: {out.reason}", throttle_duration_sec=2.0)
        # every step of a recovery is reported ("recovering k/N"), else a change of kind (or once a second)
        changed, self._last_kind = out.kind != self._last_kind or out.kind == "recovering", out.kind
        self.diagnose(session, out.kind, out.reason or "publishing chunks", now, force=changed)

    def diagnose(
        self, session: PolicySession | None, kind: str, message: str, now: float, force: bool = False
    ) -> None:
        """`/diagnostics`: on a change of kind (`force`), else at most once a second."""
        if force or now - self._last_diag >= 1.0 or now < self._last_diag:
            self._last_diag = now
            values = session.diagnostic_values() if session else {}
            status = cv.diagnostic_status("dm1/policy_node", LEVEL.get(kind, "error"), message, values)
            self._publish_guards.publish(self._diag, cv.diagnostic_array(now, [status]))
