"""The launcher's readiness probe (`dm1.commands.graph_probe.GraphProbe`) against a lifecycle node whose
answer to `get_state` is lost: it asks again instead of waiting for that answer forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from dm1.commands.graph_probe import STATE_REQUEST_TIMEOUT_S, GraphProbe


class LosingLifecycleNode:
    """A real `lifecycle_msgs/srv/GetState` service (own rclpy context, spun in a thread) that never answers
    its first `lost` requests, as when the policy node logged "failed to send response (timeout)"."""

    def __init__(self, name: str, lost: int = 1) -> None:
        import rclpy
        from lifecycle_msgs.srv import GetState
        from rclpy.task import Future

        self.requests = 0
        self._release: Future = Future()  # done once the node stops
        self._lost = lost
        self._stop = threading.Event()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        # reentrant: the unanswered request's task must not hold back the next one
        group = rclpy.callback_groups.ReentrantCallbackGroup()
        self.node.create_service(GetState, f"/{name}/get_state", self._answer, callback_group=group)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    async def _answer(self, request, response):  # noqa: ANN001, ANN202
        self.requests += 1
        if self.requests <= self._lost:  # this answer never leaves: the task waits until the node stops
            await self._release
            return response
        response.current_state.label = "active"
        return response

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._release.set_result(None)
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def losing_node(ros_env: dict[str, str]) -> Iterator[LosingLifecycleNode]:
    node = LosingLifecycleNode("probe_test_lifecycle")
    try:
        yield node
    finally:
        node.close()


def test_a_lifecycle_state_request_whose_answer_is_lost_is_sent_again(
    ros_env: dict[str, str], losing_node: LosingLifecycleNode
) -> None:
    """One lost answer under load left `dm1 launch` waiting 60 s for `policy_node` ("not ready after 60 s"):
    the probe kept its one request in flight forever. It abandons a request after a bound and asks again."""
    probe = GraphProbe(ros_env)
    try:
        deadline = time.monotonic() + STATE_REQUEST_TIMEOUT_S + 15.0
        state = None
        while state is None and time.monotonic() < deadline:
            state = probe.lifecycle_state("probe_test_lifecycle")
            probe.spin(0.05)
    finally:
        probe.close()
    assert state == "active", f"no state after {losing_node.requests} request(s)"
    assert losing_node.requests >= 2
