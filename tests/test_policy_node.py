"""The policy lifecycle node as a real process: future chunks in sim time, hold on a dead camera, bad model.

The test process plays the twin: it publishes `/clock`, both camera topics and `/joint_states` in simulation
time, in lockstep (the clock is frozen at each control tick until the chunk arrives, bounded).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import thread_scheduling, wait_for
from dm1.kinematics import FR3_HOME_Q
from policy_toy_model import build_toy_model, corrupt_copy

pytestmark = pytest.mark.slow

DT = 0.1  # toy model control period [s]
STEP = 0.01  # simulated time per iteration [s]


def _node_cmd(model_dir: Path) -> list[str]:
    params = [f"model_dir:={model_dir}", "autostart:=true", "use_sim_time:=true", "seed:=0"]
    return [sys.executable, "-m", "dm1_ros.policy_node", "--ros-args", *sum((["-p", p] for p in params), [])]


class TwinStandIn:
    """Publishes clock, cameras and joint states; records chunks, diagnostics and markers."""

    def __init__(self, cams: dict[str, tuple[int, int, int]]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from dm1_ros.conversions import from_time_msg
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from trajectory_msgs.msg import MultiDOFJointTrajectory
        from visualization_msgs.msg import MarkerArray

        self.rclpy, self.from_time = rclpy, from_time_msg
        self.node = rclpy.create_node("twin_stand_in")
        self.cams = cams
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.cam_pubs = {
            n: self.node.create_publisher(Image, f"/camera/{n}/color/image_raw", 10) for n in cams
        }
        self.joint_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.t = 1.0
        self.bad_joint_state = None  # a callable(t) -> JointState sent instead of the good one, when set
        self.chunks: list[tuple[float, float, list[float]]] = []  # (t0, clock at receipt, time_from_start)
        self.holds: list[float] = []  # clock at receipt of each empty (hold) chunk
        self.hold_reasons: list[str] = []  # its frame_id: "policy: <why>"
        self.diags: list[tuple[float, int, str]] = []  # (clock at receipt, level, message)
        self.markers = 0
        self.node.create_subscription(
            MultiDOFJointTrajectory, "/dm1/action_chunk/cartesian", self._on_chunk, 10
        )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.node.create_subscription(MarkerArray, "/dm1/predicted_path", self._on_markers, 10)

    def _on_chunk(self, msg) -> None:
        if not msg.points:  # the node's explicit "hold now" (no usable observation, deactivated)
            self.holds.append(self.t)
            self.hold_reasons.append(msg.header.frame_id)
            return
        tfs = [self.from_time(p.time_from_start) for p in msg.points]
        self.chunks.append((self.from_time(msg.header.stamp), self.t, tfs))

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name == "dm1/policy_node":
                self.diags.append((self.t, st.level[0], st.message))

    def _on_markers(self, msg) -> None:
        self.markers += 1

    def publish(self, cams: tuple[str, ...]) -> None:
        from dm1_ros.conversions import image_to_msg, make_joint_state, to_time_msg
        from rosgraph_msgs.msg import Clock

        self.clock_pub.publish(Clock(clock=to_time_msg(self.t)))
        for n in cams:
            img = np.full(self.cams[n], int(self.t * 100) % 256, np.uint8)
            self.cam_pubs[n].publish(
                image_to_msg(img, "rgb8", stamp=self.t, frame_id=f"camera_{n}_color_optical_frame")
            )
        bad = self.bad_joint_state
        self.joint_pub.publish(bad(self.t) if bad else make_joint_state(FR3_HOME_Q, 0.08, stamp=self.t))

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.005)

    def answers(self) -> int:
        """Chunks and explicit holds received: the node answers each tick with one or the other."""
        return len(self.chunks) + len(self.holds)

    def run(self, sim_seconds: float, cams: tuple[str, ...], lockstep: bool) -> None:
        """Advance sim time; in lockstep, freeze the clock at each tick until the node answers it with a chunk
        or a hold (≤ 5 s)."""
        for _ in range(round(sim_seconds / STEP)):
            self.t = round(self.t + STEP, 6)
            n = self.answers()
            self.publish(cams)
            self.spin_for(0.01)
            if lockstep and round(self.t / STEP) % round(DT / STEP) == 0:  # the node's timer fires now
                end = time.monotonic() + 5.0
                while self.answers() == n and time.monotonic() < end:
                    self.publish(cams)  # same stamps: keeps the node's inputs alive while the clock is frozen
                    self.spin_for(0.02)


@pytest.fixture
def rclpy_ctx(ros_env):
    import rclpy

    rclpy.init()
    try:
        yield rclpy
    finally:
        rclpy.shutdown()


def test_node_publishes_future_chunks_and_stops_when_a_camera_dies(procs, rclpy_ctx, tmp_path) -> None:
    from dm1_ros.lifecycle_client import LifecycleClient

    cams = {"front": (24, 32, 3), "wrist": (24, 32, 3)}
    model = build_toy_model(tmp_path / "toy", cameras=cams, chunk_length=8, control_rate_hz=1 / DT)
    proc = procs.start("policy", _node_cmd(model))
    twin = TwinStandIn(cams)
    client = LifecycleClient("policy_node", node=twin.node, timeout_s=10.0)

    def active() -> bool:
        try:
            return client.get_state() == "active"
        except TimeoutError:  # an unanswered request is asked again; the bound is wait_for's 90 s
            return False

    try:
        wait_for(active, 90, what="policy node active")
    except pytest.fail.Exception:
        pytest.fail(f"policy node never became active; its log:\n{procs.log('policy')}")

    # rt_priority 5: the executor (main) thread and onnxruntime's intra-op workers at SCHED_FIFO 5, DDS normal
    if os.geteuid() == 0:  # SCHED_FIFO needs root or an rtprio limit (the node warns and runs without)
        sched = thread_scheduling(proc.pid)
        assert sched[proc.pid] == (os.SCHED_FIFO, 5), sched
        workers = min(4, len(os.sched_getaffinity(0))) - 1  # inference_threads 0 = the host's cores
        assert list(sched.values()).count((os.SCHED_FIFO, 5)) >= 1 + workers, sched
        assert any(policy != os.SCHED_FIFO for policy, _ in sched.values()), sched

    twin.run(1.5, cams=("front", "wrist"), lockstep=True)
    assert len(twin.chunks) >= 5, procs.log("policy")
    for t0, clock_at_receipt, tfs in twin.chunks:
        assert t0 > clock_at_receipt  # the first action is due in the future
        np.testing.assert_allclose(np.diff(tfs), DT, atol=1e-6)
        assert tfs[0] == 0.0 and len(tfs) <= 8
    assert twin.markers > 0

    stop = twin.t
    twin.run(1.0, cams=("front",), lockstep=False)  # the wrist camera dies
    late = [c for c in twin.chunks if c[1] > stop + 2 * DT + 0.05]
    assert late == [], f"chunks published {len(late)} times after the wrist camera stopped"
    assert [h for h in twin.holds if h > stop], "no explicit hold published for the controller"
    named = wait_for(
        lambda: [d for d in twin.diags if d[0] > stop and "wrist" in d[2]], 10, what="diagnostic"
    )
    assert named[0][1] == 1  # WARN
    assert "limit 100 ms" in named[0][2] or "no frame" in named[0][2]

    back = twin.t  # the wrist camera returns: chunks resume after 3 fresh ticks in a row (reliability row 1)
    twin.run(0.6, cams=("front", "wrist"), lockstep=True)
    resumed = [c[1] for c in twin.chunks if c[1] > back]
    recovering = [(d[0], d[2]) for d in twin.diags if d[0] > back and d[2].startswith("recovering")]
    assert resumed, f"no chunks after the wrist camera returned\n{procs.log('policy')}"
    assert [m[:14] for _, m in recovering] == ["recovering 1/3", "recovering 2/3"], twin.diags[-6:]
    assert recovering[0][0] < recovering[1][0] < resumed[0], (recovering, resumed[0])
    assert len([h for h in twin.holds if back < h < resumed[0]]) >= 2  # the controller held meanwhile

    twin.spin_for(0.2)
    n, h = len(twin.chunks), len(twin.holds)
    assert client.transition("deactivate") and client.get_state() == "inactive"
    twin.run(0.3, cams=("front", "wrist"), lockstep=False)
    # deactivating holds the arm at once (not after the controller's watchdog); then the node never commands
    assert len(twin.chunks) == n and twin.hold_reasons[h:] == ["policy: deactivated"], twin.hold_reasons[h:]
    assert client.transition("cleanup") and client.get_state() == "unconfigured"
    # cleanup frees what configure made (reliability row 12): no chunk publisher, no camera subscription
    topics = ["/dm1/action_chunk/cartesian", "/dm1/predicted_path"]
    wait_for(
        lambda: twin.spin_for(0.05) or not any(twin.node.count_publishers(t) for t in topics),
        30,
        what="the chunk and marker publishers gone after cleanup",
    )
    cams = [f"/camera/{n}/color/image_raw" for n in ("front", "wrist")]
    wait_for(
        lambda: twin.spin_for(0.05) or all(twin.node.count_subscribers(t) == 0 for t in cams),
        30,
        what="the camera subscriptions gone after cleanup",
    )
    assert client.transition("shutdown") and client.get_state() == "finalized"


def test_impossible_or_ambiguous_joint_states_hold_the_node_and_it_resumes(
    procs, rclpy_ctx, tmp_path
) -> None:
    """Fingers reading -1 mm each (the node used to die in its tick), a second fr3_joint1 (the last value
    used to win) and an invalid stamp: no chunk while they last, the node stays up and names the reason in
    /diagnostics, and chunks resume with good joint states."""
    from builtin_interfaces.msg import Time
    from dm1_ros.conversions import make_joint_state
    from dm1_ros.lifecycle_client import LifecycleClient

    cams = {"front": (24, 32, 3)}
    model = build_toy_model(tmp_path / "toy", cameras=cams, chunk_length=4, control_rate_hz=1 / DT)
    proc = procs.start("policy", _node_cmd(model))
    twin = TwinStandIn(cams)
    client = LifecycleClient("policy_node", node=twin.node, timeout_s=10.0)
    wait_for(lambda: client.get_state() == "active", 90, what="policy node active")
    twin.run(0.6, cams=("front",), lockstep=True)
    assert twin.chunks, procs.log("policy")

    def negative_fingers(t: float):
        return make_joint_state(FR3_HOME_Q, -0.002, stamp=t)

    def twice_joint1(t: float):
        msg = make_joint_state(FR3_HOME_Q, 0.08, stamp=t)
        msg.name, msg.position = [*msg.name, "fr3_joint1"], [*msg.position, 2.5]
        return msg

    def bad_stamp(t: float):
        msg = make_joint_state(FR3_HOME_Q, 0.08)
        msg.header.stamp = Time(sec=int(t), nanosec=10**9 + 1)
        return msg

    for bad, words in (
        (negative_fingers, "gripper width"),
        (twice_joint1, "repeated"),
        (bad_stamp, "nanosec"),
    ):
        twin.bad_joint_state = bad
        start = twin.t
        twin.run(0.6, cams=("front",), lockstep=False)
        late = [c for c in twin.chunks if c[1] > start + 0.15]  # the last good state ages out in 100 ms
        assert late == [], f"{bad.__name__}: {len(late)} chunks from bad joint states\n{procs.log('policy')}"
        assert proc.poll() is None, f"{bad.__name__}: the node died\n{procs.log('policy')}"

        def named(w: str = words, s: float = start) -> bool:
            twin.publish(("front",))  # keep the bad input flowing while /diagnostics is awaited
            twin.spin_for(0.05)
            return any(d[0] > s and w in d[2] for d in twin.diags)

        wait_for(named, 10, what=f"a diagnostic naming {words!r}", detail=lambda: twin.diags[-3:])
        twin.bad_joint_state = None
        n = len(twin.chunks)
        twin.run(0.4, cams=("front",), lockstep=True)
        assert len(twin.chunks) > n, f"no chunks after good joint states returned ({bad.__name__})"


def test_corrupt_model_never_becomes_active(procs, rclpy_ctx, tmp_path) -> None:
    from dm1_ros.lifecycle_client import LifecycleClient

    bad = corrupt_copy(build_toy_model(tmp_path / "good"), tmp_path / "corrupt")
    # autostart (as every launch starts it): the node says why and exits 1, so the launch stops
    autostarted = procs.start("autostarted", _node_cmd(bad))
    autostarted.wait(timeout=60)
    assert autostarted.returncode == 1, procs.log("autostarted")
    assert "configure failed" in procs.log("autostarted")
    assert "onnxruntime cannot load" in procs.log("autostarted")
    assert "autostart: configure failed (error above); exiting with code 1" in procs.log("autostarted")

    # configured by hand (autostart off): the transition fails and the node waits, unconfigured
    cmd = _node_cmd(bad)
    cmd[cmd.index("autostart:=true")] = "autostart:=false"
    procs.start("policy", cmd)
    import rclpy

    node = rclpy.create_node("probe")
    client = LifecycleClient("policy_node", node=node, timeout_s=60.0)
    assert client.get_state() == "unconfigured"
    assert not client.transition("configure")
    assert "onnxruntime cannot load" in procs.log("policy")
    assert not client.transition("activate")  # activating an unconfigured node is refused
    assert client.get_state() == "unconfigured"


def test_ctrl_c_stops_a_busy_node_with_exit_code_0(procs, rclpy_ctx, tmp_path) -> None:
    # once right after its model loaded, once while it runs under camera and joint-state traffic: the stop
    # comes through the context shutdown (dm1_ros.node_signals), never as an exception inside rclpy
    cams = {"front": (24, 32, 3), "wrist": (24, 32, 3)}
    model = build_toy_model(tmp_path / "toy", cameras=cams, chunk_length=8, control_rate_hz=1 / DT)
    twin = TwinStandIn(cams)
    for run, settle_s in enumerate((0.0, 1.0)):
        name = f"policy{run}"
        proc = procs.start(name, _node_cmd(model))
        wait_for(lambda n=name: "loaded" in procs.log(n), 90, what="model loaded")
        twin.run(settle_s, cams=("front", "wrist"), lockstep=False)
        proc.send_signal(signal.SIGINT)
        end = time.monotonic() + 30.0
        while proc.poll() is None and time.monotonic() < end:
            twin.run(0.05, cams=("front", "wrist"), lockstep=False)  # traffic until it is gone
        log = procs.log(name)
        assert proc.poll() == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


def test_drills_are_refused_on_an_inactive_node_and_all_needs_a_readable_model_card(
    procs, rclpy_ctx, tmp_path
) -> None:
    from conftest import dm1_operator
    from dm1_ros.lifecycle_client import LifecycleClient

    model = build_toy_model(tmp_path / "toy")
    cmd = _node_cmd(model)
    cmd[cmd.index("autostart:=true")] = "autostart:=false"
    procs.start("policy", cmd)
    import rclpy

    lifecycle = LifecycleClient("policy_node", node=rclpy.create_node("probe"), timeout_s=60.0)
    assert lifecycle.get_state() == "unconfigured"
    refused = dm1_operator("drill", 20.0, ("--drill", "nan_output"))
    assert refused.returncode == 1, refused
    assert (
        "drill refused: policy_node is unconfigured; drills run while the policy drives the arm"
        in refused.stdout
    )
    assert lifecycle.transition("configure") and lifecycle.transition("activate")
    shutil.move(model, tmp_path / "elsewhere")  # as if the policy ran on another PC
    unreadable = dm1_operator("drill", 20.0, ("--drill", "all"))
    assert unreadable.returncode == 1, unreadable
    assert (
        f"drill all: {model / 'model_card.json'}: the policy's model card is not readable here"
        in unreadable.stdout
    )
    assert "0 of 1 drills held" in unreadable.stdout


def test_node_parameters_change_while_unconfigured_and_are_refused_once_configured(
    procs, rclpy_ctx, tmp_path
) -> None:
    """Lifecycle convention: the model and observation settings are read on configure, so a change while the
    node is configured would not apply; it is refused, naming the parameter, until the node is cleaned up."""
    import rclpy
    from dm1_ros.lifecycle_client import LifecycleClient
    from dm1_ros.service_calls import call_service
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    cmd = _node_cmd(build_toy_model(tmp_path / "toy"))
    cmd[cmd.index("autostart:=true")] = "autostart:=false"
    procs.start("policy", cmd)
    probe = rclpy.create_node("param_probe")
    lifecycle = LifecycleClient("policy_node", node=probe, timeout_s=60.0)
    setter = probe.create_client(SetParameters, "/policy_node/set_parameters")

    def set_max_age(value: float):
        change = Parameter("max_obs_age_s", value=value).to_parameter_msg()
        request = SetParameters.Request(parameters=[change])
        return call_service(probe, setter, request, 60.0, what="set_parameters").results[0]

    def set_param(name: str, value):
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return call_service(probe, setter, request, 60.0, what="set_parameters").results[0]

    assert lifecycle.get_state() == "unconfigured"
    # read once at start (the controller watch, its status subscription): refused in every state; they used
    # to be accepted while unconfigured and silently ignored (a 30 s silence bound stayed in force)
    for name, value in (("controller_silence_s", 0.5), ("controller_status_topic", "/elsewhere")):
        refused = set_param(name, value)
        assert not refused.successful and refused.reason.startswith(f"{name}: read once, at start"), refused

    # a topic name ROS cannot use: configure fails naming it, and the node stays usable (it used to keep the
    # half-built session: every later set refused "read on configure", cleanup invalid, nothing logged)
    assert set_param("joint_states_topic", "bad topic").successful
    assert not lifecycle.transition("configure") and lifecycle.get_state() == "unconfigured"
    wait_for(lambda: "configure failed" in procs.log("policy"), 30, what="the configure error in the log")
    assert "bad topic" in procs.log("policy"), procs.log("policy")[-2000:]
    assert set_param("joint_states_topic", "/joint_states").successful

    assert set_max_age(0.2).successful
    assert lifecycle.transition("configure")
    refused = set_max_age(0.3)
    assert not refused.successful and refused.reason.startswith("max_obs_age_s: read on configure"), refused
    assert lifecycle.transition("cleanup") and set_max_age(0.3).successful
    probe.destroy_node()
