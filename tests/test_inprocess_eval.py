"""In-process closed-loop evaluation on the twin: the scripted oracle lifts (success registered), an exported
model runs through the same observation → runtime → safety → franky path, and torch K-step ≡ ONNX at K = 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_loopback_host
from dm1.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from dm1.config import DataConfig, ModelConfig, TrainConfig, save_train_config
from dm1.control.limits import SafetyLimits
from dm1.evaluation import summarize
from dm1.evaluation.ablation import AblationConfig, describe_run, run_ablation
from dm1.evaluation.inprocess import InProcessConfig, InProcessEvaluator, TwinContext, timed_chunk
from dm1.evaluation.policies import OnnxPolicy, ScriptedOraclePolicy, TorchCheckpointPolicy
from dm1.export import ExportError, export_model
from dm1.network import DM1Network
from dm1.normalization import Normalizer
from dm1.policy.step import ActionChunk
from dm1.sim.config import CameraSpec, TwinConfig
from dm1.sim.twin import Twin

SMALL = {
    "image_size": (32, 32),
    "vit_channels": 32,
    "vit_heads": 2,
    "spatial_emb_dim": 32,
    "mlp_width": 64,
    "time_emb_dim": 8,
}


def make_run(root: Path, objective: str = "meanflow", seed: int = 0) -> Path:
    """A run directory with one real (randomly initialised) checkpoint of a small DM1 network."""
    torch.manual_seed(seed)
    cfg = TrainConfig(
        data=DataConfig(dataset_dir=str(root / "no_dataset")), model=ModelConfig(**SMALL), objective=objective
    )
    state = DM1Network(cfg.model).state_dict()
    norms = {  # ee_pos (3) + gripper_width; actions x, y, z, gripper inside the twin's workspace
        "proprio": Normalizer(np.array([0.3, -0.2, 0.05, 0.0]), np.array([0.7, 0.2, 0.5, 0.08])),
        "action": Normalizer(np.array([0.45, -0.1, 0.25, 0.0]), np.array([0.6, 0.1, 0.45, 1.0])),
    }
    run = root / f"{objective}_run"
    save_checkpoint(
        run / "checkpoints" / "step_00000010",
        state,
        state,
        {"state": {}, "param_groups": []},
        step=10,
        train_cfg=cfg,
        normalizers=norms,
        dataset_sha256="ab" * 32,
    )
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, exported model directory) of a small random MeanFlow checkpoint."""
    root = tmp_path_factory.mktemp("inproc")
    run = make_run(root)
    out = export_model(next((run / "checkpoints").iterdir()), root / "model")
    return run, out.path


@pytest.fixture(scope="module")
def twin():
    cams = {"front": CameraSpec(width=32, height=32), "wrist": CameraSpec(width=32, height=32)}
    with Twin(TwinConfig(host=free_loopback_host(), cameras=cams, seed=0)) as t:
        yield t


def test_torch_one_step_equals_the_exported_graph_and_k_steps_stay_in_range(exported) -> None:
    run, model_dir = exported
    onnx = OnnxPolicy.load(model_dir, num_threads=1)
    torch1, torch5 = TorchCheckpointPolicy(run, 1), TorchCheckpointPolicy(run, 5)
    rng = np.random.default_rng(0)
    images = {c.name: rng.integers(0, 256, c.shape, dtype=np.uint8) for c in onnx.card.cameras}
    proprio = np.array([0.5, 0.0, 0.3, 0.04], np.float32)
    noise = rng.standard_normal((4, 4)).astype(np.float32)
    a1 = onnx.predict(images, proprio, noise=noise)
    np.testing.assert_allclose(torch1.predict(images, proprio, noise=noise), a1, atol=1e-4)
    a5 = torch5.predict(images, proprio, noise=noise)
    assert a5.shape == (4, 4) and not np.allclose(a5, a1)
    lo, hi = np.array([0.45, -0.1, 0.25, 0.0]), np.array([0.6, 0.1, 0.45, 1.0])
    assert np.all(a5 >= lo - 1e-5) and np.all(a5 <= hi + 1e-5)  # clipped, de-normalised
    with pytest.raises(ValueError, match="proprio"):
        torch5.predict(images, np.zeros(3, np.float32), noise=noise)


def test_flow_matching_model_is_never_a_one_step_onnx_policy(tmp_path: Path) -> None:
    run = make_run(tmp_path, objective="flow_matching")
    with pytest.raises(ExportError, match="objective"):  # u(eps, t=1, r=0) was never trained
        export_model(next((run / "checkpoints").iterdir()), tmp_path / "fm_model")
    fm = TorchCheckpointPolicy(run, 10)
    assert fm.objective == "flow_matching" and fm.steps == 10


