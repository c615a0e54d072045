"""`ExecutorGate`: the controller node's callbacks and its home thread, serialised into one `ChunkExecutor`.

The controller node calls in from its ROS executor (chunks, hold requests, QoS events, control ticks, the
recover service) and from a side thread (the home service: a joint move that blocks for seconds). One lock
makes each call atomic. While a home move runs, chunks, holds, QoS events and ticks are skipped: the move owns
the arm, and a chunk must not start streaming under it (dropped chunks are counted, `dropped_homing`, and
logged). A home move pre-empts a running stream: the schedule is cleared and chunks stamped before the move
ended are refused (`ChunkExecutor.home`), so the arm never chases them afterwards; a commander still
publishing then drives the arm again with fresh chunks (`dm1 operator home` refuses while chunks run: stop the
commander first). `tick` and `stream_lost` say whether the executor's state changed, so the node publishes its
status only then.
"""

from __future__ import annotations

import logging
import threading

from dm1.control.chunk_sources import ChunkSource
from dm1.control.executor import ChunkExecutor
from dm1.control.schedule import TimedChunk

log = logging.getLogger(__name__)


class ExecutorGate:
    """One lock and the home-move gate around `executor` (see the module docstring)."""

    def __init__(self, executor: ChunkExecutor) -> None:
        self.executor = executor
        self._lock = threading.Lock()
        self._homing = False
        self._dropped = 0  # chunks dropped during the running home move

    @property
    def homing(self) -> bool:
        """Whether a home move is running (chunks, holds, QoS events and ticks are skipped)."""
        return self._homing

    def offer(self, chunk: TimedChunk, source: ChunkSource | None = None) -> str | None:
        """`ChunkExecutor.on_chunk`: "accepted" or the reason it was refused; None while homing (dropped:
        counted, the first of each move logged)."""
        with self._lock:
            if not self._homing:
                return self.executor.on_chunk(chunk, source=source)
            self.executor.counters["dropped_homing"] += 1
            self._dropped += 1
            if self._dropped == 1:
                log.warning("chunk dropped: a home move is running (the move owns the arm)")
            return None

    def hold(self, reason: str) -> None:
        """An explicit hold request (an empty chunk: the policy's inputs went stale); skipped while homing."""
        with self._lock:
            if not self._homing:
                self.executor.stop(reason)

    def count_malformed(self, reason: str) -> None:
        """Count a message that could not be converted to a chunk; skipped while homing."""
        with self._lock:
            if not self._homing:
                self.executor.count_malformed(reason)

    def stream_lost(self, counter: str, reason: str) -> bool:
        """A QoS event on the chunk topics (`ChunkExecutor.stream_lost`); whether the state changed."""
        with self._lock:
            if self._homing:
                return False
            before = self.executor.state
            self.executor.stream_lost(counter, reason)
            return self.executor.state != before

    def tick(self) -> bool:
        """One control tick (`ChunkExecutor.tick`), skipped while homing; whether the state changed."""
        with self._lock:
            if self._homing:
                return False
            before = self.executor.state
            return self.executor.tick().state != before

    def recover(self) -> str:
        """`ChunkExecutor.recover`: what it did ("recovered", or that no fault was latched); raises
        `RobotFault` with the reason it cannot."""
        with self._lock:
            return self.executor.recover()

    def home(self) -> None:
        """`ChunkExecutor.home`, blocking; it runs outside the lock (joint states and the status go on), with
        chunks, holds, QoS events and ticks skipped until it returns or raises."""
        with self._lock:
            self._homing, self._dropped = True, 0
        try:
            self.executor.home()
        finally:
            with self._lock:
                self._homing = False
                if self._dropped:
                    log.warning("home: %d chunk(s) dropped during the move", self._dropped)
