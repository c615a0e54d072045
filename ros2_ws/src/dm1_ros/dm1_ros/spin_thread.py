"""An rclpy executor spun on a background thread, and stopped without crashing the process.

`Executor.shutdown()` called from another thread while `Executor.spin()` waits does not wait for the
spinning thread (this rclpy: it sets its shut-down flag and then skips its own wait for outstanding work);
it destroys the guard condition that thread is waiting on. The process then segfaults: the controller
node died with -11 in 3 of 16 stops right after its start. `SpinThread` spins in short `spin_once`
steps until asked to stop, and joins the thread before it shuts the executor down.
"""

from __future__ import annotations

import threading

from rclpy.executors import Executor, ExternalShutdownException, ShutdownException


class SpinThread:
    """Spin `executor` on a daemon thread until `stop()`.

    Args:
        executor: the executor (its nodes already added).
        name: the thread's name.
        step_s: longest wait of one `spin_once`: how soon `stop()` is seen.
    """

    def __init__(self, executor: Executor, name: str = "ros-spin", step_s: float = 0.1) -> None:
        self.executor = executor
        self.step_s = step_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> SpinThread:
        """Start spinning; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=self.step_s)
            except (ExternalShutdownException, ShutdownException):
                return  # the context or the executor was shut down

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop spinning, join the thread, then shut the executor down. Returns False (and leaves the
        executor alone, for the process exit to reclaim) when a callback still runs after `timeout_s`."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            return False
        self.executor.shutdown()
        return True
