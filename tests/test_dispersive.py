"""Dispersive regularizers: values against explicit hand computations and gradient flow (dm1.dispersive)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dm1.config import DispersiveConfig, ModelConfig
from dm1.dispersive import dispersive_forward, dispersive_loss, dispersive_term
from dm1.network import DM1Network

H = np.array([[0.0, 0.0], [1.0, 0.5], [-0.3, 2.0]])  # B = 3, D = 2
LAM, TAU, MARGIN = 0.7, 0.5, 1.5
VARIANTS = ("infonce_l2", "infonce_l2_repo", "infonce_cosine", "hinge", "covariance")


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def _hand(variant: str, h: np.ndarray, lam: float, tau: float, margin: float) -> float:
    b, d = h.shape
    if variant == "infonce_l2":  # Wang & He: log mean_{i,j} exp(-||hi - hj||^2 / (D tau))
        total = sum(math.exp(-(_dist(h[i], h[j]) ** 2) / (d * tau)) for i in range(b) for j in range(b))
        return lam * math.log(total / b**2)
    if variant in ("infonce_l2_repo", "infonce_cosine"):
        out = 0.0
        for i in range(b):
            acc = math.exp(10.0)  # the masked diagonal, clamped to -10
            for j in range(b):
                if j == i:
                    continue
                if variant == "infonce_l2_repo":
                    s = -_dist(h[i], h[j]) / tau
                else:
                    s = float(np.dot(h[i], h[j])) / (np.linalg.norm(h[i]) * np.linalg.norm(h[j])) / tau
                acc += math.exp(-min(max(s, -10.0), 10.0))
            out += math.log(acc)
        return -lam * out / b
    if variant == "hinge":
        terms = [max(0.0, margin - _dist(h[i], h[j])) for i in range(b) for j in range(b) if i != j]
        return lam * sum(terms) / len(terms)
    mean = [sum(h[i][k] for i in range(b)) / b for k in range(d)]
    cov = [
        [sum((h[i][k] - mean[k]) * (h[i][m] - mean[m]) for i in range(b)) / (b - 1) for m in range(d)]
        for k in range(d)
    ]
    off = [cov[k][m] ** 2 for k in range(d) for m in range(d) if k != m]
    diag = [max(0.0, 1.0 - cov[k][k]) for k in range(d)]
    return lam * (sum(off) / len(off) + sum(diag) / d)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_value_matches_hand_computation(variant):
    h = H.copy()
    if variant == "infonce_cosine":
        h[0] = [0.2, -0.4]  # cosine needs non-zero rows
    got = dispersive_loss(torch.tensor(h), variant, LAM, TAU, MARGIN)
    assert float(got) == pytest.approx(_hand(variant, h, LAM, TAU, MARGIN), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("variant", (*VARIANTS, "none"))
def test_single_sample_batch_gives_zero(variant):
    h = torch.randn(1, 5, requires_grad=True)
    out = dispersive_loss(h, variant, 0.5)
    out.backward()
    assert float(out.detach()) == 0.0 and float(h.grad.abs().sum()) == 0.0


def test_collapsed_rows_give_finite_gradients():
    h = torch.zeros(4, 3, requires_grad=True)
    for variant in VARIANTS:
        h.grad = None
        dispersive_loss(h, variant, 0.5).backward()
        assert torch.isfinite(h.grad).all(), variant


def test_wang_he_form_pulls_collapsed_pairs_apart():
    h = torch.tensor([[0.0, 0.0], [0.01, 0.0], [3.0, 3.0]], requires_grad=True)
    dispersive_loss(h, "infonce_l2", 0.5, tau=0.5).backward()
    # descending the loss moves the two close rows apart along x
    assert float(h.grad[0, 0]) > 0 and float(h.grad[1, 0]) < 0


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


def _obs(b: int = 16):
    g = torch.Generator().manual_seed(0)
    imgs = {"wrist": torch.randint(0, 256, (b, 32, 32, 3), generator=g, dtype=torch.uint8)}
    return imgs, torch.rand(b, 4, generator=g) * 2 - 1


def _encoder_grad_norm(net: DM1Network) -> float:
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in net.encoders.parameters() if p.grad is not None))


# cond distances at initialisation are ~10-25 here, so the repo forms need tau (L2) / margin (hinge) at that
# scale to be out of the clamped / saturated regime
@pytest.mark.parametrize(
    ("variant", "tau", "margin"),
    [
        ("infonce_l2", 0.5, 1.0),
        ("infonce_l2_repo", 5.0, 1.0),
        ("infonce_cosine", 0.5, 1.0),
        ("hinge", 0.5, 40.0),
        ("covariance", 0.5, 1.0),
    ],
)
def test_dispersive_pass_gives_gradient_to_the_observation_encoder(variant, tau, margin):
    torch.manual_seed(0)
    net = DM1Network(SMALL)
    imgs, proprio = _obs()
    cfg = DispersiveConfig(variant=variant, lam=0.5, tau=tau, margin=margin, targets=("cond",))
    total, per_target = dispersive_forward(
        net, imgs, proprio, cfg, torch.Generator().manual_seed(1), shift_pad=4
    )
    total.backward()
    assert set(per_target) == {"cond"} and torch.isfinite(total)
    assert _encoder_grad_norm(net) > 1e-6


def test_repo_infonce_l2_gives_exactly_zero_gradient_when_all_distances_exceed_ten_tau():
    torch.manual_seed(0)
    net = DM1Network(SMALL)
    imgs, proprio = _obs()
    cond = net.encode_obs(imgs, proprio)
    dist = torch.cdist(cond, cond) + torch.eye(16) * 1e9
    tau = 0.5
    assert float(dist.detach().min()) > 10 * tau  # the silenced regime of docs/method.md §6.4
    loss = dispersive_loss(cond, "infonce_l2_repo", 0.5, tau=tau)
    loss.backward()
    assert _encoder_grad_norm(net) == 0.0
    assert float(loss) == pytest.approx(-0.5 * (10.0 + math.log(16)), rel=1e-6)  # the lower bound


def test_dispersive_term_sums_targets_and_names_missing_ones():
    torch.manual_seed(0)
    net = DM1Network(SMALL)
    imgs, proprio = _obs(8)
    _, emb = net(torch.zeros(8, 4, 4), torch.rand(8), torch.rand(8), imgs, proprio, return_embeddings=True)
    cfg = DispersiveConfig(targets=("cond", "t_emb", "r_emb", "mlp.1"))
    total, per = dispersive_term(emb, cfg)
    assert float(total) == pytest.approx(sum(float(v) for v in per.values()), rel=1e-6)
    with pytest.raises(ValueError, match=r"'mlp\.3' not produced.*available"):
        dispersive_term(emb, DispersiveConfig(targets=("mlp.3",)))
