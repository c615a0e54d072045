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


def _kinematic_rollout(expert: ScriptedLiftExpert, cube: np.ndarray, steps: int = 200, grasp_ok: bool = True):
    """Point-mass EE that reaches each target exactly; the cube follows a closed gripper when grasp_ok."""
    ee, width, actions, phases = np.array([0.554, 0.0, 0.521]), 0.08, [], []
    cube = cube.copy()
    for k in range(steps):
        a = expert.act(ee, width, cube, 0.05 * k)
        actions.append(a)
        phases.append(expert.phase)
        ee = a[:3].astype(float)
        closed = a[3] >= 0.5
        width = (0.047 if grasp_ok else 0.0) if closed else 0.08
        if closed and grasp_ok and np.linalg.norm(ee - cube) < 0.02:
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
        results = run_expert_episodes(twin, 3, seed=1000, max_sim_s=15.0)
        assert all(r.success for r in results), results
        assert twin.is_success()
        assert twin.cube_pose().pos[2] - cfg.cube_rest_z >= cfg.success_height
        assert twin.renderer.frames_rendered > 0  # cameras kept rendering throughout
