"""The core's Python logging reaches the node's ROS logger (`dm1_ros.log_bridge`), level, time and node
named, instead of bare last-resort lines on stderr."""

from __future__ import annotations

import logging
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from dm1_ros.log_bridge import route_core_logging  # noqa: E402


def test_a_core_warning_is_a_ros_log_line_of_the_node_and_info_stays_out(ros_env, capfd) -> None:
    context = rclpy.Context()
    rclpy.init(context=context)
    core = logging.getLogger("dm1")
    node = rclpy.create_node("bridge_probe", context=context)
    handler = route_core_logging(node)
    try:
        logging.getLogger("dm1.control.executor").warning("chunk refused: %s", "older stamp")
        logging.getLogger("dm1.control.executor").info("holding: watchdog")
        logging.getLogger("dm1.control.franky_backend").error("robot fault latched: reflex")
        time.sleep(0.2)  # rcutils writes stderr itself; give it the moment it takes
        err = capfd.readouterr().err
        warn = next(line for line in err.splitlines() if "older stamp" in line)
        assert warn.startswith("[WARN]") and "[bridge_probe]" in warn
        assert "dm1.control.executor: chunk refused: older stamp" in warn
        assert any(line.startswith("[ERROR]") and "reflex" in line for line in err.splitlines())
        assert "holding: watchdog" not in err
        assert err.count("older stamp") == 1  # not a second, bare copy through Python's last resort
    finally:
        core.removeHandler(handler)
        core.propagate = True
        node.destroy_node()
        rclpy.shutdown(context=context)
