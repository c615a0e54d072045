"""Scripted demonstrations through the teleop node: the ROS side of `dm1 data collect --via-teleop`.

`CollectDriver` is an rclpy client of a running graph (`dm1 launch franka --use-sim --no-policy --record`
with the teleop node's `device: scripted`). Per episode it homes the arm (`/dm1/controller/home`, as
`dm1 eval` does; the controller opens the gripper first, so a lifted cube drops), resets the cube
(`/twin/reset`), starts recording (`/teleop/start`), waits — in simulation time — for `/twin/success` to hold
plus a short extra hold, then marks the episode and saves it (`/teleop/mark_success`, `/teleop/stop_save`); on
the time limit it discards the episode (or marks it failed and saves it with `keep_failures`). `abort()`
discards an open episode, so an interrupted run leaves no half-written file. Every wait is bounded (wall
clock as a safety net).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from dm1_ros.conversions import joint_state_to_arm
from dm1_ros.graph_client import GraphClient

SERVICES = {
    "reset": "/twin/reset",
    "home": "/dm1/controller/home",
    "recover": "/dm1/controller/recover",
    **{n: f"/teleop/{n}" for n in ("start", "stop_save", "discard", "mark_success", "mark_failure")},
}


@dataclass
class CollectOutcome:
    """One attempted demonstration (times in simulation seconds unless named wall)."""

    index: int
    seed: int | None
    success: bool
    saved: bool
    file: str | None
    sim_s: float
    wall_s: float
    frames: int


class CollectDriver(GraphClient):
    """Runs scripted episodes through the teleop node of a live graph (see the module docstring)."""

    def __init__(self, service_timeout_s: float = 120.0) -> None:
        super().__init__("dm1_collect", service_timeout_s)
        self._clients = {k: self.node.create_client(Trigger, v) for k, v in SERVICES.items()}
        self.success: bool | None = None
        self.status: dict[str, Any] = {}
        self.status_count = 0
        self.cube: np.ndarray | None = None
        self.joints: tuple[np.ndarray, float] | None = None
        self.recording = False  # an episode this driver started is open in the teleop node
        self.node.create_subscription(Bool, "/twin/success", self._on_success, 10)
        self.node.create_subscription(String, "/teleop/status", self._on_status, 10)
        self.node.create_subscription(PoseStamped, "/twin/cube_pose", self._on_cube, 10)
        self.node.create_subscription(JointState, "/joint_states", self._on_joints, 10)

    # -- callbacks -------------------------------------------------------------------------------------------
    def _on_success(self, msg: Bool) -> None:
        self.success = bool(msg.data)

    def _on_status(self, msg: String) -> None:
        try:
            self.status = json.loads(msg.data)
        except ValueError:
            return
        self.status_count += 1

    def _on_cube(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self.cube = np.array([p.x, p.y, p.z])

    def _on_joints(self, msg: JointState) -> None:
        try:
            self.joints = joint_state_to_arm(msg)
        except ValueError:
            return

    # -- helpers ---------------------------------------------------------------------------------------------
    def wait_until(self, predicate: Any, sim_limit_s: float, wall_limit_s: float, what: str) -> bool:
        """Spin until `predicate()` or `sim_limit_s` of simulation time; False on the sim limit.

        Raises TimeoutError when `wall_limit_s` of wall time pass first and `what` is set (a stalled twin).
        """
        t0, wall0 = self.sim_now(), time.monotonic()
        while not predicate():
            if self.sim_now() - t0 >= sim_limit_s:
                return False
            if time.monotonic() - wall0 > wall_limit_s:
                if what:
                    raise TimeoutError(
                        f"{what}: none after {wall_limit_s:.0f} s (wall); is the twin running?"
                    )
                return False
            self.spin(0.02)
        return True

    def call(self, name: str, check: bool = True) -> tuple[bool, str]:
        """Call a Trigger service by short name; with `check`, raise with its message when it fails."""
        return self.trigger(self._clients[name], check=check)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until /clock runs, joint states and the teleop status arrive, and the services exist."""
        deadline = time.monotonic() + timeout_s
        while self.sim_now() <= 0.0 or self.joints is None or not self.status:
            if time.monotonic() > deadline:
                seen = {
                    "/clock": self.sim_now() > 0,
                    "/joint_states": self.joints,
                    "/teleop/status": self.status,
                }
                missing = [topic for topic, ok in seen.items() if not ok]
                raise TimeoutError(f"graph not ready after {timeout_s:.0f} s: no {', '.join(missing)}")
            self.spin(0.1)
        for name in ("start", "home", "reset"):
            if not self._clients[name].wait_for_service(timeout_sec=max(deadline - time.monotonic(), 1.0)):
                raise TimeoutError(f"service {SERVICES[name]} not available")

    # -- episode steps ---------------------------------------------------------------------------------------
    def home(self) -> None:
        """Home the arm; after a latched controller fault, recover once and home again."""
        self.home_with_recovery(self._clients["home"], self._clients["recover"])

    def reset(self) -> int | None:
        """Reset the cube; wait until the twin reports the new scene. Returns the reset's seed (if any)."""
        _, message = self.call("reset")
        reply = json.loads(message)
        pos = np.asarray(reply["pos"], dtype=float)
        self.success = None
        self.wait_until(
            lambda: (
                self.success is False
                and self.cube is not None
                and float(np.linalg.norm(self.cube - pos)) < 2e-3
            ),
            sim_limit_s=5.0,
            wall_limit_s=60.0,
            what="/twin/success and /twin/cube_pose after reset",
        )
        return reply.get("seed")

    def run_episode(
        self,
        index: int,
        max_sim_s: float = 20.0,
        post_success_s: float = 0.5,
        keep_failures: bool = False,
        wall_limit_s: float = 600.0,
    ) -> CollectOutcome:
        """Home (gripper opened first), reset, record until success + `post_success_s` or `max_sim_s`;
        save or discard."""
        wall0 = time.monotonic()
        self.home()  # the controller's home opens the gripper first: the cube drops where the arm is
        seed = self.reset()
        self.call("start")
        self.recording = True
        t0, count0 = self.sim_now(), self.status_count
        success_at: float | None = None
        while True:
            self.spin(0.02)
            self.check_sim_advancing(f"episode {index}")
            now = self.sim_now()
            if success_at is None and self.success:
                success_at = now
            if success_at is not None and now - success_at >= post_success_s:
                break
            if now - t0 >= max_sim_s or time.monotonic() - wall0 > wall_limit_s:
                break
            if self.status_count > count0 + 2 and self.status.get("state") == "idle":
                self.recording = False  # the node dropped the episode
                error = self.status.get("last_error") or "?"
                if error.startswith("controller fault"):  # a failed episode; the next home recovers
                    sim_s, wall_s = self.sim_now() - t0, time.monotonic() - wall0
                    return CollectOutcome(index, seed, False, False, None, sim_s, wall_s, 0)
                raise RuntimeError(f"teleop node stopped recording: {error}")  # disk full, ...
        frames = int(self.status.get("recorder_qa", {}).get("frames", 0))
        success = success_at is not None
        saved, file = False, None
        if success or keep_failures:
            self.call("mark_success" if success else "mark_failure")
            _, message = self.call("stop_save")
            saved, file = True, _episode_file(message)
        else:
            self.call("discard")
        self.recording = False
        sim_s, wall_s = self.sim_now() - t0, time.monotonic() - wall0
        return CollectOutcome(index, seed, success, saved, file, sim_s, wall_s, frames)

    def abort(self) -> None:
        """Discard the open episode (interrupt or error mid-episode): no half-written file stays behind."""
        if self.recording:
            try:
                self.call("discard", check=False)
            finally:
                self.recording = False


def _episode_file(message: str) -> str | None:
    """`episode_<n>.h5` from the teleop node's reply `saved episode <n> (success=...)`."""
    m = re.search(r"saved episode (\d+)", message)
    return f"episode_{int(m.group(1)):06d}.h5" if m else None
