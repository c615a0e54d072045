"""The Franka Hand on its own thread: `franky.Gripper` calls block (a grasp for up to seconds, a width read
~0.1 s), so the control loop only posts the wanted state and reads the cached width.

A lost link (libfranka's NetworkException) drops the connection; the worker connects again on its next poll
and logs each new error once, not on every poll.
"""

from __future__ import annotations

import logging
import threading

import franky

log = logging.getLogger(__name__)


class GripperWorker:
    """Owns `franky.Gripper`: applies the latest open/close request and caches the measured width."""

    def __init__(self, host: str, speed: float, force: float, open_width: float, poll_s: float = 0.1) -> None:
        self._host = host
        self._gripper: franky.Gripper | None = franky.Gripper(host)
        self._speed, self._force, self._open_width, self._poll_s = speed, force, open_width, poll_s
        self._wanted: bool | None = None
        self._applied: bool | None = None
        self.closed_cmd = False
        self.width = float(self._gripper.width)
        self.error: str | None = None
        self._event = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="dm1-gripper", daemon=True)
        self._thread.start()

    def request(self, close: bool) -> None:
        self.closed_cmd = bool(close)
        if self._wanted != close:
            self._wanted = bool(close)
            self._event.set()

    def _run(self) -> None:
        while not self._stop:
            self._event.wait(self._poll_s)
            self._event.clear()
            wanted = self._wanted
            try:
                if self._gripper is None:  # the link was lost: connect again (requests made meanwhile wait)
                    self._gripper = franky.Gripper(self._host)
                    self.error = None
                    log.info("gripper: connected again")
                if wanted is not None and wanted != self._applied:
                    self._applied = wanted
                    if wanted:
                        self._gripper.grasp(
                            0.0, self._speed, self._force, epsilon_inner=0.1, epsilon_outer=0.1
                        )
                    else:
                        self._gripper.move(self._open_width, self._speed)
                self.width = float(self._gripper.width)
            except Exception as exc:  # noqa: BLE001 - a gripper error is reported, never crashes the loop
                if isinstance(exc, franky.NetworkException):
                    self._gripper = None  # libfranka's connection does not survive a timeout
                error = f"gripper: {exc}"
                if error != self.error:  # once per new error, not every poll
                    log.warning("gripper command failed: %s", exc)
                self.error = error
        self._gripper = None  # libfranka's connection closes here, not at the interpreter's exit

    def close(self, timeout_s: float = 2.0) -> bool:
        """Stop the worker; never raises. False when it is still blocked in a franky call after `timeout_s`
        (a gripper server that accepts connections but no longer answers: a hung twin)."""
        self._stop = True
        self._event.set()
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()
