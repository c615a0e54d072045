"""controller_node's process life: refusing to start (bad limits, no robot after the host checks), stopping
mid home move or right after start, its steady-clock timers for a real arm, and an error reading the robot."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import PYTHON, wait_for

rclpy = pytest.importorskip("rclpy")
from controller_rig import Rig  # noqa: E402
from franky_sim_arm import SimArm  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402


@contextlib.contextmanager
def controller_in_this_process() -> Iterator[Any]:
    """A `ControllerNode` in this process on a fresh franky-sim arm (wall clock: a real arm's set-up,
    real-time checks off), closed with its arm at the end."""
    from dm1_ros.controller_node import ControllerNode

    arm = SimArm()
    params = {"robot_ip": arm.host, "comm_check_s": 0.0, "realtime_config": "ignore", "rt_priority": 0}
    rclpy.init(args=["--ros-args", *(a for k, v in params.items() for a in ("-p", f"{k}:={v}"))])
    node = ControllerNode()
    try:
        yield node
    finally:
        node.backend.close()
        node.home.stop()
        node.destroy_node()
        rclpy.shutdown()
        arm.close()


@pytest.mark.slow
def test_an_unexpected_error_reading_the_robot_skips_a_joint_state_and_the_node_goes_on(ros_env) -> None:
    """The /joint_states timer reads the robot outside the executor's guard: an exception franky raises there
    (one the backend does not latch) must not end the node (its control tick latches it as a fault)."""
    with controller_in_this_process() as node:
        sent: list[JointState] = []
        node.js_pub.publish = sent.append
        node._on_joint_state()
        assert len(sent) == 1
        read = node.backend.read_state

        def broken():
            raise RuntimeError("franky: something new")

        node.backend.read_state = broken
        node._on_joint_state()  # raised out of the timer (and ended the node) before
        assert len(sent) == 1
        node.backend.read_state = read
        wait_for(lambda: node._on_joint_state() or len(sent) == 2, 30, what="a joint state after the error")


def test_a_controller_for_a_real_arm_ticks_on_the_steady_clock(ros_env) -> None:
    """Timers on the system time stall for as long as an NTP step sets the clock back (rclpy#1490): a real
    arm's controller ticks, publishes its joint states and its status on the steady clock (its executor,
    on the node clock, sees the step and holds)."""
    from rclpy.clock import ClockType

    with controller_in_this_process() as node:
        clocks = {t.callback.__name__: t.clock.clock_type for t in node.timers}
        for name in ("_on_control", "_on_joint_state", "publish_status"):
            assert clocks[name] == ClockType.STEADY_TIME, clocks


@pytest.mark.parametrize(
    ("arg", "says"),
    [
        ("safety.workspace_min:=[0.9, -0.4, 0.02]", "SafetyLimits.workspace_min/workspace_max"),
        ("safety.workspace_max:=[100.0, 100.0, 100.0]", "a box inside the FR3's reach"),
        ("safety.chunk_timeout_s:=1000000.0", "parameter safety.chunk_timeout_s"),
        ("safety.max_ee_speed:=1000.0", "parameter safety.max_ee_speed"),
    ],
)
def test_bad_safety_parameters_refuse_to_start(ros_env, procs, arg: str, says: str) -> None:
    """A limit out of order, widened past the robot or switched off by a huge value: one line, exit 2."""
    args = ["-p", "robot_ip:=127.0.0.1", "-p", arg]
    proc = procs.start("bad", [PYTHON, "-m", "dm1_ros.controller_node", "--ros-args", *args])
    assert proc.wait(timeout=60) == 2
    assert says in procs.log("bad"), procs.log("bad")[-2000:]
    assert "Traceback" not in procs.log("bad")


def test_a_controller_for_a_real_arm_names_the_host_problems_before_it_connects(ros_env, procs) -> None:
    from conftest import free_loopback_host
    from dm1.control.host_check import check_host

    nobody = free_loopback_host()  # no robot there: the node refuses to start after the host checks
    args = ["-p", f"robot_ip:={nobody}", "-p", "comm_check_s:=0.0"]  # use_sim_time false: a real arm
    proc = procs.start("real", [PYTHON, "-m", "dm1_ros.controller_node", "--ros-args", *args])
    assert proc.wait(timeout=60) == 2
    log = procs.log("real")
    problems = check_host(nobody).problems()  # this machine, read the same way in this process
    for finding in problems:
        assert f"host check: {finding.line()}" in log, log[-3000:]
    assert log.count("host check: ") == len(problems), log[-3000:]
    assert log.index("host check: " if problems else "refusing to start") <= log.index("refusing to start")


@pytest.mark.slow
def test_shutdown_during_a_home_move_stops_the_arm_and_exits_cleanly(ros_env, procs) -> None:
    # a slow home move (dynamics factor 0.02): the node used to wait up to 5 s for its service thread while
    # the move went on, and a move still running at exit aborted the process (std::terminate, -6)
    rig = Rig(procs, ("-p", "relative_dynamics_factor:=0.02"))
    speeds: list[tuple[float, float]] = []  # (sim time, fastest joint of the simulated arm, rad/s)
    try:
        p0 = rig.ee()
        rig.stream(lambda t: p0 + np.array([0.0, 0.12, -0.08]), 2.0)  # away from home: the move takes time
        client = rig.node.create_client(Trigger, "/dm1/controller/home")
        assert client.wait_for_service(timeout_sec=30)
        client.call_async(Trigger.Request())  # not awaited: the controller is stopped mid-move
        wait_for(lambda: np.abs(rig.states[-1][2]).max() > 0.02, 30, what="the home move under way")
        rig.arm.post_step.append(lambda arm: speeds.append((arm.time, arm.joint_speed())))
        stopped_at = rig.arm.time
        rig.procs.stop("controller", signal.SIGINT, timeout=30.0)
        exited_at = rig.arm.time
        assert rig.proc.returncode == 0, rig.procs.log("controller")[-3000:]
        # from 0.5 s after the stop until the node is gone (then franky-sim no longer holds the arm): still
        late = [v for t, v in list(speeds) if stopped_at + 0.5 <= t <= exited_at - 0.05]
        assert max(late, default=0.0) < 0.01, f"the home move went on after the stop: {max(late):.3f} rad/s"
    finally:
        rig.close()


def test_controller_stopped_right_after_start_exits_cleanly(ros_env, procs) -> None:
    # rclpy's Executor.shutdown() under a spinning thread segfaulted the node in 3 of 16 such stops
    for _ in range(6):
        rig = Rig(procs)
        try:
            rig.procs.stop("controller", signal.SIGINT, timeout=30.0)
            assert rig.proc.returncode == 0, rig.procs.log("controller")[-3000:]
        finally:
            rig.close()
