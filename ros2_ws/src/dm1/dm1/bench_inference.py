"""Batch-1 inference latency: onnxruntime (`PolicyRuntime`) vs torch eager, measured interleaved in one run.

`dm1 bench inference --model models/<name> [--checkpoint DIR] --json` calls `run_inference_benchmark`.
Without a checkpoint, the torch side is the same architecture rebuilt from the card's `training_config` with
random weights: latency does not depend on weight values, so timings are comparable, but outputs are not
(the result says which).

`dm1 bench inference --reference --json` times the DM1 reference-size network instead
(`export_reference_network`: one 96x96 camera, 1.78 M parameters as in docs/method.md 7.2, random weights,
exported by `dm1.export` like any model), the size the core issue states its latency goal for; the bundled
two-camera model (2.27 M) is larger.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def _stats(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {
        "median_ms": round(float(np.median(ms)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(np.mean(ms)), 4),
        "n": int(ms.size),
    }


def _graph_nodes(onnx_path: Path) -> list[Any]:
    """Nodes of the ONNX graph (empty when the `onnx` package is not installed)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx ships with the export extras
        return []
    return list(onnx.load(str(onnx_path), load_external_data=False).graph.node)


def _torch_runtime(card: Any, checkpoint_dir: str | None, threads: int):
    import torch

    from dm1.runtime_torch import TorchPolicyRuntime

    torch.set_num_threads(threads)
    if checkpoint_dir:
        return TorchPolicyRuntime.load(checkpoint_dir), "checkpoint"
    from dm1.config import TrainConfig
    from dm1.network import DM1Network, DM1Policy

    cfg = TrainConfig.from_dict(card.training_config, where=f"{card.source} training_config")
    norm = card.normalization
    policy = DM1Policy(
        DM1Network(cfg.model),
        norm["proprio"]["min"],
        norm["proprio"]["max"],
        norm["action"]["min"],
        norm["action"]["max"],
    )
    return TorchPolicyRuntime(policy), "random (same architecture; timing only)"


# The reference Lift shape (docs/method.md 7.2: 1,776,636 parameters with proprio 9 and 7 actions) in this
# contract's terms: proprio ee_pos + ee_quat_xyzw + gripper_width (8) and 8 joint-position actions.
REFERENCE_PROPRIO_KEYS: tuple[str, ...] = ("ee_pos", "ee_quat_xyzw", "gripper_width")
REFERENCE_ACTION_DIM = 8


def export_reference_network(out_dir: str | os.PathLike[str], seed: int = 0) -> tuple[Path, Path]:
    """Export a random-weight DM1 network of the reference size; returns (model_dir, checkpoint_dir).

    The default `ModelConfig` widths with one camera ("agentview"), 8 proprio dims and 8 actions: 1,781,888
    parameters. Written under `out_dir` (`checkpoint/` as safetensors + JSON, `model/` as ONNX + card) by the
    same `save_checkpoint` and `export_model` the trained models go through, so the graph gets every export
    rewrite and the parity check.
    """
    import torch

    from dm1.checkpoint import save_checkpoint
    from dm1.config import PROPRIO_KEY_DIMS, TrainConfig
    from dm1.export import export_model
    from dm1.network import DM1Network
    from dm1.normalization import Normalizer

    out = Path(out_dir)
    proprio_dim = sum(PROPRIO_KEY_DIMS[k] for k in REFERENCE_PROPRIO_KEYS)
    cams = ["agentview"]
    cfg = TrainConfig.from_dict(
        {
            "data": {
                "dataset_dir": str(out / "no-dataset"),
                "proprio_keys": list(REFERENCE_PROPRIO_KEYS),
                "camera_names": cams,
            },
            "model": {"camera_names": cams, "proprio_dim": proprio_dim, "action_dim": REFERENCE_ACTION_DIM},
        },
        where="reference network",
    )
    torch.manual_seed(seed)
    state = DM1Network(cfg.model).state_dict()
    norms = {
        "proprio": Normalizer(min=-np.ones(proprio_dim, np.float32), max=np.ones(proprio_dim, np.float32)),
        "action": Normalizer(
            min=-np.ones(REFERENCE_ACTION_DIM, np.float32), max=np.ones(REFERENCE_ACTION_DIM, np.float32)
        ),
    }
    no_optimizer = {"state": {}, "param_groups": []}
    ckpt = save_checkpoint(out / "checkpoint", state, state, no_optimizer, 0, cfg, norms, "random weights")
    model = export_model(ckpt, out / "model", name="dm1_reference_random", overwrite=True).path
    return model, ckpt


