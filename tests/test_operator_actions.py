"""`dm1 operator activate` / `deactivate` are idempotent: the CLI reads the policy's lifecycle state first and
sends no transition the node would refuse (which it logs as an ERROR), like `recover` without a fault."""

from __future__ import annotations

import time

import pytest
import rclpy
from conftest import wait_for
from dm1_ros import operator_actions
from dm1_ros.operator_actions import run_action


class FakeLifecycle:
    """A `LifecycleClient` stand-in: a policy in `state`; records the transitions sent."""

    state = "active"
    sent: list[str] = []

    def __init__(self, target: str, node=None, timeout_s: float = 10.0) -> None:
        self.target = target

    def available(self, timeout_s: float) -> bool:
        return True

    def get_state(self) -> str:
        return FakeLifecycle.state

    def transition(self, name: str) -> bool:
        FakeLifecycle.sent.append(name)
        moves = {("inactive", "activate"): "active", ("active", "deactivate"): "inactive"}
        if (FakeLifecycle.state, name) not in moves:
            return False
        FakeLifecycle.state = moves[(FakeLifecycle.state, name)]
        return True


@pytest.fixture
def fake_policy(monkeypatch: pytest.MonkeyPatch) -> type[FakeLifecycle]:
    FakeLifecycle.sent = []
    monkeypatch.setattr(operator_actions, "LifecycleClient", FakeLifecycle)
    return FakeLifecycle


@pytest.mark.parametrize(("action", "state"), [("activate", "active"), ("deactivate", "inactive")])
def test_an_action_whose_state_is_already_reached_sends_nothing_and_succeeds(fake_policy, action, state):
    fake_policy.state = state
    result = run_action(None, action, 1.0)
    assert result.ok, result.message
    assert f"already {state}: nothing to do" in result.message
    assert fake_policy.sent == [] and fake_policy.state == state


def test_deactivate_of_an_unconfigured_policy_has_nothing_to_do(fake_policy) -> None:
    fake_policy.state = "unconfigured"
    result = run_action(None, "deactivate", 1.0)
    assert result.ok and "not active (unconfigured): nothing to do" in result.message
    assert fake_policy.sent == []


def test_activate_of_an_unconfigured_policy_is_refused_without_a_transition_it_would_refuse(fake_policy):
    fake_policy.state = "unconfigured"
    result = run_action(None, "activate", 1.0)
    assert not result.ok and "unconfigured" in result.message and "inactive" in result.message
    assert fake_policy.sent == []


@pytest.mark.parametrize(
    ("action", "state", "now"), [("activate", "inactive", "active"), ("deactivate", "active", "inactive")]
)
def test_a_needed_transition_is_still_sent(fake_policy, action: str, state: str, now: str) -> None:
    fake_policy.state = state
    result = run_action(None, action, 1.0)
    assert result.ok and fake_policy.sent == [action] and f"now {now}" in result.message


