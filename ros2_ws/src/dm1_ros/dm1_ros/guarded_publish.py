"""Publishing that can neither kill nor freeze a node: failures are counted, logged and backed off.

Fast DDS's `write()` fails ("cannot publish data") when a reliable writer's history stays full, e.g. while its
asynchronous sender waits on the shared-memory lock of a peer killed mid-push (1 s per lock). rclpy raises
that as an `RCLError`, and it calls `write()` with the GIL held, so a node that publishes on every timer tick
blocks all of its Python threads once per tick for as long as the sender is stuck: the twin's physics (and
franky-sim's 1 kHz libfranka exchange) stood still 3 s in one CI run, and an uncaught error ended a
controller.
`GuardedPublisher` catches the error, drops that message, and rests the publisher for a backoff that doubles
from 50 ms to 1 s while failures repeat (reset by the next success), so the process keeps running between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0


def node_warning(node: Any) -> Callable[[str], None]:
    """`node`'s logger at warning level, silent once its context has shut down: a publish that fails because
    Ctrl-C ended the context while a timer still ran is not a fault (nor could it be logged to /rosout)."""

    def warn(message: str) -> None:
        if node.context.ok():
            node.get_logger().warning(message)

    return warn


class GuardedPublisher:
    """Wraps an rclpy publisher: `publish(msg)` returns False (message dropped) instead of raising.

    Args:
        publisher: anything with `publish(msg)` and `topic_name`.
        warn: where to report failures (the 1st, 10th, 100th and every 1000th).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self, publisher: Any, warn: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.publisher, self.warn, self.clock = publisher, warn, clock
        self.failures = 0
        self.skipped = 0  # messages dropped while resting after a failure
        self._backoff_s = 0.0
        self._resume_at = -float("inf")

    def publish(self, msg: Any) -> bool:
        """Publish `msg`; False when it was dropped (the publisher failed, or is resting after a failure)."""
        now = self.clock()
        if now < self._resume_at:
            self.skipped += 1
            return False
        try:
            self.publisher.publish(msg)
        except Exception as exc:  # noqa: BLE001 - rclpy's RCLError (and any other failure): drop, never die
            self.failures += 1
            self._backoff_s = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, 2.0 * self._backoff_s))
            self._resume_at = self.clock() + self._backoff_s
            if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                topic = getattr(self.publisher, "topic_name", "?")
                rest_ms = 1000 * self._backoff_s
                self.warn(f"publish on {topic} failed ({self.failures}x, resting {rest_ms:.0f} ms): {exc}")
            return False
        self._backoff_s = 0.0
        return True


class PublishGuards:
    """One `GuardedPublisher` per publisher, made on first use: `publish(pub, msg)` for nodes with many."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self._guards: dict[int, GuardedPublisher] = {}

    def publish(self, publisher: Any, msg: Any) -> bool:
        """`GuardedPublisher.publish` on `publisher`'s guard."""
        guard = self._guards.get(id(publisher))
        if guard is None:
            guard = self._guards[id(publisher)] = GuardedPublisher(publisher, self.warn)
        return guard.publish(msg)
