"""The core's Python `logging` (the ROS-free `dm1` package) into a node's ROS logger.

Without it, a warning of `dm1.control` reached the terminal as a bare line ("chunk older_stamp") through
Python's last-resort handler: no level, time or node, and not in /rosout. Warnings and above only, as before:
the core's info lines (every hold) stay out of the terminal.
"""

from __future__ import annotations

import logging
from typing import Any


class RosLogHandler(logging.Handler):
    """Forwards each record to `ros_logger` at its level (error and critical as error)."""

    def __init__(self, ros_logger: Any, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {self.format(record)}"
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never take the node down
            self.handleError(record)


def route_core_logging(node: Any, logger_name: str = "dm1") -> RosLogHandler:
    """Send `logger_name`'s records (warnings and above) to `node`'s ROS logger; returns the handler."""
    handler = RosLogHandler(node.get_logger())
    core = logging.getLogger(logger_name)
    for old in [h for h in core.handlers if isinstance(h, RosLogHandler)]:
        core.removeHandler(old)  # one bridge: the node made last (a process runs one node of dm1's)
    core.addHandler(handler)
    core.propagate = False  # not a second, bare copy through the last-resort handler
    return handler
