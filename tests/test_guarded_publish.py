"""`GuardedPublisher`: a failing publish drops the message, rests the publisher with a doubling backoff and
reports; it never raises into a node's timer (an uncaught RCLError ended a controller in a CI run)."""

from __future__ import annotations

import pytest
from conftest import FakeClock
from dm1_ros.guarded_publish import MAX_BACKOFF_S, GuardedPublisher, PublishGuards, node_warning


class FlakyPublisher:
    """Raises like rclpy's RCLError while `failing`; records what got through."""

    topic_name = "/joint_states"

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0
        self.sent: list[int] = []

    def publish(self, msg: int) -> None:
        self.calls += 1
        if self.failing:
            raise RuntimeError("Failed to publish: cannot publish data")
        self.sent.append(msg)


def test_a_failing_publisher_is_rested_with_a_doubling_backoff_and_recovers() -> None:
    clock, pub, warnings = FakeClock(), FlakyPublisher(), []
    guard = GuardedPublisher(pub, warnings.append, clock)
    assert guard.publish(1) is False and pub.calls == 1  # dropped, not raised
    assert warnings == [
        "publish on /joint_states failed (1x, resting 50 ms): Failed to publish: cannot publish data"
    ]
    clock.advance(0.04)
    assert guard.publish(2) is False and pub.calls == 1 and guard.skipped == 1  # resting: not even tried
    clock.advance(0.02)
    assert guard.publish(3) is False and pub.calls == 2  # tried again after 50 ms, failed: rests 100 ms now
    clock.advance(0.09)
    guard.publish(4)
    assert pub.calls == 2
    for _ in range(20):  # the backoff doubles up to its cap
        clock.advance(MAX_BACKOFF_S)
        guard.publish(5)
    assert guard._backoff_s == MAX_BACKOFF_S and guard.failures == 22 and len(warnings) == 2  # 1st and 10th
    pub.failing = False
    clock.advance(MAX_BACKOFF_S)
    assert guard.publish(6) and guard.publish(7) and pub.sent == [6, 7]  # a success resets the backoff


def test_publish_guards_keep_one_guard_per_publisher() -> None:
    a, b, warnings = FlakyPublisher(), FlakyPublisher(), []
    b.failing = False
    guards = PublishGuards(warnings.append)
    assert not guards.publish(a, 1) and guards.publish(b, 2) and guards.publish(b, 3)
    assert not guards.publish(a, 4) and a.calls == 1  # a rests; b is unaffected
    assert b.sent == [2, 3] and len(warnings) == 1


@pytest.mark.parametrize("exc", [RuntimeError("history full"), ValueError("bad message")])
def test_any_publish_error_is_caught(exc: Exception) -> None:
    class Broken:
        def publish(self, msg: object) -> None:
            raise exc

    warnings: list[str] = []
    assert GuardedPublisher(Broken(), warnings.append).publish(object()) is False
    assert "publish on ? failed (1x" in warnings[0]


def test_node_warning_is_silent_once_the_nodes_context_has_shut_down() -> None:
    # a timer that publishes while Ctrl-C ends the context fails with "publisher's context is invalid": not a
    # fault to report (and logging it would fail too, on /rosout)
    class Context:
        running = True

        def ok(self) -> bool:
            return self.running

    class Node:
        def __init__(self) -> None:
            self.context, self.logged = Context(), []

        def get_logger(self):
            return self

        def warning(self, message: str) -> None:
            self.logged.append(message)

    node = Node()
    guard = GuardedPublisher(FlakyPublisher(), node_warning(node))
    guard.publish(1)
    assert len(node.logged) == 1
    node.context.running = False
    for _ in range(9):  # the 10th failure would be reported
        guard._resume_at = -1.0
        guard.publish(2)
    assert guard.failures == 10 and len(node.logged) == 1
