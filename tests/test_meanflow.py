"""MeanFlow objective: (t, r) sampling, the JVP target, losses and samplers (dm1.meanflow)."""

from __future__ import annotations

import math

import pytest
import torch
from dm1.config import MeanFlowConfig, ModelConfig
from dm1.meanflow import flow_matching_loss, meanflow_loss, meanflow_target, sample, sample_t_r
from dm1.network import DM1Network

SMALL = ModelConfig(
    camera_names=("wrist",),
    image_size=(32, 32),
    vit_channels=32,
    spatial_emb_dim=32,
    mlp_width=64,
    proprio_dim=4,
    action_dim=4,
    chunk_length=4,
)


def _obs(b: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"wrist": torch.randint(0, 256, (b, 32, 32, 3), generator=g, dtype=torch.uint8)}, torch.rand(
        b, 4, generator=g
    ) * 2 - 1


@pytest.mark.parametrize("batch", [1, 7, 64, 255])
def test_t_r_sampler_sets_exactly_floor_flow_ratio_of_the_batch_to_r_equals_t(batch):
    cfg = MeanFlowConfig(flow_ratio=0.5, boundary_fraction=0.25)
    t, r = sample_t_r(batch, cfg, torch.Generator().manual_seed(batch))
    assert t.shape == r.shape == (batch,)
    assert bool((r <= t).all()) and bool((r >= 0).all()) and bool((t <= 1).all())
    boundary = (t == 1.0) & (r == 0.0)
    assert int(boundary.sum()) == math.floor(0.25 * batch)
    assert int(((r == t) & ~boundary).sum()) == math.floor(0.5 * batch)


def test_t_r_sampler_draws_max_and_min_of_two_logit_normals():
    t, r = sample_t_r(20000, MeanFlowConfig(flow_ratio=0.0), torch.Generator().manual_seed(0))
    # P(max of two sigmoid(N(-0.4, 1)) <= 0.5) = Phi(0.4)^2 = 0.4292; min: 1 - (1 - 0.6554)^2 = 0.8813
    assert float((t <= 0.5).float().mean()) == pytest.approx(0.4292, abs=0.015)
    assert float((r <= 0.5).float().mean()) == pytest.approx(0.8813, abs=0.015)
    assert float((t > 0.95).float().mean()) < 0.01  # the one-step query point is rarely visited


def test_jvp_target_matches_central_finite_difference_along_v_1_0():
    torch.manual_seed(0)
    net = DM1Network(SMALL).double().eval()
    imgs, proprio = _obs(6)
    cond = net.encode_obs(imgs, proprio.double())
    z, v = torch.randn(6, 4, 4, dtype=torch.float64), torch.randn(6, 4, 4, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64) * 0.8 + 0.1
    r = t * torch.rand(6, dtype=torch.float64)

    def fn(z_, t_, r_):
        return net.velocity(z_, t_, r_, cond)

    u, u_tgt = meanflow_target(fn, z, t, r, v)
    h = 1e-5
    dudt = (fn(z + h * v, t + h, r) - fn(z - h * v, t - h, r)) / (2 * h)
    expected = v - (t - r)[:, None, None] * dudt
    assert torch.allclose(u, fn(z, t, r), atol=1e-12)
    assert (u_tgt - expected).abs().max() < 1e-3
    assert not u_tgt.requires_grad and u.requires_grad


def test_target_reduces_to_conditional_velocity_when_r_equals_t():
    net = DM1Network(SMALL)
    imgs, proprio = _obs(4)
    cond = net.encode_obs(imgs, proprio)
    t = torch.rand(4)
    v = torch.randn(4, 4, 4)
    _, u_tgt = meanflow_target(
        lambda z_, t_, r_: net.velocity(z_, t_, r_, cond), torch.randn(4, 4, 4), t, t, v
    )
    assert torch.allclose(u_tgt, v)


