"""`controller_node`: timestamped action chunks -> safety -> franky (FR3 or franky-sim); /joint_states.

Thin: typed parameters, message conversion, `dm1.control.ChunkExecutor` on a timer (on sim time with
use_sim_time, else on the steady clock; the executor reads the node clock), `/joint_states` (arm + fingers =
width / 2), `/dm1/controller/status` diagnostics, and the operator services `/dm1/controller/recover` and
`/dm1/controller/home` (std_srvs/Trigger). A QoS deadline or liveliness event on the action topics holds the
arm at once (`dm1_ros.chunk_qos`, beside the watchdog).
Under sim time a wall-clock timer reports a stopped /clock as a fault (`dm1.control.sim_clock`).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

import rclpy
from dm1.control.executor import ExecutorStatus
from dm1.control.executor_gate import ExecutorGate
from dm1.control.limits import SafetyLimits
from dm1.control.parameters import CONTROLLER_PARAMETERS, SAFETY_PARAMETERS, requested_chunk_qos_ms
from dm1.control.sim_clock import StoppedClockReport
from dm1.control.startup import controller_summary, make_executor, start_robot
from dm1.interrupts import requested
from dm1.scheduling import try_raise_to_fifo
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from dm1_ros.chunk_qos import ChunkPublishers
from dm1_ros.controller_topics import controller_publishers, status_message, subscribe_chunks
from dm1_ros.conversions import make_joint_state, msg_to_timed_chunk
from dm1_ros.dds_publishing import publish_asynchronously
from dm1_ros.home_service import HomeService
from dm1_ros.log_bridge import route_core_logging
from dm1_ros.node_signals import spin_until_stopped, stopped_by_signals, wall_clock
from dm1_ros.params import declare_table, freeze_parameters, init_ros


class ControllerNode(Node):
    """Streams the newest chunk into the robot at `control_rate_hz`; holds when stale; latches faults."""

    def __init__(self) -> None:
        super().__init__("controller_node")
        route_core_logging(self)  # dm1.control's warnings: [WARN] [time] [controller_node], not bare lines
        # read once, at start: read-only, so `ros2 param set` is refused instead of changing nothing
        p = declare_table(self, CONTROLLER_PARAMETERS, read_only=True)
        # ValueError naming the bad field or value -> the node refuses to start
        self.limits = SafetyLimits(**declare_table(self, SAFETY_PARAMETERS, prefix="safety.", read_only=True))
        sim = self.get_parameter("use_sim_time").value
        freeze_parameters(self, ("use_sim_time",))
        # host checks (warnings) -> franky -> Franka's communication_test; a bad parameter, no robot or a
        # lossy link raises: the node refuses to start
        self.backend, link = start_robot(p, sim, self.get_logger().warning)
        if link:
            self.get_logger().info(link)
        executor = make_executor(p, self.backend, self.limits, self._now)
        self.gate = ExecutorGate(executor)  # one lock; chunks and ticks skipped while a home move runs
        if warning := try_raise_to_fifo(p["rt_priority"]):  # threads started later (home) inherit it
            self.get_logger().warning(warning)
        # guarded /joint_states and status (a failing publish drops the message: never raises); the safety box
        self.js_pub, self.status_pub, self.box_pub = controller_publishers(self, self.limits)
        self.chunk_publishers = ChunkPublishers(self)  # who sent each chunk: one commander at a time
        # QoS deadline (none under sim time: it runs on the wall clock) and liveliness lease on the chunks
        subscribe_chunks(self, self._on_chunk, self._on_stream_lost, *requested_chunk_qos_ms(p, sim))
        self.create_service(Trigger, "/dm1/controller/recover", self._on_recover)
        self._last_js_stamp: float | None = None  # robot time of the last published joint state
        self.home = HomeService(self)  # /dm1/controller/home, on a side node and thread (blocks for seconds)
        timers = None if sim else wall_clock()  # system-time timers stall after an NTP step back (rclpy#1490)
        self.create_timer(1.0 / p["control_rate_hz"], self._on_control, clock=timers)
        self.create_timer(1.0 / p["joint_state_rate_hz"], self._on_joint_state, clock=timers)
        self.create_timer(0.1, self.publish_status, clock=timers)
        if sim:  # a stopped /clock (the twin killed or hung) stops the timers above: a wall-clock one says so
            report = StoppedClockReport(self.backend, executor.status, self._now, self.publish_status)
            self.create_timer(0.25, report.tick, clock=wall_clock())
        self.get_logger().info(controller_summary(p, self.limits))

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_chunk(self, msg: MultiDOFJointTrajectory | JointTrajectory, info: dict, topic: str) -> None:
        """Convert (wrong names / lengths / shapes -> counted and logged, never moved on) and offer, naming
        its publisher (two publishers in turns latch a fault)."""
        if not msg.points:  # an empty chunk is the policy's explicit "hold now" (stale inputs)
            self.gate.hold(msg.header.frame_id or "empty chunk")
            return
        try:
            chunk = msg_to_timed_chunk(msg)
        except (ValueError, IndexError) as exc:
            self.gate.count_malformed(f"malformed chunk: {exc}")
            return
        self.gate.offer(chunk, self.chunk_publishers.source(topic, info))  # a refusal logs its reason itself

    def _on_stream_lost(self, counter: str, reason: str) -> None:
        if self.gate.stream_lost(counter, reason):
            self.get_logger().warning(f"holding: {reason}")
            self.publish_status()

    def _on_control(self) -> None:
        if self.gate.tick():
            self.publish_status()

    def _on_joint_state(self) -> None:
        try:
            s = self.backend.read_state()
        except Exception as exc:  # noqa: BLE001 - the control tick latches it as a fault; the node goes on
            self.get_logger().error(f"no joint state: {type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
            return
        if s.stamp != self._last_js_stamp:  # a new measurement (none while the robot's link is lost)
            self._last_js_stamp = s.stamp
            self.js_pub.publish(make_joint_state(s.q, s.gripper_width, self._now(), s.dq))

    def publish_status(self, st: ExecutorStatus | None = None) -> None:
        st = st if st is not None else self.gate.executor.status()
        self.status_pub.publish(status_message(st, self._now()))

    def _on_recover(self, _req, res):
        try:
            res.success, res.message = True, self.gate.recover()  # or: no fault latched, nothing done
        except Exception as exc:  # noqa: BLE001 - no link, user stop engaged: the fault stays, say why
            res.success, res.message = False, str(exc)
        self.publish_status()
        return res


def main(args: list[str] | None = None) -> int:
    with stopped_by_signals():  # Ctrl-C ends the spin through the context shutdown (see node_signals)
        publish_asynchronously()  # a dead peer's shared-memory lock must not stall the control ticks
        init_ros("controller_node", args if args is not None else sys.argv)
        # before the node (see twin_node.main); MultiThreadedExecutor cost ~80 % of a core under sim time
        executor = SingleThreadedExecutor()
        try:
            node = ControllerNode()
        except Exception as exc:  # noqa: BLE001 - bad parameters or no robot: refuse to start, say why
            if requested():
                raise  # stopped while starting, not a bad start
            print(f"controller_node: refusing to start: {type(exc).__name__}: {exc}", file=sys.stderr)
            rclpy.try_shutdown()
            return 2
        executor.add_node(node)
        node.home.start()
        with ExitStack() as clean_up:  # last to first, each one whatever the others do (a thread left: -6)
            clean_up.callback(node.destroy_node)
            clean_up.callback(node.home.stop)
            clean_up.callback(node.backend.close)  # first: stops a home move the side thread waits on
            spin_until_stopped(executor, node)  # one signal ends it, /clock stopped or not
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
