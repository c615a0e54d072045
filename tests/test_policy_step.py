"""PolicyStep on the real onnxruntime: future-stamped chunks spaced 1/rate, NaN → no chunk, latency ledger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FakeClock
from dm1.kinematics import FR3_HOME_Q
from dm1.policy import (
    NODE_PARAMETERS,
    Observation,
    ObservationAssembler,
    PolicyConfig,
    PolicySession,
    PolicyStep,
    StaleReason,
    config_from_parameters,
)
from dm1.policy.session import offered_deadline_ms
from dm1.runtime import PolicyRuntime
from policy_toy_model import build_toy_model, toy_base

RATE = 10.0
TA = 8


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> PolicyRuntime:
    return PolicyRuntime.load(
        build_toy_model(tmp_path_factory.mktemp("toy"), chunk_length=TA, control_rate_hz=RATE)
    )


def observe(rt: PolicyRuntime, stamp: float) -> Observation:
    asm = ObservationAssembler(rt.card)
    for cam in rt.card.cameras:
        asm.on_image(cam.name, stamp, np.zeros(cam.shape, np.uint8), received=stamp + 0.002)
    asm.on_joint_state(stamp, FR3_HOME_Q, 0.04, received=stamp + 0.001)
    obs = asm.assemble(stamp + 0.005)
    assert isinstance(obs, Observation), obs
    return obs


def test_chunk_starts_at_first_future_tick_and_is_spaced_one_over_rate(runtime) -> None:
    clock = FakeClock(100.0)
    step = PolicyStep(runtime, clock)
    obs = observe(runtime, 99.98)  # inference happens 20 ms after capture
    out = step.run(obs)
    assert out.chunk is not None and out.reason is None
    c = out.chunk
    assert c.t0 > clock.t and c.t0 == pytest.approx(99.98 + 1 / RATE)  # first tick after now
    np.testing.assert_allclose(np.diff(c.times), 1 / RATE)
    assert c.first_index == 1 and c.actions.shape == (TA - 1, 4)
    np.testing.assert_allclose(
        c.actions, toy_base("ee_position", TA)[1:], atol=1e-6
    )  # past-due action dropped
    assert c.names == ("x", "y", "z", "gripper") and c.space == "ee_position"


def test_late_inference_drops_every_past_due_action(runtime) -> None:
    clock = FakeClock(100.0)
    step = PolicyStep(runtime, clock)
    out = step.run(observe(runtime, 99.65))  # 350 ms old → actions 0..3 are past
    assert out.chunk.first_index == 4 and out.chunk.t0 == pytest.approx(100.05) and out.chunk.t0 > clock.t
    clock.t = 99.65 + TA / RATE + 0.01
    late = step.run(observe(runtime, 99.65))
    assert late.chunk is None and late.kind == "late" and step.counts["late"] == 1


def test_nan_model_output_gives_no_chunk(tmp_path: Path) -> None:
    rt = PolicyRuntime.load(build_toy_model(tmp_path / "nan", nan=True))
    step = PolicyStep(rt, FakeClock(100.0))
    out = step.run(observe(rt, 99.99))
    assert out.chunk is None and out.kind == "nonfinite" and "NaN" in out.reason
    assert step.counts["nonfinite"] == 1 and step.current is None


def test_stale_observation_is_counted_and_gives_no_chunk(runtime) -> None:
    step = PolicyStep(runtime, FakeClock(100.0))
    out = step.run(StaleReason("front", "stale", "camera 'front': newest frame is 300 ms old, limit 100 ms"))
    assert out.chunk is None and "front" in out.reason and step.counts["stale"] == 1


def test_latency_ledger_stages_are_cumulative(runtime) -> None:
    ticks = iter(np.arange(0.0, 10.0, 0.004))  # each perf reading advances 4 ms
    step = PolicyStep(runtime, FakeClock(100.0), perf=lambda: float(next(ticks)))
    out = step.run(observe(runtime, 99.98), preprocess_ms=1.5)
    ledger = step.mark_published(out)
    assert ledger.received_ms == pytest.approx(2.0)  # last stream arrived 2 ms after capture
    assert ledger.tick_ms == pytest.approx(20.0)
    assert ledger.preprocessed_ms == pytest.approx(21.5)
    assert ledger.inferred_ms == pytest.approx(25.5)
    assert ledger.published_ms == pytest.approx(29.5)
    summary = step.latency_summary()
    assert summary["inferred_ms_median"] == pytest.approx(25.5) and "published_ms_p95" in summary


def test_chunk_then_replan_executes_the_whole_chunk_before_inferring_again(runtime) -> None:
    clock = FakeClock(100.0)
    step = PolicyStep(runtime, clock, mode="chunk_then_replan")
    first = step.run(observe(runtime, 99.99))
    assert first.chunk is not None
    clock.t += 0.3
    assert not step.wants_inference(clock.t)
    assert step.run(observe(runtime, clock.t - 0.01)).kind == "executing"
    clock.t = first.chunk.end_time
    assert step.wants_inference(clock.t)
    assert step.run(observe(runtime, clock.t - 0.01)).chunk is not None


def test_chunk_then_replan_resends_the_rest_of_its_chunk_each_tick_and_infers_once_per_chunk(runtime) -> None:
    """Between inferences every tick sends the points not yet due, stamped at the first of them (newer than
    the last sent, the same plan); the next inference runs on the first tick from which the last point is due
    within 2.5 periods (ticks 0.01 s after the points: 0.19 s ahead), so the controller always has a point
    ahead; a stale tick stops the chunk and the next one is inferred afresh."""
    clock = FakeClock(100.0)
    step = PolicyStep(runtime, clock, mode="chunk_then_replan", resume_after_fresh_ticks=1)
    first = step.run(observe(runtime, 99.99)).chunk  # points at 100.09 .. 100.69 (7 of the model's 8)
    sent = [(first.t0, len(first.actions))]
    ahead = []  # per tick: how far the last point of the chunk sent before it lies ahead of the tick
    for i in range(1, 13):
        clock.t = 100.0 + i / RATE
        ahead.append(sent[-1][0] + (sent[-1][1] - 1) / RATE - clock.t)
        out = step.run(observe(runtime, clock.t - 0.01))
        assert out.chunk is not None, (i, out.kind, out.reason)
        c = out.chunk
        assert c.t0 > clock.t and c.t0 > sent[-1][0]  # future-stamped, newer than the last one sent
        if out.kind == "executing":
            assert out.ledger is None and c.obs_stamp == first.obs_stamp
            np.testing.assert_array_equal(c.actions, first.actions[-len(c.actions) :])  # the same plan
            np.testing.assert_allclose(c.times, first.times[-len(c.actions) :])
        else:
            assert out.kind == "ok" and c.first_index == 1
            first = c
        sent.append((c.t0, len(c.actions)))
    assert step.counts["ok"] == 3 and step.counts["executing"] == 10  # one inference per 5 ticks
    assert [n for _, n in sent] == [7, 6, 5, 4, 3, 7, 6, 5, 4, 3, 7, 6, 5]
    assert min(ahead) == pytest.approx(0.19)  # the controller is never left without a point ahead
    clock.t += 1 / RATE
    stale = step.run(StaleReason("wrist", "stale", "camera 'wrist': newest frame is 150 ms old"))
    assert stale.chunk is None and stale.kind == "stale" and step.current is None
    clock.t += 1 / RATE
    after = step.run(observe(runtime, clock.t - 0.01))
    assert after.kind == "ok" and step.counts["ok"] == 4  # not the rest of the chunk the hold cut


@pytest.mark.parametrize("tick_after_point_s", [-0.001, 0.0, 0.01, 0.049, 0.05, 0.051, 0.099])
def test_chunk_then_replan_hands_over_at_least_1_5_periods_before_the_last_point_wherever_ticks_fall(
    runtime, tick_after_point_s: float
) -> None:
    """Wherever the control ticks fall on the chunk's grid, the next chunk is inferred while the current one's
    last point is 1.5 to 2.5 periods ahead, and it is stamped later than every chunk sent before it. (Before,
    ticks 1 ms before each point inferred 1 ms before the last one: the controller ran out of points and held
    before the new chunk arrived, in CI; then a hand-over 0.5 to 1.5 periods ahead still left only half a
    period, 25 ms at 20 Hz, for inference and transport on the loaded 2-core VM.)"""
    clock = FakeClock(100.0)
    step = PolicyStep(runtime, clock, mode="chunk_then_replan", resume_after_fresh_ticks=1)
    grid = 99.99  # the observations' stamps: points at 100.09, 100.19, ...
    last = step.run(observe(runtime, grid)).chunk
    sent, margins = [last.t0], []
    for i in range(1, 40):
        clock.t = grid + i / RATE + tick_after_point_s
        current_end = step.current.end_time
        out = step.run(observe(runtime, grid + (i - 1) / RATE))
        assert out.chunk is not None, (i, out.kind, out.reason)
        assert out.chunk.t0 > sent[-1] + 1e-9 and out.chunk.t0 > clock.t, (i, out.chunk.t0, sent[-1])
        if out.kind == "ok":
            margins.append(current_end - clock.t)
        sent.append(out.chunk.t0)
    assert len(margins) >= 6, margins
    assert min(margins) >= 1.5 / RATE - 1e-9 and max(margins) < 2.5 / RATE, margins


def test_chunk_then_replan_sends_a_newer_chunk_at_a_tick_that_comes_before_the_next_point(runtime) -> None:
    """A tick whose previous chunk's first point is not yet due still sends a newer stamp (one point later):
    the same stamp would be ignored by the controller, and nothing would silence the stream for two periods
    (its watchdog: measured as a hold on the loaded twin)."""
    clock = FakeClock(100.0)
    step = PolicyStep(runtime, clock, mode="chunk_then_replan")
    first = step.run(observe(runtime, 99.99)).chunk  # points at 100.09, 100.19, ...
    clock.t = 100.1
    assert step.run(observe(runtime, 100.09)).chunk.t0 == pytest.approx(first.t0 + 0.1)
    clock.t = 100.18  # an early tick: 100.19, the first point of the last chunk sent, is not due yet
    again = step.run(observe(runtime, 100.17)).chunk
    assert again is not None and again.t0 == pytest.approx(first.t0 + 0.2)
    np.testing.assert_array_equal(again.actions, first.actions[2:])


def test_after_a_stale_input_the_policy_waits_for_n_fresh_ticks_in_a_row(runtime) -> None:
    """Reliability row 1: activation starts at the first fresh observation; after a lapse each of the first
    N - 1 fresh ticks says "recovering k/N" (no chunk), the N-th infers; a lapse in between starts over."""
    clock = FakeClock(100.0)
    step = PolicyStep(runtime, clock, resume_after_fresh_ticks=3)
    missing = StaleReason("front", "missing", "camera 'front': no frame received yet")
    assert step.run(missing).kind == "stale"  # streams not there yet at activation: no recovery
    assert step.run(observe(runtime, 99.99)).chunk is not None
    kinds, reasons = [], []
    for i, fresh in enumerate((False, True, True, False, True, True, True, True), start=1):
        clock.t = 100.0 + i / RATE
        out = step.run(observe(runtime, clock.t - 0.01) if fresh else missing)
        assert (out.chunk is not None) == (out.kind == "ok")
        kinds.append(out.kind)
        reasons.append(out.reason)
    assert kinds == ["stale", "recovering", "recovering", "stale", "recovering", "recovering", "ok", "ok"]
    assert reasons[1].startswith("recovering 1/3") and reasons[5].startswith("recovering 2/3")
    assert step.counts["recovering"] == 4 and step.counts["stale"] == 3
    step.reset()  # activation again: not a recovery
    clock.t += 1 / RATE
    assert step.run(missing).kind == "stale"
    assert step.run(observe(runtime, clock.t - 0.01)).kind == "ok"
    with pytest.raises(ValueError, match=r"resume_after_fresh_ticks: expected an integer in \[1, 100\]"):
        PolicyConfig(resume_after_fresh_ticks=0)


def test_replan_every_tick_infers_every_time(runtime) -> None:
    clock = FakeClock(100.0)
    step = PolicyStep(runtime, clock)
    for i in range(3):
        clock.t = 100.0 + i / RATE
        assert step.run(observe(runtime, clock.t - 0.01)).chunk is not None
    assert step.counts["ok"] == 3


def test_seeded_noise_is_reproducible(tmp_path: Path) -> None:
    rt = PolicyRuntime.load(build_toy_model(tmp_path / "noisy", noise_scale=0.1))
    a = PolicyStep(rt, FakeClock(100.0), seed=3).run(observe(rt, 99.99)).chunk.actions
    b = PolicyStep(rt, FakeClock(100.0), seed=3).run(observe(rt, 99.99)).chunk.actions
    c = PolicyStep(rt, FakeClock(100.0), seed=4).run(observe(rt, 99.99)).chunk.actions
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_zero_noise_scale_gives_the_deterministic_centre(tmp_path: Path) -> None:
    rt = PolicyRuntime.load(build_toy_model(tmp_path / "noisy", noise_scale=0.1))
    a = PolicyStep(rt, FakeClock(100.0), seed=3, noise_scale=0.0).run(observe(rt, 99.99)).chunk.actions
    b = PolicyStep(rt, FakeClock(100.0), seed=4, noise_scale=0.0).run(observe(rt, 99.99)).chunk.actions
    np.testing.assert_array_equal(a, b)  # no noise: the seed no longer matters
    with pytest.raises(ValueError, match="noise_scale"):
        PolicyStep(rt, FakeClock(100.0), noise_scale=1.5)


def test_ensembling_blends_overlapping_replans_and_restarts_after_a_hold(tmp_path: Path) -> None:
    rt = PolicyRuntime.load(
        build_toy_model(tmp_path / "noisy", noise_scale=0.1, chunk_length=TA, control_rate_hz=RATE)
    )
    clock_raw, clock_ens = FakeClock(100.0), FakeClock(100.0)
    # same seed: the same noise, so the same raw chunks; resumption at the first fresh tick after the hold
    raw = PolicyStep(rt, clock_raw, seed=5, resume_after_fresh_ticks=1)
    ens = PolicyStep(rt, clock_ens, seed=5, ensemble_alpha=0.5, resume_after_fresh_ticks=1)
    chunks = []
    for i, stale in enumerate((False, False, True, False)):
        clock_raw.t = clock_ens.t = 100.0 + i / RATE
        obs = StaleReason("front", "missing", "no frame") if stale else observe(rt, clock_raw.t - 0.01)
        chunks.append((raw.run(obs).chunk, ens.run(obs).chunk))
    (r0, e0), (r1, e1), (_, hold), (r3, e3) = chunks
    np.testing.assert_array_equal(e0.actions, r0.actions)  # nothing to blend with yet
    overlap = np.interp(r1.times, e0.times, e0.actions[:, 0])[: len(e0.times) - 1]
    np.testing.assert_allclose(
        e1.actions[: len(overlap), 0], 0.5 * r1.actions[: len(overlap), 0] + 0.5 * overlap
    )
    np.testing.assert_array_equal(e1.actions[-1], r1.actions[-1])  # an instant only the new chunk plans
    assert hold is None
    np.testing.assert_array_equal(e3.actions, r3.actions)  # after a hold the next chunk starts afresh


def test_invalid_mode_and_rate_are_refused(runtime) -> None:
    with pytest.raises(ValueError, match="mode.*'sometimes'"):
        PolicyStep(runtime, FakeClock(), mode="sometimes")
    with pytest.raises(ValueError, match="control_rate_hz.*0"):
        PolicyStep(runtime, FakeClock(), control_rate_hz=0.0)


def _feed(session: PolicySession, stamp: float) -> None:
    for cam in session.card.cameras:
        session.on_image(cam.name, stamp, np.zeros(cam.shape, np.uint8))
    session.on_joint_state(stamp, FR3_HOME_Q, 0.04)


def test_session_tick_publishes_then_holds_when_inputs_age(runtime) -> None:
    clock = FakeClock(100.0)
    session = PolicySession(runtime, clock, PolicyConfig(seed=0))
    _feed(session, 99.99)
    first = session.tick()
    assert first.chunk is not None
    session.step.mark_published(first)
    clock.t = 100.2  # no new frames for 210 ms
    out = session.tick()
    assert out.chunk is None and out.kind == "stale"
    values = session.diagnostic_values()
    assert values["ok"] == 1 and values["stale"] == 1 and values["stale_front"] == 1
    assert "inferred_ms_median" in values


def test_session_forgets_frames_when_the_clock_jumps_back(runtime) -> None:
    clock = FakeClock(100.0)
    session = PolicySession(runtime, clock)
    _feed(session, 99.99)
    assert session.tick().chunk is not None
    clock.t = 5.0  # simulation restarted
    out = session.tick()
    assert out.kind == "stale" and "no frame" in out.reason
    _feed(session, 4.99)  # the new timeline's frames are accepted again (no "backwards" rejection)
    assert session.tick().chunk is not None


def test_node_parameters_map_to_a_validated_config(runtime) -> None:
    values = {name: default for name, (default, _, _) in NODE_PARAMETERS.items()}
    with pytest.raises(
        ValueError, match="model_dir: expected a model directory .* found the parameter empty"
    ):
        config_from_parameters(values)  # unset: never whatever model the working directory holds
    values["model_dir"] = "models/toy"
    cfg = config_from_parameters({**values, "camera_topics": ["wrist=/rs/wrist/color/image_raw"], "seed": 7})
    assert cfg.control_rate_hz is None and cfg.seed == 7 and cfg.resume_after_fresh_ticks == 3
    assert NODE_PARAMETERS["resume_after_fresh_ticks"][2] == (1, 100)
    assert config_from_parameters({**values, "resume_after_fresh_ticks": 1}).resume_after_fresh_ticks == 1
    session = PolicySession(runtime, FakeClock(), cfg)
    assert session.topics == {"front": "/camera/front/color/image_raw", "wrist": "/rs/wrist/color/image_raw"}
    assert session.period_s == pytest.approx(1 / RATE)
    with pytest.raises(ValueError, match="'wrist:/x'"):
        config_from_parameters({**values, "camera_topics": ["wrist:/x"]})
    for rate in (RATE * 4, 1000.0, 0.5):  # the trained action spacing, or the arm moves at another speed
        with pytest.raises(ValueError, match=rf"control_rate_hz: expected 0 or the model card's {RATE:g} Hz"):
            PolicySession(runtime, FakeClock(), PolicyConfig(control_rate_hz=rate))
    assert PolicySession(runtime, FakeClock(), PolicyConfig(control_rate_hz=RATE)).period_s == pytest.approx(
        1 / RATE
    )
    with pytest.raises(ValueError, match=r"unknown camera\(s\) \['side'\]"):
        PolicySession(runtime, FakeClock(), PolicyConfig(camera_topics={"side": "/s"}))
    with pytest.raises(ValueError, match="mode"):
        config_from_parameters({**values, "mode": "fast"})


def test_the_offered_chunk_deadline_is_two_periods_by_default_and_longer_than_one() -> None:
    assert offered_deadline_ms(0.0, 0.05) == pytest.approx(100.0)  # 20 Hz: what the controller requests
    assert offered_deadline_ms(0.0, 0.1) == pytest.approx(200.0)
    assert offered_deadline_ms(150.0, 0.1) == 150.0
    with pytest.raises(
        ValueError, match=r"chunk_deadline_ms: expected .* more than the chunk period 100 ms, found 100"
    ):
        offered_deadline_ms(100.0, 0.1)