def run_inference_benchmark(
    model_dir: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str] | None = None,
    iters: int = 500,
    warmup: int = 50,
    k_steps: int = 5,
    num_threads: int | None = None,
    spinning: bool | str = "run",
) -> dict[str, Any]:
    """Median/p99 batch-1 latency of onnxruntime and torch eager (interleaved), plus torch K-step timing.

    Returns {"onnxruntime": {...}, "onnxruntime_session": {...}, "torch": {...}, "torch_k<K>": {...},
    "speedup": torch/onnxruntime median, "machine", "providers", "threads", "onnxruntime_options",
    "parameters", "max_abs_diff"}. Both runtimes get `num_threads` intra-op threads (torch: `set_num_threads`)
    and the same pre-drawn inputs; `spinning` is the onnxruntime idle-worker policy (`dm1.runtime`).
    """
    from dm1.commands.bench import machine_description
    from dm1.runtime import DISABLED_OPTIMIZERS, PolicyRuntime, default_num_threads

    if iters < 1 or warmup < 0:
        raise ValueError(f"iters/warmup: expected iters >= 1 and warmup >= 0, found {iters}/{warmup}")
    threads = num_threads or default_num_threads()
    rt = PolicyRuntime.load(model_dir, num_threads=threads, spinning=spinning)
    card = rt.card
    trt, torch_weights = _torch_runtime(card, str(checkpoint_dir) if checkpoint_dir else None, threads)

    rng = np.random.default_rng(0)
    images = {c.name: rng.integers(0, 256, c.shape, dtype=np.uint8) for c in card.cameras}
    proprio = rng.uniform(-0.5, 0.5, card.proprio.dim).astype(np.float32)
    noise = rng.standard_normal(card.noise_shape).astype(np.float32)
    feeds = rt.prepare_inputs(images, proprio, noise, None)  # raw session timing (no validation)
    session = rt.session

    def run_ort() -> None:
        rt.predict(images, proprio, noise)

    def run_session() -> None:
        session.run(["actions"], feeds)

    def run_torch() -> None:
        trt.predict(images, proprio, noise)

    def run_torch_k() -> None:
        trt.predict(images, proprio, noise, steps=k_steps)

    jobs = {"onnxruntime": run_ort, "onnxruntime_session": run_session, "torch": run_torch}
    for fn in jobs.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in jobs}
    order = list(jobs)
    # Interleave in short blocks (alternating order), so both runtimes see the same machine load, while a
    # thread pool still spinning from the other runtime's last call only affects one call per block.
    block = 10
    for b in range(0, iters, block):
        for name in order if (b // block) % 2 == 0 else reversed(order):
            fn, out = jobs[name], samples[name]
            fn()  # untimed: absorbs the hand-over from the other runtime's threads
            for _ in range(min(block, iters - b)):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    k_samples = []
    for _ in range(max(1, warmup // 5)):
        run_torch_k()
    for _ in range(max(10, iters // 5)):
        t0 = time.perf_counter()
        run_torch_k()
        k_samples.append(time.perf_counter() - t0)

    result: dict[str, Any] = {name: _stats(s) for name, s in samples.items()}
    result[f"torch_k{k_steps}"] = _stats(k_samples)
    result["speedup"] = round(result["torch"]["median_ms"] / result["onnxruntime"]["median_ms"], 3)
    result["machine"] = machine_description()
    result["providers"] = rt.providers
    result["threads"] = threads
    result["onnxruntime_options"] = {
        "spinning": spinning,
        "disabled_optimizers": list(DISABLED_OPTIMIZERS),
        "fused_attention_nodes": sum(
            n.op_type == "Attention" for n in _graph_nodes(Path(model_dir) / "model.onnx")
        ),
    }
    result["parameters"] = card.parameters
    result["model_dir"] = str(Path(model_dir))
    result["torch_weights"] = torch_weights
    if checkpoint_dir:
        result["max_abs_diff"] = float(
            np.max(np.abs(rt.predict(images, proprio, noise) - trt.predict(images, proprio, noise)))
        )
    return result
