"""`dm1_ros.node_signals`: a node process stops on Ctrl-C through rclpy's context shutdown, exit code 0.

(rclpy's handler chains to Python's, whose KeyboardInterrupt can land inside rclpy's pybind11 bindings and
come out as a RuntimeError, exit code 1: "controller_node stopped with exit code 1" in a demo's log.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import wait_for


def _deliver(signum: int) -> None:
    """Send `signum` to this process and give the interpreter bytecodes to run its handler on."""
    os.kill(os.getpid(), signum)
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        pass


def test_an_error_caused_by_the_stop_ends_the_block_quietly(ros_env) -> None:
    from dm1_ros.node_signals import stopped_by_signals

    with stopped_by_signals():
        _deliver(signal.SIGTERM)  # recorded, not raised
        raise RuntimeError("publisher created on a shut-down context")  # what a half-started node hits
    # reached: a stop during start-up is a stop, not a crash


def test_an_error_without_a_signal_propagates(ros_env) -> None:
    from dm1_ros.node_signals import stopped_by_signals

    with pytest.raises(ValueError, match="bad parameter"), stopped_by_signals():
        raise ValueError("bad parameter")


def test_a_second_signal_interrupts_a_block_that_does_not_stop(ros_env) -> None:
    from dm1_ros.node_signals import stopped_by_signals

    after_second = False
    with stopped_by_signals():
        _deliver(signal.SIGINT)
        _deliver(signal.SIGINT)  # the user insists: KeyboardInterrupt now, ending the block
        after_second = True
    assert not after_second


SPINNER = textwrap.dedent(
    """
    import sys
    import rclpy
    from dm1_ros.node_signals import stopped_by_signals
    from std_msgs.msg import String

    with stopped_by_signals():
        rclpy.init()
        node = rclpy.create_node("busy")
        pub = node.create_publisher(String, "/busy", 10)
        node.create_subscription(String, "/busy", lambda m: None, 10)
        node.create_timer(0.001, lambda: pub.publish(String(data="x" * 1000)))
        print("spinning", flush=True)
        rclpy.spin(node)
    print("stopped cleanly", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_busy_spinning_process_stops_on_one_signal_with_exit_code_0(ros_env, tmp_path, signum: int) -> None:
    # rclpy's handler must still shut the context down with the recording handler installed before init
    log = tmp_path / "spinner.log"
    with log.open("wb") as out:
        cmd = [sys.executable, "-c", SPINNER]
        proc = subprocess.Popen(cmd, env=ros_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "spinning" in log.read_text(), 60, what="spinner up")
            time.sleep(0.5)  # messages in flight: the stop lands while callbacks run
            proc.send_signal(signum)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "stopped cleanly" in text and "Traceback" not in text, text


STOP_BOUND_S = 15.0  # wall seconds for the three nodes to exit after one signal each (2 s was tight)
SIM_TIME_IDLER = textwrap.dedent(
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from dm1_ros.node_signals import spin_until_stopped, stopped_by_signals

    with stopped_by_signals():
        rclpy.init()
        executor = SingleThreadedExecutor()
        node = rclpy.create_node("idler", parameter_overrides=[Parameter("use_sim_time", value=True)])
        node.create_timer(0.01, lambda: print("a sim-time tick without /clock", flush=True))
        executor.add_node(node)
        print("spinning", flush=True)
        spin_until_stopped(executor, node)
    print("stopped cleanly", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_node_whose_sim_clock_stopped_ends_on_one_signal(ros_env, tmp_path, signum: int) -> None:
    """A node on sim time whose /clock stopped (the twin killed or hung) runs no callback at all. rclpy's
    handler wakes the executor through a guard condition and shuts the context down a moment later: woken
    before the shutdown, `executor.spin()` waited again for good, and the first Ctrl-C did nothing (1 in 3
    stops). A few nodes at once, so a lost wake-up shows on most runs. A lost one never ends: the bound (wall
    time) only has to outlast three clean-ups on a loaded host."""
    logs = [tmp_path / f"idler{i}.log" for i in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for log in logs:
            with log.open("wb") as out:
                cmd = [sys.executable, "-c", SIM_TIME_IDLER]
                procs.append(subprocess.Popen(cmd, env=ros_env, stdout=out, stderr=subprocess.STDOUT))
        wait_for(lambda: all("spinning" in log.read_text() for log in logs), 60, what="the nodes up")
        time.sleep(0.3)  # into the executor's wait
        for proc in procs:
            proc.send_signal(signum)
        sent = time.monotonic()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, sent + STOP_BOUND_S - time.monotonic()))
        alive = [log.name for proc, log in zip(procs, logs, strict=True) if proc.poll() is None]
        assert not alive, (
            f"still running {STOP_BOUND_S:.0f} s after one {signal.Signals(signum).name}: {alive}"
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs, strict=True):
        text = log.read_text()
        assert proc.returncode == 0, text
        assert "stopped cleanly" in text and "Traceback" not in text, text
        assert "a sim-time tick" not in text, text  # the clock never ran: nothing woke it but the signal
