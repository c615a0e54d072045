"""controller_node as a real process (franky-sim, sim time): hand-written bad chunks do not move the arm, a
hold request's text stays one quoted line in the status, and the home service pre-empts a stream."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import wait_for

pytest.importorskip("rclpy")
from controller_rig import Rig  # noqa: E402
from dm1.kinematics import fr3_fk  # noqa: E402
from dm1.policy.step import ActionChunk  # noqa: E402
from dm1_ros.conversions import chunk_to_multidof_trajectory, to_time_msg  # noqa: E402
from trajectory_msgs.msg import MultiDOFJointTrajectory  # noqa: E402

EE, TOP = ("x", "y", "z", "gripper"), (1.0, 0.0, 0.0, 0.0)


@pytest.mark.slow
def test_bad_chunks_do_not_move_the_arm_and_home_pre_empts_a_stream(rig: Rig) -> None:
    rig.arm.wait_sim(max(0.0, 2.5 - rig.arm.time))  # the stale chunk below is stamped 2 s back: sim time > 0
    p0, t0 = rig.ee(), rig.arm.time

    def chunk(stamp: float, n: int = 10) -> MultiDOFJointTrajectory:  # 5 cm away, what the rig publishes
        acts = np.column_stack([np.tile(p0 + np.array([0.0, 0.05, 0.0]), (n, 1)), np.zeros(n)])
        return chunk_to_multidof_trajectory(ActionChunk(stamp, 0.05, acts, 0, stamp, "ee_position", EE), TOP)

    in_hand = chunk(t0)
    in_hand.header.frame_id = "fr3_hand_tcp"  # a relative offset in the hand frame: lunged 66.6 mm
    bad_stamp = chunk(t0)
    bad_stamp.header.stamp.nanosec = 1_500_000_000  # read as up to 1 s later: moved 45 mm
    hold = MultiDOFJointTrajectory(joint_names=["fr3_hand_tcp", "gripper"])
    hold.header.stamp, hold.header.frame_id = to_time_msg(t0), "x\n[controller_node] [ERROR] forged"
    for msg in (in_hand, bad_stamp, chunk(t0 - 2.0, n=100), hold):  # the third: 2 s old, spanning 5 s
        rig.chunk_pub.publish(msg)
    rig.arm.wait_sim(0.5)
    moved = max(float(np.linalg.norm(fr3_fk(q)[0] - p0)) for t, q, _ in list(rig.states) if t >= t0)
    assert moved < 0.002, f"the arm moved {1000 * moved:.1f} mm on refused chunks"
    wait_for(
        lambda: int(rig.last_status("rejected_stale")) >= 1,
        10,
        what="the stale chunk counted",
        detail=lambda: rig.status[-1],
    )
    status = rig.status[-1]
    assert int(status["rejected_malformed"]) >= 2 and int(status["accepted"]) == 0, status
    assert status["reasons"] == "stop requested: 'x\\n[controller_node] [ERROR] forged'", status

    streamer = threading.Thread(target=rig.stream, args=(rig.along_y(speed=0.02), 4.0), daemon=True)
    streamer.start()
    wait_for(lambda: rig.last_status("state") == "active", 20, what="the stream running")
    asked = rig.arm.time
    home = rig.call("/dm1/controller/home")
    streamer.join(timeout=60)
    assert home.success, home
    closest = min(float(np.linalg.norm(fr3_fk(q)[0] - p0)) for t, q, _ in list(rig.states) if t >= asked)
    assert closest < 0.005, f"the home move under a stream ended {1000 * closest:.1f} mm from home"
