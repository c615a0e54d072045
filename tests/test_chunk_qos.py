"""Reliability row 15: a QoS deadline or liveliness event on the chunk topic holds the arm, a second path
beside the chunk watchdog. controller_node as a real process against franky-sim, on the wall clock (QoS
durations are wall time), with a 5 s watchdog and 4 s chunks, so that only the QoS path can
stop the arm early.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from conftest import PYTHON, wait_for

rclpy = pytest.importorskip("rclpy")
from controller_rig import Rig  # noqa: E402
from dm1_ros.chunk_qos import chunk_qos  # noqa: E402
from trajectory_msgs.msg import MultiDOFJointTrajectory  # noqa: E402

WALL_CLOCK = (
    "-p",
    "use_sim_time:=false",
    "-p",
    "realtime_config:=ignore",
    "-p",
    "safety.chunk_timeout_s:=5.0",
)
CHUNK_S, SPEED = 4.0, 0.05  # each chunk runs 4 s ahead at 5 cm/s along +y
QUIET_FROM_S, QUIET_TO_S = 1.5, 2.5  # after the stream stops: the arm must be still here (its chunk is not)


def wall(rig: Rig) -> float:
    return rig.node.get_clock().now().nanoseconds * 1e-9  # the rig's node runs on the wall clock


def reason_with(rig: Rig, text: str) -> dict[str, str] | None:
    return next((s for s in reversed(list(rig.status)) if text in s.get("reasons", "")), None)


def max_joint_speed(rig: Rig, start: float, end: float) -> float:
    speeds = [np.abs(dq).max() for t, _, dq in list(rig.states) if start <= t <= end]
    assert speeds, f"no joint states between {start:.2f} and {end:.2f}"
    return float(max(speeds))


def assert_still_while_the_chunk_runs_on(rig: Rig, stream_end: float, what: str) -> None:
    wait_for(lambda: wall(rig) > stream_end + QUIET_TO_S + 0.1, 30, what="joint states after the hold")
    speed = max_joint_speed(rig, stream_end + QUIET_FROM_S, stream_end + QUIET_TO_S)
    assert speed < 0.02, f"{what}: the arm still follows its 4 s chunk ({speed:.3f} rad/s)"


@pytest.mark.slow
def test_a_publisher_that_misses_its_qos_deadline_holds_the_arm_before_the_watchdog(ros_env, procs) -> None:
    rig = Rig(procs, WALL_CLOCK)
    try:
        pub = rig.node.create_publisher(
            MultiDOFJointTrajectory, "/dm1/action_chunk/cartesian", chunk_qos(100.0, 1000.0)
        )
        wait_for(
            lambda: pub.get_subscription_count() >= 2, 30, what="the controller's two chunk subscriptions"
        )
        p0, t0 = rig.ee(), wall(rig)
        while wall(rig) < t0 + 0.6:  # 20 Hz for 0.6 s, then silence: the publisher stays alive
            now = wall(rig)
            rig.publish_chunk(
                now, [p0 + [0.0, SPEED * (now - t0 + i * 0.05), 0.0] for i in range(80)], pub=pub
            )
            time.sleep(0.05)
        stream_end = wall(rig)
        assert max_joint_speed(rig, t0 + 0.3, stream_end) > 0.05, "the arm did not follow the chunks"
        status = wait_for(lambda: reason_with(rig, "QoS deadline"), 10, what="a hold naming the QoS deadline")
        assert int(status["deadline_missed"]) >= 1 and status["state"] == "holding", status
        assert_still_while_the_chunk_runs_on(rig, stream_end, "deadline missed")
    finally:
        rig.close()


@pytest.mark.slow
def test_a_killed_publisher_whose_liveliness_lapses_holds_the_arm_before_the_watchdog(ros_env, procs) -> None:
    rig = Rig(procs, (*WALL_CLOCK, "-p", "chunk_deadline_ms:=0.0"))  # liveliness alone
    try:
        p0 = rig.ee()
        procs.start("publisher", [PYTHON, "tests/qos_chunk_publisher.py", *map(str, p0), "500"])
        wait_for(
            lambda: max_joint_speed(rig, wall(rig) - 0.3, wall(rig)) > 0.05,
            60,
            what="the arm following the publisher's chunks",
            detail=lambda: procs.log("publisher")[-2000:],
        )
        procs.stop("publisher", signal.SIGKILL)
        killed = wall(rig)
        status = wait_for(
            lambda: reason_with(rig, "liveliness"), 10, what="a hold naming the lost liveliness"
        )
        assert int(status["liveliness_lost"]) >= 1 and status["state"] == "holding", status
        assert int(status["deadline_missed"]) == 0, status  # not requested here
        assert_still_while_the_chunk_runs_on(rig, killed, "liveliness lost")
    finally:
        rig.close()
