"""Faults injected into the whole stack: twin → policy node → controller node → franky → franky-sim.

The test process relays the twin's wrist camera to the policy node (so it can cut that one camera), records
`/joint_states` and the chunks, and kills nodes. Every wait is bounded; times are simulation time.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from conftest import dm1_operator, free_loopback_host, wait_for
from policy_toy_model import build_toy_model

ARM = [f"fr3_joint{i}" for i in range(1, 8)]
# Hold to rest through the whole stack (sim s): 0.05-0.17 s after the hold in 10 runs of the brake-then-latch
# hold (2026-11-28; the one-shot hold target before it overshot and crept back, failing 3 of 5 full CI runs).
# 0.4 s, not 0.2 (which left 30 ms): the camera test now times the hold by its header stamp (when the policy
# published it), so the window also holds the hold's delivery to the controller and the controller's next
# tick, which a loaded 2-core CI machine stretches. The arm must then stay at rest for the rest of the 1 s
# waited (0.4 s or more of joint states).
SETTLE_S = 0.4
# From the watchdog's hold to rest after a killed policy, whose last chunk may leave the wrist joints spinning
# at up to 1.1 rad/s (the EE at the speed cap): 0.06-0.34 s measured (test_killing_the_policy_node_...);
# 0.6 s, as the hold is now timed by its header stamp (earlier than its receipt) and 0.4 left ~50 ms
KILL_SETTLE_S = 0.6


class SeenChunk(NamedTuple):
    """A chunk as the probe received it (sim time)."""

    received: float  # the probe's clock at receipt
    stamp: float  # header stamp: the first point's time
    points: int  # 0: an explicit hold
    due: float  # the last point's due time (nan for a hold)


class SeenStatus(NamedTuple):
    """A controller status report as the probe received it (sim time)."""

    received: float  # the probe's clock at receipt
    values: dict[str, str]
    stamp: float  # header stamp: the controller's clock when it published


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
        self.chunks: list[SeenChunk] = []
        self.controller: list[SeenStatus] = []
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
        due = math.nan
        if msg.points:
            last = msg.points[-1].time_from_start
            due = stamp + last.sec + last.nanosec * 1e-9
        self.chunks.append(SeenChunk(self.now(), stamp, len(msg.points), due))

    def _on_status(self, msg) -> None:
        from dm1_ros.conversions import diagnostic_values

        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.controller.append(SeenStatus(self.now(), diagnostic_values(msg.status[0]), stamp))

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
        status = self.controller[-1].values if self.controller else {}
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
        # one snapshot: the executor thread appends meanwhile, and two passes over the live list could differ
        after = [(s, q) for s, q in list(self.positions) if s >= t]
        stamps = np.array([s for s, _ in after])  # (N,)
        q = np.array([q for _, q in after])  # (N, 7)
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
            lambda: sum(c.points > 0 for c in probe.chunks) > 20,
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
    wait_for(lambda: probe.controller, 60, what="a controller status")
    s_a = probe.controller[-1].values
    probe.wait_sim(1.0)
    s_b = probe.controller[-1].values
    start = probe.now() - 0.8
    assert probe.max_speed_after(start) > 0.05, "the arm did not move under policy control"
    # The controller's own verdict on every chunk in the window (its clock, no transport to this process in
    # it): accepted, none refused for its stamp (older than the running one, first action too far ahead,
    # stale) and none whose every action was already past when it arrived.
    counters = ("accepted", "ignored_older", "rejected_future", "rejected_stale", "late")
    d = {k: int(s_b[k]) - int(s_a[k]) for k in counters}
    assert d["accepted"] >= 5 and not any(d[k] for k in counters[1:]), (d, probe.detail(procs))
    # A chunk's stamp is its first action's time, the first 20 Hz tick after the policy's clock when it
    # inferred, so ahead of its publication; this process's receipt time adds transport and, on a loaded
    # machine, its own executor's delay (the former 60 ms bound left little room for that). 0.2 s still
    # catches a stamp far in the past (a replayed stream, a stamp taken long before publishing); the counters
    # above are the controller's exact view.
    moving = [(c.received, c.stamp) for c in probe.chunks if c.points > 0 and c.received >= start]
    print(
        f"controller counters over the window {d}; stamp - receipt min {min(s - r for r, s in moving):.3f} s"
    )
    assert moving and all(s > r - 0.2 for r, s in moving), "chunks stamped in the past (beyond transport)"


@pytest.mark.slow
def test_camera_that_stops_publishing_holds_the_arm(stack) -> None:
    probe, procs = stack
    probe.wait_sim(1.0)
    assert probe.max_speed_after(probe.now() - 0.5) > 0.05, "the arm was not moving before the fault"
    probe.relay_on = False  # the wrist camera dies
    probe.wait_sim(1.0)
    stale_at = probe.last_relayed + 0.1  # the newest wrist frame passes the policy's 100 ms age limit
    # by the hold's header stamp (the policy's clock when it published it), not this process's receipt time
    chunks = list(probe.chunks)
    holds = [i for i, c in enumerate(chunks) if c.points == 0 and c.stamp >= stale_at - 0.01]
    assert holds, "the policy published no explicit hold after the camera went stale"
    t_hold = chunks[holds[0]].stamp
    print(
        f"hold stamped {1000 * (t_hold - stale_at):.0f} ms after stale "
        f"(received {chunks[holds[0]].received:.3f})"
    )
    # detection at the next 20 Hz tick (50 ms); the rest for a policy tick that runs late on a loaded machine
    assert t_hold <= stale_at + 0.15, f"hold published {1000 * (t_hold - stale_at):.0f} ms after stale"
    speed = probe.max_speed_after(t_hold + SETTLE_S)
    profile = [(round(t - t_hold, 3), round(dq, 3)) for t, dq in probe.states if t > t_hold - 0.05][::5]
    assert speed < 0.05, f"arm moving ({speed:.3f} rad/s) {1000 * SETTLE_S:.0f} ms after the hold: {profile}"
    # after the hold in the order the policy published them (one publisher, reliable: received in order);
    # receipt times would count a chunk that was merely delivered late
    late = [c for c in chunks[holds[0] + 1 :] if c.points > 0]
    assert not late, f"{len(late)} chunks with actions after the policy declared its input stale"


def assert_lost_link_latched_after(probe: StackProbe, procs, held_at: float) -> None:
    """The other safe outcome of a SIGKILL on this host: the twin's physics stood still for over libfranka's
    1 s timeout (a Fast DDS shared-memory lock the killed process held stalls a writer in the twin: seen once
    in a fresh-clone CI run, 1.78 s; tests/test_dead_peer_lock.py measures how often), so the controller
    latched the lost link as a fault and `/joint_states` ended (nothing measured to publish). The arm was held
    first, then faulted: it takes no command until an operator recovers it."""
    faults = [c for c in probe.controller if c.values.get("state") == "fault"]
    assert faults, f"the joint states ended without a controller fault: {probe.detail(procs)}"
    first = faults[0]
    assert "NetworkException" in first.values.get("reasons", ""), probe.detail(procs)
    assert first.stamp >= held_at, f"the fault ({first.stamp:.3f}) came before the hold ({held_at:.3f})"
    assert "physics stood still" in procs.log("twin"), probe.detail(procs)
    assert probe.controller[-1].values.get("state") == "fault", "the lost link did not stay latched"
    print(f"the twin stood still after the hold; the lost link latched at {first.stamp:.3f}")


@pytest.mark.slow
def test_killing_the_policy_node_holds_the_arm(stack) -> None:
    probe, procs = stack
    probe.wait_sim(1.0)
    procs.stop("policy", sig=signal.SIGKILL)
    killed_at = probe.now()
    # the last chunk (<= 0.3 s), the watchdog's hold (<= 0.3 s), KILL_SETTLE_S, then joint states at rest
    probe.wait_sim(0.3 + 0.3 + KILL_SETTLE_S + 0.3)
    # Header stamps, not this process's receipt times (which a loaded machine delays): the last chunk's is its
    # first point's time, up to one 20 Hz tick after the policy published it; `killed_at` was read once the
    # kill returned, on this process's clock, which can lag the stack's by its executor's delay.
    last_chunk = max(c.stamp for c in probe.chunks if c.points > 0)
    assert last_chunk <= killed_at + 0.3, f"a chunk stamped {last_chunk - killed_at:.3f} s after the kill"
    profile = [(round(t - last_chunk, 3), round(dq, 3)) for t, dq in probe.states if t > last_chunk][::10]
    # The watchdog (or the QoS deadline, 100 ms of wall clock) holds 100 ms after the controller received the
    # last chunk (+ a 10 ms tick), stamped by the controller's clock when it published the hold: 0.3 s leaves
    # ~0.19 s for the chunk's delivery to the controller on a loaded machine. The chunk itself runs out at
    # most 0.3 s after its stamp (7 points at 20 Hz), so the reason tells that hold apart from the watchdog's.
    holds = [
        (c.stamp, c.values)
        for c in probe.controller
        if c.values.get("state") == "holding" and c.stamp > last_chunk
    ]
    first = [(round(h - last_chunk, 3), st["reasons"]) for h, st in holds[:1]]
    print(
        f"last chunk stamped {last_chunk - killed_at:.3f} s after the kill; the first hold after it {first}"
    )
    assert holds and holds[0][0] <= last_chunk + 0.3, (
        f"no watchdog hold within 300 ms of the last chunk: {first}; {probe.detail(procs)}"
    )
    assert "chunk ran out" not in holds[0][1]["reasons"], (
        f"the chunk ran out before any watchdog hold: {first}; {probe.detail(procs)}"
    )
    # At rest (< 0.05 rad/s) 0.06-0.19 s after the hold in 8 measured runs (2026-11-30), 0.27-0.34 s in a
    # fresh-clone CI run, and 1 of 10 local runs failed the former bound (0.2 s): the jittering toy policy
    # spins the wrist joints up to 1.1 rad/s, whose momentum the Cartesian damping brakes more slowly
    settled = holds[0][0] + KILL_SETTLE_S
    if any(t >= settled for t, _ in probe.states):
        speed = probe.max_speed_after(settled)
        assert speed < 0.05, (
            f"arm still moving after the watchdog ({speed:.3f} rad/s); profile {profile}; "
            f"{probe.detail(procs)}"
        )
    else:  # the joint states ended: only a lost robot link, latched after the hold, may end them
        assert_lost_link_latched_after(probe, procs, holds[0][0])
    # the second path (row 15): the policy's publisher offers a liveliness lease that the controller watches
    wait_for(
        lambda: any(int(c.values.get("liveliness_lost", 0)) > 0 for c in probe.controller),
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
    wait_for(lambda: probe.policy_state() == "inactive", 60, what="the policy stopping without a controller")
    # Stale inputs (no joint states) make the policy publish explicit holds until it stops, `silence_s` (2 s)
    # after the last controller report it received. Both ends by header stamp (sim time): the dead
    # controller's last report, and the policy's last message; not from this process's clock read once the
    # kill returned (after the wait for the killed process, and behind by this executor's delay on a loaded
    # machine: later than the kill by an unknown amount). The policy checks at its 20 Hz ticks, so its last
    # hold comes up to a tick before 2 s, more when a tick runs late on a loaded machine; 1.7 s still tells
    # silence_s from fresh_s (1 s) or an immediate stop, and `no controller report` in its log (below) says
    # which rule stopped it.
    last_report = max(c.stamp for c in probe.controller)
    lost_after = max(c.stamp for c in probe.chunks) - last_report
    print(f"the policy published for {lost_after:.3f} s after the controller's last report")
    assert 1.7 <= lost_after <= 3.5, (
        f"the policy published for {lost_after:.2f} s after the controller's last report"
    )
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
    # By header stamp (the policy's clock, as the drills' starts are), not this process's receipt time: a hold
    # is stamped when published, a chunk with actions with its first point's time, the first 20 Hz tick after
    # the policy's clock when its inference began (so at most 50 ms after it, or before it when inference
    # stalls); a chunk delivered late here is not counted in the wrong window.
    nexts = [r["started"] for r in reports[1:]] + [np.inf]
    for report, next_start in zip(reports, nexts, strict=True):
        spec, start, end = report["drill"], report["started"], report["started"] + 1.0
        assert report["held"] and report["conclusive"] and report["hold_latency_s"] <= 0.5, report
        assert probe.max_speed_between(start + report["hold_latency_s"] + 0.02, end) < 0.05, (spec, report)
        during = [c.points for c in probe.chunks if start + 0.2 <= c.stamp <= end - 0.05]
        if spec == "silence":
            assert during == [], f"silence: {len(during)} chunks published during the drill"
        elif spec != "stall_inference:0.5":  # a stalled policy publishes late chunks now and then
            assert during and not any(during), f"{spec}: expected only explicit holds, got {during}"
        # the policy drives again: a chunk with actions inferred after the drill (its first point more than a
        # tick past the end) and before the next drill began; 2 s, not 1 s: after stall_inference the first
        # fresh inference follows the last stalled one (0.5 s), and a loaded machine delays both
        resumed = [
            c.stamp
            for c in probe.chunks
            if c.points > 0 and end + 0.05 < c.stamp < min(end + 2.0, next_start)
        ]
        assert resumed, f"no chunks after {spec}"


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
    # the chunks inferred during the drill, by header stamp (its first point is due at most a tick after the
    # inference began; one held back until after the drill is never sent): a chunk sent before the drill and
    # delivered here late is not one of them
    sent = [(c.received, c.due) for c in probe.chunks if c.points > 0 and start + 0.05 <= c.stamp <= end]
    assert sent and all(last < r for r, last in sent), f"chunks with actions ahead during the drill: {sent}"
    status = probe.controller[-1].values
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
    wait_for(lambda: probe.controller[-1].values.get("state") == "fault", 30, what="the controller's fault")
    assert "reflex" in probe.controller[-1].values["reasons"].lower(), probe.controller[-1].values
    wait_for(lambda: probe.policy_state() == "inactive", 30, what="the policy node deactivating itself")
    probe.wait_sim(1.0)
    # by header stamp (a chunk with actions is stamped at most a tick after its inference began), not receipt
    late = [c for c in probe.chunks if c.stamp > t_reflex + 0.5 and c.points > 0]
    assert not late, f"the policy published {len(late)} chunks after the controller's fault"
    speed = probe.max_motion_after(t_reflex + SETTLE_S)
    assert speed < 0.02, f"the arm moved ({speed:.3f} rad/s) after the reflex, before any recovery"
    assert probe.controller[-1].values["state"] == "fault", "the fault did not stay latched"
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
    wait_for(lambda: probe.controller[-1].values.get("state") == "fault", 30, what="the controller's fault")
    assert "User Stop pressed" in probe.controller[-1].values["reasons"], probe.controller[-1].values
    wait_for(lambda: probe.policy_state() == "inactive", 30, what="the policy node deactivating itself")
    refused = dm1_operator("recover")
    assert refused.returncode == 1 and "recover failed" in refused.stdout, refused
    assert "User Stop pressed" in refused.stdout, refused
    assert probe.call("/twin/user_stop", pressed=False).success
    probe.wait_sim(1.0)
    speed = probe.max_motion_after(t_pressed + SETTLE_S)
    assert speed < 0.02, f"the arm moved ({speed:.3f} rad/s) after the stop, before any recovery"
    assert probe.controller[-1].values["state"] == "fault", "releasing the stop cleared the fault"
    recover_then_activate(probe, procs)
    t_active = probe.now()
    probe.wait_sim(1.0)
    assert probe.max_motion_after(t_active) > 0.05, "the arm did not move under policy after the reactivation"
