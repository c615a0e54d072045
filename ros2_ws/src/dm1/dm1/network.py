"""The DM1 network u_theta(z, t, r, obs) (docs/method.md §7.2) and the exportable one-step policy.

Shapes: B batch, To obs history, Ta chunk length, Da action dim, P proprio dim per frame, N ViT tokens,
C ViT width. Attention is written by hand (plain softmax(QK^T / sqrt(d)) V) so that `torch.func.jvp` and ONNX
export both work.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dm1.config import ModelConfig
from dm1.normalization import EPS, Normalizer


def mish(x: Tensor) -> Tensor:
    """Mish, x * tanh(softplus(x)), spelled out so ONNX gets plain ops (onnxruntime cannot fold Mish)."""
    return x * torch.tanh(F.softplus(x))


class Mish(nn.Module):
    """Module form of `mish`."""

    def forward(self, x: Tensor) -> Tensor:
        return mish(x)


class Attention(nn.Module):
    """Multi-head self-attention, plain math (no fused kernels)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape  # (B, N, C)
        qkv = (
            self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # (3, B, h, N, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)  # (B, h, N, N)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.proj(out)


class TransformerLayer(nn.Module):
    """Pre-LN transformer layer: x + Attn(LN(x)), then x + MLP(LN(x)) with GELU; dropout 0."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LightViT(nn.Module):
    """Conv(k8, s4) -> ReLU -> Conv(k3, s2) patchifier, learned positions, transformer layer(s), final LN."""

    def __init__(self, in_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.vit_channels
        self.patchify = nn.Sequential(
            nn.Conv2d(in_channels, c, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(c, c, kernel_size=3, stride=2),
        )
        self.pos_emb = nn.Parameter(torch.randn(1, cfg.num_tokens, c) * 0.02)
        self.layers = nn.ModuleList(
            [TransformerLayer(c, cfg.vit_heads, cfg.vit_mlp_ratio) for _ in range(cfg.vit_layers)]
        )
        self.norm = nn.LayerNorm(c)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3*To, H, W) in [-0.5, 0.5] -> tokens (B, N, C)."""
        x = self.patchify(x)  # (B, C, h, w)
        x = x.flatten(2).transpose(1, 2) + self.pos_emb  # (B, N, C)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class SpatialEmb(nn.Module):
    """Token rows (C x N) + proprio -> Linear -> LN -> ReLU -> learned weighted sum over the C rows."""

    def __init__(self, num_tokens: int, channels: int, prop_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(num_tokens + prop_dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU())
        self.weight = nn.Parameter(torch.randn(1, channels, out_dim))  # N(0, 1) init
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, prop: Tensor) -> Tensor:
        """tokens (B, N, C), prop (B, P') -> (B, out_dim)."""
        feat = tokens.transpose(1, 2)  # (B, C, N)
        prop = prop.unsqueeze(1).expand(-1, feat.shape[1], -1)  # (B, C, P')
        y = self.proj(torch.cat([feat, prop], dim=-1))  # (B, C, out)
        return self.dropout((self.weight * y).sum(dim=1))  # (B, out)


class TimeEmbedding(nn.Module):
    """Sinusoidal(dim) -> Linear(dim, 2dim) -> Mish -> Linear(2dim, dim); raw t in [0, 1], not rescaled."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), Mish(), nn.Linear(2 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        """t (B,) -> (B, dim)."""
        arg = t.unsqueeze(-1) * self.freqs.to(t.dtype)  # (B, half)
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=-1))


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + Linear(Mish(Linear(Mish(x))))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(width, width)
        self.l2 = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.l2(mish(self.l1(mish(x))))


def preprocess_image(img: Tensor, history: int, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, H, W, 3) or (B, To, H, W, 3) uint8/float in [0, 255] -> (B, 3*To, H, W) float in [-0.5, 0.5]."""
    if img.dim() == 4 and history == 1:
        x = img.permute(0, 3, 1, 2)  # (B, 3, H, W)
    elif img.dim() == 5 and img.shape[1] == history:
        x = img.permute(0, 1, 4, 2, 3).flatten(1, 2)  # (B, To*3, H, W)
    else:
        raise ValueError(
            f"images[{name!r}]: expected shape (B, H, W, 3) or (B, {history}, H, W, 3), "
            f"found {tuple(img.shape)}"
        )
    return x.to(dtype) / 255.0 - 0.5


class DM1Network(nn.Module):
    """u_theta(z, t, r, obs): per-camera light ViT + SpatialEmb, separate t/r embeddings, residual MLP."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        prop = cfg.proprio_dim * cfg.obs_history
        self.encoders = nn.ModuleDict({n: LightViT(3 * cfg.obs_history, cfg) for n in cfg.camera_names})
        self.spatial = nn.ModuleDict(
            {
                n: SpatialEmb(cfg.num_tokens, cfg.vit_channels, prop, cfg.spatial_emb_dim, cfg.dropout)
                for n in cfg.camera_names
            }
        )
        self.t_emb = TimeEmbedding(cfg.time_emb_dim)
        self.r_emb = TimeEmbedding(cfg.time_emb_dim)
        in_dim = cfg.chunk_length * cfg.action_dim + 2 * cfg.time_emb_dim + cfg.cond_dim
        self.mlp_in = nn.Linear(in_dim, cfg.mlp_width)
        self.blocks = nn.ModuleList([ResidualBlock(cfg.mlp_width) for _ in range(cfg.mlp_blocks)])
        self.mlp_out = nn.Linear(cfg.mlp_width, cfg.chunk_length * cfg.action_dim)

    def encode_obs(self, images: dict[str, Tensor], proprio: Tensor) -> Tensor:
        """Images per camera + normalised proprio (B, P*To) -> cond (B, n_cam*spatial_emb_dim + P*To)."""
        cfg = self.cfg
        if not torch.jit.is_tracing():
            missing = [n for n in cfg.camera_names if n not in images]
            if missing:
                raise ValueError(f"images: expected cameras {list(cfg.camera_names)}, missing {missing}")
            p = cfg.proprio_dim * cfg.obs_history
            if proprio.dim() != 2 or proprio.shape[1] != p:
                raise ValueError(f"proprio: expected shape (B, {p}), found {tuple(proprio.shape)}")
        dtype = self.mlp_in.weight.dtype
        proprio = proprio.to(dtype)
        feats = []
        for name in cfg.camera_names:
            x = preprocess_image(images[name], cfg.obs_history, name, dtype)
            feats.append(self.spatial[name](self.encoders[name](x), proprio))  # (B, spatial_emb_dim)
        return torch.cat([*feats, proprio], dim=-1)

    def velocity(
        self, z: Tensor, t: Tensor, r: Tensor, cond: Tensor, return_embeddings: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Average velocity u (B, Ta, Da) from z (B, Ta, Da), t (B,), r (B,) and precomputed cond (B, Dc)."""
        te, re = self.t_emb(t), self.r_emb(r)  # (B, time_emb_dim) each
        h = self.mlp_in(torch.cat([z.flatten(1), te, re, cond], dim=-1))  # (B, width)
        emb = {"cond": cond, "t_emb": te, "r_emb": re, "mlp.0": h} if return_embeddings else {}
        for i, block in enumerate(self.blocks):
            h = block(h)
            if return_embeddings:
                emb[f"mlp.{i + 1}"] = h
        u = self.mlp_out(h).reshape(z.shape)  # (B, Ta, Da)
        return (u, emb) if return_embeddings else u

    def forward(
        self,
        z: Tensor,
        t: Tensor,
        r: Tensor,
        images: dict[str, Tensor],
        proprio: Tensor,
        return_embeddings: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """u (B, Ta, Da) [+ embeddings keyed cond, t_emb, r_emb, mlp.<i>]; proprio normalised (B, P*To)."""
        return self.velocity(z, t, r, self.encode_obs(images, proprio), return_embeddings)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class DM1Policy(nn.Module):
    """Inference policy: raw proprio in, de-normalised actions out; normalisation stats are buffers.

    `forward` is the one-step sampler a = clip(eps - u(eps, t=1, r=0), -1, 1), de-normalised; it is what
    export traces to ONNX. The module is always in eval mode (no dropout, no augmentation).
    """

    def __init__(
        self,
        net: DM1Network,
        proprio_min: np.ndarray | Tensor,
        proprio_max: np.ndarray | Tensor,
        action_min: np.ndarray | Tensor,
        action_max: np.ndarray | Tensor,
    ) -> None:
        super().__init__()
        cfg = net.cfg
        self.net = net
        stats = {
            "proprio_min": (proprio_min, cfg.proprio_dim),
            "proprio_max": (proprio_max, cfg.proprio_dim),
            "action_min": (action_min, cfg.action_dim),
            "action_max": (action_max, cfg.action_dim),
        }
        for name, (value, dim) in stats.items():
            v = torch.as_tensor(np.asarray(value, dtype=np.float32))
            if v.shape != (dim,) or not torch.isfinite(v).all():
                raise ValueError(
                    f"DM1Policy.{name}: expected {dim} finite values, found shape {tuple(v.shape)}"
                )
            if name.startswith("proprio"):
                v = v.repeat(cfg.obs_history)  # per-frame stats tiled over the history
            self.register_buffer(name, v)
        self.eval()

    @classmethod
    def from_normalizers(cls, net: DM1Network, proprio: Normalizer, action: Normalizer) -> DM1Policy:
        """Build from the dataset's proprio and action `Normalizer`s."""
        return cls(net, proprio.min, proprio.max, action.min, action.max)

    def train(self, mode: bool = True) -> DM1Policy:
        """Inference-only: the policy (and its network) stay in eval mode whatever `mode` is, so exporters and
        wrappers that toggle modes cannot switch dropout on. Train the `DM1Network` instead."""
        return super().train(False)

    def normalize_proprio(self, proprio_raw: Tensor) -> Tensor:
        """(B, P*To) raw -> [-1, 1] (DPPO min-max)."""
        scale = self.proprio_max - self.proprio_min + EPS
        return 2.0 * ((proprio_raw.float() - self.proprio_min) / scale - 0.5)

    def denormalize_action(self, a: Tensor, proprio_raw: Tensor | None = None) -> Tensor:
        """(B, Ta, Da) in [-1, 1] -> raw action units. With `relative_action_dims` R > 0 the first R dims
        are offsets: the newest proprio frame's first R values (from `proprio_raw` (B, P*To)) are added."""
        out = (a + 1.0) / 2.0 * (self.action_max - self.action_min + EPS) + self.action_min  # (B, Ta, Da)
        rel = self.net.cfg.relative_action_dims
        if rel == 0:
            return out
        if proprio_raw is None:
            raise ValueError("denormalize_action: a model with relative actions needs proprio_raw")
        p = self.net.cfg.proprio_dim
        anchor = proprio_raw[:, -p:][:, :rel].to(out.dtype)  # (B, R) newest frame
        pad = torch.zeros_like(out[:, 0, rel:])  # (B, Da - R)
        return out + torch.cat([anchor, pad], dim=-1).unsqueeze(1)

    def forward(self, images: dict[str, Tensor], proprio_raw: Tensor, noise: Tensor) -> Tensor:
        """One step: images per camera, proprio_raw (B, P*To), noise (B, Ta, Da) -> actions (B, Ta, Da)."""
        cond = self.net.encode_obs(images, self.normalize_proprio(proprio_raw))
        ones = torch.ones_like(noise[:, 0, 0])  # (B,) t = 1
        u = self.net.velocity(noise, ones, ones * 0.0, cond)
        return self.denormalize_action(torch.clamp(noise - u, -1.0, 1.0), proprio_raw)

    def sample(self, images: dict[str, Tensor], proprio_raw: Tensor, noise: Tensor, steps: int) -> Tensor:
        """K-step sampler on t_k = 1 - k/K, clipping after every step; de-normalised (B, Ta, Da)."""
        if steps < 1:
            raise ValueError(f"DM1Policy.sample steps: expected an int >= 1, found {steps}")
        cond = self.net.encode_obs(images, self.normalize_proprio(proprio_raw))
        ones = torch.ones_like(noise[:, 0, 0])
        z = noise
        for k in range(steps):
            t, r = 1.0 - k / steps, 1.0 - (k + 1) / steps
            z = torch.clamp(z - (t - r) * self.net.velocity(z, ones * t, ones * r, cond), -1.0, 1.0)
        return self.denormalize_action(z, proprio_raw)
