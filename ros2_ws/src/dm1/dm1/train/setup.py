"""Device selection, the network and its EMA copy for `dm1.train.trainer.Trainer`."""

from __future__ import annotations

import copy

import torch

from dm1.config import ModelConfig
from dm1.network import DM1Network


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:<n>`` and ``mps`` when present.

    Raises:
        ValueError: naming ``TrainConfig.device`` when the device is not available on this machine.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"TrainConfig.device: {name!r} requested but CUDA is not available (use auto or cpu here)"
            )
        index, count = torch.device(name).index, torch.cuda.device_count()
        if index is not None and index >= count:
            raise ValueError(
                f"TrainConfig.device: {name!r}: expected a CUDA device index below {count}, found {index}"
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            "TrainConfig.device: 'mps' requested but MPS is not available (expected auto, cpu, cuda or "
            "cuda:<n> here)"
        )
    return torch.device(name)


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * model; decay 0 is a hard copy."""
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def build_network(model: ModelConfig, device: torch.device) -> tuple[DM1Network, EMA]:
    """The network for ``model`` on ``device`` and its EMA copy.

    Raises:
        ValueError: naming ``TrainConfig.model`` and its widths when the network cannot be allocated.
    """
    try:
        net = DM1Network(model).to(device)
        return net, EMA(net)
    except (RuntimeError, MemoryError) as exc:  # a network too large for this machine
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, MemoryError) and "alloc" not in text and "out of memory" not in text:
            raise
        raise ValueError(
            f"TrainConfig.model: cannot allocate the network on {device} ({text}); reduce "
            f"model.mlp_width={model.mlp_width}, model.vit_channels={model.vit_channels}, "
            f"model.spatial_emb_dim={model.spatial_emb_dim} or model.time_emb_dim={model.time_emb_dim}"
        ) from None
