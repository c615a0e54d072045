"""Scripted Lift expert: smooth ee_position actions, and real lifts in a franky <-> franky-sim loop."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import free_loopback_host
from dm1.sim.config import CameraSpec, TwinConfig
from dm1.sim.expert import (
    Phase,
    ScriptedLiftExpert,
    apply_ee_position_action,
    run_expert_episodes,
)


def _kinematic_rollout(
    expert: ScriptedLiftExpert,
    cube: np.ndarray,
    steps: int = 200,
    grasp_ok: bool = True,
    flags: list[bool] | None = None,
):
    """Point-mass EE that reaches each target exactly; the cube follows a closed gripper when grasp_ok and
    the fingers close within 1 cm of its centre (otherwise they close on nothing)."""
    ee, width, actions, phases = np.array([0.554, 0.0, 0.521]), 0.08, [], []
    cube = cube.copy()
    for k in range(steps):
        a = expert.act(ee, width, cube, 0.05 * k)
        actions.append(a)
        phases.append(expert.phase)
        if flags is not None:
            flags.append(expert.perturbed)
        ee = a[:3].astype(float)
        closed = a[3] >= 0.5
        on_cube = grasp_ok and np.linalg.norm(ee[:2] - cube[:2]) < 0.01
        width = (0.047 if on_cube else 0.0) if closed else 0.08
        if closed and on_cube and np.linalg.norm(ee - cube) < 0.02:
            cube = ee.copy()
    return np.array(actions), phases, cube


def test_actions_are_rate_limited_absolute_targets_with_a_binary_gripper():
    expert = ScriptedLiftExpert(max_step=0.015)
    actions, _, _ = _kinematic_rollout(expert, np.array([0.5, 0.1, 0.025]))
    assert actions.shape[1] == 4 and actions.dtype == np.float32
    steps = np.linalg.norm(np.diff(actions[:, :3], axis=0), axis=1)
    assert steps.max() <= 0.015 + 1e-6
    assert set(np.unique(actions[:, 3])) <= {0.0, 1.0}


def test_expert_approaches_descends_closes_and_lifts_in_order():
    expert = ScriptedLiftExpert()
    cube0 = np.array([0.5, -0.1, 0.025])
    actions, phases, cube = _kinematic_rollout(expert, cube0)
    order = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert order == [Phase.APPROACH, Phase.DESCEND, Phase.CLOSE, Phase.LIFT]
    first_close = int(np.argmax(actions[:, 3] >= 0.5))
    np.testing.assert_allclose(actions[first_close, :2], cube0[:2], atol=0.01)
    assert actions[first_close, 2] < cube0[2] + 0.01
    assert cube[2] > 0.2  # lifted with the gripper


def test_missed_grasp_reopens_and_tries_again():
    expert = ScriptedLiftExpert()
    _, phases, _ = _kinematic_rollout(expert, np.array([0.5, 0.0, 0.025]), steps=120, grasp_ok=False)
    assert expert.retries >= 1
    assert Phase.APPROACH in phases[phases.index(Phase.LIFT) :]


def test_deliberate_miss_is_flagged_then_recovered_at_the_cube_centre():
    expert = ScriptedLiftExpert()
    expert.reset(miss_rng=np.random.default_rng(7))
    cube0 = np.array([0.5, -0.1, 0.025])
    flags: list[bool] = []
    actions, phases, cube = _kinematic_rollout(expert, cube0, steps=300, flags=flags)
    closes = np.flatnonzero((actions[1:, 3] >= 0.5) & (actions[:-1, 3] < 0.5)) + 1  # open -> closed
    assert len(closes) == 2, closes  # the deliberate miss, then the real grasp
    miss_xy, grasp_xy = actions[closes[0], :2], actions[closes[1], :2]
    assert np.linalg.norm(miss_xy - cube0[:2]) >= expert.miss_offset - 1e-6  # aimed off the centre
    np.testing.assert_allclose(grasp_xy, cube0[:2], atol=0.01)  # the recovery re-centres
    flags_arr = np.array(flags)
    assert flags_arr[closes[0]] and not flags_arr[closes[1]]
    # one contiguous perturbed stretch from the descent of the miss until the expert notices it
    first, last = np.flatnonzero(flags_arr)[[0, -1]]
    assert flags_arr[first : last + 1].all() and phases[first] is Phase.DESCEND
    assert phases[last + 1] is Phase.APPROACH and actions[last + 1, 3] == 0.0  # re-opens to re-try
    assert expert.retries == 1 and cube[2] > 0.2


def test_without_a_miss_rng_nothing_is_perturbed():
    expert = ScriptedLiftExpert()
    expert.reset()
    flags: list[bool] = []
    _kinematic_rollout(expert, np.array([0.5, 0.1, 0.025]), flags=flags)
    assert not any(flags) and expert.retries == 0


def test_bad_actions_are_rejected_before_reaching_the_robot():
    class Recorder:
        calls: list = []

        def send_ee_target(self, pos, quat):
            self.calls.append(pos)

        def set_gripper(self, close):
            self.calls.append(close)

    rec = Recorder()
    with pytest.raises(ValueError, match=r"ee_position action: expected 4 finite values"):
        apply_ee_position_action(rec, np.array([0.5, 0.0, np.nan, 0.0]))
    assert rec.calls == []


@pytest.mark.slow
def test_scripted_expert_lifts_the_cube_and_success_turns_true_with_franky():
    from dm1.sim.twin import Twin

    cams = {"front": CameraSpec(fps=10.0)}  # one camera keeps rendering load on, at a quarter of the cost
    cfg = TwinConfig(host=free_loopback_host(), cameras=cams, realtime=False, seed=3)
    with Twin(cfg) as twin:
        results = run_expert_episodes(twin, 2, seed=1000, max_sim_s=15.0)  # the second after a reset
        assert len(results) == 2 and all(r.success for r in results), results
        assert twin.is_success()
        assert twin.cube_pose().pos[2] - cfg.cube_rest_z >= cfg.success_height
        assert twin.renderer.frames_rendered > 0  # cameras kept rendering throughout


@pytest.mark.slow
def test_recovery_demo_records_the_miss_as_perturbed_and_still_lifts(tmp_path) -> None:
    from dm1.data.episode import read_episode
    from dm1.sim.collect import collect_expert_demos

    cams = {"front": CameraSpec(fps=10.0, width=32, height=32)}
    cfg = TwinConfig(host=free_loopback_host(), cameras=cams, realtime=False, seed=3)
    summary = collect_expert_demos(
        tmp_path, 1, seed=3001, cfg=cfg, max_sim_s=15.0, progress=False, recovery_fraction=1.0
    )
    assert summary.kept == 1 and summary.successes == 1
    ep = read_episode(tmp_path / "episode_000000.h5", load_images=False)
    assert ep.success and ep.perturbed is not None
    bad = np.flatnonzero(ep.perturbed)
    assert len(bad) == bad[-1] - bad[0] + 1 and bad[-1] < ep.length - 10  # one stretch, then the recovery
    width = ep.proprio["gripper_width"][:, 0]
    assert width[bad].min() < 0.005  # the deliberate miss closed on nothing
    after = width[bad[-1] + 1 :]
    assert after.max() > 0.07 and 0.03 < after[-1] < 0.06  # re-opened, then holds the 5 cm cube


@pytest.mark.parametrize(
    ("field", "value"), [("miss_offset", 0.0), ("miss_lift_max_s", -1.0), ("miss_descend_s", 0.0)]
)
def test_bad_miss_settings_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"ScriptedLiftExpert\.{field}: expected"):
        ScriptedLiftExpert(**{field: value})


def test_start_demo_makes_the_given_fraction_recovery_demos_from_its_rng() -> None:
    expert = ScriptedLiftExpert()
    rng = np.random.default_rng(7)
    drawn = [expert.start_demo(0.25, rng) for _ in range(400)]
    assert 0.18 < np.mean(drawn) < 0.32
    again = np.random.default_rng(7)
    assert [expert.start_demo(0.25, again) for _ in range(400)] == drawn  # replayable from the seed
    assert expert.start_demo(1.0, rng) and expert._miss is not None
    assert not expert.start_demo(0.0, rng) and expert._miss is None


def test_a_bad_recovery_fraction_is_refused_at_every_entry_point(tmp_path) -> None:
    from dm1.commands.collect_teleop import collect_via_teleop
    from dm1.sim.collect import collect_expert_demos
    from dm1.teleop.devices import ScriptedExpertDevice

    with pytest.raises(ValueError, match=r"^recovery_fraction: expected a value in \[0, 1\], found 1\.5"):
        ScriptedLiftExpert().start_demo(1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^recovery_fraction: expected a value in \[0, 1\], found -0\.1"):
        collect_expert_demos(tmp_path / "a", 1, recovery_fraction=-0.1)
    with pytest.raises(ValueError, match=r"^scripted: recovery_fraction: expected a value in \[0, 1\]"):
        ScriptedExpertDevice(recovery_fraction=2.0)
    with pytest.raises(ValueError, match=r"^--recovery-fraction: expected a value in \[0, 1\], found 3"):
        collect_via_teleop(tmp_path / "b", 1, recovery_fraction=3.0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before writing
