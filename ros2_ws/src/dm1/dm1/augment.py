"""Training-time image augmentation: DrQ-style random shift (replicate padding + random integer translation).

Implemented as an index gather with clamped coordinates, which is exactly replicate-pad-then-crop, keeps the
input dtype (uint8 stays uint8) and needs no grid_sample. Never used at inference or in the exported graph.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_shift(images: Tensor, pad: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Shift each sample by an integer (dy, dx) in [-pad, pad]^2, replicating the border pixels.

    images: (B, H, W, C) or (B, To, H, W, C), any dtype; all frames of one sample share the shift.
    Returns a tensor of the same shape and dtype. `pad == 0` returns the input unchanged.
    """
    if pad < 0:
        raise ValueError(f"random_shift pad: expected an int >= 0, found {pad}")
    if images.dim() not in (4, 5):
        raise ValueError(
            f"random_shift images: expected (B, H, W, C) or (B, To, H, W, C), found {tuple(images.shape)}"
        )
    if pad == 0:
        return images
    b, h, w = images.shape[0], images.shape[-3], images.shape[-2]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    shift = torch.randint(-pad, pad + 1, (2, b), generator=generator, device=gen_device).to(images.device)
    rows = (torch.arange(h, device=images.device)[None, :] + shift[0][:, None]).clamp(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=images.device)[None, :] + shift[1][:, None]).clamp(0, w - 1)  # (B, W)
    bi = torch.arange(b, device=images.device)
    if images.dim() == 4:
        return images[bi[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    ti = torch.arange(images.shape[1], device=images.device)
    return images[
        bi[:, None, None, None], ti[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
    ]


def random_shift_dict(
    images: dict[str, Tensor], pad: int = 4, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """`random_shift` applied to every camera independently."""
    return {name: random_shift(img, pad, generator) for name, img in images.items()}
