"""What the policy node subscribes to: its cameras and `/joint_states`, decoded into a `PolicySession`.

A frame or joint state that cannot be decoded (wrong encoding, missing or repeated joints, an invalid stamp)
is counted and named in the session's stale reason (so `/diagnostics` says why the stream is stale), logged
(at most once per 2 s per stream, so one bad camera cannot hide another) and dropped: the stream then goes
stale in the session, which holds the arm. Kept out of the node so that it stays a thin lifecycle shell.
"""

from __future__ import annotations

from typing import Any

from dm1.policy import PolicySession
from dm1.policy.observation import JOINT_STREAM
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from dm1_ros import conversions as cv
from dm1_ros.input_refusals import InputRefusals


def subscribe_inputs(node: Node, session: PolicySession, joint_states_topic: str) -> list[Any]:
    """Subscribe `session` to its cameras' topics and `joint_states_topic`; returns the subscriptions."""
    refusals = InputRefusals(node.get_logger())

    def refuse(stream: str, exc: Exception) -> None:
        text = str(exc) if stream == JOINT_STREAM else f"camera {stream!r}: {exc}"
        session.on_bad_input(stream, refusals.refuse(stream, text))

    def on_image(name: str, msg: Image) -> None:
        try:
            stamp = cv.checked_seconds(msg.header.stamp, "header.stamp")
            session.on_image(name, stamp, cv.msg_to_rgb(msg))
        except ValueError as exc:
            refuse(name, exc)

    def on_joints(msg: JointState) -> None:
        try:
            stamp = cv.checked_seconds(msg.header.stamp, "header.stamp")
            q, width = cv.joint_state_to_arm(msg)
        except ValueError as exc:
            refuse(JOINT_STREAM, exc)
            return
        session.on_joint_state(stamp, q, width)

    qos = qos_profile_sensor_data  # best effort: matches reliable and best-effort camera drivers
    subs: list[Any] = []
    try:
        for name, topic in session.topics.items():
            subs.append(node.create_subscription(Image, topic, lambda m, n=name: on_image(n, m), qos))
        subs.append(node.create_subscription(JointState, joint_states_topic, on_joints, qos))
    except Exception:  # a topic name ROS cannot use: none of them stays subscribed
        for sub in subs:
            node.destroy_subscription(sub)
        raise
    return subs
