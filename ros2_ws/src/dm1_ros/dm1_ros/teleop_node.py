"""`teleop_node`: device → end-effector targets at the control rate → `/dm1/action_chunk/cartesian`, and the
episode recorder (cameras + joint states + commanded actions → one HDF5 file per episode).

Targets go through the same controller node and safety limits as the policy. Deadman: no fresh device input
within `deadman_timeout_s` → nothing is published (the controller holds) and the target is frozen. Episode
control by device keys and by `std_srvs/Trigger` services `~/start`, `~/stop_save`, `~/discard`,
`~/mark_success`, `~/mark_failure`. `~/status` (std_msgs/String, JSON) reports the session state. A fault
the controller reports discards the open episode and holds (`TeleopLoop.on_controller`).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from dm1.control.executor import STATUS_TOPIC
from dm1.kinematics import fr3_fk
from dm1.teleop.device_interface import DeviceContext
from dm1.teleop.devices import JoyDevice
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState, Joy
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dm1_ros.chunk_qos import CARTESIAN_TOPIC, offered_chunk_qos
from dm1_ros.conversions import (
    checked_seconds,
    controller_faults,
    joint_state_to_arm,
    msg_to_rgb,
)
from dm1_ros.guarded_publish import GuardedPublisher, node_warning
from dm1_ros.input_refusals import InputRefusals
from dm1_ros.node_signals import run_node
from dm1_ros.params import freeze_parameters
from dm1_ros.teleop_params import declare_parameters
from dm1_ros.teleop_setup import build_loop, held_target_chunk, mirror_raw_topics


class TeleopNode(Node):
    """Thin ROS shell around `dm1.teleop.loop.TeleopLoop`."""

    def __init__(self) -> None:
        super().__init__("teleop")
        freeze_parameters(self, ("use_sim_time",))  # its timers and stamps: one clock for the whole run
        self.p = p = declare_parameters(self)
        self.loop = build_loop(p)
        self.device, self.cfg, mirror = self.loop.device, self.loop.config, self.loop.mirror
        if problem := self.loop.check_dataset():  # out_dir holds another dataset: say so now, not at start
            self._log(problem, error=True)
        self.q, self.width, self.cube = None, None, None  # joints (7,), gripper width m, object position (3,)
        self.refusals = InputRefusals(self.get_logger())  # undecodable camera / joint messages, per stream
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        for cam in p["cameras"]:
            topic = f"/camera/{cam}/color/image_raw"
            self.create_subscription(Image, topic, lambda m, c=cam: self._on_image(c, m), reliable)
        self.create_subscription(JointState, "/joint_states", self._on_joints, 10)
        self.create_subscription(PoseStamped, p["cube_topic"], self._on_cube, 10)
        self.create_subscription(Joy, p["joy_topic"], self._on_joy, 10)
        self.create_subscription(DiagnosticArray, STATUS_TOPIC, self._on_controller, 10)
        # offering the QoS the controller watches (dm1_ros.chunk_qos)
        warn = node_warning(self)  # a failing publish drops the message, never raises
        chunks = self.create_publisher(MultiDOFJointTrajectory, CARTESIAN_TOPIC, offered_chunk_qos())
        self.chunk_pub = GuardedPublisher(chunks, warn)
        self.status_pub = GuardedPublisher(self.create_publisher(String, "~/status", 10), warn)
        for name in ("start", "stop_save", "discard", "mark_success", "mark_failure"):
            self.create_service(Trigger, f"~/{name}", lambda rq, rs, n=name: self._on_event(n, rs))
        self.create_timer(1.0 / p["control_rate_hz"], self._tick)
        if mirror is not None:  # raw CDR bytes straight into the episode's MCAP file
            mirror_raw_topics(self, mirror, p["cameras"], reliable)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, cam: str, msg: Image) -> None:
        try:
            rgb, stamp = msg_to_rgb(msg), checked_seconds(msg.header.stamp, "header.stamp")
        except ValueError as exc:  # dropped: the recorder's inputs go stale and its QA counts it
            self.refusals.refuse(cam, f"camera {cam!r}: {exc}")
            return
        if self.loop.recorder is not None:
            self.loop.recorder.on_image(cam, rgb, stamp, self.now())

    def _on_joints(self, msg: JointState) -> None:
        try:
            (q, width), stamp = joint_state_to_arm(msg), checked_seconds(msg.header.stamp, "header.stamp")
        except ValueError as exc:
            self.refusals.refuse("joint_states", str(exc))
            return
        self.q, self.width = q, width
        if self.loop.recorder is not None:
            self.loop.recorder.on_joint_state(q, width, stamp, self.now())

    def _on_cube(self, msg: PoseStamped) -> None:
        self.cube = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])

    def _on_joy(self, msg: Joy) -> None:
        if isinstance(self.device, JoyDevice):
            self.device.push(list(msg.axes), list(msg.buttons), self.now())

    def _on_controller(self, msg: DiagnosticArray) -> None:
        for fault in controller_faults(msg):
            if line := self.loop.on_controller(fault, self.now()):
                self.get_logger().error(line)

    def _on_event(self, name: str, response: Trigger.Response) -> Trigger.Response:
        try:
            response.message, response.success = self.loop.event(name, self.now()), True
        except Exception as exc:  # SessionError / RecorderError: refuse with the reason, keep running
            response.message, response.success = self.loop.fail(exc, self.now()), False
        self._log(response.message, error=not response.success)
        return response

    def _log(self, message: str, error: bool) -> None:
        """ERROR or INFO from two call sites: rclpy raises (ValueError, which ended this node) when one call
        site logs at a severity other than its first call's."""
        if error:
            self.get_logger().error(message)
        else:
            self.get_logger().info(message)

    def _tick(self) -> None:
        now, opened = self.now(), self.loop.open_device(time.monotonic())
        if opened:
            self._log(opened, error=opened.startswith("error"))
        if not self.loop.device_open or now <= 0.0:
            return
        ee = None if self.q is None else fr3_fk(self.q)[0]
        ctx = DeviceContext(now, 1.0 / self.cfg.control_rate_hz, ee, self.width, self.cube)
        result = self.loop.step(ctx)
        for m in result.messages:
            self._log(m, error=m.startswith("error"))
        if result.action is not None:
            chunk = held_target_chunk(result.action, now, ctx.dt, self.p["lead_s"], self.p["chunk_points"])
            self.chunk_pub.publish(chunk)
        status = {**self.loop.status(now), "refused_inputs": self.refusals.counts, "pid": os.getpid()}
        self.status_pub.publish(String(data=json.dumps(status)))


def main(args: list[str] | None = None) -> int:
    """Run the teleop node until SIGINT/SIGTERM; an open episode stays `.partial` (`TeleopLoop.shutdown`)."""
    return run_node("teleop_node", args, TeleopNode, close=lambda node: node.loop.shutdown())


if __name__ == "__main__":
    sys.exit(main())