def test_activate_twice_on_a_real_lifecycle_node_is_done_then_nothing_to_do(ros_env) -> None:
    """Bounded, in-process: a real rclpy lifecycle node stands in for the policy node."""
    from dm1_ros.spin_thread import SpinThread
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

    rclpy.init()  # the default context: `run_action` spins its node with rclpy.spin_once
    context = rclpy.get_default_context()
    calls: list[str] = []

    class Policy(LifecycleNode):
        def on_activate(self, state) -> TransitionCallbackReturn:
            calls.append("activate")
            return super().on_activate(state)

    policy = Policy("op_test_policy", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(policy)
    spin = SpinThread(executor).start()
    operator = rclpy.create_node("op_test_operator", context=context)
    try:
        policy.trigger_configure()
        t0 = time.monotonic()
        first = run_action(operator, "activate", 10.0, "op_test_policy")
        second = run_action(operator, "activate", 10.0, "op_test_policy")
        assert time.monotonic() - t0 < 20.0
        assert first.ok and "activate done; now active" in first.message, first.message
        assert second.ok and "already active: nothing to do" in second.message, second.message
        assert calls == ["activate"]
    finally:
        operator.destroy_node()
        spin.stop()
        policy.destroy_node()
        rclpy.shutdown()


def test_record_sends_the_event_to_the_teleop_recorders_trigger_service(ros_env) -> None:
    """Bounded, in-process: a real rclpy node offers `/<teleop>/start` as the teleop node does (`~/start`)."""
    from dm1_ros.operator_actions import run_record
    from dm1_ros.spin_thread import SpinThread
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger

    rclpy.init()
    context = rclpy.get_default_context()
    calls: list[str] = []

    def on_start(_request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        calls.append("start")
        response.success, response.message = True, "recording episode 0"
        return response

    teleop = rclpy.create_node("op_test_teleop", context=context)
    teleop.create_service(Trigger, "~/start", on_start)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(teleop)
    spin = SpinThread(executor).start()
    operator = rclpy.create_node("op_test_operator_rec", context=context)
    try:
        result = run_record(operator, "start", 10.0, "op_test_teleop")
        assert result.ok and result.message == "record start: recording episode 0", result.message
        assert calls == ["start"]
        with pytest.raises(
            TimeoutError, match="record discard: service /op_test_teleop/discard not available"
        ):
            run_record(operator, "discard", 0.5, "op_test_teleop")  # no such service: bounded, named
    finally:
        operator.destroy_node()
        spin.stop()
        teleop.destroy_node()
        rclpy.shutdown()


def test_record_addresses_the_teleop_node_the_launch_starts() -> None:
    from dm1.cli import build_parser
    from dm1.launch_args import LaunchArgs
    from dm1.launch_graph import franka_graph

    names = {
        spec.module: spec.name for spec in franka_graph(LaunchArgs(use_sim=True, no_policy=True, record=True))
    }
    parsed = build_parser().parse_args(["operator", "record", "start"])
    assert parsed.teleop_node == names["dm1_ros.teleop_node"]


def test_status_and_home_wait_the_whole_timeout_for_a_policy_node_in_the_graph(ros_env, monkeypatch) -> None:
    """`status` and `home` of an idle arm also work without a policy (teleop): they wait for its services
    only `POLICY_WAIT_S` while no policy node is in the graph. One that is in the graph, whose services a new
    process has not discovered yet (seconds on a loaded host), is waited for the whole timeout: after 3 s it
    was reported "not running" while it was up."""
    from dm1_ros.lifecycle_client import LifecycleClient
    from dm1_ros.operator_actions import policy_available
    from dm1_ros.spin_thread import SpinThread
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState
    from rclpy.executors import SingleThreadedExecutor

    monkeypatch.setattr(operator_actions, "POLICY_WAIT_S", 0.5)
    rclpy.init()
    context = rclpy.get_default_context()
    policy = rclpy.create_node("op_test_late_policy", context=context)  # in the graph, no services yet
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(policy)
    spin = SpinThread(executor).start()
    operator = rclpy.create_node("op_test_operator_wait", context=context)

    def on_get_state(_request: GetState.Request, response: GetState.Response) -> GetState.Response:
        response.current_state = State(id=State.PRIMARY_STATE_INACTIVE, label="inactive")
        return response

    class LateServices(LifecycleClient):
        """The policy's services appear only once the wait has gone on past POLICY_WAIT_S (twice over)."""

        started: float | None = None
        served = False

        def available(self, timeout_s: float) -> bool:
            now = time.monotonic()
            if self.started is None:
                self.started = now
            elif now - self.started > 2 * operator_actions.POLICY_WAIT_S and not self.served:
                self.served = True
                policy.create_service(GetState, "~/get_state", on_get_state)
            return super().available(timeout_s)

    try:
        names = operator.get_fully_qualified_node_names
        wait_for(lambda: "/op_test_late_policy" in names(), 30, what="the policy node in the graph")
        late = LateServices("op_test_late_policy", node=operator, timeout_s=30.0)
        assert policy_available(operator, late, 60.0), "gave up on a policy node in the graph"
        assert late.served and late.get_state() == "inactive"
        # no such node in the graph: a teleop graph's `status` and `home` do not wait out the timeout
        asked = time.monotonic()
        assert not policy_available(operator, LifecycleClient("op_test_no_policy", node=operator), 300.0)
        assert time.monotonic() - asked < 120.0, "waited the whole timeout for a policy not in the graph"
    finally:
        operator.destroy_node()
        spin.stop()
        policy.destroy_node()
        rclpy.shutdown()
