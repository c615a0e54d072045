"""Faults injected into the whole stack: twin → policy node → controller node → franky → franky-sim.

The test process relays the twin's wrist camera to the policy node (so it can cut that one camera), records
`/joint_states` and the chunks, and kills nodes. Every wait is bounded; times are simulation time.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import dm1_operator, free_loopback_host, wait_for
from policy_toy_model import build_toy_model

ARM = [f"fr3_joint{i}" for i in range(1, 8)]
# Hold to rest through the whole stack (sim s): 0.05-0.17 s after the hold in 10 runs of the brake-then-latch
# hold (2026-11-28; the one-shot hold target before it overshot and crept back, failing 3 of 5 full CI runs).
SETTLE_S = 0.2
# From the watchdog's hold to rest after a killed policy, whose last chunk may leave the wrist joints spinning
# at up to 1.1 rad/s (the EE at the speed cap): 0.06-0.34 s measured (test_killing_the_policy_node_...)
KILL_SETTLE_S = 0.4


class StackProbe:
    """Relays the wrist camera, records joint velocities and chunk stamps in sim time."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from dm1_ros.spin_thread import SpinThread
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image, JointState
        from trajectory_msgs.msg import MultiDOFJointTrajectory

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(
            "stack_probe", context=self.ctx, parameter_overrides=[Parameter("use_sim_time", value=True)]
        )
        self.relay_on = True
        self.last_relayed = -1.0
        self.states: list[tuple[float, np.ndarray]] = []  # (stamp, |dq| max)
        self.positions: list[tuple[float, np.ndarray]] = []  # (stamp, arm q (7,))
        self.chunks: list[tuple[float, float, int]] = []  # (receive sim time, header stamp, points)
        self.chunk_ends: list[tuple[float, float]] = []  # (receive sim time, due time of the last point)
        self.controller: list[tuple[float, dict[str, str]]] = []  # (receive sim time, controller status)
        self.relay = self.node.create_publisher(Image, "/test/wrist", 10)
        self.node.create_subscription(Image, "/camera/wrist/color/image_raw", self._on_wrist, 10)
        self.node.create_subscription(JointState, "/joint_states", self._on_js, 50)
        self.node.create_subscription(
            MultiDOFJointTrajectory, "/dm1/action_chunk/cartesian", self._on_chunk, 50
        )
        self.node.create_subscription(DiagnosticArray, "/dm1/controller/status", self._on_status, 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.spinner = SpinThread(self.executor, "stack-faults-probe").start()

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_wrist(self, msg) -> None:
        if self.relay_on:
            self.relay.publish(msg)
            self.last_relayed = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def _on_js(self, msg) -> None:
        idx = [msg.name.index(n) for n in ARM]
        dq = np.abs(np.asarray(msg.velocity)[idx]).max()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.states.append((stamp, dq))
        self.positions.append((stamp, np.asarray(msg.position, dtype=float)[idx]))

    def _on_chunk(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.chunks.append((self.now(), stamp, len(msg.points)))
        if msg.points:
            last = msg.points[-1].time_from_start
            self.chunk_ends.append((self.chunks[-1][0], stamp + last.sec + last.nanosec * 1e-9))

    def _on_status(self, msg) -> None:
        from dm1_ros.conversions import diagnostic_values

        self.controller.append((self.now(), diagnostic_values(msg.status[0])))

    def call(self, service: str, pressed: bool | None = None):
        """Call a std_srvs/Trigger service, or SetBool with `pressed` (bounded); returns its response."""
        from std_srvs.srv import SetBool, Trigger

        srv, request = (Trigger, Trigger.Request())
        if pressed is not None:
            srv, request = SetBool, SetBool.Request(data=pressed)
        client = self.node.create_client(srv, service)
        assert client.wait_for_service(timeout_sec=30), f"{service} not available"
        future = client.call_async(request)
        wait_for(future.done, 60, what=f"{service} response")
        return future.result()

    def policy_state(self) -> str:
        """The policy node's lifecycle state (`/policy_node/get_state`, bounded)."""
        from lifecycle_msgs.srv import GetState

        client = self.node.create_client(GetState, "/policy_node/get_state")
        assert client.wait_for_service(timeout_sec=30), f"{client.srv_name} not available"
        future = client.call_async(GetState.Request())
        wait_for(future.done, 60, what=f"{client.srv_name} response")
        self.node.destroy_client(client)
        return future.result().current_state.label

    def detail(self, procs) -> str:
        """What to add to a failure here: the last joint state and controller status seen, and the nodes' logs
        (a twin that stood still shows as a libfranka network timeout in the controller's)."""
        last_state = f"{self.states[-1][0]:.3f}" if self.states else "none"
        status = self.controller[-1][1] if self.controller else {}
        brief = {k: status.get(k) for k in ("state", "reasons", "holds", "faults", "liveliness_lost")}
        logs = "\n".join(f"--- {n}.log (end)\n{procs.log(n)[-1500:]}" for n in ("twin", "controller"))
        return f"sim now {self.now():.3f}, last joint state {last_state}, controller {brief}\n{logs}"

    def wait_sim(self, seconds: float, wall_timeout: float = 120.0) -> None:
        end = self.now() + seconds
        wait_for(lambda: self.now() >= end, wall_timeout, what=f"{seconds} s of simulation time")

    def max_speed_after(self, t: float) -> float:
        after = [dq for s, dq in self.states if s >= t]
        assert after, f"no joint states after t={t:.3f}"
        return float(max(after))

    def max_speed_between(self, a: float, b: float) -> float:
        inside = [dq for s, dq in self.states if a <= s <= b]
        assert inside, f"no joint states between t={a:.3f} and {b:.3f}"
        return float(max(inside))

    def max_motion_after(self, t: float, window_s: float = 0.05) -> float:
        """Largest joint speed (rad/s) after `t` measured from the positions, each over `window_s` of stamps
        (franky-sim's reported dq is not a measurement once no motion runs: after a reflex it stays at its
        last value while the arm stands still)."""
        stamps = np.array([s for s, _ in self.positions if s >= t])  # (N,)
        q = np.array([q for s, q in self.positions if s >= t])  # (N, 7)
        assert len(stamps) > 2 and stamps[-1] - stamps[0] > window_s, f"too few joint states after t={t:.3f}"
        ends = np.searchsorted(stamps, stamps + window_s)  # (N,) first sample a window later
        ok = ends < len(stamps)
        dq = np.abs(q[ends[ok]] - q[ok]).max(axis=1) / (stamps[ends[ok]] - stamps[ok])
        return float(dq.max())

    def close(self) -> None:
        import rclpy

        self.spinner.stop()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def stack(procs, ros_env, tmp_path: Path):
    """Twin + controller + policy (a jittering toy model, so the arm keeps moving) as real processes."""
    host = free_loopback_host()
    model = build_toy_model(
        tmp_path / "toy",
        cameras={"front": (96, 96, 3), "wrist": (96, 96, 3)},
        proprio_keys=("ee_pos", "gripper_width"),
        control_rate_hz=20.0,
        noise_scale=0.008,  # targets move ~1 cm per tick around a hover point: the arm never settles
    )
    py = sys.executable
    procs.start("twin", [py, "-m", "dm1_sim.twin_node", "--ros-args", "-p", f"host:={host}"])
    wait_for(lambda: "twin up" in procs.log("twin"), 120, what="the twin's franky-sim server")
    sim = ["-p", "use_sim_time:=true"]
    controller_cmd = [py, "-m", "dm1_ros.controller_node", "--ros-args", "-p", f"robot_ip:={host}", *sim]
    procs.start("controller", controller_cmd)
    policy_args = [
        "-p",
        f"model_dir:={model}",
        "-p",
        "autostart:=true",
        "-p",
        'camera_topics:=["wrist=/test/wrist"]',
    ]
    procs.start("policy", [py, "-m", "dm1_ros.policy_node", "--ros-args", *policy_args, *sim])
    probe = StackProbe()
    probe.controller_cmd = controller_cmd  # to start it again
    try:
        # chunks with points: until every camera has a frame the policy publishes explicit (empty) holds
        wait_for(
            lambda: sum(c[2] > 0 for c in probe.chunks) > 20,
            180,
            what="chunks from the policy through the stack",
        )
        yield probe, procs
    finally:
        probe.close()


def recover_then_activate(probe: StackProbe, procs) -> None:
    """The operator's way back after a latched fault: `recover` (the arm stays still, the policy inactive for
    1 s of sim time), then `activate`."""
    assert dm1_operator("recover").returncode == 0
    t_recovered = probe.now()
    probe.wait_sim(1.0)
    speed = probe.max_motion_after(t_recovered)
    assert speed < 0.02, f"the arm moved ({speed:.3f} rad/s) after recovery, policy not yet activated"
    activated = dm1_operator("activate")
    assert activated.returncode == 0 and "now active" in activated.stdout, (activated, procs.log("policy"))


@pytest.mark.slow
def test_arm_moves_under_policy_with_future_stamped_chunks(stack) -> None:
    probe, procs = stack
    probe.wait_sim(1.0)
    start = probe.now() - 0.8
    assert probe.max_speed_after(start) > 0.05, "the arm did not move under policy control"
    moving = [(r, s) for r, s, n in probe.chunks if n > 0 and r >= start]
    assert moving and all(s > r - 0.06 for r, s in moving), "chunks stamped in the past (beyond transport)"


@pytest.mark.slow
def test_camera_that_stops_publishing_holds_the_arm(stack) -> None:
    probe, procs = stack
    probe.wait_sim(1.0)
    assert probe.max_speed_after(probe.now() - 0.5) > 0.05, "the arm was not moving before the fault"
    probe.relay_on = False  # the wrist camera dies
    probe.wait_sim(1.0)
    stale_at = probe.last_relayed + 0.1  # the newest wrist frame passes the policy's 100 ms age limit
    holds = [r for r, _, n in probe.chunks if n == 0 and r >= stale_at - 0.01]
    assert holds, "the policy published no explicit hold after the camera went stale"
    t_hold = holds[0]
    # detection at the next 20 Hz tick (50 ms) + delivery; generous for a loaded CI machine
    assert t_hold <= stale_at + 0.15, f"hold published {1000 * (t_hold - stale_at):.0f} ms after stale"
    speed = probe.max_speed_after(t_hold + SETTLE_S)
    profile = [(round(t - t_hold, 3), round(dq, 3)) for t, dq in probe.states if t > t_hold - 0.05][::5]
    assert speed < 0.05, f"arm moving ({speed:.3f} rad/s) {1000 * SETTLE_S:.0f} ms after the hold: {profile}"
    late = [c for c in probe.chunks if c[0] > t_hold and c[2] > 0]
    assert not late, f"{len(late)} chunks with actions after the policy declared its input stale"


@pytest.mark.slow
def test_killing_the_policy_node_holds_the_arm(stack) -> None:
    probe, procs = stack
    probe.wait_sim(1.0)
    procs.stop("policy", sig=signal.SIGKILL)
    killed_at = probe.now()
    probe.wait_sim(1.0)
    last_chunk = max(r for r, _, n in probe.chunks if n > 0)
    assert last_chunk <= killed_at + 0.05
    profile = [(round(t - last_chunk, 3), round(dq, 3)) for t, dq in probe.states if t > last_chunk][::10]
    # the watchdog holds 100 ms after the last chunk (+ a 10 ms tick, + the status's delivery: 0-12 ms)
    holds = [r for r, st in probe.controller if st.get("state") == "holding" and r > last_chunk]
    assert holds and holds[0] <= last_chunk + 0.2, (
        f"no watchdog hold within 200 ms of the last chunk: {holds[:1]}; {probe.detail(procs)}"
    )
    # At rest (< 0.05 rad/s) 0.06-0.19 s after the hold in 8 measured runs (2026-11-30), 0.27-0.34 s in a
    # fresh-clone CI run, and 1 of 10 local runs failed the former bound (0.2 s): the jittering toy policy
    # spins the wrist joints up to 1.1 rad/s, whose momentum the Cartesian damping brakes more slowly
    settled = holds[0] + KILL_SETTLE_S
    assert any(t >= settled for t, _ in probe.states), (
        f"no joint states after {settled:.3f}: {probe.detail(procs)}"
    )
    speed = probe.max_speed_after(settled)
    assert speed < 0.05, (
        f"arm still moving after the watchdog ({speed:.3f} rad/s); profile {profile}; {probe.detail(procs)}"
    )
    # the second path (row 15): the policy's publisher offers a liveliness lease that the controller watches
    wait_for(
        lambda: any(int(s.get("liveliness_lost", 0)) > 0 for _, s in probe.controller),
        30,
        what="the controller counting the killed policy's lost QoS liveliness",
    )


@pytest.mark.slow
def test_a_controller_that_dies_stops_the_policy_and_a_restarted_one_moves_nothing_until_activated(
    stack,
) -> None:
    """Reliability row 13 for a controller that crashes instead of reporting a fault: the policy stops once
    its reports stop (`controller_silence_s`, 2 s), refuses activation while none come, and a restarted
    controller does not execute anything until an operator activates the policy again."""
    probe, procs = stack
    probe.wait_sim(1.0)
    procs.stop("controller", sig=signal.SIGKILL)
    killed_at = probe.now()
    wait_for(lambda: probe.policy_state() == "inactive", 60, what="the policy stopping without a controller")
    # stale inputs (no joint states) make the policy publish explicit holds until it stops: its last message
    lost_after = max(r for r, _, _ in probe.chunks) - killed_at
    assert 1.8 <= lost_after <= 3.5, f"the policy published for {lost_after:.2f} s after the controller died"
    assert "no controller report" in procs.log("policy"), procs.log("policy")[-2000:]
    refused = dm1_operator("activate", timeout_s=10.0)
    assert refused.returncode == 1, refused
    n_states = len(probe.states)
    procs.start("controller", probe.controller_cmd)
    wait_for(lambda: len(probe.states) > n_states + 50, 120, what="the restarted controller's joint states")
    restarted = probe.now()
    probe.wait_sim(1.0)
    assert probe.max_motion_after(restarted) < 0.02, "the restarted controller moved the arm by itself"
    activated = dm1_operator("activate")
    assert activated.returncode == 0 and "now active" in activated.stdout, (activated, procs.log("policy"))
    t_active = probe.now()
    probe.wait_sim(1.0)
    assert probe.max_motion_after(t_active) > 0.05, "the arm did not move under policy after the reactivation"


@pytest.mark.slow
def test_fault_drills_hold_the_arm_through_the_real_fault_paths_then_the_policy_drives_it_again(
    stack,
) -> None:
    """`dm1 operator drill --drill all` on the running stack (peer-features §4.11). nan_output: the policy
    rejects its own output and publishes explicit holds; silence: it publishes nothing and the controller's
    watchdog holds; stall_inference: every inference hangs 0.5 s; freeze_camera: that camera goes stale in the
    policy. The tool's verdicts are checked against this probe's own record of joint speeds and chunks."""
    import json

    probe, procs = stack
    probe.wait_sim(1.0)
    run = dm1_operator("drill", 30.0, ("--drill", "all", "--duration", "1.0", "--json"))
    reports = json.loads(run.stdout) if run.stdout.startswith("[") else []
    print(reports)  # shown with the failure output (and with -s)
    assert run.returncode == 0, f"{run.stdout} {run.stderr[-2000:]} {probe.detail(procs)}"
    kinds = ["nan_output", "silence", "stall_inference:0.5", "freeze_camera:front", "freeze_camera:wrist"]
    assert [r["drill"] for r in reports] == kinds
    for report in reports:
        spec, start, end = report["drill"], report["started"], report["started"] + 1.0
        assert report["held"] and report["conclusive"] and report["hold_latency_s"] <= 0.5, report
        assert probe.max_speed_between(start + report["hold_latency_s"] + 0.02, end) < 0.05, (spec, report)
        during = [n for r, _, n in probe.chunks if start + 0.2 <= r <= end - 0.05]
        if spec == "silence":
            assert during == [], f"silence: {len(during)} chunks published during the drill"
        elif spec != "stall_inference:0.5":  # a stalled policy publishes late chunks now and then
            assert during and not any(during), f"{spec}: expected only explicit holds, got {during}"
        assert any(end < r < end + 1.0 and n > 0 for r, _, n in probe.chunks), f"no chunks after {spec}"


@pytest.mark.slow
def test_late_chunks_drill_executes_no_stale_action_and_latches_over_budget(stack) -> None:
    """Reliability row 7 across processes: `dm1 operator drill --drill late_chunks` makes the policy send each
    chunk only once its last action is past. The controller executes none of them (the arm holds), refuses
    them as late and latches "over budget"; the policy deactivates, and after recover + activate it drives
    the arm again."""
    import json

    probe, procs = stack
    probe.wait_sim(1.0)
    run = dm1_operator("drill", 30.0, ("--drill", "late_chunks", "--duration", "1.0", "--json"))
    report = json.loads(run.stdout) if run.stdout.startswith("{") else {}
    print(report)
    assert run.returncode == 0, f"{run.stdout} {run.stderr[-2000:]} {probe.detail(procs)}"
    assert report["held"] and report["conclusive"] and "over budget" in report["message"], report
    start, end = report["started"], report["started"] + 1.0
    assert probe.max_speed_between(start + report["hold_latency_s"] + 0.02, end) < 0.05, report
    sent = [(r, last) for r, last in probe.chunk_ends if start + 0.1 <= r <= end]
    assert sent and all(last < r for r, last in sent), f"chunks with actions ahead during the drill: {sent}"
    status = probe.controller[-1][1]
    assert status["state"] == "fault" and int(status["late"]) >= 5, status
    wait_for(lambda: probe.policy_state() == "inactive", 30, what="the policy node deactivating itself")
    assert dm1_operator("recover").returncode == 0
    activated = dm1_operator("activate")
    assert activated.returncode == 0 and "now active" in activated.stdout, (activated, procs.log("policy"))
    t_active = probe.now()
    probe.wait_sim(1.0)
    assert probe.max_motion_after(t_active) > 0.05, "the arm did not move under policy after the reactivation"


@pytest.mark.slow
def test_a_reflex_faults_the_controller_stops_the_policy_and_nothing_moves_until_reactivated(stack) -> None:
    """Reliability row 13: a reflex latches the controller's fault, the policy node sees it and deactivates,
    activation is refused while the fault is latched, and after the recovery the arm stays still until an
    operator activates the policy again."""
    probe, procs = stack
    probe.wait_sim(1.0)
    moving = probe.max_speed_after(probe.now() - 0.5)
    assert moving > 0.05, (
        f"the arm was not moving before the reflex: {moving:.4f} rad/s; {procs.log('policy')[-1500:]}"
    )
    # franky-sim aborts the running motion as a real FR3 reflex does; none runs while the controller holds (a
    # late chunk on a loaded machine), and then the twin answers "nothing to abort": try again
    wait_for(lambda: probe.call("/twin/inject_reflex").success, 60, what="a reflex during a running motion")
    t_reflex = probe.now()
    wait_for(lambda: probe.controller[-1][1].get("state") == "fault", 30, what="the controller's fault")
    assert "reflex" in probe.controller[-1][1]["reasons"].lower(), probe.controller[-1][1]
    wait_for(lambda: probe.policy_state() == "inactive", 30, what="the policy node deactivating itself")
    probe.wait_sim(1.0)
    late = [c for c in probe.chunks if c[0] > t_reflex + 0.5 and c[2] > 0]
    assert not late, f"the policy published {len(late)} chunks after the controller's fault"
    speed = probe.max_motion_after(t_reflex + SETTLE_S)
    assert speed < 0.02, f"the arm moved ({speed:.3f} rad/s) after the reflex, before any recovery"
    assert probe.controller[-1][1]["state"] == "fault", "the fault did not stay latched"
    # the operator's side, through `dm1 operator` (no ros2 CLI here)
    status = dm1_operator("status")
    assert status.returncode == 0 and "controller: fault" in status.stdout, status
    assert "reflex" in status.stdout.lower() and "policy_node: inactive" in status.stdout, status
    refused = dm1_operator("activate")
    assert refused.returncode == 1 and "refused" in refused.stdout, refused
    recover_then_activate(probe, procs)
    home = dm1_operator("home")  # the policy would drive the arm again right after the move
    assert home.returncode == 1 and "home refused: policy_node is active" in home.stdout, home
    t_active = probe.now()
    probe.wait_sim(1.0)
    assert probe.max_motion_after(t_active) > 0.05, "the arm did not move under policy after the reactivation"


@pytest.mark.slow
def test_the_user_stop_mid_episode_holds_until_released_recovered_and_activated(stack) -> None:
    """Reliability row 24 on the twin (franky-sim with the FR3's user stop, `dm1.sim.user_stop`): pressed
    while the policy drives, the motion is aborted and the controller latches "User Stop pressed!"; the policy
    deactivates; recovery fails while it is pressed; after the release nothing moves until an operator
    recovers and then activates the policy."""
    probe, procs = stack
    probe.wait_sim(1.0)
    moving = probe.max_speed_after(probe.now() - 0.5)
    assert moving > 0.05, f"the arm was not moving before the stop: {moving:.4f} rad/s"
    assert probe.call("/twin/user_stop", pressed=True).success
    t_pressed = probe.now()
    wait_for(lambda: probe.controller[-1][1].get("state") == "fault", 30, what="the controller's fault")
    assert "User Stop pressed" in probe.controller[-1][1]["reasons"], probe.controller[-1][1]
    wait_for(lambda: probe.policy_state() == "inactive", 30, what="the policy node deactivating itself")
    refused = dm1_operator("recover")
    assert refused.returncode == 1 and "recover failed" in refused.stdout, refused
    assert "User Stop pressed" in refused.stdout, refused
    assert probe.call("/twin/user_stop", pressed=False).success
    probe.wait_sim(1.0)
    speed = probe.max_motion_after(t_pressed + SETTLE_S)
    assert speed < 0.02, f"the arm moved ({speed:.3f} rad/s) after the stop, before any recovery"
    assert probe.controller[-1][1]["state"] == "fault", "releasing the stop cleared the fault"
    recover_then_activate(probe, procs)
    t_active = probe.now()
    probe.wait_sim(1.0)
    assert probe.max_motion_after(t_active) > 0.05, "the arm did not move under policy after the reactivation"
