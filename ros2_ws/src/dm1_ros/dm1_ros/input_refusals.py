"""Refused input messages of a node (undecodable images, impossible joint states): counted per stream and
logged at most once per `every_s` per stream, so a flood of bad messages cannot flood the log and one bad
stream cannot hide another's warnings. Untrusted text is escaped onto one short line."""

from __future__ import annotations

import time
from typing import Any

from dm1.control.chunk_refusals import one_line


class InputRefusals:
    """Per-stream counter and log throttle for refused input messages."""

    def __init__(self, logger: Any, every_s: float = 2.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self.counts: dict[str, int] = {}
        self._last_logged: dict[str, float] = {}  # stream -> monotonic time of its last warning

    def refuse(self, stream: str, reason: str) -> str:
        """Count a refused message of `stream`, warn if this stream has not warned for `every_s`; returns the
        one-line reason."""
        text = one_line(reason)
        self.counts[stream] = self.counts.get(stream, 0) + 1
        now = time.monotonic()
        if now - self._last_logged.get(stream, -self.every_s) >= self.every_s:
            self._last_logged[stream] = now
            self.logger.warning(text)
        return text
