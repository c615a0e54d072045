"""`GraphClient`: the sim-time client of a live graph gives up on a stopped twin instead of waiting forever.

Real rclpy pub/sub in one process: a /clock publisher stands in for the twin's clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from dm1_ros.graph_client import GraphClient  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

#: Wall seconds without /clock advancing before the check raises (the drivers use 60). Not 0.5: the clock's
#: messages cross DDS (discovery first, then delivery on a loaded host): a late one read as a stall.
STALL_S = 5.0


@pytest.fixture()
def client_and_clock(ros_env) -> Iterator[tuple[GraphClient, object]]:
    rclpy.init()
    client = GraphClient("dm1_test_graph_client", service_timeout_s=1.0)
    clock_node = rclpy.create_node("dm1_test_clock")
    pub = clock_node.create_publisher(Clock, "/clock", 10)
    sim = {"ns": 1_000_000_000}

    def tick(advance: bool) -> float:
        """Publish the clock (advanced 5 ms or not); returns the time published (s)."""
        if advance:
            sim["ns"] += 5_000_000
        pub.publish(Clock(clock=Time(sec=sim["ns"] // 10**9, nanosec=sim["ns"] % 10**9)))
        return sim["ns"] * 1e-9

    try:
        yield client, tick
    finally:
        clock_node.destroy_node()
        client.close()
        rclpy.shutdown()


def _spin_with_clock(client: GraphClient, tick, advance: bool, wall_s: float, until=None) -> None:
    end = time.monotonic() + wall_s
    while time.monotonic() < end and not (until and until()):
        tick(advance)
        client.spin(0.02)
        client.check_sim_advancing("episode 0", stall_s=STALL_S)


def test_running_clock_is_not_a_stall(client_and_clock) -> None:
    client, tick = client_and_clock
    _spin_with_clock(client, tick, advance=True, wall_s=1.5 * STALL_S)  # past a stall window: no error
    assert client.sim_now() > 1.0


def test_stopped_clock_raises_naming_the_episode_and_the_time(client_and_clock) -> None:
    client, tick = client_and_clock
    # the clock runs until the client has it (discovery, then delivery: not a fixed wall time)
    _spin_with_clock(client, tick, advance=True, wall_s=60.0, until=lambda: client.sim_now() > 1.0)
    stuck = tick(False)  # from now on the same stamp again and again: the client ends on this one
    with pytest.raises(TimeoutError, match=rf"episode 0: simulation time stuck at {stuck:.3f} s"):
        _spin_with_clock(client, tick, advance=False, wall_s=60.0)  # raises after STALL_S


def test_ctrl_c_during_a_service_call_raises_keyboard_interrupt_and_the_client_stays_usable(ros_env) -> None:
    import os
    import signal
    import threading

    from dm1.interrupts import deferred_interrupts
    from dm1_ros.spin_thread import SpinThread
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger

    rclpy.init()
    client = GraphClient("dm1_test_interrupted_client", service_timeout_s=30.0)
    server = rclpy.create_node("dm1_test_slow_server")
    server.create_service(Trigger, "/dm1_test/home", lambda _req, res: Trigger.Response(success=True))
    home = client.node.create_client(Trigger, "/dm1_test/home")
    try:
        # The server's node is not spun yet: the call waits (as for a slow home) until Ctrl-C arrives.
        with deferred_interrupts():
            timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            with pytest.raises(KeyboardInterrupt, match="SIGINT"):  # not the TimeoutError of 30 s later
                client.trigger(home, "home")
            timer.join()
        executor = SingleThreadedExecutor()
        executor.add_node(server)
        spinner = SpinThread(executor, "slow-server").start()
        assert client.trigger(home, "home") == (True, "")  # same node and context: still usable
        spinner.stop()
    finally:
        server.destroy_node()
        client.close()
        rclpy.shutdown()


def test_a_graph_that_exits_during_a_service_call_ends_the_wait_not_a_timeout(ros_env, tmp_path) -> None:
    """`dm1 eval` waits on a service of the graph it launched; the graph dies: the wait ends with the check's
    error at the next step, not with the service's TimeoutError."""
    import subprocess
    import sys

    from dm1.commands.graph_process import raise_if_exited
    from dm1_ros.service_calls import checked_while_waiting
    from std_srvs.srv import Trigger

    rclpy.init()
    client = GraphClient("dm1_test_orphaned_client", service_timeout_s=20.0)
    server = rclpy.create_node("dm1_test_silent_server")  # never spun: it never answers
    server.create_service(Trigger, "/dm1_test/reset", lambda _req, res: Trigger.Response(success=True))
    reset = client.node.create_client(Trigger, "/dm1_test/reset")
    graph = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])  # the launched graph
    try:
        exited = pytest.raises(RuntimeError, match=r"the launched graph exited \(code 0\)")
        with checked_while_waiting(raise_if_exited(graph)), exited:
            client.trigger(reset, "reset")
        assert graph.poll() == 0
        with pytest.raises(TimeoutError):  # outside the block the check is gone: the service's own timeout
            client.timeout_s = 0.5
            client.trigger(reset, "reset")
    finally:
        graph.kill()
        graph.wait()
        server.destroy_node()
        client.close()
        rclpy.shutdown()
