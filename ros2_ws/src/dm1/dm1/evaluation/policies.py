"""`PolicyFn`: the small interface the in-process evaluator and the ablation drive, and its implementations.

A `PolicyFn` has a `name`, a model `card` (`dm1.modelcard.ModelCard`: cameras, proprio keys, action schema),
`steps` (network evaluations per chunk; 0 for a scripted policy), `reset()` (called at every episode
start) and

    predict(images, proprio, noise=None, rng=None) -> actions (Ta, Da) float32

with images {camera: (H, W, 3) uint8}, proprio (P,) raw units in card order, noise (Ta, Da) (drawn from `rng`
when None). This is the signature of `dm1.runtime.PolicyRuntime.predict`, so `dm1.policy.PolicyStep` runs any
`PolicyFn` exactly as the policy node runs the ONNX runtime.

Implementations:
- `OnnxPolicy`: the deployed one-step graph through onnxruntime (`dm1.runtime.PolicyRuntime`), no torch.
- `TorchCheckpointPolicy`: a training checkpoint with the K-step sampler (`dm1.meanflow.sample`); MeanFlow
  models query u(z, t_k, t_{k+1}), flow-matching models the instantaneous velocity u(z, t_k, t_k)
  (Euler). torch is imported lazily: this module stays importable on the robot path.
- `ScriptedOraclePolicy`: the privileged scripted expert (reads the cube pose from the twin) as an upper bound
  and as the harness's own check that success is registered.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dm1.modelcard import ActionSpec, CameraSpec, ModelCard, ProprioSpec

#: Placeholder hash in cards built for policies that are not an ONNX file.
NO_ONNX_SHA256 = "0" * 64


@runtime_checkable
class PolicyFn(Protocol):
    """What the in-process evaluator needs from a policy (see the module docstring)."""

    name: str
    card: ModelCard
    steps: int

    def reset(self) -> None:
        """Forget per-episode state (called before every episode)."""
        ...

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        noise: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Action chunk (Ta, Da) float32 in raw action units."""
        ...


class OnnxPolicy:
    """The exported one-step model (`model.onnx` + `model_card.json`) through onnxruntime."""

    steps = 1

    def __init__(self, runtime: Any, name: str | None = None) -> None:
        self.runtime = runtime
        self.card: ModelCard = runtime.card
        self.name = name or self.card.name
        objective = (self.card.training_config or {}).get("objective", "meanflow")
        if objective != "meanflow":
            raise ValueError(
                f"{runtime.model_dir}: model_card.json training_config.objective: expected 'meanflow' (the "
                f"exported graph is the one-step MeanFlow sampler u(eps, t=1, r=0)), found {objective!r}; "
                "evaluate flow-matching models with TorchCheckpointPolicy"
            )

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], num_threads: int | None = None, name: str | None = None):
        """Load and verify a model directory with `dm1.runtime.PolicyRuntime`."""
        from dm1.runtime import PolicyRuntime

        return cls(PolicyRuntime.load(model_dir, num_threads=num_threads), name=name)

    def reset(self) -> None:
        """Stateless."""

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        noise: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """One onnxruntime call → (Ta, Da)."""
        return self.runtime.predict(images, proprio, noise=noise, rng=rng)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory, or the latest complete checkpoint of a run directory."""
    from dm1.checkpoint import META_FILE, latest_checkpoint

    p = Path(path)
    if (p / META_FILE).is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise FileNotFoundError(
            f"{p}: expected a checkpoint directory ({META_FILE}) or a run directory with "
            f"checkpoints/step_*/{META_FILE}, found neither"
        )
    return latest


class TorchCheckpointPolicy:
    """A training checkpoint (EMA weights) sampled with K steps in torch (eval mode, batch 1).

    Args:
        path: checkpoint directory or run directory (latest checkpoint).
        steps: sampler steps K >= 1. K = 1 on a MeanFlow model equals the exported ONNX graph.
        name: display name (default: run directory name + ` K=<steps>`).
        num_threads: torch intra-op threads (None: leave torch's setting).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        steps: int = 1,
        name: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        import torch

        from dm1.checkpoint import load_checkpoint
        from dm1.export import build_card, build_policy
        from dm1.network import count_parameters

        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"TorchCheckpointPolicy.steps: expected an int >= 1, found {steps!r}")
        if num_threads:
            torch.set_num_threads(int(num_threads))
        ckpt = load_checkpoint(resolve_checkpoint(path))
        self.steps = steps
        self.objective: str = ckpt.train_config.objective
        self.policy = build_policy(ckpt).eval()
        run_name = ckpt.path.parent.parent.name if ckpt.path.parent.name == "checkpoints" else ckpt.path.name
        self.name = name or f"{run_name} K={steps}"
        self.card: ModelCard = build_card(ckpt, self.name, NO_ONNX_SHA256, count_parameters(self.policy.net))
        self.checkpoint = ckpt.path
        self._torch = torch

    def reset(self) -> None:
        """Stateless."""

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        noise: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """K-step sample → de-normalised (Ta, Da) float32."""
        from dm1.meanflow import sample
        from dm1.runtime import OutputError, validate_observation

        torch = self._torch
        imgs, p, z = validate_observation(self.card, images, proprio, noise, rng)
        with torch.inference_mode():
            timgs = {k: torch.from_numpy(v)[None] for k, v in imgs.items()}  # (1, H, W, 3) uint8
            p_n = self.policy.normalize_proprio(torch.from_numpy(p)[None])  # (1, P)
            a_n = sample(
                self.policy.net,
                timgs,
                p_n,
                torch.from_numpy(z)[None],  # (1, Ta, Da)
                steps=self.steps,
                instantaneous=self.objective == "flow_matching",
            )
            out = self.policy.denormalize_action(a_n, torch.from_numpy(p)[None])  # (1, Ta, Da)
            out = out[0].numpy().astype(np.float32)  # (Ta, Da)
        if not np.all(np.isfinite(out)):
            raise OutputError(
                f"actions: expected finite values, found {int(np.sum(~np.isfinite(out)))} NaN/Inf"
            )
        return out


