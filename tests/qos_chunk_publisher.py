"""A chunk publisher that offers a QoS liveliness lease (`dm1_ros.chunk_qos`), for tests/test_chunk_qos.py.

Usage: python qos_chunk_publisher.py X Y Z LEASE_MS. Publishes, every 50 ms (wall clock), a 4 s Cartesian
chunk moving the EE from (X, Y, Z) along +y at 5 cm/s, stamped with the wall clock, until it is killed.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from dm1.control.backend import TOP_DOWN_XYZW
from dm1.policy.step import ActionChunk
from dm1.teleop.recorder import EE_ACTION_NAMES
from dm1_ros.chunk_qos import chunk_qos
from dm1_ros.conversions import chunk_to_multidof_trajectory
from trajectory_msgs.msg import MultiDOFJointTrajectory

CHUNK_S, DT, SPEED = 4.0, 0.05, 0.05


def chunk(p0: np.ndarray, t0: float, now: float) -> MultiDOFJointTrajectory:
    """4 s of points from `now`: the EE at 5 cm/s along +y from p0 (where it is at t0), gripper open."""
    times = now + np.arange(int(CHUNK_S / DT)) * DT  # (N,)
    xyz = p0 + np.outer(SPEED * (times - t0), [0.0, 1.0, 0.0])  # (N, 3)
    acts = np.column_stack([xyz, np.zeros(len(times))])  # (N, 4) [x, y, z, gripper]
    return chunk_to_multidof_trajectory(
        ActionChunk(now, DT, acts, 0, now, "ee_position", EE_ACTION_NAMES), TOP_DOWN_XYZW
    )


def main() -> None:
    p0, lease_ms = np.array([float(v) for v in sys.argv[1:4]]), float(sys.argv[4])
    rclpy.init()
    node = rclpy.create_node("qos_chunk_publisher")
    pub = node.create_publisher(
        MultiDOFJointTrajectory, "/dm1/action_chunk/cartesian", chunk_qos(0.0, lease_ms)
    )
    t0 = time.time()
    while True:
        pub.publish(chunk(p0, t0, time.time()))
        time.sleep(DT)


if __name__ == "__main__":
    main()
