"""`dm1 operator drill`: start a fault drill on the running policy and judge the arm's hold (no `ros2` CLI).

Records `/joint_states` (the fastest arm joint, stamped in node time: simulation time on the twin), sets the
policy node's `drill` and `drill_duration_s` parameters in one atomic call, and judges the hold with
`dm1.policy.drill.analyze_hold`. The drill's start is the policy's own clock (the reply names it).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
from dm1.policy.drill import DEFAULT_STALL_S, LATCHING_DRILLS, HoldReport, analyze_hold
from rcl_interfaces.srv import GetParameters, SetParametersAtomically
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from dm1_ros.conversions import ARM_JOINTS, from_time_msg
from dm1_ros.lifecycle_client import LifecycleClient
from dm1_ros.operator_actions import controller_status
from dm1_ros.service_calls import call_service, spin_step

BEFORE_S = 0.5  # joint states recorded before the drill (how fast the arm moved)
AFTER_S = 1.0  # and after it (whether the policy moves the arm again)


class SpeedRecorder:
    """(stamp, fastest arm joint |dq|) from `/joint_states`."""

    def __init__(self, node: Node, topic: str = "/joint_states") -> None:
        self.stamps: list[float] = []
        self.speeds: list[float] = []
        self.sub = node.create_subscription(JointState, topic, self._on_state, 50)

    def _on_state(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        if len(msg.velocity) != len(msg.name) or any(n not in index for n in ARM_JOINTS):
            return  # no velocities: nothing to judge by
        self.stamps.append(from_time_msg(msg.header.stamp))
        self.speeds.append(float(np.max(np.abs([msg.velocity[index[n]] for n in ARM_JOINTS]))))

    def wait_until(self, node: Node, stamp: float, wall_timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + wall_timeout_s
        while not self.stamps or self.stamps[-1] < stamp:
            if time.monotonic() > deadline:
                last = f"{self.stamps[-1]:.3f}" if self.stamps else "none"
                raise TimeoutError(f"/joint_states: {what} (stamp {stamp:.3f}) not reached, last {last}")
            spin_step(node)


def policy_cameras(node: Node, policy_node: str, timeout_s: float) -> list[str]:
    """The camera names of the policy's model: its `model_dir` parameter → `model_card.json` (this PC)."""
    from dm1.modelcard import load_card

    client = node.create_client(GetParameters, f"/{policy_node}/get_parameters")
    reply = call_service(node, client, GetParameters.Request(names=["model_dir"]), timeout_s, what="cameras")
    card = Path(reply.values[0].string_value) / "model_card.json"
    try:
        return load_card(card).camera_names
    except (OSError, ValueError) as exc:  # the policy runs on another PC: its path means nothing here
        raise ValueError(
            f"{card}: the policy's model card is not readable here ({exc}); name each drill"
        ) from None


def standard_drills(cameras: list[str]) -> list[str]:
    """`--drill all`: every kind that ends by itself (not `LATCHING_DRILLS`), a frozen camera per camera."""
    return [
        "nan_output",
        "silence",
        f"stall_inference:{DEFAULT_STALL_S:g}",
        *(f"freeze_camera:{c}" for c in cameras),
    ]


def run_drill(
    node: Node,
    spec: str,
    duration_s: float = 1.0,
    max_hold_s: float = 0.5,
    still_speed: float = 0.02,
    timeout_s: float = 10.0,
    policy_node: str = "policy_node",
) -> tuple[bool, str, HoldReport | None]:
    """Run drill `spec` on an active policy; returns (passed, message, report).

    Passed: the arm moved before the drill and stood still within `max_hold_s` for the rest of it; after a
    `LATCHING_DRILLS` one the controller must also report a latched fault (the operator then recovers).
    Raises TimeoutError when the policy or the joint states do not answer within the bounds.
    """
    lifecycle = LifecycleClient(policy_node, node=node, timeout_s=timeout_s)
    if not lifecycle.available(timeout_s):
        raise TimeoutError(f"{policy_node}: its lifecycle services did not appear: is the policy running?")
    if (state := lifecycle.get_state()) != "active":
        return (
            False,
            f"drill refused: {policy_node} is {state}; drills run while the policy drives the arm",
            None,
        )
    recorder = SpeedRecorder(node)
    recorder.wait_until(node, -np.inf, timeout_s, "a first joint state")
    recorder.wait_until(node, recorder.stamps[0] + BEFORE_S, timeout_s + 10 * BEFORE_S, "the baseline")
    client = node.create_client(SetParametersAtomically, f"/{policy_node}/set_parameters_atomically")
    params = [Parameter("drill_duration_s", value=float(duration_s)), Parameter("drill", value=spec)]
    request = SetParametersAtomically.Request(parameters=[p.to_parameter_msg() for p in params])
    result = call_service(node, client, request, timeout_s, what="drill").result
    if not result.successful:
        return False, f"drill refused by {policy_node}: {result.reason}", None
    started = float(match.group(1)) if (match := re.search(r"started=([0-9.]+)", result.reason)) else None
    started = recorder.stamps[-1] if started is None else started
    end = started + duration_s + AFTER_S
    recorder.wait_until(node, end, timeout_s + 10 * (duration_s + AFTER_S), "the drill's end")
    node.destroy_subscription(recorder.sub)
    report = analyze_hold(
        recorder.stamps,
        recorder.speeds,
        spec,
        started,
        duration_s,
        still_speed=still_speed,
        max_hold_s=max_hold_s,
    )
    passed, message = report.held and report.conclusive, report.summary()
    if spec.partition(":")[0] in LATCHING_DRILLS:
        status = controller_status(node, timeout_s)
        latched = status.get("state") == "fault"
        passed = passed and latched
        message += (
            f"; controller fault latched ({status['message']}): `dm1 operator recover`, then `activate`"
            if latched
            else f"; NO controller fault latched (state {status.get('state', '?')})"
        )
    return passed, message, report
