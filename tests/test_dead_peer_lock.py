"""Processes killed inside a shared-memory push must not crash the twin or the controller (a crashed peer).

Fast DDS guards each subscriber's shared-memory port with an interprocess mutex; a publisher SIGKILLed while
it holds one leaves it held, and any other writer to that port waits Fast DDS's 1 s lock timeout. rclpy
calls `write()` with the GIL held, so a writer caught in that wait stands the whole Python process still, and
a writer whose history stays full fails ("cannot publish data", an `RCLError`). The twin and the controller
publish asynchronously (`dm1_ros.dds_publishing`) and through `GuardedPublisher` (a failure drops the message
and rests the publisher): before the guard, one CI run ended the controller with an uncaught `RCLError`.
What is not guaranteed: the twin's physics can still stand still ~1 s now and then (a writer blocked once;
franky-sim steps the physics from a Python thread), which libfranka reports as a network fault. Measured
2026-11-30 18:09-18:18, 40 kills a run: a pause >= 0.8 s in 3 of 10 runs (1.00, 1.04, 0.88 s). So this test
asserts what holds: both processes stay up (an uncaught error ends an rclpy node), and a lost libfranka
link is latched as a controller fault (the arm held), never a crash.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import free_loopback_host, wait_for

ROUNDS, VICTIMS = 10, 4  # 40 kills a run (synchronous publishing: a ~1 s pause in 2 of 9 runs)


@pytest.mark.slow
def test_publishers_killed_inside_a_shared_memory_push_crash_neither_the_twin_nor_the_controller(
    procs,
) -> None:
    py = sys.executable
    host = free_loopback_host()
    procs.start("twin", [py, "-m", "dm1_sim.twin_node", "--ros-args", "-p", f"host:={host}"])
    wait_for(lambda: "twin up" in procs.log("twin"), 120, what="the twin's franky-sim server")
    ctrl = ["-p", f"robot_ip:={host}", "-p", "use_sim_time:=true"]
    procs.start("controller", [py, "-m", "dm1_ros.controller_node", "--ros-args", *ctrl])
    wait_for(lambda: "controller up" in procs.log("controller"), 120, what="the controller (a franky client)")
    helper = [py, str(Path(__file__).with_name("dds_lock_peers.py"))]
    procs.start("survivor", [*helper, "survivor"])  # the twin's /clock and the victims' flood both reach it
    time.sleep(2.0)
    twin, controller = procs.procs[0][1], procs.procs[1][1]
    for r in range(ROUNDS):
        names = [f"victim{r}_{k}" for k in range(VICTIMS)]
        for name in names:
            procs.start(name, [*helper, "victim"])
        time.sleep(1.5)  # discovered, and pushing into the survivor's port
        for name in names:
            procs.stop(name, sig=signal.SIGKILL)
        time.sleep(1.5)  # the twin publishes /clock to the survivor at 200 Hz meanwhile
        assert twin.poll() is None and controller.poll() is None, f"round {r}: twin or controller exited"
    log = procs.log(
        "controller"
    )  # an error raised out of a timer would have ended the process (polled above)
    if "NetworkException" in log:  # the twin stood still > 1 s: libfranka's timeout, latched as a fault (the
        # backend latches a lost link itself since 3b55ac8; this branch runs only on a loaded host)
        assert re.search(r"fault latched: (internal error in the control tick: )?NetworkException", log), log[
            -3000:
        ]
    pauses = [float(x) for x in re.findall(r"physics stood still for ([0-9.]+) s", procs.log("twin"))]
    print(f"physics pauses >= 0.25 s: {pauses}")  # reported by the twin (shown with -s)
