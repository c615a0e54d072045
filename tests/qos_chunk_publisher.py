"""A chunk publisher that offers a QoS liveliness lease (`dm1_ros.chunk_qos`), for tests/test_chunk_qos.py.

Usage: python qos_chunk_publisher.py X Y Z LEASE_MS. Publishes, every 50 ms (wall clock), a 4 s Cartesian
chunk moving the EE from (X, Y, Z) along +y at 5 cm/s, stamped with the wall clock, until it is killed.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from dm1_ros.chunk_qos import chunk_qos
from dm1_ros.conversions import to_duration_msg, to_time_msg
from geometry_msgs.msg import Quaternion, Transform, Vector3
from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

CHUNK_S, DT, SPEED = 4.0, 0.05, 0.05


def chunk(p0: np.ndarray, t0: float, now: float) -> MultiDOFJointTrajectory:
    msg = MultiDOFJointTrajectory(joint_names=["fr3_hand_tcp", "gripper"])
    msg.header.stamp = to_time_msg(now)
    for i in range(int(CHUNK_S / DT)):
        x, y, z = p0 + np.array([0.0, SPEED * (now + i * DT - t0), 0.0])
        ee = Transform(translation=Vector3(x=x, y=y, z=z), rotation=Quaternion(x=1.0, y=0.0, z=0.0, w=0.0))
        pt = MultiDOFJointTrajectoryPoint(transforms=[ee, Transform(translation=Vector3(x=0.0))])
        pt.time_from_start = to_duration_msg(i * DT)
        msg.points.append(pt)
    return msg


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
