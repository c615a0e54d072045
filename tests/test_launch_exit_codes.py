"""`dm1 launch`'s exit code and its watch on simulation time: a required node that crashes while the graph
stops fails the launch, and a twin whose /clock stands still is reported, then the graph is stopped."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from dm1.commands.launch import GraphRunner
from dm1.commands.sim_clock import ClockWatchSettings, SimClockWatch, Stall
from dm1.launch_graph import NodeSpec

# A real rclpy node that ends its run the way the parameter `on_stop` says when SIGINT arrives:
# "clean" (exit 0), "traceback" (an exception: exit 1 and a traceback) or "segv" (killed by SIGSEGV).
# The launcher counts it up once its node is in the ROS graph, which `Node()` does before it returns (and
# on a loaded machine its lazy imports then take seconds): SIGINT there must end it the same way (it exited
# with -2 from inside `Node()` in CI), so `on_stop` is read from the arguments and `Node()` is in the try.
STOPPING_NODE = """
import os, signal, sys, rclpy
from rclpy.node import Node
rclpy.init(args=sys.argv, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
on_stop = next((a.split(":=", 1)[1] for a in sys.argv if a.startswith("on_stop:=")), "clean")
try:
    node = Node("stopping")
    node.declare_parameter("on_stop", "clean")
    while True:
        rclpy.spin_once(node, timeout_sec=0.05)
except KeyboardInterrupt:
    if on_stop == "traceback":
        raise RuntimeError("cleanup failed")
    if on_stop == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
"""

# A twin stand-in: publishes /clock (0.02 s of simulation time every 20 ms) until SIGINT.
CLOCK_NODE = """
import sys, rclpy
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
rclpy.init(args=sys.argv)
node = Node("clock")
pub = node.create_publisher(Clock, "/clock", 10)
t = [0.0]
def tick():
    t[0] += 0.02
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = int(t[0]), int((t[0] % 1) * 1e9)
    pub.publish(msg)
node.create_timer(0.02, tick)
try:
    rclpy.spin(node)
except KeyboardInterrupt:
    pass
"""


def _node(name: str, code: str, required: bool = True, **params: object) -> NodeSpec:
    return NodeSpec(
        "test", sys.executable, None, name, dict(params), required=required, arguments=["-c", code]
    )


def _run_until_up_then(runner: GraphRunner, out: io.StringIO, action) -> int:  # noqa: ANN001
    """Run `runner` in this (main) thread; once the graph is up, call `action()` from another thread."""

    def trigger() -> None:
        deadline = time.monotonic() + 120
        while "graph up" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        action()

    threading.Thread(target=trigger, daemon=True).start()
    return runner.run()


@pytest.mark.parametrize(("on_stop", "code"), [("traceback", 1), ("segv", -signal.SIGSEGV)])
def test_a_required_node_that_crashes_while_the_graph_stops_fails_the_launch(
    ros_env: dict[str, str], on_stop: str, code: int
) -> None:
    """Ctrl-C, and the controller's cleanup crashes: the launch must not end with `exit code 0`."""
    out = io.StringIO()
    specs = [_node("steady", STOPPING_NODE), _node("crashy", STOPPING_NODE, on_stop=on_stop)]
    runner = GraphRunner(specs, env=ros_env, shutdown_timeout=5.0, out=out)
    rc = _run_until_up_then(runner, out, lambda: runner.request_stop(signal.SIGINT))
    log = out.getvalue()
    assert rc == 1, log
    assert f"ERROR: required node crashy exited with code {code}" in log and "while stopping" in log, log
    assert "node steady" not in log, log  # it stopped cleanly: not named
    assert log.rstrip().endswith("[launch] exit code 1"), log


def test_an_optional_node_that_crashes_while_stopping_leaves_the_exit_code_clean(
    ros_env: dict[str, str],
) -> None:
    out = io.StringIO()
    specs = [_node("steady", STOPPING_NODE), _node("extra", STOPPING_NODE, required=False, on_stop="segv")]
    runner = GraphRunner(specs, env=ros_env, shutdown_timeout=5.0, out=out)
    rc = _run_until_up_then(runner, out, lambda: runner.request_stop(signal.SIGINT))
    log = out.getvalue()
    assert rc == 0, log
    assert f"extra stopped with exit code {-signal.SIGSEGV}" in log and "ERROR" not in log, log


def test_a_twin_whose_clock_stands_still_is_reported_once_then_the_graph_stops(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    """`kill -STOP <twin>`: the launcher said nothing and ran on. It warns once that simulation time is
    stuck (naming the stopped twin), then stops the graph with a non-zero code."""
    out = io.StringIO()
    settings = ClockWatchSettings("clock", warn_after_s=2.0, stop_after_s=6.0)
    runner = GraphRunner(
        [_node("clock", CLOCK_NODE)], env=ros_env, shutdown_timeout=5.0, out=out, sim_clock=settings
    )
    stopped: list[int] = []

    def freeze_the_twin() -> None:
        # the launcher has heard the clock (discovery is slow on a loaded host), then it runs a while more
        deadline = time.monotonic() + 60.0
        while (runner._probe is None or runner._probe.clock_s is None) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        stopped.append(runner.procs[0][1].pid)
        os.kill(stopped[0], signal.SIGSTOP)

    try:
        rc = _run_until_up_then(runner, out, freeze_the_twin)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    log = out.getvalue()
    assert rc == 1, log
    assert log.count("WARNING: simulation time stuck at") == 1, log
    assert "clock (pid" in log and "is stopped" in log, log
    assert "ERROR: simulation time stuck" in log and "shutting down" in log, log
    assert log.index("WARNING: simulation time stuck") < log.index("ERROR: simulation time stuck"), log


def test_the_clock_watch_warns_once_says_when_time_runs_again_and_gives_up_after_its_bound() -> None:
    watch = SimClockWatch(warn_after_s=10.0, stop_after_s=30.0, now=0.0)
    assert watch.step(1.0, now=1.0) is Stall.NONE
    assert watch.step(1.0, now=10.5) is Stall.NONE  # 9.5 s without progress
    assert watch.step(1.0, now=11.5) is Stall.STUCK and watch.stalled_s(11.5) == pytest.approx(10.5)
    assert watch.step(1.0, now=15.0) is Stall.NONE  # said once
    assert watch.step(1.5, now=16.0) is Stall.RESUMED
    assert watch.step(1.6, now=17.0) is Stall.NONE
    assert watch.step(1.6, now=47.5) is Stall.STUCK
    assert watch.step(1.6, now=47.6) is Stall.GIVE_UP and watch.last_sim_s == 1.6


def test_the_clock_watch_counts_a_clock_never_heard_as_stuck() -> None:
    watch = SimClockWatch(warn_after_s=1.0, stop_after_s=2.0, now=0.0)
    assert watch.step(None, now=0.5) is Stall.NONE
    assert watch.step(None, now=1.5) is Stall.STUCK and watch.last_sim_s is None
    assert watch.step(None, now=2.5) is Stall.GIVE_UP