def oracle_card(
    camera_shapes: Mapping[str, tuple[int, int, int]], chunk_length: int = 4, control_rate_hz: float = 20.0
) -> ModelCard:
    """Card of the scripted expert: the collected-demo schema (ee_pos + gripper_width → ee_position)."""
    return ModelCard(
        name="scripted_expert",
        cameras=[CameraSpec(n, tuple(s)) for n, s in camera_shapes.items()],
        proprio=ProprioSpec(keys=["ee_pos", "gripper_width"], dims=[3, 1], units=["m", "m"]),
        noise_shape=(chunk_length, 4),
        action=ActionSpec(
            space="ee_position",
            names=["x", "y", "z", "gripper"],
            units=["m", "m", "m", "1"],
            frame="fr3_link0",
            chunk_length=chunk_length,
            control_rate_hz=control_rate_hz,
            orientation_xyzw=[1.0, 0.0, 0.0, 0.0],
        ),
        onnx_sha256=NO_ONNX_SHA256,
    )


class ScriptedOraclePolicy:
    """`dm1.sim.expert.ScriptedLiftExpert` as a `PolicyFn`; privileged: it reads the cube pose from the twin.

    The end-effector position and gripper width come from the proprio vector (numpy FK of the measured
    joints), so the observation path is the one every learned policy sees. Each call advances the expert one
    control tick and returns its action repeated over the chunk.
    """

    steps = 0

    def __init__(self, twin: Any, chunk_length: int = 4, control_rate_hz: float = 20.0) -> None:
        from dm1.sim.expert import expert_for

        self.twin = twin
        shapes = {n: (c.height, c.width, 3) for n, c in twin.cfg.cameras.items()}
        self.card = oracle_card(shapes, chunk_length, control_rate_hz)
        self.name = "scripted expert (privileged)"
        self.expert = expert_for(twin.cfg)
        self._t0 = 0.0

    def reset(self) -> None:
        """Restart the expert's phase machine; episode time starts now."""
        self.expert.reset()
        self._t0 = self.twin.sim_time()

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        noise: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """One expert action [x, y, z, gripper] tiled to (Ta, 4)."""
        p = np.asarray(proprio, dtype=float).reshape(-1)
        if p.shape != (4,):
            raise ValueError(f"proprio: expected 4 values [ee_pos (3), gripper_width], found shape {p.shape}")
        t = self.twin.sim_time() - self._t0
        action = self.expert.act(p[:3], float(p[3]), self.twin.cube_pose().pos, t)  # (4,)
        return np.tile(action, (self.card.action.chunk_length, 1)).astype(np.float32)
