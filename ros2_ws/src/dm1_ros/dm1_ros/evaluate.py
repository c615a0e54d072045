"""Closed-loop evaluation through the full ROS 2 stack: twin → policy → controller → franky → franky-sim.

`EvalDriver` is an rclpy client of a running graph (`dm1 launch franka --use-sim --model M`). Per episode it
deactivates the policy, homes the arm (`/dm1/controller/home`), randomizes the cube (`/twin/reset`), activates
the policy and waits — in simulation time — for `/twin/success`, the time limit or a controller fault (a
reflex: the episode fails, naming the fault, and the next one recovers the controller before it homes). It
also collects the policy node's per-tick latency ledger (`/dm1/policy/ledger`) and checks that every chunk is
stamped in the future.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from dm1.control.executor import STATUS_TOPIC
from dm1.evaluation.progress import EpisodeProgress, ProgressFields
from dm1.kinematics import fr3_fk
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from dm1_ros.chunk_qos import CARTESIAN_TOPIC, JOINT_TOPIC
from dm1_ros.conversions import from_time_msg, joint_state_to_arm
from dm1_ros.graph_client import GraphClient
from dm1_ros.lifecycle_client import LifecycleClient

PROGRESS_PERIOD_S = 0.02  # TCP-to-cube distance sampled at 50 Hz (0.3 m/s: 6 mm between samples)


@dataclass
class EpisodeOutcome(ProgressFields):
    """One evaluated episode (times in simulation seconds unless named wall)."""

    index: int
    success: bool
    sim_duration_s: float
    wall_s: float
    chunks: int
    past_stamped_chunks: int
    ledger_ms: dict[str, list[float]] = field(default_factory=dict)
    seed: int | None = None  # the cube pose's seed, as the twin's reset reply names it (None: unseeded)
    fault: str | None = None  # the controller's fault that ended the episode (None: none)
    recovered: str | None = None  # the refusal of this episode's home that a recovery cleared (None: none)


def _json_object(text: str) -> dict:
    """`text` as a JSON object ({} when it is not one)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class EvalDriver(GraphClient):
    """Runs seeded episodes against a live graph. All waits are bounded (wall clock as a safety net)."""

    def __init__(self, policy_node: str = "policy_node", service_timeout_s: float = 60.0) -> None:
        super().__init__("dm1_eval", service_timeout_s)
        self.lifecycle = LifecycleClient(policy_node, node=self.node, timeout_s=service_timeout_s)
        self._reset = self.node.create_client(Trigger, "/twin/reset")
        self._home = self.node.create_client(Trigger, "/dm1/controller/home")
        self._recover = self.node.create_client(Trigger, "/dm1/controller/recover")
        self._fault: str | None = None
        self._watch_faults_from = math.inf  # sim time: controller faults count for the episode from here
        self._success: bool | None = None
        self._chunks = 0
        self._past = 0
        self._ledger: dict[str, list[float]] = {}
        self.node.create_subscription(Bool, "/twin/success", self._on_success, 10)
        self.node.create_subscription(DiagnosticArray, "/dm1/policy/ledger", self._on_ledger, 50)
        self.node.create_subscription(DiagnosticArray, STATUS_TOPIC, self._on_controller, 10)
        self.node.create_subscription(MultiDOFJointTrajectory, CARTESIAN_TOPIC, self._on_chunk, 10)
        self.node.create_subscription(JointTrajectory, JOINT_TOPIC, self._on_chunk, 10)
        self.progress: EpisodeProgress | None = None  # set while an episode runs
        # sim times at which the running (or last) episode's policy was activated and its control ended
        # (success seen or time up; the policy is deactivated right after)
        self.episode_start_s = self.episode_end_s = math.nan
        self._last_fk = -math.inf
        self.node.create_subscription(PoseStamped, "/twin/cube_pose", self._on_cube, 10)
        self.node.create_subscription(JointState, "/joint_states", self._on_joints, 10)

    # -- callbacks -------------------------------------------------------------------------------------------
    def _on_success(self, msg: Bool) -> None:
        self._success = bool(msg.data)

    def _on_chunk(self, msg: MultiDOFJointTrajectory | JointTrajectory) -> None:
        if not msg.points:  # the policy's explicit hold (stale input): not a chunk of actions
            return
        self._chunks += 1
        if from_time_msg(msg.header.stamp) < self.sim_now():
            self._past += 1

    def _on_controller(self, msg: DiagnosticArray) -> None:
        if self.progress is None or from_time_msg(msg.header.stamp) < self._watch_faults_from:
            return  # between episodes, or published before this episode's home and recovery
        for status in msg.status:  # the controller reports a latched fault at ERROR level, naming it
            if status.level == DiagnosticStatus.ERROR and self._fault is None:
                self._fault = status.message or "controller fault"

    def _on_cube(self, msg: PoseStamped) -> None:
        if self.progress is not None:
            p = msg.pose.position
            self.progress.on_cube((p.x, p.y, p.z))

    def _on_joints(self, msg: JointState) -> None:
        stamp = from_time_msg(msg.header.stamp)
        # FK at most every PROGRESS_PERIOD_S (joint states come at >= 100 Hz; this client shares the CPU)
        if self.progress is None or stamp - self._last_fk < PROGRESS_PERIOD_S:
            return
        self._last_fk = stamp
        try:
            q, width = joint_state_to_arm(msg)
        except ValueError:
            return
        self.progress.on_ee(fr3_fk(q)[0], width)

    def _on_ledger(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            for kv in status.values:
                if not kv.key.endswith("_ms"):
                    continue
                try:
                    self._ledger.setdefault(kv.key, []).append(float(kv.value))
                except ValueError:
                    continue

    # -- graph ---------------------------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until /clock runs and the policy node answers its lifecycle services."""
        deadline = time.monotonic() + timeout_s
        while self.sim_now() <= 0.0:
            if time.monotonic() > deadline:
                raise TimeoutError("no /clock from the twin")
            self.spin(0.1)
        state = self.lifecycle.get_state()
        if state not in ("inactive", "active"):
            raise RuntimeError(f"policy node is {state!r} (expected inactive or active): see its log")

    # -- episodes --------------------------------------------------------------------------------------------
    def run_episode(self, index: int, max_sim_s: float = 20.0, wall_limit_s: float = 300.0) -> EpisodeOutcome:
        """Home (recovering a faulted controller first), reset, activate, wait for success, the sim-time limit
        or a controller fault, deactivate."""
        wall0 = time.monotonic()
        if self.lifecycle.get_state() == "active":
            self.lifecycle.transition("deactivate")
        recovered = self.home_with_recovery(self._home, self._recover)
        _, reply = self.trigger(self._reset, "reset")
        self._success = None
        deadline = time.monotonic() + 30.0
        while self._success is not False:  # wait for the twin to report the reset scene (not lifted)
            if time.monotonic() > deadline:
                raise TimeoutError("/twin/success did not report False after reset")
            self.spin(0.05)
        self._chunks, self._past, self._ledger, self._fault = 0, 0, {}, None
        self._watch_faults_from = self.sim_now()
        self.progress, self._last_fk = EpisodeProgress(), -math.inf
        # The reset's reply names the new cube position, the episode's start (else: the first /twin/cube_pose)
        pose = _json_object(reply)
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.progress.on_cube(pose["pos"])
        if not self.lifecycle.transition("activate"):
            raise RuntimeError("policy node refused to activate")
        t0 = self.episode_start_s = self.sim_now()
        while not self._success and self._fault is None and self.sim_now() - t0 < max_sim_s:
            if time.monotonic() - wall0 > wall_limit_s:
                break
            self.spin(0.05)
            self.check_sim_advancing(f"episode {index}")
        self.episode_end_s = self.sim_now()
        duration = self.episode_end_s - t0
        self.lifecycle.transition("deactivate")
        progress, self.progress = self.progress.as_record(), None
        return EpisodeOutcome(
            index,
            bool(self._success),
            duration,
            time.monotonic() - wall0,
            self._chunks,
            self._past,
            {k: list(v) for k, v in self._ledger.items()},
            **progress,
            seed=pose.get("seed"),
            fault=self._fault,
            recovered=recovered,
        )
