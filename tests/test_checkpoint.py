"""Checkpoints: safetensors + JSON round trip, exact optimizer continuation, pickle refusal, tampering."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from dm1.checkpoint import (
    CheckpointError,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from dm1.config import DataConfig, ModelConfig, TrainConfig
from dm1.network import DM1Network
from dm1.normalization import Normalizer

MODEL = ModelConfig(image_size=(32, 32), vit_channels=16, spatial_emb_dim=16, mlp_width=64)
CFG = TrainConfig(data=DataConfig(dataset_dir="unused"), model=MODEL, steps=10, warmup_steps=0)
NORMS = {
    "proprio": Normalizer(min=np.zeros(4), max=np.ones(4)),
    "action": Normalizer(min=-np.ones(4), max=np.ones(4)),
}


def _batch(seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    images = {
        c: torch.randint(0, 255, (4, 32, 32, 3), generator=g, dtype=torch.uint8) for c in MODEL.camera_names
    }
    z = torch.randn(4, 4, 4, generator=g)
    return z, torch.rand(4, generator=g), torch.rand(4, generator=g), images, torch.rand(4, 4, generator=g)


def _step(net: DM1Network, opt: torch.optim.Optimizer, seed: int) -> None:
    z, t, r, images, proprio = _batch(seed)
    loss = net(z, t, r, images, proprio).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _trained() -> tuple[DM1Network, torch.optim.AdamW]:
    torch.manual_seed(0)
    net = DM1Network(MODEL).eval()  # eval: no dropout, so steps are deterministic
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-6)
    for s in range(3):
        _step(net, opt, s)
    return net, opt


def _save(path: Path, net: DM1Network, opt: torch.optim.Optimizer, step: int = 3) -> Path:
    ema = {k: v * 0.5 for k, v in net.state_dict().items()}
    return save_checkpoint(
        path, net.state_dict(), ema, opt.state_dict(), step, CFG, NORMS, "ab" * 32, {"loss": 0.5},
        extra_tensors={"rng": torch.arange(5, dtype=torch.uint8)}, extra={"note": "x"},
    )  # fmt: skip


def test_checkpoint_round_trip_restores_everything(tmp_path: Path) -> None:
    net, opt = _trained()
    path = _save(checkpoint_dir(tmp_path, 3), net, opt)
    assert sorted(p.name for p in path.iterdir()) == [
        "checkpoint.json",
        "model.safetensors",
        "model_raw.safetensors",
        "trainer_state.safetensors",
    ]
    ck = load_checkpoint(path)
    assert ck.step == 3 and ck.train_config == CFG and ck.normalizers == NORMS
    assert ck.dataset_sha256 == "ab" * 32 and ck.metrics == {"loss": 0.5} and ck.extra == {"note": "x"}
    for k, v in net.state_dict().items():
        torch.testing.assert_close(ck.raw_state[k], v, rtol=0, atol=0)
        torch.testing.assert_close(ck.model_state[k], v * 0.5, rtol=0, atol=0)  # EMA is the main weight file
    torch.testing.assert_close(ck.extra_tensors["rng"], torch.arange(5, dtype=torch.uint8))
    meta = json.loads((path / "checkpoint.json").read_text())
    assert meta["train_config"]["model"]["mlp_width"] == 64 and set(meta["files"]) == {
        "model.safetensors",
        "model_raw.safetensors",
        "trainer_state.safetensors",
    }


def test_restored_optimizer_continues_exactly(tmp_path: Path) -> None:
    net, opt = _trained()
    ck = load_checkpoint(_save(tmp_path / "ck", net, opt))
    net2 = DM1Network(MODEL).eval()
    net2.load_state_dict(ck.raw_state)
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1e-3, weight_decay=1e-6)
    opt2.load_state_dict(ck.optimizer_state)
    for s in (3, 4):
        _step(net, opt, s)
        _step(net2, opt2, s)
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("name", ["model.pt", "weights.pth", "policy.pkl", "last.ckpt"])
def test_pickle_checkpoints_are_refused(tmp_path: Path, name: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(b"\x80\x04K\x01.")  # a valid pickle stream; must never be unpickled
    with pytest.raises(CheckpointError, match="refusing to load a pickle"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match=f"found pickle files \\['{name}'\\]"):
        load_checkpoint(tmp_path)


def test_tampered_checkpoint_is_rejected_naming_the_file(tmp_path: Path) -> None:
    net, opt = _trained()
    path = _save(tmp_path / "ck", net, opt)
    with open(path / "model.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 mismatch"):
        load_checkpoint(path)


def test_latest_checkpoint_picks_the_highest_complete_step(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    net, opt = _trained()
    for step in (5, 20, 10):
        _save(checkpoint_dir(tmp_path, step), net, opt, step)
    (tmp_path / "checkpoints" / "step_00000099").mkdir()  # no checkpoint.json: an interrupted write
    latest = latest_checkpoint(tmp_path)
    assert latest == checkpoint_dir(tmp_path, 20) and load_checkpoint(latest).step == 20
    assert load_checkpoint(tmp_path).step == 20  # a run directory loads its newest complete checkpoint


def _corrupt(meta: dict, edit: str) -> object:
    """`meta` with one corruption that still parses as JSON."""
    if edit == "whole_file_a_list":
        return []
    if edit == "normalizers_a_list":
        meta["normalizers"] = [1]
    elif edit == "normalizer_not_a_mapping":
        meta["normalizers"]["action"] = 1
    elif edit == "step_a_string":
        meta["step"] = "abc"
    elif edit == "step_negative":
        meta["step"] = -3
    elif edit == "nan_normalizer_min":
        meta["normalizers"]["proprio"]["min"][0] = float("nan")
    elif edit == "train_config_a_list":
        meta["train_config"] = [1]
    elif edit == "train_config_invalid":
        meta["train_config"]["lr"] = -1.0
    elif edit == "files_a_list":
        meta["files"] = ["model.safetensors"]
    elif edit == "optimizer_param_groups_a_string":
        meta["optimizer"]["param_groups"] = "x"
    elif edit == "metrics_a_list":
        meta["metrics"] = [1]
    elif edit == "dataset_sha256_a_number":
        meta["dataset_sha256"] = 5
    return meta


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ("whole_file_a_list", "expected a JSON object"),
        ("normalizers_a_list", "normalizers"),
        ("normalizer_not_a_mapping", "normalizers.action"),
        ("step_a_string", "step"),
        ("step_negative", "step"),
        ("nan_normalizer_min", "normalizers.proprio"),
        ("train_config_a_list", "train_config"),
        ("train_config_invalid", "TrainConfig.lr"),
        ("files_a_list", "files"),
        ("optimizer_param_groups_a_string", "optimizer.param_groups"),
        ("metrics_a_list", "metrics"),
        ("dataset_sha256_a_number", "dataset_sha256"),
    ],
)
def test_a_corrupt_checkpoint_json_that_still_parses_is_a_checkpoint_error_naming_file_and_field(
    tmp_path: Path, edit: str, field: str
) -> None:
    net, opt = _trained()
    path = _save(tmp_path / "ck", net, opt)
    meta = json.loads((path / "checkpoint.json").read_text())
    (path / "checkpoint.json").write_text(json.dumps(_corrupt(meta, edit)))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(str(path / "checkpoint.json")) and field in msg, msg
