"""`GraphProbe`: the launcher's own view of the ROS graph (readiness checks, another graph in the domain)."""

from __future__ import annotations

import importlib
import os
import time
from collections import Counter
from typing import Any

#: Seconds a new probe needs to see every node already in its domain. Discovery on localhost took 0.7-2.7 s
#: here (Fast DDS), so no node counts as ready before this much has passed since the probe joined.
DISCOVERY_S = 3.0
PROBE_NAME = "dm1_launch"  # every launcher's probe: a second one in the domain is another launch
#: Seconds the probe waits for the answer to one `get_state` request before it abandons it and asks again:
#: an answer can be lost (seen under load: the node logged "failed to send response (timeout)" and the
#: launch waited out its whole readiness bound for an answer that never came).
STATE_REQUEST_TIMEOUT_S = 3.0


class GraphProbe:
    """A private rclpy context the launcher uses to check readiness (node names, first message on a topic)."""

    def __init__(self, env: dict[str, str]) -> None:
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION"):
            if key in env:
                os.environ[key] = env[key]
        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(PROBE_NAME, context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._seen: set[str] = set()
        self._subs: list[Any] = []
        self._watch: dict[str, str] = {}
        self._state_clients: dict[str, Any] = {}
        self._state_calls: dict[str, tuple[Any, float]] = {}  # node -> (request in flight, sent at)
        self.clock_s: float | None = None  # last /clock time (`watch_clock`), None before one arrived
        self.joined = time.monotonic()

    def watch(self, topic: str, type_name: str) -> None:
        """Record the first message on `topic`, once a publisher exists (its durability is matched, so a
        latched topic delivers its last message and no incompatible-QoS warning is raised)."""
        self._watch[topic] = type_name

    def _subscribe_when_published(self) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        for topic, type_name in list(self._watch.items()):
            infos = self.node.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            latched = any(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
            # A latched (transient-local) message reaches a late joiner only over a reliable reader; for live
            # topics best effort matches every publisher and never slows one down.
            if latched:
                qos = QoSProfile(
                    depth=1,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL,
                )
            else:
                qos = QoSProfile(
                    depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE
                )
            pkg, _, cls = type_name.split("/")
            msg_type = getattr(importlib.import_module(f"{pkg}.msg"), cls)
            self._subs.append(
                self.node.create_subscription(msg_type, topic, lambda _m, t=topic: self._seen.add(t), qos)
            )
            del self._watch[topic]

    def seen(self, topic: str) -> bool:
        """Whether a message arrived on `topic`."""
        return topic in self._seen

    def watch_clock(self) -> None:
        """Follow simulation time: keep the latest `/clock` in `clock_s` (best effort, depth 1: the probe
        takes only the newest message when it spins, however fast the twin publishes)."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        def on_clock(msg: Clock) -> None:
            self.clock_s = msg.clock.sec + msg.clock.nanosec * 1e-9

        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._subs.append(self.node.create_subscription(Clock, "/clock", on_clock, qos))

    def lifecycle_state(self, name: str, timeout_s: float = STATE_REQUEST_TIMEOUT_S) -> str | None:
        """The lifecycle state label node `name` last answered on `get_state` (None while no answer came).
        Non-blocking: one request in flight per node, answered during `spin`; a request not answered within
        `timeout_s` is abandoned (its late answer ignored) and sent again."""
        from lifecycle_msgs.srv import GetState

        client = self._state_clients.get(name)
        if client is None:
            client = self._state_clients[name] = self.node.create_client(GetState, f"/{name}/get_state")
        call, sent = self._state_calls.get(name, (None, 0.0))
        if call is not None and not call.done() and time.monotonic() - sent > timeout_s:
            client.remove_pending_request(call)
            call.cancel()
            call = None
        if call is None:
            if client.service_is_ready():
                self._state_calls[name] = (client.call_async(GetState.Request()), time.monotonic())
            return None
        if not call.done():
            return None
        del self._state_calls[name]
        response = call.result()
        return None if response is None else response.current_state.label

    def ready(self, spec: Any) -> str | None:
        """What shows that the node of `spec` is ready (its readiness check passed), or None: not yet."""
        if spec.ready_states:
            state = self.lifecycle_state(spec.name)
            return f"lifecycle state {state}" if state in spec.ready_states else None
        if spec.ready_topic:
            return f"a message on {spec.ready_topic}" if self.seen(spec.ready_topic) else None
        return "its node in the ROS graph" if self.has_node(spec.name) else None

    def age(self) -> float:
        """Seconds since the probe joined the graph."""
        return time.monotonic() - self.joined

    def settled(self) -> bool:
        """Whether the probe has been in the graph long enough to have discovered every node already there."""
        return self.age() >= DISCOVERY_S

    def other_graph(self, names: list[str], started: set[str]) -> list[str]:
        """Nodes of `names`, and launcher probes, that this launcher did not start: in the graph more often
        than `started` and this probe have them (another launch in the ROS domain, a node run by hand)."""
        counts = Counter(name for name, _ns in self.node.get_node_names_and_namespaces())
        ours = started | {PROBE_NAME}
        return [n for n in [*names, PROBE_NAME] if counts[n] > (1 if n in ours else 0)]

    def has_node(self, name: str) -> bool:
        """Whether a node called `name` is in the ROS graph."""
        return name in self.node.get_node_names()

    def spin(self, timeout: float) -> None:
        """Process callbacks for up to `timeout` seconds."""
        self._subscribe_when_published()
        self.executor.spin_once(timeout_sec=timeout)

    def spin_pending(self, limit: int = 10) -> None:
        """Process what has already arrived (up to `limit` callbacks), without waiting."""
        for _ in range(limit):
            self.executor.spin_once(timeout_sec=0.0)

    def close(self) -> None:
        """Leave the ROS graph."""
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)


def other_graph_message(domain: str, others: list[str]) -> str:
    """The one-line refusal of a launch into a ROS domain that already runs `others` (node names)."""
    return (
        f"ROS_DOMAIN_ID {domain} already runs {', '.join('/' + n for n in others)} (another `dm1 launch`, "
        "`ros2 launch dm1_bringup`, `dm1 eval` or a node started by hand). Two graphs in one domain share "
        "every topic: two policies would command one arm. Stop the other graph, or give this one its own "
        "domain (ROS_DOMAIN_ID=<0-101>)"
    )


def look_for_other_graph(names: list[str], env: dict[str, str], seconds: float = DISCOVERY_S) -> list[str]:
    """Nodes called like `names` (or another launcher's probe) already in the ROS domain of `env`, looked
    for over `seconds` (long enough for discovery to show every node there); [] when the domain is free.
    Returns as soon as one is seen. For launchers that check once before they start anything
    (`franka.launch.py`); `dm1 launch` keeps checking while its nodes start."""
    probe = GraphProbe(env)
    try:
        while True:
            others = probe.other_graph(names, set())
            if others or probe.age() >= seconds:
                return others
            probe.spin(0.05)
    finally:
        probe.close()
