"""Helper processes for test_dead_peer_lock: `survivor` subscribes /clock and the flood topic; `victim`
floods that topic in a tight loop (so it is inside a push into the survivor's shared-memory port much of the
time)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import rclpy
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String

FLOOD_TOPIC = "/dm1_test/flood"


def main(role: str) -> None:
    rclpy.init()
    node = rclpy.create_node(f"dds_lock_{role}")
    if role == "survivor":
        node.create_subscription(Clock, "/clock", lambda _m: None, 10)
        node.create_subscription(String, FLOOD_TOPIC, lambda _m: None, 100)
        rclpy.spin(node)
    else:
        # the lowest CPU share for this process's session (its own autogroup): the flood must not starve the
        # twin, whose physics would then stand still for reasons other than a lock
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text("19")
        pub = node.create_publisher(String, FLOOD_TOPIC, 100)
        msg = String(data="x" * 64)
        while True:
            pub.publish(msg)


if __name__ == "__main__":
    main(sys.argv[1])
