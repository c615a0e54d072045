"""ONNX export of the real DM1Policy: parity with torch, a valid card, atomic publication, clear failures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dm1.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dm1.config import DataConfig, ModelConfig, TrainConfig
from dm1.export import ExportError, build_policy, export_model, random_inputs, torch_predict
from dm1.modelcard import load_card
from dm1.network import DM1Network
from dm1.normalization import Normalizer
from dm1.runtime import PolicyRuntime

SMALL = dict(  # noqa: C408 - keyword style mirrors ModelConfig
    image_size=(32, 32), vit_channels=32, vit_heads=2, spatial_emb_dim=32, mlp_width=64, time_emb_dim=8
)


def make_checkpoint(
    root: Path, seed: int = 0, extra: dict | None = None, objective: str = "meanflow", **model_kw
) -> Path:
    """A real checkpoint directory (safetensors + JSON) holding randomly initialised DM1 weights."""
    torch.manual_seed(seed)
    cfg = TrainConfig(
        data=DataConfig(dataset_dir=str(root / "no_dataset")),
        model=ModelConfig(**model_kw),
        objective=objective,
    )
    net = DM1Network(cfg.model)
    state = net.state_dict()
    norms = {
        "proprio": Normalizer(np.array([0.2, -0.3, 0.0, 0.0]), np.array([0.7, 0.3, 0.5, 0.08])),
        "action": Normalizer(np.array([0.2, -0.3, 0.0, 0.0]), np.array([0.7, 0.3, 0.5, 1.0])),
    }
    return save_checkpoint(
        root / "ckpt",
        state,
        state,
        {"state": {}, "param_groups": []},
        step=10,
        train_cfg=cfg,
        normalizers=norms,
        dataset_sha256="ab" * 32,
        extra=extra,
    )


def test_small_policy_export_matches_torch_and_card(tmp_path: Path) -> None:
    ckpt_dir = make_checkpoint(tmp_path, extra={"dataset_schema": {"control_rate_hz": 15.0}}, **SMALL)
    result = export_model(ckpt_dir, tmp_path / "models" / "small")
    assert result.max_abs_diff <= 1e-4
    assert sorted(p.name for p in result.path.iterdir()) == ["model.onnx", "model_card.json"]
    assert not [p for p in result.path.parent.iterdir() if p.name.startswith(".")], "no temp dirs left"
    card = load_card(result.path)
    assert card.name == "small" and card.camera_names == ["front", "wrist"]
    assert card.cameras[0].shape == (32, 32, 3)
    assert card.proprio.keys == ["ee_pos", "gripper_width"] and card.proprio.units == ["m", "m"]
    assert card.action.space == "ee_position" and card.action.control_rate_hz == 15.0
    assert card.action.orientation_xyzw == [1.0, 0.0, 0.0, 0.0]
    assert card.dataset_sha256 == "ab" * 32 and card.parameters == result.parameters > 0
    assert card.normalization["action"]["max"] == [0.7, 0.3, 0.5, 1.0]

    # Independent check via the robot-side runtime, on fresh inputs, against the checkpoint's torch policy.
    policy = build_policy(load_checkpoint(ckpt_dir))
    rt = PolicyRuntime.load(result.path)
    for seed in (11, 12):
        images, proprio, noise = random_inputs(
            card, np.array([0.2, -0.3, 0, 0]), np.array([0.7, 0.3, 0.5, 0.08]), seed
        )
        actions = rt.predict(images, proprio, noise)
        assert np.max(np.abs(actions - torch_predict(policy, images, proprio, noise))) <= 1e-4
        assert np.all(actions >= policy.action_min.numpy() - 1e-5) and np.all(
            actions <= policy.action_max.numpy() + 1e-5
        )


def test_export_publishes_the_optimized_graph_and_it_still_matches_torch(tmp_path: Path) -> None:
    import onnx

    ckpt_dir = make_checkpoint(tmp_path, **SMALL)
    fast = export_model(ckpt_dir, tmp_path / "fast")
    plain = export_model(ckpt_dir, tmp_path / "plain", optimize=False)
    assert fast.rewrites["fuse_attention"] == 2 and fast.rewrites["fold_input_scaling"] == 2  # one per camera
    assert plain.rewrites == {}
    ops = {n.op_type for n in onnx.load(str(fast.path / "model.onnx")).graph.node}
    plain_ops = {n.op_type for n in onnx.load(str(plain.path / "model.onnx")).graph.node}
    assert "Attention" in ops and "Softmax" not in ops
    assert "Attention" not in plain_ops and "Softmax" in plain_ops
    # The card's hash is the published (optimized) file's, and both graphs match torch within 1e-4.
    assert (
        load_card(fast.path).onnx_sha256
        == hashlib.sha256((fast.path / "model.onnx").read_bytes()).hexdigest()
    )
    assert fast.max_abs_diff <= 1e-4 and plain.max_abs_diff <= 1e-4
    policy = build_policy(load_checkpoint(ckpt_dir))
    card = load_card(fast.path)
    rt_fast, rt_plain = PolicyRuntime.load(fast.path), PolicyRuntime.load(plain.path)
    for seed in (21, 22):
        images, proprio, noise = random_inputs(
            card, np.array([0.2, -0.3, 0, 0]), np.array([0.7, 0.3, 0.5, 0.08]), seed
        )
        reference = torch_predict(policy, images, proprio, noise)
        assert np.max(np.abs(rt_fast.predict(images, proprio, noise) - reference)) <= 1e-4
        assert (
            np.max(np.abs(rt_fast.predict(images, proprio, noise) - rt_plain.predict(images, proprio, noise)))
            <= 1e-4
        )


def test_default_size_policy_export_matches_torch(tmp_path: Path) -> None:
    result = export_model(make_checkpoint(tmp_path), tmp_path / "default")
    assert result.max_abs_diff <= 1e-4
    card = load_card(result.path)
    assert card.cameras[0].shape == (96, 96, 3) and card.noise_shape == (4, 4)
    assert 1_500_000 < card.parameters < 3_000_000


def test_existing_model_dir_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="already exists"):
        export_model(make_checkpoint(tmp_path, **SMALL), out)
    assert (out / "keep.txt").read_text() == "x"


def test_force_replaces_an_earlier_export_but_never_a_dataset_or_a_file(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path, **SMALL)
    earlier = export_model(ckpt, tmp_path / "m").path
    (earlier / "model.onnx").write_bytes(b"old")
    again = export_model(ckpt, earlier, overwrite=True)
    assert (again.path / "model.onnx").read_bytes() != b"old"
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "episode_000000.h5").write_bytes(b"demo")
    (dataset / "index.json").write_text("{}")
    with pytest.raises(ExportError, match=r"dataset: expected an earlier export .* found episode_000000.h5"):
        export_model(ckpt, dataset, overwrite=True)
    assert sorted(p.name for p in dataset.iterdir()) == ["episode_000000.h5", "index.json"]
    afile = tmp_path / "notes.txt"
    afile.write_text("keep")
    with pytest.raises(ExportError, match="found a file"):
        export_model(ckpt, afile, overwrite=True)
    assert afile.read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp dirs left"


def test_an_opset_torch_cannot_write_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"torch.onnx.export failed \(--opset 99\): .*99"):
        export_model(make_checkpoint(tmp_path, **SMALL), tmp_path / "m", opset=99)
    assert not (tmp_path / "m").exists()


def test_flow_matching_checkpoint_is_not_exported_as_a_one_step_policy(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path, objective="flow_matching", **SMALL)
    with pytest.raises(ExportError, match="objective"):
        export_model(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    pt = tmp_path / "policy.pt"
    pt.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match="pickle"):
        export_model(pt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_parity_failure_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dm1.export as export

    ckpt_dir = make_checkpoint(tmp_path, **SMALL)
    real = export.torch_predict
    monkeypatch.setattr(export, "torch_predict", lambda *a: real(*a) + 1e-3)  # torch drifts from the graph
    with pytest.raises(ExportError, match=r"ONNX vs torch: expected max abs diff <= 0.0001, found 0.001"):
        export_model(ckpt_dir, tmp_path / "models" / "bad")
    assert list((tmp_path / "models").iterdir()) == []


def test_checkpoint_with_wrong_weights_is_reported(tmp_path: Path) -> None:
    ckpt_dir = make_checkpoint(tmp_path, **SMALL)
    meta = json.loads((ckpt_dir / "checkpoint.json").read_text())
    meta["train_config"]["model"]["mlp_width"] = 96  # config no longer fits the saved weights
    (ckpt_dir / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="model.safetensors does not fit DM1Network"):
        export_model(ckpt_dir, tmp_path / "out")


def test_inference_benchmark_times_both_runtimes_on_the_same_model(tmp_path: Path) -> None:
    from dm1.bench_inference import run_inference_benchmark

    ckpt_dir = make_checkpoint(tmp_path, **SMALL)
    model = export_model(ckpt_dir, tmp_path / "m").path
    res = run_inference_benchmark(model, checkpoint_dir=ckpt_dir, iters=6, warmup=2, num_threads=1)
    for key in ("onnxruntime", "onnxruntime_session", "torch", "torch_k5"):
        assert res[key]["median_ms"] > 0 and res[key]["p99_ms"] >= res[key]["median_ms"]
    assert res["onnxruntime"]["n"] == res["torch"]["n"] == 6
    assert res["providers"] == ["CPUExecutionProvider"] and res["parameters"] == load_card(model).parameters
    assert res["max_abs_diff"] <= 1e-4 and res["torch_weights"] == "checkpoint"
    assert res["onnxruntime_options"]["spinning"] == "run" and res["threads"] == 1
    assert res["onnxruntime_options"]["fused_attention_nodes"] == 2  # the exported graph is the optimized one
    # Without a checkpoint the torch side is rebuilt from the card (same architecture, timing only).
    res = run_inference_benchmark(model, iters=2, warmup=1, num_threads=1)
    assert res["torch_weights"].startswith("random") and "max_abs_diff" not in res


def test_reference_network_benchmark_times_a_one_camera_network_of_the_reference_size(tmp_path: Path) -> None:
    from dm1.bench_inference import export_reference_network, run_inference_benchmark

    model, ckpt = export_reference_network(tmp_path)
    card = load_card(model)
    assert [c.name for c in card.cameras] == ["agentview"]
    assert 1_770_000 < card.parameters < 1_790_000  # docs/method.md 7.2: 1,776,636 with proprio 9, 7 actions
    res = run_inference_benchmark(model, checkpoint_dir=ckpt, iters=4, warmup=1, num_threads=1)
    assert res["parameters"] == card.parameters and res["torch_weights"] == "checkpoint"
    assert res["max_abs_diff"] <= 1e-4  # torch runs the very weights that were exported


def test_dm1_export_of_a_missing_checkpoint_fails_in_one_line_with_code_2(tmp_path: Path, capsys) -> None:
    from dm1.cli import main

    missing = tmp_path / "no_such_run"
    assert main(["export", str(missing), "-o", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert err == f"dm1 export: error: {missing}: not a dm1 checkpoint (missing checkpoint.json)\n", err
    assert not (tmp_path / "model").exists()  # nothing half-written
