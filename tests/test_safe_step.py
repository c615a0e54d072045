"""`safe_step`: one tick's safety pipeline on its own (the executor tests drive it via `ChunkExecutor`)."""

from __future__ import annotations

import numpy as np
from dm1.control.backend import FakeBackend
from dm1.control.limits import SafetyLimits
from dm1.control.safe_step import safe_step
from dm1.control.safety import SafetyFilter
from dm1.control.schedule import ScheduledTarget

TICK_S = 0.01


def target_at(pos: np.ndarray, velocity: np.ndarray | None = None) -> ScheduledTarget:
    quat = np.array([1.0, 0.0, 0.0, 0.0])  # a half turn about x from the measured one: far away
    return ScheduledTarget(pos, np.zeros(3) if velocity is None else velocity, 0.0, quat)


def test_activation_sends_the_measured_pose_whatever_the_target() -> None:
    state = FakeBackend().read_state()
    far = target_at(state.ee_pos + 0.3)
    step = safe_step(SafetyFilter(SafetyLimits()), "cartesian", far, state, None, 0.0)
    np.testing.assert_allclose(step.position, state.ee_pos)
    np.testing.assert_allclose(step.quat_xyzw, state.ee_quat_xyzw)
    assert step.velocity is None and step.acceleration is None


def test_a_far_target_is_clamped_to_the_speed_limit_with_its_reasons() -> None:
    limits, state = SafetyLimits(), FakeBackend().read_state()
    previous = (state.ee_pos.copy(), state.ee_quat_xyzw.copy())
    far = state.ee_pos + np.array([0.0, 0.2, 0.0])
    step = safe_step(SafetyFilter(limits), "cartesian", target_at(far), state, previous, TICK_S)
    moved = float(np.linalg.norm(step.position - state.ee_pos))
    assert 0.0 < moved <= limits.max_ee_speed * TICK_S + 1e-9
    assert step.report is not None and step.report.clipped and step.report.safe.shape == (7,)
    assert np.linalg.norm(step.velocity) <= limits.max_ee_speed + 1e-9
    assert step.acceleration is not None and step.acceleration.shape == (3,)
    turned = abs(float(np.dot(step.quat_xyzw, state.ee_quat_xyzw)))
    assert turned > 0.99  # the orientation turned a little toward the target, not half a turn


def test_joint_mode_has_no_orientation_or_acceleration() -> None:
    state = FakeBackend().read_state()
    target = ScheduledTarget(state.q + 0.001, np.zeros(7), 0.0, None)
    step = safe_step(SafetyFilter(SafetyLimits()), "joint", target, state, (state.q.copy(), None), TICK_S)
    assert step.quat_xyzw is None and step.acceleration is None
    assert step.position.shape == (7,) and np.all(np.isfinite(step.velocity))
