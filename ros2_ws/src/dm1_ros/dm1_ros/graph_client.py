"""`GraphClient`: the rclpy client side shared by the drivers of a live dm1 graph (evaluation, collection).

A node on simulation time (`/clock` from the twin) with bounded spinning and bounded Trigger calls; the
drivers (`dm1_ros.evaluate.EvalDriver`, `dm1_ros.teleop_collect.CollectDriver`) add their subscriptions and
episode logic on top.
"""

from __future__ import annotations

import time

import rclpy
from rclpy.client import Client
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from dm1_ros.service_calls import call_service, spin_step

SIM_STALL_S = 60.0  # wall seconds without /clock advancing before a driver gives up on the twin


class GraphClient:
    """A sim-time client node of a running graph. Every wait is bounded (wall clock as a safety net)."""

    def __init__(self, node_name: str, service_timeout_s: float) -> None:
        self.node: Node = rclpy.create_node(
            node_name, parameter_overrides=[Parameter("use_sim_time", value=True)]
        )
        self.timeout_s = service_timeout_s
        self._last_sim = -1.0
        self._sim_advanced_at = time.monotonic()

    def sim_now(self) -> float:
        """Node clock (simulation time from /clock)."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def spin(self, seconds: float) -> None:
        """Process callbacks for about `seconds` of wall time (a pending Ctrl-C raises between steps)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            spin_step(self.node, end - time.monotonic())
        now = self.sim_now()
        if now != self._last_sim:
            self._last_sim, self._sim_advanced_at = now, time.monotonic()

    def check_sim_advancing(self, what: str, stall_s: float = SIM_STALL_S) -> None:
        """Raise TimeoutError naming `what` when simulation time has not advanced for `stall_s` wall seconds
        of spinning: the twin stopped (crashed, hung, starved), so a sim-time wait would never end."""
        stalled = time.monotonic() - self._sim_advanced_at
        if stalled > stall_s:
            raise TimeoutError(
                f"{what}: simulation time stuck at {self._last_sim:.3f} s for {stalled:.0f} s (wall); "
                "is the twin running? (see the graph's log)"
            )

    def trigger(self, client: Client, what: str = "", check: bool = True) -> tuple[bool, str]:
        """Call a Trigger service; returns (success, message); with `check`, raise on failure.

        Raises TimeoutError when the service does not exist or answer within the service timeout.
        """
        result = call_service(self.node, client, Trigger.Request(), self.timeout_s, what)
        if check and not result.success:
            prefix = f"{what}: " if what else ""
            raise RuntimeError(f"{prefix}{client.srv_name} failed: {result.message}")
        return bool(result.success), str(result.message)

    def home_with_recovery(self, home: Client, recover: Client) -> str | None:
        """Home the arm (`/dm1/controller/home`). When the controller refuses (a latched fault: a reflex, a
        timed-out move), recover once (`/dm1/controller/recover`, the operator's action) and home again.

        Returns None when the first home worked, else the refusal it recovered from. Raises RuntimeError when
        the home after the recovery fails too, TimeoutError when a service does not answer.
        """
        ok, message = self.trigger(home, "home", check=False)
        if ok:
            return None
        self.trigger(recover, "recover after a refused home")
        self.trigger(home, "home after recovery")
        return message

    def close(self) -> None:
        """Destroy the client node."""
        self.node.destroy_node()
