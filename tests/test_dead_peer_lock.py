"""A process killed inside a shared-memory push must not stall the twin (reliability: a crashed peer).

Fast DDS guards each subscriber's shared-memory port with an interprocess mutex; a publisher SIGKILLed while
it holds one leaves it held, and any other writer to that port waits Fast DDS's 1 s lock timeout. Published
synchronously, that wait happens inside rclpy's `publish()` with the GIL held, and the twin's physics
(franky-sim steps it from a Python thread) stands still: a 1 s stall is libfranka's UDP timeout, a network
fault in the controller. `dm1_ros.dds_publishing` makes the twin and the controller publish asynchronously.
With `RMW_FASTRTPS_PUBLICATION_MODE=SYNCHRONOUS` forced, this test failed 2 of 9 runs (pauses of 0.99 and
1.01 s; a kill lands inside the victim's push only now and then); as shipped, 0 of 9, with no pause >= 0.25 s.
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
def test_publishers_killed_inside_a_shared_memory_push_do_not_stall_the_twin(procs) -> None:
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
    for r in range(ROUNDS):
        names = [f"victim{r}_{k}" for k in range(VICTIMS)]
        for name in names:
            procs.start(name, [*helper, "victim"])
        time.sleep(1.5)  # discovered, and pushing into the survivor's port
        for name in names:
            procs.stop(name, sig=signal.SIGKILL)
        time.sleep(1.5)  # the twin publishes /clock to the survivor at 200 Hz meanwhile
        pauses = [float(x) for x in re.findall(r"physics stood still for ([0-9.]+) s", procs.log("twin"))]
        assert not [p for p in pauses if p >= 0.8], (
            f"round {r}: the twin's physics stood still {max(pauses):.2f} s (libfranka's UDP timeout is 1 s)"
        )
    log = procs.log("controller")
    assert "NetworkException" not in log and "Net Exception" not in log, log[-2500:]
    assert procs.procs[0][1].poll() is None and procs.procs[1][1].poll() is None, "twin or controller exited"
