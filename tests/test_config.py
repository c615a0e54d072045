"""Config validation, YAML round trips and min-max normalisation (dm1.config, dm1.normalization)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dm1.config import (
    DataConfig,
    DispersiveConfig,
    MeanFlowConfig,
    ModelConfig,
    TrainConfig,
    load_train_config,
    load_yaml_config,
)
from dm1.normalization import Normalizer


def _train(**kw) -> TrainConfig:
    return TrainConfig(data=DataConfig(dataset_dir="data/lift"), **kw)


def test_defaults_round_trip_through_dict_json_and_yaml(tmp_path):
    cfg = _train(
        model=ModelConfig(image_size=(64, 80)), dispersive=DispersiveConfig(targets=("cond", "mlp.1"))
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = tmp_path / "train.yaml"
    cfg.save(path)
    assert load_train_config(path) == cfg
    assert load_yaml_config(path) == cfg
    assert isinstance(load_train_config(path).model.image_size, tuple)


def test_yaml_scientific_notation_and_int_for_float_are_accepted(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: {dataset_dir: d}\nlr: 3e-4\nmin_lr: 0\nmeanflow: {flow_ratio: 1}\n")
    cfg = load_train_config(path)
    assert cfg.lr == pytest.approx(3e-4) and cfg.min_lr == 0.0 and cfg.meanflow.flow_ratio == 1.0


def test_unknown_yaml_key_is_named_with_file_and_section(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {dataset_dir: d}\nmodel: {vit_chanels: 64}\n")
    with pytest.raises(ValueError) as err:
        load_train_config(path)
    msg = str(err.value)
    assert str(path) in msg and "TrainConfig.model" in msg and "vit_chanels" in msg and "vit_channels" in msg


def test_missing_dataset_dir_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {}\n")
    with pytest.raises(ValueError, match="dataset_dir"):
        load_train_config(path)


@pytest.mark.parametrize(
    ("make", "field", "found"),
    [
        (lambda: ModelConfig(vit_heads=3), "ModelConfig.vit_heads", "3"),
        (lambda: ModelConfig(image_size=(8, 96)), "ModelConfig.image_size", "(8, 96)"),
        (lambda: ModelConfig(camera_names=("front", "front")), "ModelConfig.camera_names", "front"),
        (lambda: ModelConfig(dropout=1.5), "ModelConfig.dropout", "1.5"),
        (lambda: ModelConfig(chunk_length="4"), "ModelConfig.chunk_length", "'4'"),
        (lambda: MeanFlowConfig(flow_ratio=1.2), "MeanFlowConfig.flow_ratio", "1.2"),
        (
            lambda: MeanFlowConfig(flow_ratio=0.8, boundary_fraction=0.3),
            "MeanFlowConfig.boundary_fraction",
            "0.3",
        ),
        (lambda: DispersiveConfig(variant="infonce"), "DispersiveConfig.variant", "'infonce'"),
        (lambda: DispersiveConfig(targets=("cond", "hidden")), "DispersiveConfig.targets", "hidden"),
        (lambda: DispersiveConfig(tau=0.0), "DispersiveConfig.tau", "0.0"),
        (
            lambda: DataConfig(dataset_dir="d", proprio_keys=("ee_pos", "wrench")),
            "DataConfig.proprio_keys",
            "wrench",
        ),
        (lambda: _train(device="tpu"), "TrainConfig.device", "'tpu'"),
        (lambda: _train(objective="ddpm"), "TrainConfig.objective", "'ddpm'"),
        (lambda: _train(steps=100, warmup_steps=500), "TrainConfig.warmup_steps", "500"),
        (lambda: _train(min_lr=1.0), "TrainConfig.min_lr", "1.0"),
    ],
)
def test_invalid_field_error_names_field_expected_and_found(make, field, found):
    with pytest.raises(ValueError) as err:
        make()
    msg = str(err.value)
    assert field in msg and "expected" in msg and found in msg


def test_camera_mismatch_between_data_and_model_is_rejected():
    with pytest.raises(ValueError, match=r"data\.camera_names.*found \['wrist'\]"):
        TrainConfig(data=DataConfig(dataset_dir="d", camera_names=("wrist",)), model=ModelConfig())


def test_model_proprio_dim_must_equal_width_of_proprio_keys():
    data = DataConfig(dataset_dir="d", proprio_keys=("ee_pos", "ee_quat_xyzw", "gripper_width"))
    assert TrainConfig(data=data, model=ModelConfig(proprio_dim=8)).model.proprio_dim == 8
    with pytest.raises(ValueError, match=r"model\.proprio_dim: expected 8.*found 4"):
        TrainConfig(data=data)


def test_dispersive_mlp_target_beyond_the_last_block_is_rejected():
    assert _train(dispersive=DispersiveConfig(targets=("mlp.1",))).dispersive.targets == ("mlp.1",)
    with pytest.raises(ValueError, match=r"dispersive\.targets.*mlp_blocks=1"):
        _train(dispersive=DispersiveConfig(targets=("mlp.2",)))


def test_token_count_and_cond_width_follow_the_config():
    assert ModelConfig().num_tokens == 121
    assert ModelConfig(image_size=(32, 32)).num_tokens == 9
    assert ModelConfig(camera_names=("wrist",), proprio_dim=9).cond_dim == 137
    assert ModelConfig(obs_history=2).cond_dim == 2 * 128 + 2 * 4


def test_normalizer_maps_fitted_range_to_unit_interval_and_inverts():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 3)) * [1.0, 10.0, 0.01]).astype(np.float32)
    norm = Normalizer.fit(x)
    xn = norm.normalize(x)
    assert xn.dtype == np.float32
    assert np.allclose(xn.min(axis=0), -1.0) and np.allclose(xn.max(axis=0), 1.0, atol=1e-4)
    assert np.allclose(norm.denormalize(xn), x, atol=1e-5)
    assert Normalizer.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm


def test_normalizer_constant_dimension_maps_to_minus_one():
    norm = Normalizer.fit(np.array([[0.0, 2.0], [1.0, 2.0]]))
    assert np.allclose(norm.normalize(np.array([0.5, 2.0])), [0.0, -1.0], atol=1e-5)


def test_normalizer_rejects_bad_stats_and_shapes_by_name():
    with pytest.raises(ValueError, match=r"card\.json normalization\.action: .*same shape"):
        Normalizer.from_dict({"min": [0.0, 0.0], "max": [1.0]}, where="card.json normalization.action")
    with pytest.raises(ValueError, match=r"expected a mapping with keys"):
        Normalizer.from_dict({"min": [0.0]})
    with pytest.raises(ValueError, match=r"Normalizer\.min: expected finite"):
        Normalizer(min=np.array([np.nan]), max=np.array([1.0]))
    with pytest.raises(ValueError, match=r"Normalizer\.max: expected max >= min.*\[1\]"):
        Normalizer(min=np.array([0.0, 2.0]), max=np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"Normalizer\.fit: expected finite data"):
        Normalizer.fit(np.array([[0.0], [np.inf]]))
    with pytest.raises(
        ValueError, match=r"Normalizer\.normalize: expected an array \(\.\.\., 2\), found shape \(4, 3\)"
    ):
        Normalizer.fit(np.zeros((3, 2))).normalize(np.zeros((4, 3)))


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: _train(lr=float("inf")), "TrainConfig.lr"),
        (lambda: _train(weight_decay=float("inf")), "TrainConfig.weight_decay"),
        (lambda: _train(min_lr=float("-inf")), "TrainConfig.min_lr"),
        (lambda: DispersiveConfig(lam=float("inf")), "DispersiveConfig.lam"),
        (lambda: DispersiveConfig(tau=float("inf")), "DispersiveConfig.tau"),
        (lambda: DispersiveConfig(margin=float("inf")), "DispersiveConfig.margin"),
        (lambda: MeanFlowConfig(logit_std=float("inf")), "MeanFlowConfig.logit_std"),
        (lambda: MeanFlowConfig(adaptive_c=float("inf")), "MeanFlowConfig.adaptive_c"),
        (lambda: MeanFlowConfig(adaptive_c="1e999"), "MeanFlowConfig.adaptive_c"),
        (lambda: ModelConfig(dropout=float("nan")), "ModelConfig.dropout"),
    ],
)
def test_non_finite_floats_are_refused_naming_the_field(make, field):
    with pytest.raises(ValueError, match=rf"^{field}: expected a finite number, found "):
        make()


@pytest.mark.parametrize(
    ("make", "field", "found"),
    [
        (lambda: _train(num_threads=100000), "TrainConfig.num_threads", "100000"),
        (lambda: _train(seed=99999999999999999999999), "TrainConfig.seed", "99999999999999999999999"),
        (lambda: _train(seed=2**63), "TrainConfig.seed", str(2**63)),
        (lambda: ModelConfig(time_emb_dim=2**40), "ModelConfig.time_emb_dim", str(2**40)),
        (lambda: ModelConfig(mlp_width=10**7), "ModelConfig.mlp_width", str(10**7)),
        (lambda: ModelConfig(vit_layers=10**4), "ModelConfig.vit_layers", str(10**4)),
        (lambda: ModelConfig(image_size=(32, 10**6)), "ModelConfig.image_size", str(10**6)),
    ],
)
def test_out_of_range_sizes_threads_and_seeds_are_refused_naming_the_field(make, field, found):
    with pytest.raises(ValueError) as err:
        make()
    msg = str(err.value)
    assert msg.startswith(f"{field}: expected ") and found in msg


def test_the_largest_accepted_seed_and_thread_count_still_build_a_config():
    cfg = _train(seed=2**63 - 1, num_threads=256)  # 64-bit seeds (time_ns() sweeps) of earlier runs
    assert cfg.seed == 2**63 - 1 and cfg.num_threads == 256


def test_a_non_string_yaml_key_is_refused_naming_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {dataset_dir: d}\n1: 2\nnope: 3\n")  # mixed key types: used to be a TypeError
    with pytest.raises(ValueError) as err:
        load_train_config(path)
    msg = str(err.value)
    assert str(path) in msg and "expected string keys" in msg and "1" in msg


def test_a_duplicate_yaml_key_is_refused_naming_the_file_the_key_and_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("data: {dataset_dir: d}\nlr: 1.0e-3\nsteps: 10\nlr: 1.0e-2\nwarmup_steps: 0\n")
    with pytest.raises(ValueError) as err:
        load_train_config(path)
    msg = str(err.value)
    assert str(path) in msg and "duplicate key 'lr'" in msg and "line 2" in msg and "line 4" in msg


def test_a_key_repeated_on_one_line_is_refused_too(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("data: {dataset_dir: d}\nmeanflow: {flow_ratio: 0.5, flow_ratio: 0.9}\n")
    with pytest.raises(ValueError, match="duplicate key 'flow_ratio'"):
        load_train_config(path)


def test_a_config_file_with_val_fraction_is_refused_because_no_validation_split_exists(tmp_path):
    path = tmp_path / "val.yaml"
    path.write_text("data: {dataset_dir: d, val_fraction: 0.2}\n")
    with pytest.raises(ValueError, match=r"val\.yaml: data\.val_fraction: .*no validation split.*found 0\.2"):
        load_train_config(path)


@pytest.mark.parametrize("stored", [0.0, 0.1, 0])
def test_a_stored_run_config_with_the_old_val_fraction_still_loads(stored):
    """Checkpoints and model cards of earlier versions hold any 0 <= val_fraction < 1 (never used)."""
    legacy = DataConfig.from_dict({"dataset_dir": "d", "val_fraction": stored})
    assert "val_fraction" not in legacy.to_dict()


def test_a_python_object_tag_in_a_config_is_refused_and_never_run(tmp_path):
    """Reliability row 10: configs are data. A `!!python/object/apply` tag (code execution with an unsafe YAML
    loader) is refused naming the file, and the call it names never runs."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"data: {{dataset_dir: d}}\nlr: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError) as err:
        load_train_config(path)
    assert str(path) in str(err.value) and "python/object/apply" in str(err.value)
    assert not marker.exists()
