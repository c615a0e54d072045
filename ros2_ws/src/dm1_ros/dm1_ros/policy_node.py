"""dm1 policy lifecycle node: cameras + /joint_states → onnxruntime → timed action chunks (no torch).

configure: load and verify the model (bad model → FAILURE, never active). activate: a timer at the control
rate on the node clock (sim time with use_sim_time) runs `PolicySession.tick` and publishes chunks on
`/dm1/action_chunk/{cartesian,joint}` + markers on `/dm1/predicted_path`. Stale inputs: no chunk (the
controller's watchdog holds) and a `/diagnostics` status naming the stream. `autostart:=true` self-activates
(and ends the node, exit code 1, when configure fails).
A fault reported on `/dm1/controller/status` deactivates the node and blocks activation until the controller
reports no fault (`dm1.policy.ControllerWatch`): after a recovery, an operator activates the policy again. So
does a controller that stops reporting (`controller_silence_s`): a restarted one moves nothing by itself.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from dm1.policy import NODE_PARAMETERS, PolicySession, config_from_parameters
from dm1.policy.controller_watch import ControllerWatch
from dm1.policy.drill import DRILL_PARAMETERS, drill_request
from dm1.policy.session import offered_deadline_ms, refused_while_configured
from dm1.scheduling import try_raise_to_fifo
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from dm1_ros.conversions import controller_faults
from dm1_ros.node_signals import exit_after_shutdown, run_node
from dm1_ros.params import declare_table
from dm1_ros.policy_inputs import subscribe_inputs
from dm1_ros.policy_outputs import PolicyOutputs

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class PolicyNode(LifecycleNode):
    """Lifecycle shell around `dm1.policy.PolicySession` and `dm1.runtime.PolicyRuntime`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("policy_node", **kwargs)
        declare_table(self, NODE_PARAMETERS)
        declare_table(self, DRILL_PARAMETERS)  # set at run time: `dm1 operator drill`
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if warning := try_raise_to_fifo(self.p("rt_priority")):  # onnxruntime's threads inherit it
            self.get_logger().warning(warning)
        self.outputs = PolicyOutputs(self)
        self.session: PolicySession | None = None
        self._subs: list = []
        self._timer = None
        self._controller = ControllerWatch(silence_s=self.p("controller_silence_s"))
        if topic := self.p("controller_status_topic"):
            self.create_subscription(DiagnosticArray, topic, self._on_controller_status, 10)

    def p(self, name: str):
        return self.get_parameter(name).value

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from dm1.runtime import PolicyRuntime  # onnxruntime: imported only when needed

        try:  # a bad model, parameter or topic name: FAILURE, and the node is left truly unconfigured
            cfg = config_from_parameters({name: self.p(name) for name in NODE_PARAMETERS})
            runtime = PolicyRuntime.load(
                self.p("model_dir"), num_threads=cfg.inference_threads, spinning=cfg.spinning
            )
            self.session = PolicySession(runtime, self.now_s, cfg)
            deadline_ms = offered_deadline_ms(self.p("chunk_deadline_ms"), self.session.period_s)
            runtime.warmup(3)
            card = self.session.card
            lease_ms = self.p("chunk_liveliness_lease_ms")
            topic = self.outputs.open(card.action.space == "ee_position", deadline_ms, lease_ms)
            self._subs = subscribe_inputs(self, self.session, self.p("joint_states_topic"))
        except Exception as exc:  # noqa: BLE001 - e.g. rclpy's InvalidTopicNameException
            self.on_cleanup(state)
            self.get_logger().error(f"configure failed: {exc}")
            self.outputs.diagnose(None, "error", f"configure failed: {exc}", self.now_s(), force=True)
            return FAILURE
        self.get_logger().info(
            f"loaded {card.name!r} from {runtime.model_dir}: {card.action.space} → {topic}, "
            f"{self.session.topics}"
        )
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if problem := self._controller.fault(self.now_s()) or self._controller.lost(self.now_s()):
            self.get_logger().error(f"not activating: controller: {problem}; recover or start it first")
            return FAILURE
        self.session.reset()
        self._timer = self.create_timer(self.session.period_s, self._tick)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.destroy_timer(self._timer)
        self._timer = None
        self.outputs.publish_hold("deactivated", self.now_s())  # the arm stops now, not after the watchdog
        self.outputs.clear_path()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._timer is not None:  # shutdown straight from active
            self.destroy_timer(self._timer)
        for sub in self._subs:
            self.destroy_subscription(sub)
        self.outputs.close()
        self._subs, self.session = [], None
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state) if self.session is not None else SUCCESS

    def _on_controller_status(self, msg: DiagnosticArray) -> None:
        for reported in controller_faults(msg):
            if fault := self._controller.update(reported is not None, reported or "", self.now_s()):
                self._stop_for_controller(f"fault: {fault}")

    def _stop_for_controller(self, problem: str) -> None:
        """Deactivate while active: an operator activates again once the controller is recovered / back."""
        if self._timer is not None:
            message = f"controller {problem}; policy deactivated"
            self.outputs.diagnose(self.session, "error", message, self.now_s(), force=True)
            self.get_logger().error(message)
            self.trigger_deactivate()

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """`drill` starts a fault drill (active node only); node parameters change only while unconfigured."""
        if reason := refused_while_configured([p.name for p in params], self.session is not None):
            return SetParametersResult(successful=False, reason=reason)
        session = self.session if self._timer is not None else None
        ok, reason = drill_request({p.name: p.value for p in params}, session, self.p("drill_duration_s"))
        if ok and reason:
            self.get_logger().warning(reason)
        return SetParametersResult(successful=ok, reason=reason)

    def _tick(self) -> None:
        if lost := self._controller.lost(self.now_s()):
            return self._stop_for_controller(f"lost: {lost}")
        self.outputs.publish_tick(self.session, self.session.tick(), self.now_s())


def main(args: list[str] | None = None) -> None:
    """Console script `policy_node`. A parameter out of its range: one line, exit code 2. After rclpy's
    shutdown the process ends at once (`exit_after_shutdown`): a native crash in interpreter teardown once
    turned an exit code 1 into -11."""
    exit_after_shutdown(run_node("policy_node", args, PolicyNode, start=_autostart))


def _autostart(node: PolicyNode) -> int | None:
    """`autostart:=true`: configure, or end with 1 (the launchers then stop the graph), and activate."""
    if node.p("autostart"):
        if node.trigger_configure() != SUCCESS:  # a launch must not run on without its policy
            node.get_logger().fatal("autostart: configure failed (error above); exiting with code 1")
            return 1
        node.trigger_activate()  # refused under a controller fault: the node waits, configured
    return None


if __name__ == "__main__":
    main()