def test_action_chunk_becomes_the_controllers_timed_chunk() -> None:
    acts = np.array([[0.5, 0.0, 0.3, 0.0], [0.51, 0.0, 0.3, 1.0]], np.float32)
    chunk = ActionChunk(2.0, 0.05, acts, 1, 1.95, "ee_position", ("x", "y", "z", "gripper"))
    tc = timed_chunk(chunk, [1.0, 0.0, 0.0, 0.0])
    assert tc.kind == "cartesian" and tc.stamp == 2.0
    np.testing.assert_allclose(tc.times, [2.0, 2.05])
    np.testing.assert_allclose(tc.positions, acts[:, :3])
    np.testing.assert_allclose(tc.gripper, [0.0, 1.0])
    assert tc.quat_xyzw.shape == (2, 4)


def test_inprocess_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="max_sim_s"):
        InProcessConfig(max_sim_s=0.0)
    with pytest.raises(ValueError, match="policy_rate_hz"):
        InProcessConfig(controller_rate_hz=100.0, policy_rate_hz=200.0)
    with pytest.raises(ValueError, match="mode"):
        InProcessConfig(mode="sometimes")


@pytest.mark.slow
def test_scripted_oracle_lifts_the_cube_and_the_harness_registers_success(twin) -> None:
    with InProcessEvaluator(twin, InProcessConfig(max_sim_s=15.0)) as ev:
        (rec,) = ev.run(ScriptedOraclePolicy(twin), episodes=1, seed=3)
    assert rec.error is None, rec.error
    assert rec.success and rec.success_at_s is not None and rec.success_at_s < 15.0
    assert twin.is_success()
    assert rec.chunks > 10 and rec.past_stamped_chunks == 0
    assert rec.executor_counts["accepted"] == rec.chunks and rec.executor_counts["faults"] == 0
    assert rec.ledger_ms["published_ms"], "latency ledger recorded per chunk"
    summary = summarize([rec.to_dict()], "oracle", through_ros=False, seed=3, machine="test")
    assert summary.successes == 1 and summary.episodes == 1 and summary.outcomes == {"success": 1}
    assert rec.min_ee_cube_m < 0.03 and rec.max_cube_lift_m > 0.1  # the gripper reached and lifted the cube


@pytest.mark.slow
def test_exported_model_runs_closed_loop_inside_the_safety_envelope(twin, exported) -> None:
    _, model_dir = exported
    policy = OnnxPolicy.load(model_dir, num_threads=1)
    limits = SafetyLimits()
    with InProcessEvaluator(twin, InProcessConfig(max_sim_s=2.0), limits=limits) as ev:
        records = ev.run(policy, episodes=1, seed=5)
        ee = ev.backend("cartesian").read_state().ee_pos
    (rec,) = records
    assert rec.error is None, rec.error
    assert rec.sim_duration_s >= 2.0 and not rec.success  # random weights: no lift, but a full episode
    assert rec.policy_counts["ok"] == rec.chunks > 5
    assert rec.executor_counts["accepted"] > 5 and rec.executor_counts["faults"] == 0
    margin = 0.03  # impedance tracking error around the clipped target
    assert np.all(ee >= np.array(limits.workspace_min) - margin), ee
    assert np.all(ee <= np.array(limits.workspace_max) + margin), ee


@pytest.mark.slow
def test_ablation_on_the_shared_twin_evaluates_and_times_an_exported_model(twin, exported, tmp_path) -> None:
    run, _ = exported
    save_train_config(_train_config(run), run / "config.yaml")
    cfg = AblationConfig(episodes=1, steps=(1,), timing_iters=5, timing_warmup=1)
    ctx = TwinContext(InProcessConfig(max_sim_s=1.0), twin=twin)
    result = run_ablation([run], tmp_path, cfg, context=ctx, log=lambda _: None)
    assert describe_run(run).method == "DM1 λ=0.5"
    ((key, (rec,)),) = result["records"].items()
    assert key == f"{run.name} K=1 onnx" and rec["error"] is None and rec["chunks"] > 0
    assert set(result["timings_ms"]) == {f"{run.name} K=1 onnx", f"{run.name} K=1 torch"}
    assert (tmp_path / "ablation.md").is_file() and twin.sim_time() > 0  # shared twin left running


def _train_config(run: Path) -> TrainConfig:
    return load_checkpoint(latest_checkpoint(run)).train_config
