"""Fault drills in the policy (`dm1.policy.drill`): each one fails toward a hold through the real fault path,
ends by itself, and `analyze_hold` judges the arm's answer. On the real onnxruntime with a toy model and a
fake clock; the whole stack runs them in tests/test_stack_faults.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import FakeClock
from dm1.kinematics import FR3_HOME_Q
from dm1.policy import ObservationAssembler, PolicyConfig, PolicySession
from dm1.policy.drill import DrilledRuntime, analyze_hold, drill_request, parse_drill
from dm1.runtime import PolicyRuntime
from policy_toy_model import build_toy_model

CAMERAS = ["front", "wrist"]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> PolicyRuntime:
    return PolicyRuntime.load(build_toy_model(tmp_path_factory.mktemp("toy"), control_rate_hz=10.0))


def _feed(session: PolicySession, stamp: float) -> None:
    for cam in session.card.cameras:
        session.on_image(cam.name, stamp, np.zeros(cam.shape, np.uint8))
    session.on_joint_state(stamp, FR3_HOME_Q, 0.04)


def _running(runtime: PolicyRuntime) -> tuple[PolicySession, FakeClock]:
    clock = FakeClock(100.0)
    session = PolicySession(runtime, clock, PolicyConfig(seed=0))
    _feed(session, 99.99)
    assert session.tick().chunk is not None
    return session, clock


def test_drill_specs_parse_with_their_arguments_and_bad_ones_name_what_is_expected() -> None:
    assert parse_drill("", CAMERAS, 1.0, 1.0) is None
    frozen = parse_drill("freeze_camera:wrist", CAMERAS, 10.0, 2.0)
    assert (frozen.kind, frozen.camera, frozen.started, frozen.until) == (
        "freeze_camera",
        "wrist",
        10.0,
        12.0,
    )
    assert parse_drill("stall_inference", CAMERAS, 0.0, 1.0).stall_s == 0.5
    assert parse_drill("stall_inference:0.3", CAMERAS, 0.0, 1.0).label == "stall_inference:0.3"
    assert parse_drill("nan_output", CAMERAS, 5.0, 1.0).describe() == "nan_output for 1 s started=5.000000"
    bad = {
        "wave": "expected one of ['freeze_camera', 'nan_output', 'stall_inference', 'silence', 'late_",
        "freeze_camera:side": "expected one of the cameras ['front', 'wrist'], found 'side'",
        "freeze_camera": "expected one of the cameras ['front', 'wrist'], found ''",
        "stall_inference:-1": "expected a stall of 0.2..10 s",
        "stall_inference:0.05": "absorbed by the chunks already sent: nothing to hold), found '0.05'",
        "stall_inference:soon": "found 'soon'",
        "silence:now": "drill silence: takes no argument, found 'now'",
        "late_chunks:0.3": "drill late_chunks: takes no argument, found '0.3'",
    }
    for spec, message in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_drill(spec, CAMERAS, 0.0, 1.0)


def test_freeze_camera_holds_the_policy_and_it_resumes_after_three_fresh_ticks(runtime) -> None:
    session, clock = _running(runtime)
    session.start_drill("freeze_camera:wrist", 0.5)  # 100.0 .. 100.5
    for t in (100.05, 100.1, 100.15):
        clock.t = t
        _feed(session, t - 0.01)
    out = session.tick()  # the newest wrist frame is 99.99: 160 ms old
    assert out.chunk is None and out.kind == "stale" and "wrist" in out.reason
    assert out.reason.startswith("drill freeze_camera:wrist: ")
    assert session.diagnostic_values()["frames_dropped_by_drill"] == 3
    kinds = []
    for t in (100.6, 100.7, 100.8):  # the drill is over: frames reach the policy again
        clock.t = t
        _feed(session, t - 0.01)
        out = session.tick()
        kinds.append((out.kind, out.chunk is not None, (out.reason or "")[:14]))
    # reliability row 1: the chunks resume after 3 fresh ticks in a row (resume_after_fresh_ticks)
    assert kinds == [
        ("recovering", False, "recovering 1/3"),
        ("recovering", False, "recovering 2/3"),
        ("ok", True, ""),
    ]


def test_nan_output_is_rejected_by_the_policys_own_finite_check(runtime) -> None:
    session, clock = _running(runtime)
    session.start_drill("nan_output", 1.0)
    clock.t = 100.05
    _feed(session, 100.04)
    out = session.tick()
    assert out.chunk is None and out.kind == "nonfinite" and "NaN/Inf" in out.reason
    clock.t = 101.1
    _feed(session, 101.09)
    assert session.tick().chunk is not None and session.step.counts["nonfinite"] == 1


def test_silence_publishes_nothing_and_stall_hangs_each_inference(runtime) -> None:
    session, clock = _running(runtime)
    session.start_drill("silence", 0.2)
    out = session.tick()
    assert out.chunk is None and out.kind == "drill" and "publishing nothing" in out.reason
    waits: list[float] = []
    stalled = DrilledRuntime(
        runtime, lambda: parse_drill("stall_inference:0.4", CAMERAS, 0.0, 1.0), waits.append
    )
    assembler = ObservationAssembler(runtime.card)
    for cam in runtime.card.cameras:
        assembler.on_image(cam.name, 1.0, np.zeros(cam.shape, np.uint8), received=1.0)
    assembler.on_joint_state(1.0, FR3_HOME_Q, 0.04, received=1.0)
    obs = assembler.assemble(1.01)
    actions = stalled.predict(obs.images, obs.proprio, noise=np.zeros(runtime.card.noise_shape, np.float32))
    assert waits == [0.4] and np.all(np.isfinite(actions))  # late, but the real output


def test_a_stall_lasts_its_length_in_the_nodes_clock_on_a_simulation_slower_than_real_time(runtime) -> None:
    """On the twin at half real time a 0.5 s wall sleep was 0.25 s of simulated time: the chunk came back
    with actions still ahead and the arm moved between the stalls (the drill then failed now and then).
    The wall sleep is scaled by the measured real-time factor; kept through back-to-back stalls."""
    wall = {"t": 0.0}
    waits: list[float] = []
    drill: list = [None]

    def sleep(s: float) -> None:
        waits.append(s)
        wall["t"] += s  # the node clock (below) stands still meanwhile, as a blocked executor's does

    node = {"t": 10.0}
    stalled = DrilledRuntime(
        runtime, lambda: drill[0], sleep, clock=lambda: node["t"], wall=lambda: wall["t"]
    )
    images = {c.name: np.zeros(c.shape, np.uint8) for c in runtime.card.cameras}
    proprio = np.zeros(runtime.card.proprio.dim, np.float32)
    for _ in range(20):  # 1 s of wall time, 0.5 s of simulated time
        stalled.predict(images, proprio)
        wall["t"] += 0.05
        node["t"] += 0.025
    assert stalled.real_time_factor() == pytest.approx(0.5) and waits == []
    drill[0] = parse_drill("stall_inference:0.4", CAMERAS, node["t"], 1.0)
    for _ in range(3):
        stalled.predict(images, proprio)
        node["t"] += 0.4  # the simulation went on while the node was blocked
    assert waits == pytest.approx([0.8, 0.8, 0.8])  # 0.4 s of simulated time each
    assert DrilledRuntime(runtime, lambda: drill[0], waits.append).real_time_factor() == 1.0  # robot: wall


def test_late_chunks_are_sent_unchanged_once_past_and_the_controller_refuses_them_then_latches(
    runtime,
) -> None:
    from dm1.control.backend import FakeBackend
    from dm1.control.executor import FAULT, ChunkExecutor
    from dm1.control.limits import SafetyLimits
    from dm1.evaluation.inprocess import timed_chunk

    session, clock = _running(runtime)
    executor = ChunkExecutor(FakeBackend(), SafetyLimits(), clock, mode="cartesian")
    session.start_drill("late_chunks", 2.0)  # 100.0 .. 102.0
    inferred, sent, answers, released_at = {}, [], [], []
    for k in range(1, 20):  # 10 Hz ticks
        clock.t = 100.0 + 0.1 * k
        _feed(session, clock.t - 0.01)
        out = session.tick()
        newest = session._held_back[-1][1].chunk  # this tick's inference, held back
        inferred[newest.t0] = newest
        if out.chunk is None:
            assert out.kind == "drill" and "held back" in out.reason
            continue
        assert out.chunk is inferred[out.chunk.t0] and out.ledger is None  # unchanged, and no latency sample
        assert out.chunk.end_time + session.period_s <= clock.t + 1e-9  # every action one tick past
        sent.append(out.chunk)
        released_at.append(k)
        answers.append(executor.on_chunk(timed_chunk(out.chunk)))
    assert released_at == list(range(released_at[0], 20)) and len(sent) >= 5  # one per tick once due
    assert answers[:5] == ["late"] * 5 and executor.state == FAULT and "over budget" in executor.fault
    assert executor.counters["accepted"] == 0
    clock.t = 102.1  # the drill is over: what is still held back is dropped, fresh chunks go out
    _feed(session, 102.09)
    out = session.tick()
    assert out.chunk is not None and out.chunk.t0 > clock.t - 1e-9 and not session._held_back


def test_reset_ends_a_running_drill(runtime) -> None:
    session, clock = _running(runtime)
    session.start_drill("late_chunks", 5.0)
    session.reset()  # (re)activation after the fault the drill provoked: the policy starts clean
    clock.t = 100.1
    _feed(session, 100.09)
    assert session.active_drill() is None and session.tick().chunk is not None


def test_a_drill_is_refused_on_an_inactive_node_and_a_bad_one_changes_nothing(runtime) -> None:
    assert drill_request({"drill": "nan_output"}, None, 1.0) == (
        False,
        "drills run only while the policy is active",
    )
    assert drill_request({"seed": 3}, None, 1.0) == (True, "")  # not a drill: passes through
    session, _ = _running(runtime)
    ok, reason = drill_request({"drill": "freeze_camera:side"}, session, 1.0)
    assert not ok and "found 'side'" in reason and session.drill is None
    ok, reason = drill_request({"drill": "nan_output", "drill_duration_s": 2.5}, session, 1.0)
    assert ok and reason == "fault drill: nan_output for 2.5 s started=100.000000"
    assert (
        drill_request({"drill": ""}, session, 1.0) == (True, "fault drill ended")
        and session.active_drill() is None
    )


def _profile(speed_of_t, t_end: float = 3.0, dt: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(0.0, t_end, dt)
    return t, np.array([speed_of_t(x) for x in t])


def test_analyze_hold_measures_when_the_arm_stood_still_and_when_it_moved_again() -> None:
    # moving at 0.3 rad/s, braking linearly from the drill's start (1.0) to rest at 1.2, moving again at 2.1
    t, v = _profile(lambda x: 0.3 if x < 1.0 else max(0.0, 0.3 - 1.5 * (x - 1.0)) if x < 2.1 else 0.3)
    report = analyze_hold(t, v, "nan_output", started=1.0, duration_s=1.0)
    assert report.held and report.conclusive and report.hold_latency_s == pytest.approx(0.19, abs=0.011)
    assert report.speed_before == pytest.approx(0.3) and report.max_speed_held < 0.02
    assert report.resumed_after_s == pytest.approx(0.1, abs=0.011)
    assert "held: still 190 ms after the start" in report.summary()


def test_analyze_hold_fails_a_late_hold_an_arm_that_never_stops_and_a_drill_on_a_still_arm() -> None:
    t, v = _profile(lambda x: 0.3 if x < 1.7 else 0.0)
    late = analyze_hold(t, v, "silence", started=1.0, duration_s=1.0, max_hold_s=0.5)
    assert (
        not late.held
        and late.hold_latency_s == pytest.approx(0.7, abs=0.011)
        and "TOO LATE" in late.summary()
    )
    t, v = _profile(lambda x: 0.3)
    never = analyze_hold(t, v, "silence", started=1.0, duration_s=1.0)
    assert not never.held and never.hold_latency_s is None and "NOT HELD" in never.summary()
    t, v = _profile(lambda x: 0.0)
    idle = analyze_hold(t, v, "silence", started=1.0, duration_s=1.0)
    assert idle.held and not idle.conclusive and "INCONCLUSIVE" in idle.summary()
    with pytest.raises(ValueError, match="expected samples until the drill's end 3.500"):
        analyze_hold(t, v, "silence", started=2.5, duration_s=1.0)


@pytest.mark.parametrize(
    "spec",
    ["nan_output", "silence", "late_chunks", "stall_inference", "stall_inference:0.5", "freeze_camera:front"]
    + ["bogus", "nan_output:1", "stall_inference:0.1", "stall_inference:x", "silence:2", "late_chunks:1"],
)
def test_dm1_operator_checks_a_drill_spec_with_the_policy_nodes_parser_so_they_cannot_disagree(spec: str):
    """`dm1 operator drill --drill SPEC` refuses at once (exit 2) exactly what the node would refuse later."""
    import argparse

    from dm1.commands.operator import drill_spec

    try:
        parse_drill(spec, ["front"], 0.0, 1.0)
        node_error = None
    except ValueError as exc:
        node_error = str(exc)
    if node_error is None:
        assert drill_spec(spec) == spec
    else:
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            drill_spec(spec)
        assert str(refused.value) == f"{node_error} (or 'all': each drill in turn)"
