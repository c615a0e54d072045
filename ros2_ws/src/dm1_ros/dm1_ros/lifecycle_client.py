"""Drive a lifecycle node from code (no `ros2 lifecycle` CLI on PyPI): get its state, request transitions.

    with rclpy.init():
        client = LifecycleClient("policy_node")
        client.transition("configure"); client.transition("activate")
        assert client.get_state() == "active"

Uses the standard services `/<node>/get_state` and `/<node>/change_state` (lifecycle_msgs). Every call is
bounded by `timeout_s` and raises `TimeoutError` naming the service.
"""

from __future__ import annotations

from typing import Any

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node

from dm1_ros.service_calls import call_service

TRANSITIONS: dict[str, int] = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "cleanup": Transition.TRANSITION_CLEANUP,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN,  # resolved by the current state, see SHUTDOWN
}
SHUTDOWN: dict[str, int] = {
    "unconfigured": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
    "inactive": Transition.TRANSITION_INACTIVE_SHUTDOWN,
    "active": Transition.TRANSITION_ACTIVE_SHUTDOWN,
}


class LifecycleClient:
    """A small helper node that queries and changes the lifecycle state of `target` (a node name)."""

    def __init__(self, target: str, node: Node | None = None, timeout_s: float = 10.0) -> None:
        self.target = target.strip("/")
        self.node = node or rclpy.create_node(f"lifecycle_client_{self.target.replace('/', '_')}")
        self.timeout_s = timeout_s
        self._get = self.node.create_client(GetState, f"/{self.target}/get_state")
        self._change = self.node.create_client(ChangeState, f"/{self.target}/change_state")

    def _call(self, client: Any, request: Any) -> Any:
        return call_service(self.node, client, request, self.timeout_s)

    def available(self, timeout_s: float) -> bool:
        """Whether the target's lifecycle services appear within `timeout_s` (False: no such node running)."""
        return bool(self._get.wait_for_service(timeout_sec=timeout_s))

    def get_state(self) -> str:
        """Current state label: unconfigured | inactive | active | finalized (or a transition state)."""
        return self._call(self._get, GetState.Request()).current_state.label

    def transition(self, name: str) -> bool:
        """Request a transition by name (`TRANSITIONS`); True if the node accepted and completed it."""
        if name not in TRANSITIONS:
            raise ValueError(f"transition: expected one of {sorted(TRANSITIONS)}, found {name!r}")
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[name]
        if name == "shutdown":
            state = self.get_state()
            if state not in SHUTDOWN:
                raise ValueError(f"transition: cannot shut down from state {state!r}")
            request.transition.id = SHUTDOWN[state]
        return bool(self._call(self._change, request).success)

    def destroy(self) -> None:
        """Release the helper node."""
        self.node.destroy_node()
