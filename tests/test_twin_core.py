"""The Twin core against real MuJoCo + franky-sim: camera rate in sim time, seeded resets, ports, RTF."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import free_loopback_host, wait_for
from dm1.sim.config import CameraSpec, TwinConfig
from dm1.sim.renderer import CameraFrame
from dm1.sim.twin import Twin

pytestmark = pytest.mark.slow

CAMERAS = {
    "front": CameraSpec(width=48, height=40, fps=20.0),
    "wrist": CameraSpec(width=32, height=32, fps=10.0),
}


@pytest.fixture(scope="module")
def twin():
    cfg = TwinConfig(host=free_loopback_host(), cameras=CAMERAS, realtime=False, seed=7)
    with Twin(cfg) as tw:
        yield tw


def test_frames_arrive_with_shape_and_rate_in_simulation_time(twin):
    frames: list[CameraFrame] = []
    lock = threading.Lock()

    def collect(frame: CameraFrame) -> None:
        with lock:
            frames.append(frame)

    twin.add_frame_listener(collect)
    t0 = twin.sim_time()
    wait_for(lambda: twin.sim_time() >= t0 + 2.2, timeout=240, what="2.2 s of simulation time")
    with lock:
        got = list(frames)
    for name, spec in CAMERAS.items():
        mine = [f for f in got if f.name == name and t0 + 0.1 <= f.stamp_sim_s < t0 + 2.1]
        assert all(f.rgb.shape == (spec.height, spec.width, 3) and f.rgb.dtype == np.uint8 for f in mine)
        assert abs(len(mine) - 2.0 * spec.fps) <= 1, f"{name}: {len(mine)} frames in 2 s of sim time"
        gaps = np.diff([f.stamp_sim_s for f in mine])
        assert np.allclose(gaps, 1.0 / spec.fps, atol=0.0015), f"{name}: frame spacing {gaps}"
        assert mine[-1].rgb.std() > 5, f"{name}: image looks blank"
        assert mine[-1].intrinsics == twin.cfg.cameras[name].intrinsics()
    assert twin.renderer.frames_dropped == 0


def test_same_seed_gives_same_cube_pose_and_the_cube_goes_there(twin):
    a = twin.reset(seed=123)
    b = twin.reset(seed=124)
    c = twin.reset(seed=123)
    np.testing.assert_allclose(a.pos, c.pos)
    np.testing.assert_allclose(a.quat_xyzw, c.quat_xyzw)
    assert np.linalg.norm(a.pos[:2] - b.pos[:2]) > 1e-4
    (x0, x1), (y0, y1) = twin.cfg.cube_region
    assert x0 <= c.pos[0] <= x1 and y0 <= c.pos[1] <= y1
    t = twin.sim_time()
    wait_for(lambda: twin.sim_time() >= t + 0.3, timeout=60, what="cube to settle")
    now = twin.cube_pose()
    np.testing.assert_allclose(now.pos[:2], c.pos[:2], atol=2e-3)
    assert now.pos[2] == pytest.approx(twin.cfg.cube_rest_z, abs=3e-3)
    assert not twin.is_lifted() and not twin.is_success()


def test_unseeded_resets_follow_the_config_seed():
    cfg = TwinConfig(host="127.0.0.1", cameras={}, seed=5)
    one, two = Twin(cfg), Twin(cfg)
    poses = [one._sample_cube_qpos(one._rng) for _ in range(3)]
    again = [two._sample_cube_qpos(two._rng) for _ in range(3)]
    np.testing.assert_allclose(poses, again)


def test_second_twin_on_a_busy_host_fails_clearly(twin):
    with pytest.raises(RuntimeError, match=r"cannot start franky-sim on host"):
        Twin(TwinConfig(host=twin.robot_host, cameras={})).start()


def test_simulation_advances_and_reports_a_real_time_factor(twin):
    t = twin.sim_time()
    wait_for(lambda: twin.sim_time() > t + 0.5, timeout=60, what="simulation time to advance")
    assert twin.real_time_factor() > 0.0
    assert twin.home_q == (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)


def test_an_injected_reflex_aborts_the_running_motion_and_franky_latches_it():
    franky = pytest.importorskip("franky")  # noqa: F841 - the real client of the twin's robot server
    from dm1.control.franky_backend import FrankyBackend

    with Twin(TwinConfig(host=free_loopback_host(), cameras={}, realtime=True)) as tw:
        backend = FrankyBackend(tw.robot_host, gripper=False)
        try:
            assert not tw.inject_reflex(timeout_s=0.2), "aborted a motion while none was running"
            start = backend.read_state()
            backend.send_ee_target(start.ee_pos, start.ee_quat_xyzw)  # a motion now runs (holding still)
            assert tw.wait_sim_time(tw.sim_time() + 0.1)
            assert tw.inject_reflex(timeout_s=5.0)
            fault = wait_for(lambda: backend.read_state().fault, 30, what="the reflex latched by franky")
            assert "reflex" in fault.lower(), fault
            assert not tw.inject_reflex(timeout_s=0.2), "the aborted motion still counted as running"
        finally:
            backend.close()
