"""Faults injected into the whole stack: twin → policy node → controller node → franky → franky-sim.

The test process relays the twin's wrist camera to the policy node (so it can cut that one camera), records
`/joint_states` and the chunks (tests/stack_probe.py), and kills nodes. Every wait is bounded; times are
simulation time. The operator-path faults (drills, a reflex, the user stop): test_stack_drills.py.
"""

from __future__ import annotations

import signal

import pytest
from conftest import dm1_operator, wait_for
from stack_probe import SETTLE_S, StackProbe

# From the watchdog's hold to rest after a killed policy, whose last chunk may leave the wrist joints spinning
# at up to 1.1 rad/s (the EE at the speed cap): 0.06-0.34 s measured (test_killing_the_policy_node_...);
# 0.6 s, as the hold is now timed by its header stamp (earlier than its receipt) and 0.4 left ~50 ms
KILL_SETTLE_S = 0.6


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
