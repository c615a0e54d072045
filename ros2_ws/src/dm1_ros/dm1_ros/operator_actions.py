"""Operator actions on a running dm1 graph, for hosts with or without the `ros2` CLI (`dm1 operator`).

    status      the controller's state (and latched fault) and the policy node's lifecycle state
    home        `/dm1/controller/home` (refused while a fault is latched)
    recover     `/dm1/controller/recover`: clears a latched fault; the arm stays still (policy inactive)
    activate    the policy node's lifecycle `activate` (refused while the controller reports a fault)
    deactivate  the policy node's lifecycle `deactivate`: the controller's watchdog holds the arm
                (both idempotent: a policy already in that state is left alone, exit code 0)
    drill       a fault drill in the active policy, judged from /joint_states (`dm1_ros.fault_drill`)

Every call is bounded; an unreachable graph is a TimeoutError naming the service or topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from dm1.commands.operator import ACTIONS
from dm1.control.executor import ACTIVE, STATUS_TOPIC
from rclpy.node import Node
from std_srvs.srv import Trigger

from dm1_ros.conversions import diagnostic_values
from dm1_ros.lifecycle_client import LifecycleClient
from dm1_ros.service_calls import call_service, spin_step

POLICY_WAIT_S = 3.0  # `status`, `home`: how long to wait for a policy that is not in the graph's node names
POLICY_POLL_S = 0.25  # `policy_available`: how often it looks for the services (and the node names)
HOME_WAIT_S = 60.0  # a home move is bounded by the controller (40 s, then stopped and latched)
COMMAND_REPORTS = 4  # `home`: status reports read to tell whether someone commands the arm (10 Hz: 0.3 s)
TARGET_STATES = {"activate": "active", "deactivate": "inactive"}  # the lifecycle state each action reaches
STABLE_STATES = ("unconfigured", "inactive", "active", "finalized")  # the others are transitions under way


@dataclass
class ActionResult:
    """Whether the action succeeded, what to tell the operator, and (`status`) the values behind it."""

    ok: bool
    message: str
    values: dict[str, Any] = field(default_factory=dict)  # `dm1 operator status --json`


def controller_reports(node: Node, timeout_s: float, count: int = 1) -> list[dict[str, str]]:
    """The next `count` reports on `/dm1/controller/status`: key/values plus `message` (fault or state)."""
    got: list[dict[str, str]] = []

    def on_status(msg: DiagnosticArray) -> None:
        for st in msg.status:
            got.append({**diagnostic_values(st), "message": st.message})

    sub = node.create_subscription(DiagnosticArray, STATUS_TOPIC, on_status, 10)
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no report on {STATUS_TOPIC} within {timeout_s:.1f} s: is the controller up?"
                )
            spin_step(node)
    finally:
        node.destroy_subscription(sub)
    return got[:count]


def controller_status(node: Node, timeout_s: float) -> dict[str, str]:
    """The next report on `/dm1/controller/status` (see `controller_reports`)."""
    return controller_reports(node, timeout_s)[0]


def commanded(reports: list[dict[str, str]]) -> bool:
    """Whether someone streams chunks into the controller over these consecutive status reports: it executes
    one in any of them, or it accepted new ones in between (a hold between two chunks, a watchdog that
    expired on a loaded host, shows in one report as `holding` while the commander goes on)."""
    accepted = [int(float(r.get("accepted", 0))) for r in reports]
    return any(r.get("state") == ACTIVE for r in reports) or accepted[-1] > accepted[0]


def policy_available(node: Node, lifecycle: LifecycleClient, timeout_s: float) -> bool:
    """Whether the policy's lifecycle services appear, for the actions that also work without a policy
    (`status`, `home`; a teleop or cameras-only graph has none, and its services never come).

    A policy node already in the graph's node names is waited for the whole `timeout_s`: a new process may
    take longer than `POLICY_WAIT_S` to discover its services on a loaded host, and reported a policy that was
    up as not running. Without one, the wait ends after `POLICY_WAIT_S` (the node name's own discovery).
    """
    name = "/" + lifecycle.target
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if lifecycle.available(max(0.0, min(POLICY_POLL_S, timeout_s - elapsed))):
            return True
        elapsed = time.monotonic() - start
        if elapsed >= timeout_s:
            return False
        if elapsed >= POLICY_WAIT_S and name not in node.get_fully_qualified_node_names():
            return False


def _home(node: Node, lifecycle: LifecycleClient, timeout_s: float, policy_node: str) -> ActionResult:
    """`home`, unless someone commands the arm: the policy is active, or the controller executes chunks (a
    teleop node, a policy not discovered yet); they would drive it again right after the move."""
    busy = commanded(controller_reports(node, timeout_s, COMMAND_REPORTS))
    # A graph without a policy (teleop collection) never answers: wait for one only as long as discovery
    # takes; a policy node in the graph's names is waited for as long as allowed (`policy_available`). A busy
    # arm is refused either way; the wait only decides whom the refusal names.
    available = policy_available(node, lifecycle, timeout_s)
    if available and lifecycle.get_state() == "active":
        return ActionResult(False, f"home refused: {policy_node} is active; `dm1 operator deactivate` first")
    if busy:
        return ActionResult(
            False,
            "home refused: the controller is executing chunks (a teleop node or another commander); stop it "
            "first",
        )
    return _trigger(node, "home", max(timeout_s, HOME_WAIT_S))


def _trigger(node: Node, action: str, timeout_s: float) -> ActionResult:
    """Call the controller's `/dm1/controller/<action>` Trigger service."""
    client = node.create_client(Trigger, f"/dm1/controller/{action}")
    reply = call_service(node, client, Trigger.Request(), timeout_s)
    return ActionResult(bool(reply.success), f"{action}: {reply.message}")


def run_action(
    node: Node, action: str, timeout_s: float = 10.0, policy_node: str = "policy_node"
) -> ActionResult:
    """Carry out one of `ACTIONS` from `node` (an rclpy node of the caller's, not spun elsewhere).

    `home` is refused while someone commands the arm (`_home`); a graph without a policy node (teleop,
    cameras only) is reported as such.
    """
    if action not in ACTIONS:
        raise ValueError(f"operator action: expected one of {list(ACTIONS)}, found {action!r}")
    if action == "recover":  # whatever the policy's state: it stays inactive after a fault
        return _trigger(node, action, timeout_s)
    lifecycle = LifecycleClient(policy_node, node=node, timeout_s=timeout_s)
    if action == "home":
        return _home(node, lifecycle, timeout_s, policy_node)
    # Discovery by a new process can take seconds on a loaded host: the actions on the policy wait for its
    # services as long as allowed; `status` too while a policy node is in the graph (`policy_available`)
    if action == "status":
        available = policy_available(node, lifecycle, timeout_s)
    else:
        available = lifecycle.available(timeout_s)
    policy = lifecycle.get_state() if available else None
    if action == "status":
        st = controller_status(node, timeout_s)
        fault = f", fault: {st['message']}" if st.get("state") == "fault" else ""
        unit = "tracking_error_"  # tracking_error_mm (Cartesian) or tracking_error_mrad (joint mode)
        error = next(
            (f", {float(v):.1f} {k.removeprefix(unit)}" for k, v in st.items() if k.startswith(unit)), ""
        )
        lag = (
            f" (tracking lag {float(st['tracking_lag_ms']):.0f} ms{error})" if "tracking_lag_ms" in st else ""
        )
        return ActionResult(
            True,
            f"controller: {st.get('state', '?')}{lag}{fault}; {policy_node}: {policy or 'not running'}",
            {"controller": st, "policy_node": policy_node, "policy": policy},
        )
    if policy is None:
        raise TimeoutError(f"{policy_node}: its lifecycle services did not appear: is the policy running?")
    return _change_state(lifecycle, action, policy, policy_node)


def _change_state(lifecycle: LifecycleClient, action: str, state: str, policy_node: str) -> ActionResult:
    """`activate` / `deactivate` of the policy now in `state`. Idempotent: nothing is sent when the policy is
    there already (ok), nor a transition its state refuses (the node would log it as an ERROR)."""
    if state == TARGET_STATES[action]:
        return ActionResult(True, f"{policy_node}: already {state}: nothing to do")
    if state not in STABLE_STATES:
        return ActionResult(
            False, f"{policy_node}: {action} refused: it is {state} (in a transition); try again"
        )
    if action == "deactivate" and state != "active":  # unconfigured, finalized: it drives nothing either
        return ActionResult(True, f"{policy_node}: not active ({state}): nothing to do")
    if action == "activate" and state != "inactive":
        return ActionResult(
            False,
            f"{policy_node}: activate refused: it is {state}; only an inactive (configured) node activates",
        )
    ok = lifecycle.transition(action)
    now = lifecycle.get_state()
    if not ok and now == TARGET_STATES[action]:  # someone else got there first in the meantime
        return ActionResult(True, f"{policy_node}: already {now} (meanwhile): nothing to do")
    message = f"{policy_node}: {action} {'done' if ok else 'refused'}; now {now}"
    if not ok and action == "activate":
        message += (
            " (a latched controller fault blocks activation: `dm1 operator recover` first; see its log)"
        )
    return ActionResult(ok, message)


def main_drill(args: Any) -> list[tuple[bool, str, Any]]:
    """Init rclpy, run `dm1 operator drill` (`dm1_ros.fault_drill.run_drill`; `all`: the standard set, one
    after the other, stopping at a refusal) on a fresh node, shut down. Returns (passed, message, report)
    per drill."""
    from rclpy.signals import SignalHandlerOptions

    from dm1_ros.fault_drill import policy_cameras, run_drill, standard_drills

    with rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
        node = rclpy.create_node("dm1_operator_drill")
        try:
            specs = [args.drill]
            if args.drill == "all":
                try:
                    specs = standard_drills(policy_cameras(node, args.policy_node, args.timeout))
                except ValueError as exc:
                    return [(False, f"drill all: {exc}", None)]
            options = (args.duration, args.max_hold, args.still_speed, args.timeout, args.policy_node)
            results = []
            for spec in specs:
                results.append(run_drill(node, spec, *options))
                if results[-1][2] is None:  # refused: the next one would be too
                    break
            return results
        finally:
            node.destroy_node()


def _on_fresh_node(name: str, run: Callable[[Node], ActionResult]) -> ActionResult:
    """Init rclpy (without its signal handlers: `dm1.interrupts` has them), call `run` with a fresh node
    `name`, shut down."""
    from rclpy.signals import SignalHandlerOptions

    with rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
        node = rclpy.create_node(name)
        try:
            return run(node)
        finally:
            node.destroy_node()


def main_action(action: str, timeout_s: float, policy_node: str = "policy_node") -> ActionResult:
    """Run the action on a fresh node (the `dm1 operator` handler)."""
    return _on_fresh_node("dm1_operator", lambda node: run_action(node, action, timeout_s, policy_node))


def run_record(node: Node, event: str, timeout_s: float = 10.0, teleop_node: str = "teleop") -> ActionResult:
    """Send the teleop recorder one episode event (`dm1.teleop.device_interface.EVENTS`: start, stop_save,
    discard, mark_success, mark_failure) through its `/<teleop_node>/<event>` Trigger service, from `node`."""
    client = node.create_client(Trigger, f"/{teleop_node}/{event}")
    try:
        reply = call_service(node, client, Trigger.Request(), timeout_s, f"record {event}")
    finally:
        node.destroy_client(client)
    return ActionResult(bool(reply.success), f"record {event}: {reply.message}")


def main_record(event: str, timeout_s: float, teleop_node: str = "teleop") -> ActionResult:
    """Run `run_record` on a fresh node (`dm1 operator record`)."""
    return _on_fresh_node("dm1_operator_record", lambda node: run_record(node, event, timeout_s, teleop_node))
