"""ObservationAssembler: only fresh, synchronised, well-formed inputs become an observation (fake clock)."""

from __future__ import annotations

import numpy as np
import pytest
from dm1.kinematics import FR3_HOME_Q
from dm1.modelcard import ActionSpec, CameraSpec, ModelCard, ProprioSpec
from dm1.policy import JOINT_STREAM, Observation, ObservationAssembler, ObservationConfig, StaleReason
from dm1.proprio import compute_proprio

H, W = 24, 32
KEYS = ["ee_pos", "gripper_width"]


def make_card() -> ModelCard:
    return ModelCard(
        name="obs-test",
        cameras=[CameraSpec("front", (H, W, 3)), CameraSpec("wrist", (H, W, 3))],
        proprio=ProprioSpec(keys=KEYS, dims=[3, 1], units=["m", "m"]),
        noise_shape=(4, 4),
        action=ActionSpec(
            "ee_position", ["x", "y", "z", "g"], ["m"] * 3 + ["1"], "fr3_link0", 4, 10.0, [1, 0, 0, 0]
        ),
        onnx_sha256="0" * 64,
    )


def img(value: int = 7, shape=(H, W, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def feed_all(asm: ObservationAssembler, t: float, cams=("front", "wrist")) -> None:
    for c in cams:
        assert asm.on_image(c, t, img()) is None
    assert asm.on_joint_state(t, FR3_HOME_Q, 0.04) is None


def test_fresh_synchronised_streams_give_an_observation() -> None:
    asm = ObservationAssembler(make_card())
    feed_all(asm, 10.0)
    obs = asm.assemble(now=10.03)
    assert isinstance(obs, Observation)
    assert set(obs.images) == {"front", "wrist"} and obs.images["front"].shape == (H, W, 3)
    np.testing.assert_allclose(obs.proprio, compute_proprio(KEYS, FR3_HOME_Q, 0.04))
    assert obs.stamp == 10.0 and obs.stamps[JOINT_STREAM] == 10.0


def test_stale_frame_gives_no_observation_and_names_the_camera() -> None:
    asm = ObservationAssembler(make_card(), ObservationConfig(max_age_s=0.1))
    feed_all(asm, 10.0)
    asm.on_image("front", 10.1, img())
    asm.on_joint_state(10.1, FR3_HOME_Q, 0.04)
    reason = asm.assemble(now=10.15)  # wrist is 150 ms old
    assert isinstance(reason, StaleReason)
    assert reason.stream == "wrist" and reason.kind == "stale"
    assert "wrist" in str(reason) and "150 ms" in str(reason) and "100 ms" in str(reason)
    assert reason.age_s == pytest.approx(0.15) and reason.limit_s == pytest.approx(0.1)


def test_per_camera_age_limit_overrides_the_default() -> None:
    cfg = ObservationConfig(max_age_s=0.1, camera_max_age_s={"wrist": 0.3}, sync_tolerance_s=0.3)
    asm = ObservationAssembler(make_card(), cfg)
    feed_all(asm, 10.0)
    asm.on_image("front", 10.2, img())
    asm.on_joint_state(10.2, FR3_HOME_Q, 0.04)
    assert isinstance(asm.assemble(now=10.25), Observation)  # wrist 250 ms old, allowed 300 ms
    with pytest.raises(ValueError, match="unknown camera"):
        ObservationAssembler(make_card(), ObservationConfig(camera_max_age_s={"side": 0.2}))


def test_missing_joint_state_gives_no_observation() -> None:
    asm = ObservationAssembler(make_card())
    for c in ("front", "wrist"):
        asm.on_image(c, 10.0, img())
    reason = asm.assemble(now=10.01)
    assert isinstance(reason, StaleReason)
    assert reason.stream == JOINT_STREAM and reason.kind == "missing" and "joint state" in str(reason)


def test_missing_camera_is_named() -> None:
    asm = ObservationAssembler(make_card())
    asm.on_image("front", 10.0, img())
    asm.on_joint_state(10.0, FR3_HOME_Q, 0.0)
    reason = asm.assemble(now=10.0)
    assert isinstance(reason, StaleReason) and reason.stream == "wrist" and reason.kind == "missing"


def test_streams_spread_beyond_sync_tolerance_are_rejected() -> None:
    asm = ObservationAssembler(make_card(), ObservationConfig(max_age_s=0.5, sync_tolerance_s=0.05))
    feed_all(asm, 10.0)
    asm.on_image("front", 10.08, img())
    asm.on_joint_state(10.08, FR3_HOME_Q, 0.0)
    reason = asm.assemble(now=10.09)
    assert isinstance(reason, StaleReason) and reason.kind == "unsynced"
    assert reason.stream == "wrist" and "80 ms" in str(reason) and "50 ms" in str(reason)


def test_backwards_stamp_is_rejected_and_the_newer_frame_kept() -> None:
    asm = ObservationAssembler(make_card())
    feed_all(asm, 10.0)
    bad = asm.on_image("front", 9.99, img(200))
    assert isinstance(bad, StaleReason) and bad.kind == "backwards" and "front" in str(bad)
    assert asm.rejected_counts["front"] == 1
    obs = asm.assemble(now=10.01)
    assert isinstance(obs, Observation) and obs.images["front"][0, 0, 0] == 7


def test_stamp_from_the_future_is_rejected() -> None:
    asm = ObservationAssembler(make_card(), ObservationConfig(future_tolerance_s=0.05))
    feed_all(asm, 10.0)
    reason = asm.assemble(now=9.0)  # e.g. the clock jumped back
    assert isinstance(reason, StaleReason) and reason.kind == "future"
    asm.reset()
    assert asm.assemble(now=9.0).kind == "missing"


def test_wrong_image_shape_is_rejected_with_a_clear_reason() -> None:
    asm = ObservationAssembler(make_card())
    bad = asm.on_image("front", 10.0, img(shape=(48, 64, 3)))
    assert isinstance(bad, StaleReason) and bad.kind == "bad_input"
    assert "(48, 64, 3)" in str(bad) and "(24, 32, 3)" in str(bad)
    asm.on_image("wrist", 10.0, img())
    asm.on_joint_state(10.0, FR3_HOME_Q, 0.0)
    reason = asm.assemble(now=10.0)
    assert reason.stream == "front" and "(48, 64, 3)" in str(reason)  # the missing frame explains itself
    assert isinstance(asm.on_image("front", 10.0, np.zeros((H, W, 3), np.float32)), StaleReason)
    assert isinstance(asm.on_image("side", 10.0, img()), StaleReason)


def test_resize_option_resamples_instead_of_rejecting() -> None:
    asm = ObservationAssembler(make_card(), ObservationConfig(resize=True))
    big = np.zeros((48, 64, 3), np.uint8)
    big[:, 32:] = 255  # right half white
    feed_all(asm, 10.0, cams=("wrist",))
    assert asm.on_image("front", 10.0, big) is None
    obs = asm.assemble(now=10.0)
    assert obs.images["front"].shape == (H, W, 3)
    assert obs.images["front"][:, :16].max() == 0 and obs.images["front"][:, 16:].min() == 255


def test_non_finite_joint_state_is_rejected() -> None:
    asm = ObservationAssembler(make_card())
    q = FR3_HOME_Q.copy()
    q[2] = np.nan
    reason = asm.on_joint_state(10.0, q, 0.0)
    assert isinstance(reason, StaleReason) and reason.stream == JOINT_STREAM


def test_a_stream_gone_stale_because_its_new_frames_are_rejected_says_why() -> None:
    """Good frames, then only NaN joint states or wrong-size images: the hold must name the rejection, not
    only the age of the last good frame."""
    asm = ObservationAssembler(make_card(), ObservationConfig(max_age_s=0.1))
    feed_all(asm, 10.0)
    q = FR3_HOME_Q.copy()
    q[2] = np.nan
    for t in (10.1, 10.2):
        asm.on_image("front", t, img())
        asm.on_image("wrist", t, img(shape=(48, 64, 3)))
        asm.on_joint_state(t, q, 0.04)
    reason = asm.assemble(now=10.2)
    assert reason.stream == "wrist" and reason.kind == "stale"
    assert (
        "200 ms old" in str(reason) and "last frame rejected" in str(reason) and "(48, 64, 3)" in str(reason)
    )
    asm.on_image("wrist", 10.2, img())  # the camera recovers; the joint states are still NaN
    reason = asm.assemble(now=10.2)
    assert reason.stream == JOINT_STREAM and "last frame rejected" in str(reason) and "nan" in str(reason)
    asm.on_joint_state(10.2, FR3_HOME_Q, 0.04)
    assert isinstance(asm.assemble(now=10.2), Observation)


def test_invalid_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="sync_tolerance_s.*-1"):
        ObservationConfig(sync_tolerance_s=-1)
    with pytest.raises(ValueError, match="max_age_s"):
        ObservationConfig(max_age_s=float("nan"))


def test_a_negative_gripper_width_beyond_a_hair_is_refused_and_assembly_does_not_raise() -> None:
    """Fingers reading -1 mm each (width -2 mm): refused when offered, naming the width; the last good state
    is still what the tick assembles (before: stored, then `compute_proprio` raised inside the tick)."""
    asm = ObservationAssembler(make_card())
    feed_all(asm, 10.0)
    reason = asm.on_joint_state(10.01, FR3_HOME_Q, -0.002)
    assert isinstance(reason, StaleReason) and reason.kind == "bad_input" and "-0.002" in str(reason)
    obs = asm.assemble(now=10.02)
    assert isinstance(obs, Observation) and obs.gripper_width == 0.04
    assert asm.on_joint_state(10.02, FR3_HOME_Q, -0.0005) is None  # a hair below zero: clipped by proprio


@pytest.mark.parametrize(
    ("joint", "value", "width"),
    [(0, 1e6, 0.04), (3, 0.5, 0.04), (6, -3.1, 0.04), (None, None, 10.0)],
)
def test_a_physically_impossible_joint_state_is_refused_naming_the_joint(joint, value, width) -> None:
    asm = ObservationAssembler(make_card())
    q = FR3_HOME_Q.copy()
    if joint is not None:
        q[joint] = value
    reason = asm.on_joint_state(10.0, q, width)
    assert isinstance(reason, StaleReason) and reason.kind == "bad_input"
    assert (f"fr3_joint{joint + 1}" if joint is not None else "gripper width 10") in str(reason)
    assert asm.rejected_counts[JOINT_STREAM] == 1


def test_an_empty_frame_is_refused_even_with_resize_on() -> None:
    asm = ObservationAssembler(make_card(), ObservationConfig(resize=True))
    reason = asm.on_image("front", 10.0, np.zeros((0, 0, 3), np.uint8))
    assert isinstance(reason, StaleReason) and reason.kind == "bad_input" and "empty" in str(reason)


def test_a_frame_stamped_ahead_of_the_clock_does_not_block_the_on_time_frames_after_it() -> None:
    """One frame stamped 3 s ahead when it arrives: the tick holds on it ('future'), and the next on-time
    frame replaces it instead of being refused as 'went backwards' until the clock catches up."""
    asm = ObservationAssembler(make_card())
    feed_all(asm, 10.0)
    assert asm.on_image("front", 13.0, img(99), received=10.02) is None  # stored: the tick decides
    assert asm.assemble(now=10.03).kind == "future"
    assert asm.on_image("front", 10.04, img(5), received=10.04) is None  # on time again: replaces it
    asm.on_image("wrist", 10.04, img(), received=10.04)
    asm.on_joint_state(10.04, FR3_HOME_Q, 0.04, received=10.04)
    obs = asm.assemble(now=10.05)
    assert isinstance(obs, Observation) and obs.images["front"][0, 0, 0] == 5
    late = asm.on_image("front", 10.03, img(1), received=10.05)  # an older on-time frame: still refused
    assert isinstance(late, StaleReason) and late.kind == "backwards"


def test_an_undecodable_message_is_counted_and_named_in_the_stale_reason() -> None:
    asm = ObservationAssembler(make_card(), ObservationConfig(max_age_s=0.1))
    feed_all(asm, 10.0)
    asm.reject_input("front", "camera 'front': expected encoding rgb8 or bgr8, found 'mono8'")
    reason = asm.assemble(now=10.2)
    assert reason.stream == "front" and "mono8" in str(reason) and asm.rejected_counts["front"] == 1


def test_resume_gate_passes_the_nth_fresh_tick_after_a_lapse_but_not_before_and_activation_at_once() -> None:
    from dm1.policy.observation import ResumeGate

    gate = ResumeGate(3)
    # activation: streams still missing, then the first fresh tick passes (no recovery yet)
    assert [gate.update(f) for f in (False, False, True)] == [None, None, None] and not gate.recovering
    assert gate.update(False) is None and gate.recovering  # a lapse after a fresh tick
    verdicts = [gate.update(True) for _ in range(4)]
    assert [v and v[:14] for v in verdicts] == ["recovering 1/3", "recovering 2/3", None, None]
    gate.update(False)
    gate.update(True)
    gate.update(False)  # a lapse during the recovery starts it over
    assert gate.update(True).startswith("recovering 1/3")
    gate.reset()
    assert gate.update(True) is None  # activation again
    one = ResumeGate(1)  # the old behaviour: the first fresh tick after a lapse infers
    assert [one.update(f) for f in (True, False, True)] == [None, None, None]
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match=r"ResumeGate.needed: expected an integer in \[1, 100\]"):
            ResumeGate(bad)
