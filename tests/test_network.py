"""DM1 network shapes, parameter count, the exportable one-step policy and random-shift augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dm1.augment import random_shift
from dm1.config import ModelConfig
from dm1.network import DM1Network, DM1Policy, count_parameters
from dm1.normalization import Normalizer

SMALL = {
    "image_size": (32, 32),
    "vit_channels": 32,
    "vit_heads": 4,
    "spatial_emb_dim": 32,
    "mlp_width": 64,
    "proprio_dim": 4,
    "action_dim": 4,
    "chunk_length": 4,
}


def _images(cfg: ModelConfig, b: int, seed: int = 0, history: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lead = (b, cfg.obs_history) if history else (b,)
    return {
        n: torch.randint(0, 256, (*lead, *cfg.image_size, 3), generator=g, dtype=torch.uint8)
        for n in cfg.camera_names
    }


def test_reference_configuration_has_exactly_1776636_parameters():
    cfg = ModelConfig(camera_names=("wrist",), proprio_dim=9, action_dim=7, chunk_length=4)
    net = DM1Network(cfg)
    assert count_parameters(net) == 1_776_636
    assert count_parameters(net.encoders) == 386_304  # light ViT
    assert count_parameters(net.spatial) == 33_408
    assert count_parameters(net.t_emb) == count_parameters(net.r_emb) == 1_072


def test_forward_gives_chunk_shaped_velocity_and_named_embeddings():
    torch.manual_seed(0)
    cfg = ModelConfig(camera_names=("front", "wrist"), mlp_blocks=2, **SMALL)
    net = DM1Network(cfg)
    b = 5
    u, emb = net(torch.randn(b, 4, 4), torch.rand(b), torch.rand(b), _images(cfg, b), torch.randn(b, 4), True)
    assert u.shape == (b, 4, 4)
    assert {k: tuple(v.shape) for k, v in emb.items()} == {
        "cond": (b, 2 * 32 + 4),
        "t_emb": (b, 16),
        "r_emb": (b, 16),
        "mlp.0": (b, 64),
        "mlp.1": (b, 64),
        "mlp.2": (b, 64),
    }


def test_uint8_and_float_images_give_the_same_output():
    torch.manual_seed(0)
    cfg = ModelConfig(camera_names=("wrist",), **SMALL)
    net = DM1Network(cfg).eval()
    imgs = _images(cfg, 3)
    z, t, r, p = torch.randn(3, 4, 4), torch.rand(3), torch.rand(3), torch.randn(3, 4)
    u8 = net(z, t, r, imgs, p)
    uf = net(z, t, r, {k: v.float() for k, v in imgs.items()}, p)
    assert torch.allclose(u8, uf, atol=1e-6)


def test_history_stacks_frames_and_the_oldest_frame_matters():
    torch.manual_seed(0)
    cfg = ModelConfig(camera_names=("wrist",), obs_history=2, **SMALL)
    net = DM1Network(cfg).eval()
    imgs = _images(cfg, 2, history=True)
    cond = net.encode_obs(imgs, torch.zeros(2, 8))
    assert cond.shape == (2, 32 + 8)
    changed = {"wrist": imgs["wrist"].clone()}
    changed["wrist"][:, 0] = 0
    assert not torch.allclose(net.encode_obs(changed, torch.zeros(2, 8)), cond)


def test_bad_observation_inputs_are_named():
    cfg = ModelConfig(camera_names=("front", "wrist"), **SMALL)
    net = DM1Network(cfg)
    imgs = _images(cfg, 2)
    with pytest.raises(ValueError, match=r"missing \['wrist'\]"):
        net.encode_obs({"front": imgs["front"]}, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"proprio: expected shape \(B, 4\), found \(2, 9\)"):
        net.encode_obs(imgs, torch.zeros(2, 9))
    with pytest.raises(ValueError, match=r"images\['front'\]: expected shape"):
        net.encode_obs({**imgs, "front": imgs["front"][0]}, torch.zeros(2, 4))


def _policy(seed: int = 0, **model: object) -> tuple[DM1Policy, Normalizer, Normalizer]:
    torch.manual_seed(seed)
    cfg = ModelConfig(camera_names=("front", "wrist"), **SMALL, **model)
    rng = np.random.default_rng(seed)
    pn = Normalizer.fit(rng.normal(size=(50, 4)))
    an = Normalizer.fit(rng.normal(size=(50, 4)) * 0.1)
    return DM1Policy.from_normalizers(DM1Network(cfg), pn, an), pn, an


def test_policy_one_step_equals_clipped_noise_minus_velocity_denormalized():
    policy, pn, an = _policy()
    imgs = _images(policy.net.cfg, 3)
    proprio_raw = torch.randn(3, 4)
    noise = torch.randn(3, 4, 4)
    with torch.no_grad():
        actions = policy(imgs, proprio_raw, noise)
        pn_t = torch.from_numpy(pn.normalize(proprio_raw.numpy()))
        u = policy.net(noise, torch.ones(3), torch.zeros(3), imgs, pn_t)
    expected = an.denormalize(torch.clamp(noise - u, -1.0, 1.0).numpy())
    assert np.allclose(actions.numpy(), expected, atol=1e-5)
    assert not policy.training and not policy.net.training
    assert torch.allclose(policy.sample(imgs, proprio_raw, noise, steps=1), actions, atol=1e-6)


def test_relative_policy_adds_the_observed_position_back():
    absolute, _, an = _policy(relative_action_dims=0)
    relative, _, _ = _policy(relative_action_dims=3)
    relative.net.load_state_dict(absolute.net.state_dict())
    imgs, proprio_raw, noise = _images(absolute.net.cfg, 2), torch.randn(2, 4), torch.randn(2, 4, 4)
    with torch.no_grad():
        offsets = absolute(imgs, proprio_raw, noise)  # (B, Ta, Da) what the net predicts
        out = relative(imgs, proprio_raw, noise)
        k_step = relative.sample(imgs, proprio_raw, noise, steps=1)
    expected = offsets.clone()
    expected[:, :, :3] += proprio_raw[:, None, :3]  # gripper (dim 3) stays absolute
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(k_step, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="relative actions needs proprio_raw"):
        relative.denormalize_action(torch.zeros(1, 4, 4))


def test_relative_action_dims_cannot_exceed_the_proprio_or_action_width():
    with pytest.raises(ValueError, match=r"relative_action_dims: expected an int in \[0, min\(action_dim"):
        ModelConfig(**SMALL, relative_action_dims=5)


def test_policy_k_step_sampler_stays_inside_the_action_range():
    policy, _, an = _policy(1)
    out = policy.sample(
        _images(policy.net.cfg, 4), torch.randn(4, 4), 3.0 * torch.randn(4, 4, 4), steps=5
    ).detach()
    assert out.shape == (4, 4, 4)
    assert np.all(out.numpy() >= an.min - 1e-5) and np.all(out.numpy() <= an.max + 1e-5)


def test_policy_stays_in_eval_mode_and_rejects_bad_stats():
    policy, _, _ = _policy()
    policy.train()
    wrapper = torch.nn.Sequential(policy).train()
    assert not wrapper[0].training and not policy.net.training
    assert not any(m.training for m in policy.modules())
    with pytest.raises(
        ValueError, match=r"DM1Policy\.action_max: expected 4 finite values, found shape \(3,\)"
    ):
        DM1Policy(policy.net, np.zeros(4), np.ones(4), np.zeros(4), np.ones(3))


@pytest.mark.parametrize("relative_action_dims", [0, 3])
def test_policy_exports_to_onnx_and_matches_torch(tmp_path, relative_action_dims):
    ort = pytest.importorskip("onnxruntime")
    policy, _, _ = _policy(relative_action_dims=relative_action_dims)
    imgs = _images(policy.net.cfg, 1)
    proprio, noise = torch.randn(1, 4), torch.randn(1, 4, 4)

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def forward(self, front, wrist, proprio, noise):
            return self.policy({"front": front, "wrist": wrist}, proprio, noise)

    path = tmp_path / "p.onnx"
    names = ["image_front", "image_wrist", "proprio", "noise"]
    args = (imgs["front"], imgs["wrist"], proprio, noise)
    torch.onnx.export(
        Flat(), args, str(path), input_names=names, output_names=["actions"], opset_version=18, dynamo=False
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(["actions"], {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
    with torch.no_grad():
        assert np.allclose(out, policy(imgs, proprio, noise).numpy(), atol=1e-4)


def test_random_shift_is_a_replicate_padded_integer_translation():
    img = torch.arange(6 * 7, dtype=torch.uint8).reshape(1, 6, 7, 1).repeat(16, 1, 1, 3)
    out = random_shift(img, pad=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(img.permute(0, 3, 1, 2).float(), (2, 2, 2, 2), mode="replicate")
    shifts = set()
    for b in range(16):
        crops = {
            (dy, dx): padded[b, :, dy : dy + 6, dx : dx + 7].permute(1, 2, 0)
            for dy in range(5)
            for dx in range(5)
        }
        match = [k for k, c in crops.items() if torch.equal(c, out[b].float())]
        assert match, f"sample {b} is not a replicate-padded crop"
        shifts.add(match[0])
    assert len(shifts) > 3  # shifts vary across the batch
    assert torch.equal(random_shift(img, pad=0), img)


def test_random_shift_moves_all_history_frames_together():
    img = torch.rand(4, 3, 12, 12, 3)
    img[:, 1:] = img[:, :1]
    out = random_shift(img, pad=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
