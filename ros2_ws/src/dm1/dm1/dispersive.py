"""Dispersive regularizers on a batch of embeddings (docs/method.md §6), training only.

Notation: H (B, D) rows h_i; d_ij = ||h_i - h_j||_2 (not squared); tau temperature; lam weight (applied inside
every variant). Every variant returns 0 (still attached to the graph) for B < 2.

- `infonce_l2` (default, Wang & He): lam * log(mean_{i,j} exp(-||h_i - h_j||^2 / (D tau))), diagonal
  included.
- `infonce_l2_repo` (reference-repo parity): s_ij = -d_ij / tau, s_ii huge negative, s clamped to [-10, 10],
  L = -lam * mean_i log sum_j exp(-s_ij). No gradient for pairs with d_ij > 10 tau.
- `infonce_cosine` (repo): as the repo form with s_ij = cos(h_i, h_j) / tau.
- `hinge` (repo): lam * mean_{i != j} max(0, margin - d_ij).
- `covariance` (repo): C centred covariance (divisor B - 1);
  lam * [mean_{k != l} C_kl^2 + mean_k max(0, 1 - C_kk)].
"""

from __future__ import annotations

import torch
from torch import Tensor

from dm1.config import DISPERSIVE_VARIANTS, DispersiveConfig

_CLAMP = 10.0
_HUGE = 1e9


def _pairwise_sq(h: Tensor) -> Tensor:
    """(B, D) -> squared distances (B, B), by explicit differences (exact, no cancellation)."""
    return (h[:, None, :] - h[None, :, :]).pow(2).sum(-1)


def _pairwise_dist(h: Tensor) -> Tensor:
    """(B, D) -> distances (B, B); clamped under the sqrt so coincident rows get zero, not NaN, gradient."""
    return _pairwise_sq(h).clamp_min(1e-12).sqrt()


def _repo_infonce(s: Tensor, lam: float) -> Tensor:
    """Repo InfoNCE on similarities s (B, B): mask the diagonal, clamp, -lam * mean_i logsumexp(-s_i)."""
    eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    s = s.masked_fill(eye, -_HUGE).clamp(-_CLAMP, _CLAMP)
    return -lam * torch.logsumexp(-s, dim=1).mean()


def dispersive_loss(h: Tensor, variant: str, lam: float, tau: float = 0.5, margin: float = 1.0) -> Tensor:
    """Dispersive loss of one embedding batch h (B, ...) (flattened to (B, D)); see the module docstring."""
    if variant not in DISPERSIVE_VARIANTS:
        raise ValueError(f"dispersive_loss variant: expected one of {DISPERSIVE_VARIANTS}, found {variant!r}")
    if h.dim() < 2:
        raise ValueError(f"dispersive_loss h: expected shape (B, D), found {tuple(h.shape)}")
    h = h.flatten(1)  # (B, D)
    b, d = h.shape
    if b < 2 or variant == "none":
        return h.sum() * 0.0
    eye = torch.eye(b, dtype=torch.bool, device=h.device)
    if variant == "infonce_l2":
        logits = (-_pairwise_sq(h) / (d * tau)).flatten()  # (B*B,)
        return lam * (torch.logsumexp(logits, dim=0) - 2.0 * torch.log(torch.tensor(float(b), dtype=h.dtype)))
    if variant == "infonce_l2_repo":
        return _repo_infonce(-_pairwise_dist(h) / tau, lam)
    if variant == "infonce_cosine":
        hn = h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return _repo_infonce(hn @ hn.T / tau, lam)
    if variant == "hinge":
        return lam * torch.relu(margin - _pairwise_dist(h))[~eye].mean()
    # covariance
    hc = h - h.mean(dim=0, keepdim=True)
    cov = hc.T @ hc / (b - 1)  # (D, D)
    off = cov[~torch.eye(d, dtype=torch.bool, device=h.device)]
    off_term = off.pow(2).mean() if off.numel() > 0 else cov.sum() * 0.0
    return lam * (off_term + torch.relu(1.0 - torch.diagonal(cov)).mean())


def dispersive_term(embeddings: dict[str, Tensor], cfg: DispersiveConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Sum of `dispersive_loss` over cfg.targets; returns (total, {target: loss}) (per-target with graph)."""
    per_target: dict[str, Tensor] = {}
    for target in cfg.targets:
        if target not in embeddings:
            raise ValueError(
                f"DispersiveConfig.targets: embedding {target!r} not produced by the network; "
                f"available: {sorted(embeddings)}"
            )
        per_target[target] = dispersive_loss(embeddings[target], cfg.variant, cfg.lam, cfg.tau, cfg.margin)
    if not per_target:
        raise ValueError("DispersiveConfig.targets: expected at least one target, found none")
    total = torch.stack(list(per_target.values())).sum()
    return total, per_target


def dispersive_forward(
    net: torch.nn.Module,
    images: dict[str, Tensor],
    proprio: Tensor,
    cfg: DispersiveConfig,
    generator: torch.Generator | None = None,
    actions: Tensor | None = None,
    shift_pad: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Second forward pass for the regularizer: t, r ~ U(0, 1) independently, fresh random shift (`shift_pad`,
    on the raw images) and fresh dropout; gradients reach the observation encoder through `cond`.

    `actions` (B, Ta, Da) is the z input (only `mlp.<i>` targets depend on it); zeros when omitted.
    Returns `dispersive_term` of the embeddings.
    """
    from dm1.augment import random_shift_dict

    ncfg = net.cfg
    b = proprio.shape[0]
    gd = generator.device if generator is not None else torch.device("cpu")
    t = torch.rand(b, generator=generator, device=gd).to(proprio.device)
    r = torch.rand(b, generator=generator, device=gd).to(proprio.device)
    if actions is None:
        actions = torch.zeros(b, ncfg.chunk_length, ncfg.action_dim, device=proprio.device)
    if shift_pad > 0:
        images = random_shift_dict(images, shift_pad, generator)
    _, emb = net(actions.float(), t, r, images, proprio, return_embeddings=True)
    return dispersive_term(emb, cfg)
