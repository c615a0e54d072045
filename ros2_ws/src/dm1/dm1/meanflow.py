"""MeanFlow objective, flow-matching baseline and samplers (docs/method.md §2-5).

Convention: t = 0 is data, t = 1 is noise; z_t = (1 - t) a + t eps, v = eps - a. The network regresses the
average velocity u(z, t, r, obs) with r <= t. The observation is encoded once, outside the JVP (it is
closed over and not differentiated along the path), so the forward-mode JVP only runs through the t/r
embeddings and the velocity MLP. Errors propagate: there are no silent fallbacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from dm1.config import MeanFlowConfig
from dm1.network import DM1Network

VelocityFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _bcast(x: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) matching like's rank."""
    return x.reshape(-1, *([1] * (like.dim() - 1)))


def sample_t_r(
    batch: int,
    cfg: MeanFlowConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """(t, r), each (B,): max/min of two logit-normal draws; exactly floor(flow_ratio*B) random indices get
    r := t, and a disjoint set of exactly floor(boundary_fraction*B) indices gets (t, r) = (1, 0)."""
    if batch < 1:
        raise ValueError(f"sample_t_r batch: expected an int >= 1, found {batch}")
    gd = _gen_device(generator)
    s = torch.sigmoid(torch.randn(2, batch, generator=generator, device=gd) * cfg.logit_std + cfg.logit_mean)
    t, r = s.max(dim=0).values, s.min(dim=0).values  # (B,), (B,)
    n_flow = math.floor(cfg.flow_ratio * batch)
    n_bound = math.floor(cfg.boundary_fraction * batch)
    perm = torch.randperm(batch, generator=generator, device=gd)
    flow_idx, bound_idx = perm[:n_flow], perm[n_flow : n_flow + n_bound]
    r[flow_idx] = t[flow_idx]
    t[bound_idx] = 1.0
    r[bound_idx] = 0.0
    return t.to(device or gd), r.to(device or gd)


def meanflow_target(fn: VelocityFn, z: Tensor, t: Tensor, r: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """One forward-mode JVP of fn(z, t, r) along the tangent (v, 1, 0).

    Returns (u, u_tgt): u keeps its autograd graph (for the loss), u_tgt = sg(v - (t - r) du/dt) is detached.
    """
    u, dudt = torch.func.jvp(fn, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    u_tgt = (v - _bcast(t - r, v) * dudt).detach()
    return u, u_tgt


def _noisy(actions: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    a = actions.float().clamp(-1.0, 1.0)  # (B, Ta, Da)
    eps = torch.randn(a.shape, generator=generator, device=_gen_device(generator)).to(a.device)
    return a, eps


def _weighted(sq_err: Tensor, p: float, c: float) -> tuple[Tensor, Tensor]:
    """Per-sample mean squared error and the (optionally adaptive) loss."""
    per_sample = sq_err.flatten(1).mean(dim=1)  # (B,)
    if p == 0.0:
        return per_sample, per_sample.mean()
    w = 1.0 / (per_sample.detach() + c) ** p
    return per_sample, (w * per_sample).mean()


def meanflow_loss(
    net: DM1Network,
    actions: Tensor,
    images: dict[str, Tensor],
    proprio: Tensor,
    cfg: MeanFlowConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """MeanFlow loss on normalised actions (B, Ta, Da) and (already augmented) observations.

    Returns (loss, metrics), metrics detached: loss_mf, mse, mse_flow (r = t part), mse_mean (r < t).
    """
    a, eps = _noisy(actions, generator)
    t, r = sample_t_r(a.shape[0], cfg, generator, device=a.device)
    z = (1.0 - _bcast(t, a)) * a + _bcast(t, a) * eps  # (B, Ta, Da)
    v = eps - a
    cond = net.encode_obs(images, proprio)  # (B, Dc), outside the JVP

    def fn(z_: Tensor, t_: Tensor, r_: Tensor) -> Tensor:
        return net.velocity(z_, t_, r_, cond)

    u, u_tgt = meanflow_target(fn, z, t, r, v)
    per_sample, loss = _weighted((u - u_tgt) ** 2, cfg.adaptive_p, cfg.adaptive_c)
    flow = r == t
    ps = per_sample.detach()
    metrics = {
        "loss_mf": loss.detach(),
        "mse": ps.mean(),
        "mse_flow": ps[flow].mean() if flow.any() else ps.new_zeros(()),
        "mse_mean": ps[~flow].mean() if (~flow).any() else ps.new_zeros(()),
    }
    return loss, metrics


def flow_matching_loss(
    net: DM1Network,
    actions: Tensor,
    images: dict[str, Tensor],
    proprio: Tensor,
    cfg: MeanFlowConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Flow-matching baseline with the same network: r := t (instantaneous velocity), target v = eps - a.

    t is one logit-normal(logit_mean, logit_std) draw per sample; sample with `instantaneous=True`.
    """
    a, eps = _noisy(actions, generator)
    gd = _gen_device(generator)
    t = torch.sigmoid(
        torch.randn(a.shape[0], generator=generator, device=gd) * cfg.logit_std + cfg.logit_mean
    )
    t = t.to(a.device)
    z = (1.0 - _bcast(t, a)) * a + _bcast(t, a) * eps
    u = net(z, t, t, images, proprio)
    per_sample, loss = _weighted((u - (eps - a)) ** 2, cfg.adaptive_p, cfg.adaptive_c)
    return loss, {"loss_fm": loss.detach(), "mse": per_sample.detach().mean()}


@torch.no_grad()
def sample(
    net: DM1Network,
    images: dict[str, Tensor],
    proprio: Tensor,
    noise: Tensor,
    steps: int = 1,
    instantaneous: bool = False,
) -> Tensor:
    """K-step sampler on the uniform grid t_k = 1 - k/K from z = noise (B, Ta, Da); normalised actions out.

    Step k: z <- clip(z - (t_k - t_{k+1}) u(z, t_k, t_{k+1}), -1, 1). `instantaneous=True` queries
    u(z, t_k, t_k) (Euler for a flow-matching model). The caller picks train/eval mode (eval to evaluate).
    """
    if steps < 1:
        raise ValueError(f"sample steps: expected an int >= 1, found {steps}")
    cond = net.encode_obs(images, proprio)  # encoded once, reused for all K steps
    ones = torch.ones(noise.shape[0], device=noise.device, dtype=noise.dtype)
    z = noise
    for k in range(steps):
        t, r = 1.0 - k / steps, 1.0 - (k + 1) / steps
        u = net.velocity(z, ones * t, ones * (t if instantaneous else r), cond)
        z = (z - (t - r) * u).clamp(-1.0, 1.0)
    return z
