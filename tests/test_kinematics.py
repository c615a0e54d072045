"""numpy FR3 forward kinematics agrees with franky (on franky-sim) to 1 mm; proprio keys are built from it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import free_loopback_host
from dm1.kinematics import (
    FR3_HOME_Q,
    FR3_JOINT_LOWER,
    FR3_JOINT_UPPER,
    canonical_quat,
    fr3_fk,
    fr3_fk_matrix,
    quat_xyzw_to_rotation,
)
from dm1.proprio import PROPRIO_KEYS, compute_proprio, proprio_dims, proprio_units
from dm1.scheduling import ThreadScheduling

POS_TOL_M = 1e-3
ROT_TOL_RAD = 1e-3


def _quat_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle between two unit quaternions (sign-invariant)."""
    return float(2 * np.arccos(np.clip(abs(np.dot(a, b)), 0.0, 1.0)))


def _random_configs(n: int, seed: int = 0) -> np.ndarray:
    margin = 0.1
    return np.random.default_rng(seed).uniform(FR3_JOINT_LOWER + margin, FR3_JOINT_UPPER - margin, (n, 7))


@pytest.fixture(scope="module")
def franky_robot():
    """A franky.Robot connected to a private franky-sim server (real libfranka protocol)."""
    franky = pytest.importorskip("franky")
    from franky_sim.mujoco_simulator import MujocoSimulator
    from franky_sim.simulation_server import SimulationServer

    sim = MujocoSimulator(enable_visualization=False)
    sim.init()
    sim.add_robot()
    server = SimulationServer(sim, hostname_candidates=[free_loopback_host()])
    server.init()
    server.run_async(realtime=True)
    try:
        own = ThreadScheduling.current()  # libfranka raises the connecting thread to SCHED_FIFO 99 (root)
        robot = franky.Robot(server.robot_servers[0].hostname, realtime_config=franky.RealtimeConfig.Ignore)
        own.apply()
        yield franky, robot
    finally:
        server.cleanup()


def test_fk_matches_franky_current_cartesian_state(franky_robot) -> None:
    _, robot = franky_robot
    q = np.array(robot.current_joint_state.position)
    ee = robot.current_cartesian_state.pose.end_effector_pose
    pos, quat = fr3_fk(q)
    assert np.linalg.norm(pos - np.array(ee.translation)) < POS_TOL_M
    assert _quat_angle(quat, np.array(ee.quaternion)) < ROT_TOL_RAD


def test_fk_matches_franky_model_across_the_workspace(franky_robot) -> None:
    franky, robot = franky_robot
    state = robot.state
    for q in _random_configs(20):
        ref = robot.model.pose(franky.Frame.EndEffector, q, state.F_T_EE, state.EE_T_K)
        pos, quat = fr3_fk(q)
        assert np.linalg.norm(pos - np.array(ref.translation)) < POS_TOL_M, q
        assert _quat_angle(quat, np.array(ref.quaternion)) < ROT_TOL_RAD, q


def test_fk_of_ready_pose_points_the_hand_down() -> None:
    pos, quat = fr3_fk(FR3_HOME_Q)
    np.testing.assert_allclose(pos, [0.3069, 0.0, 0.4869], atol=1e-3)
    assert _quat_angle(quat, np.array([1.0, 0.0, 0.0, 0.0])) < 1e-6


def test_batched_fk_equals_per_config_fk() -> None:
    qs = _random_configs(6, seed=1).reshape(2, 3, 7)
    pos, quat = fr3_fk(qs)
    assert pos.shape == (2, 3, 3) and quat.shape == (2, 3, 4)
    for idx in np.ndindex(2, 3):
        p1, q1 = fr3_fk(qs[idx])
        np.testing.assert_allclose(pos[idx], p1, atol=1e-12)
        np.testing.assert_allclose(quat[idx], q1, atol=1e-12)


def test_quaternion_round_trips_through_rotation_matrix() -> None:
    qs = _random_configs(10, seed=2)
    rot = fr3_fk_matrix(qs)[..., :3, :3]
    _, quat = fr3_fk(qs)
    np.testing.assert_allclose(quat_xyzw_to_rotation(quat), rot, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(quat, axis=-1), 1.0, atol=1e-12)


def test_quaternion_sign_is_stable_around_top_down() -> None:
    """w ~ 0 near top-down: noise must not flip the quaternion's sign (a jump in the policy input)."""
    q = FR3_HOME_Q + np.random.default_rng(3).normal(0, 1e-4, (50, 7))
    _, quat = fr3_fk(q)
    assert np.all(quat[:, 0] > 0.99)
    np.testing.assert_allclose(canonical_quat(-quat), quat)


def test_fk_rejects_wrong_shape_and_nan() -> None:
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 7\).*\(6,\)"):
        fr3_fk(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        fr3_fk(np.full(7, np.nan))


def test_proprio_concatenates_keys_in_card_order() -> None:
    q, width = _random_configs(1, seed=4)[0], 0.042
    keys = ["gripper_width", "ee_pos", "joint_pos", "ee_quat_xyzw"]
    vec = compute_proprio(keys, q, width)
    pos, quat = fr3_fk(q)
    assert vec.dtype == np.float32 and vec.shape == (sum(proprio_dims(keys)),) == (15,)
    np.testing.assert_allclose(vec, np.concatenate([[width], pos, q, quat]), atol=1e-6)
    assert proprio_units(keys) == ["m", "m", "rad", "1"]
    assert set(PROPRIO_KEYS) == {"ee_pos", "ee_quat_xyzw", "gripper_width", "joint_pos"}


def test_proprio_rejects_unknown_key_and_bad_state() -> None:
    with pytest.raises(ValueError, match=r"unknown proprio key\(s\) \['ee_vel'\]"):
        compute_proprio(["ee_pos", "ee_vel"], FR3_HOME_Q, 0.0)
    with pytest.raises(ValueError, match=r"q must have shape \(7,\), found \(9,\)"):
        compute_proprio(["ee_pos"], np.zeros(9), 0.0)
    with pytest.raises(ValueError, match="gripper_width"):
        compute_proprio(["gripper_width"], FR3_HOME_Q, -0.01)
    assert compute_proprio(["gripper_width"], FR3_HOME_Q, -1e-5)[0] == 0.0
