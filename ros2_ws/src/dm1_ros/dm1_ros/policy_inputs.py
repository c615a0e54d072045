"""What the policy node subscribes to: its cameras and `/joint_states`, decoded into a `PolicySession`.

A frame or joint state that cannot be decoded (wrong encoding, missing joints) is logged (throttled) and
dropped: the stream then goes stale in the session, which holds the arm. Kept out of the node so that it stays
a thin lifecycle shell.
"""

from __future__ import annotations

from typing import Any

from dm1.policy import PolicySession
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from dm1_ros import conversions as cv


def subscribe_inputs(node: Node, session: PolicySession, joint_states_topic: str) -> list[Any]:
    """Subscribe `session` to its cameras' topics and `joint_states_topic`; returns the subscriptions."""
    log = node.get_logger()

    def on_image(name: str, msg: Image) -> None:
        try:
            session.on_image(name, cv.from_time_msg(msg.header.stamp), cv.msg_to_rgb(msg))
        except ValueError as exc:
            log.warning(f"camera {name!r}: {exc}", throttle_duration_sec=2.0)

    def on_joints(msg: JointState) -> None:
        try:
            q, width = cv.joint_state_to_arm(msg)
        except ValueError as exc:
            log.warning(str(exc), throttle_duration_sec=2.0)
            return
        session.on_joint_state(cv.from_time_msg(msg.header.stamp), q, width)

    qos = qos_profile_sensor_data  # best effort: matches reliable and best-effort camera drivers
    subs = [
        node.create_subscription(Image, topic, lambda m, n=name: on_image(n, m), qos)
        for name, topic in session.topics.items()
    ]
    subs.append(node.create_subscription(JointState, joint_states_topic, on_joints, qos))
    return subs
