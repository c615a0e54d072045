"""Torch fallback runtime with the same `predict` API as `dm1.runtime.PolicyRuntime` (NOT for the robot path).

Used by the inference benchmark for the torch-eager comparison and the K-step timing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from dm1.checkpoint import load_checkpoint
from dm1.network import DM1Policy


class TorchPolicyRuntime:
    """A `DM1Policy` from a checkpoint directory, eval mode, `torch.inference_mode`, batch 1."""

    def __init__(self, policy: DM1Policy) -> None:
        self.policy = policy.eval()
        cfg = policy.net.cfg
        self.camera_names = list(cfg.camera_names)
        self.noise_shape = (cfg.chunk_length, cfg.action_dim)
        self._rng = np.random.default_rng()

    @classmethod
    def load(
        cls, checkpoint_dir: str | os.PathLike[str], num_threads: int | None = None
    ) -> TorchPolicyRuntime:
        """Rebuild the policy from `checkpoint_dir` (EMA weights); optionally set torch's thread count."""
        from dm1.export import build_policy

        if num_threads:
            torch.set_num_threads(num_threads)
        return cls(build_policy(load_checkpoint(checkpoint_dir)))

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        noise: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        steps: int = 1,
    ) -> np.ndarray:
        """Action chunk (Ta, Da) from images {camera: (H, W, 3) uint8}, proprio (P,), noise (Ta, Da).

        steps = 1 is the one-step policy (same graph as ONNX); steps > 1 runs the K-step sampler.
        """
        missing = sorted(set(self.camera_names) - set(images))
        if missing:
            raise ValueError(f"images: expected cameras {self.camera_names}, missing {missing}")
        if noise is None:
            noise = (rng or self._rng).standard_normal(self.noise_shape, dtype=np.float32)
        with torch.inference_mode():
            imgs = {k: torch.from_numpy(np.ascontiguousarray(images[k]))[None] for k in self.camera_names}
            p = torch.from_numpy(np.asarray(proprio, np.float32))[None]  # (1, P)
            z = torch.from_numpy(np.asarray(noise, np.float32))[None]  # (1, Ta, Da)
            out = self.policy(imgs, p, z) if steps == 1 else self.policy.sample(imgs, p, z, steps)
        return out[0].numpy()