def test_meanflow_loss_trains_the_observation_encoder_and_is_reproducible():
    torch.manual_seed(0)
    net = DM1Network(SMALL)
    imgs, proprio = _obs(8)
    actions = torch.rand(8, 4, 4) * 4 - 2  # out-of-range actions are clamped to [-1, 1]
    torch.manual_seed(1)  # dropout
    loss, metrics = meanflow_loss(
        net, actions, imgs, proprio, MeanFlowConfig(), torch.Generator().manual_seed(3)
    )
    loss.backward()
    assert torch.isfinite(loss) and set(metrics) == {"loss_mf", "mse", "mse_flow", "mse_mean"}
    grads = [p.grad for p in net.encoders.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    torch.manual_seed(1)
    again, _ = meanflow_loss(net, actions, imgs, proprio, MeanFlowConfig(), torch.Generator().manual_seed(3))
    assert float(again.detach()) == pytest.approx(float(loss.detach()), rel=1e-6)


def test_adaptive_weighting_uses_detached_per_sample_weights():
    torch.manual_seed(0)
    net = DM1Network(SMALL).eval()
    imgs, proprio = _obs(8)
    actions = torch.rand(8, 4, 4) * 2 - 1
    plain, m = meanflow_loss(net, actions, imgs, proprio, MeanFlowConfig(), torch.Generator().manual_seed(1))
    cfg = MeanFlowConfig(adaptive_p=1.0, adaptive_c=1e-3)
    weighted, _ = meanflow_loss(net, actions, imgs, proprio, cfg, torch.Generator().manual_seed(1))
    # with p = 1 each sample contributes delta^2 / (delta^2 + c) < 1
    assert float(weighted.detach()) < 1.0 and float(plain.detach()) == pytest.approx(float(m["mse"]))


def test_flow_matching_loss_regresses_the_conditional_velocity():
    torch.manual_seed(0)
    net = DM1Network(SMALL).eval()
    imgs, proprio = _obs(4)
    actions = torch.rand(4, 4, 4) * 2 - 1
    loss, metrics = flow_matching_loss(
        net, actions, imgs, proprio, MeanFlowConfig(), torch.Generator().manual_seed(5)
    )
    g = torch.Generator().manual_seed(5)
    eps = torch.randn(4, 4, 4, generator=g)
    t = torch.sigmoid(torch.randn(4, generator=g) * 1.0 - 0.4)
    z = (1 - t)[:, None, None] * actions + t[:, None, None] * eps
    expected = ((net(z, t, t, imgs, proprio) - (eps - actions)) ** 2).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    loss.backward()
    assert "loss_fm" in metrics


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_sampler_returns_clipped_chunks(steps):
    torch.manual_seed(0)
    net = DM1Network(SMALL).eval()
    imgs, proprio = _obs(3)
    out = sample(net, imgs, proprio, 5.0 * torch.randn(3, 4, 4), steps=steps)
    assert out.shape == (3, 4, 4) and float(out.abs().max()) <= 1.0 and not out.requires_grad


def test_one_step_sampler_is_clip_of_noise_minus_velocity_at_t1_r0():
    torch.manual_seed(0)
    net = DM1Network(SMALL).eval()
    imgs, proprio = _obs(3)
    noise = torch.randn(3, 4, 4)
    with torch.no_grad():
        expected = (noise - net(noise, torch.ones(3), torch.zeros(3), imgs, proprio)).clamp(-1, 1)
    assert torch.allclose(sample(net, imgs, proprio, noise, steps=1), expected, atol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        sample(net, imgs, proprio, noise, steps=0)


def test_loss_errors_propagate_instead_of_falling_back():
    net = DM1Network(SMALL)
    imgs, _ = _obs(2)
    with pytest.raises(ValueError, match=r"proprio: expected shape \(B, 4\)"):
        meanflow_loss(net, torch.zeros(2, 4, 4), imgs, torch.zeros(2, 3), MeanFlowConfig())
