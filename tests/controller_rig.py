"""The controller-node test rig: an in-process franky-sim FR3 publishing /clock, a test node (chunk
publishers, /joint_states and status recorders) and `controller_node` as a real process. Used by the
controller, chunk QoS, chunk validation and joint-mode tests; `running_rig` is the body of the `rig`
fixture (tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import rclpy
from conftest import PYTHON, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from dm1.kinematics import fr3_fk
from dm1.policy.step import ActionChunk
from dm1.teleop.recorder import EE_ACTION_NAMES
from dm1_ros.conversions import chunk_to_multidof_trajectory, diagnostic_values, from_time_msg, to_time_msg
from dm1_ros.spin_thread import SpinThread
from franky_sim_arm import SimArm
from rclpy.executors import SingleThreadedExecutor
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

TOP_DOWN = (1.0, 0.0, 0.0, 0.0)
#: The rig's chunk watchdog (`safety.chunk_timeout_s`; the default is 0.1 s). The test process streams the
#: chunks itself while franky-sim runs on in real time in its physics thread: a main thread held up for more
#: than 100 ms (GIL, a loaded CI host) let the default watchdog hold the arm mid-stream, and tests about
#: something else failed. 0.3 s is still well inside a chunk (16 points, 0.75 s); the watchdog's own value is
#: checked in the unit tests (test_safety, test_executor) and against it below (the hold's reason).
STREAM_CHUNK_TIMEOUT_S = 0.3


class Rig:
    """In-process franky-sim publishing /clock, a test node (publisher, recorders), the controller process."""

    def __init__(
        self, procs, extra_params: tuple[str, ...] = (), chunk_timeout_s: float = STREAM_CHUNK_TIMEOUT_S
    ) -> None:
        self.arm = SimArm()
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("controller_test_rig", context=self.ctx)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.chunk_pub = self.node.create_publisher(
            MultiDOFJointTrajectory, "/dm1/action_chunk/cartesian", 10
        )
        self.joint_pub = self.node.create_publisher(JointTrajectory, "/dm1/action_chunk/joint", 10)
        self.states: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.status: list[dict[str, str]] = []
        self.node.create_subscription(JointState, "/joint_states", self._on_js, 100)
        self.node.create_subscription(DiagnosticArray, "/dm1/controller/status", self._on_status, 10)
        self._clock_lock, self._clock_on = threading.Lock(), True
        self.clock_offset = (
            0.0  # s added to the simulated time on /clock (a negative step: a restarted clock)
        )
        self.arm.post_step.append(self._tick_clock)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.spinner = SpinThread(self.executor, "controller-test-rig").start()
        given = [p.split(":=", 1)[1] for p in extra_params if p.startswith("safety.chunk_timeout_s:=")]
        self.chunk_timeout_s = float(given[-1]) if given else chunk_timeout_s  # a caller's value wins
        args = ["-p", f"robot_ip:={self.arm.host}", "-p", "use_sim_time:=true"]
        args += ["-p", f"safety.chunk_timeout_s:={self.chunk_timeout_s}", *extra_params]
        self.proc = procs.start("controller", [PYTHON, "-m", "dm1_ros.controller_node", "--ros-args", *args])
        self.procs = procs
        wait_for(lambda: len(self.states) > 5 or self.proc.poll() is not None, 60, what="/joint_states")
        assert self.proc.poll() is None, procs.log("controller")

    def _tick_clock(self, arm: SimArm) -> None:
        with self._clock_lock:  # the physics thread; close() turns it off before destroying the publisher
            if self._clock_on and arm.steps % 2 == 0:
                self.clock_pub.publish(Clock(clock=to_time_msg(arm.time + self.clock_offset)))

    def now(self) -> float:
        """The time on /clock (s): the simulated time plus `clock_offset`."""
        return self.arm.time + self.clock_offset

    def _on_js(self, msg: JointState) -> None:
        self.states.append(
            (from_time_msg(msg.header.stamp), np.array(msg.position[:7]), np.array(msg.velocity[:7]))
        )

    def _on_status(self, msg: DiagnosticArray) -> None:
        self.status.append({**diagnostic_values(msg.status[0]), "message": msg.status[0].message})

    def ee(self) -> np.ndarray:
        return fr3_fk(self.states[-1][1])[0]

    def publish_chunk(
        self, stamp: float, positions: np.ndarray, dt: float = 0.05, grip: float = 0.0, pub=None
    ) -> None:
        acts = np.column_stack([positions, np.full(len(positions), grip)])  # (N, 4) [x, y, z, gripper]
        chunk = ActionChunk(stamp, dt, acts, 0, stamp, "ee_position", EE_ACTION_NAMES)
        (pub or self.chunk_pub).publish(chunk_to_multidof_trajectory(chunk, TOP_DOWN))

    def along_y(self, speed: float = 0.06, seconds: float = 2.0):
        """A path from the EE's position now along +y at `speed` m/s for `seconds` (then it stays)."""
        p0, t0 = self.ee(), self.now()
        return lambda t: p0 + np.array([0.0, speed, 0.0]) * float(np.clip(t - t0, 0.0, seconds))

    def stream(self, path, seconds: float, period: float = 0.05, n: int = 16) -> list[float]:
        """Publish chunks of path(t) every `period` s of sim time (stamp = now); returns publish times."""
        t_end, stamps = self.arm.time + seconds, []
        while self.arm.time < t_end:
            t = self.now()
            self.publish_chunk(t, np.array([path(t + i * 0.05) for i in range(n)]))
            stamps.append(t)
            self.arm.wait_sim(period)
        return stamps

    def call(self, service: str) -> Trigger.Response:
        client = self.node.create_client(Trigger, service)
        assert client.wait_for_service(timeout_sec=30)
        future = client.call_async(Trigger.Request())
        wait_for(future.done, 60, what=f"{service} response")
        return future.result()

    def last_status(self, key: str) -> str:
        wait_for(lambda: self.status, 30, what="controller status")
        return self.status[-1][key]

    def close(self) -> None:
        self.procs.stop("controller")
        with self._clock_lock:
            self._clock_on = False
        self.spinner.stop()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
        self.arm.close()


def running_rig(procs) -> Iterator[Rig]:
    """The body of the `rig` fixture: one `Rig` (its controller started by `procs`), closed whatever the test
    did."""
    r = Rig(procs)
    try:
        yield r
    finally:
        r.close()
