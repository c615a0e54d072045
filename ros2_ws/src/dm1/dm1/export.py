"""Export a training checkpoint to a model directory: `model.onnx` + `model_card.json` (torch side).

The exported graph is `DM1Policy.forward`: the one-step MeanFlow sampler with t = 1, r = 0 baked in, EMA
weights, eval mode (no dropout, no augmentation), min-max normalisation of proprio and de-normalisation +
clipping of actions inside the graph. ONNX I/O (docs/architecture.md): inputs `image_<camera>` (1, H, W, 3)
uint8, `proprio` (1, P) float32, `noise` (1, Ta, Da) float32; output `actions` (1, Ta, Da) float32.

The traced graph is then rewritten for batch-1 CPU latency (`dm1.onnx_optimize`: image scaling folded into
the first convolution, hand-written attention fused into onnxruntime's `Attention`; `optimize=False` /
`--no-optimize` keeps the plain opset graph). The export is verified before it is published: `onnx.checker`,
then the runtime that the robot uses
(`dm1.runtime.PolicyRuntime`, which re-checks hash and I/O against the card) against torch on random inputs;
any difference above `tolerance` fails the export. Files are written to a hidden temporary directory and
renamed into place, so a failed export leaves nothing under the final name.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dm1.checkpoint import Checkpoint, load_checkpoint
from dm1.config import TrainConfig
from dm1.modelcard import CARD_FILENAME, ONNX_FILENAME, ActionSpec, CameraSpec, ModelCard, ProprioSpec
from dm1.network import DM1Network, DM1Policy, count_parameters
from dm1.paths import file_sha256
from dm1.proprio import proprio_dims, proprio_units
from dm1.runtime import PolicyRuntime

DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
TOP_DOWN_XYZW = [1.0, 0.0, 0.0, 0.0]
#: Action schema used when neither the checkpoint nor the dataset records one (docs/architecture.md).
DEFAULT_SCHEMAS: dict[int, dict[str, Any]] = {
    4: {
        "action_space": "ee_position",
        "action_names": ["x", "y", "z", "gripper"],
        "units": ["m", "m", "m", "1"],
    },
    8: {
        "action_space": "joint_position",
        "action_names": [f"fr3_joint{i}" for i in range(1, 8)] + ["gripper"],
        "units": ["rad"] * 7 + ["1"],
    },
}
DEFAULT_CONTROL_RATE_HZ = 20.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ExportError(RuntimeError):
    """The export failed (unsupported config, invalid graph, ONNX/torch mismatch); nothing was published."""


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` produced and measured."""

    path: Path
    max_abs_diff: float
    parameters: int
    seconds: float
    rewrites: dict[str, int] = field(default_factory=dict)


class OnnxPolicy(nn.Module):
    """Positional-argument wrapper so the traced graph gets the contract's input names, in card order."""

    def __init__(self, policy: DM1Policy, camera_names: list[str]) -> None:
        super().__init__()
        self.policy = policy
        self.camera_names = list(camera_names)

    def forward(self, *inputs: Tensor) -> Tensor:
        """inputs: image per camera (1, H, W, 3) uint8, proprio (1, P), noise (1, Ta, Da) → (1, Ta, Da)."""
        n = len(self.camera_names)
        images = dict(zip(self.camera_names, inputs[:n], strict=True))
        return self.policy(images, inputs[n], inputs[n + 1])


def build_policy(ckpt: Checkpoint) -> DM1Policy:
    """Rebuild the eval-mode `DM1Policy` (EMA weights + normalisers) from a loaded checkpoint."""
    cfg = ckpt.train_config
    net = DM1Network(cfg.model)
    state = dict(ckpt.model_state)
    expected = set(net.state_dict())
    if not expected <= set(state) and all(k.startswith("net.") for k in state):
        state = {k[len("net.") :]: v for k, v in state.items()}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    where = f"{ckpt.path}: model.safetensors does not fit DM1Network(train_config.model)"
    if missing or unexpected:
        raise ExportError(f"{where}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        lines = [ln.strip() for ln in str(exc).splitlines()[1:4]]
        raise ExportError(f"{where}: {'; '.join(lines)}") from None
    for key in ("proprio", "action"):
        if key not in ckpt.normalizers:
            raise ExportError(
                f"{ckpt.path}: checkpoint.json normalizers: expected key {key!r}, found "
                f"{sorted(ckpt.normalizers)}"
            )
    return DM1Policy.from_normalizers(
        net.eval(), ckpt.normalizers["proprio"], ckpt.normalizers["action"]
    ).eval()


def action_schema(ckpt: Checkpoint) -> dict[str, Any]:
    """Action space, names, units, frame, rate: checkpoint extra JSON, else the dataset, else defaults."""
    cfg = ckpt.train_config
    da = cfg.model.action_dim
    schema: dict[str, Any] = {}
    for key in ("dataset_schema", "schema", "dataset"):
        if isinstance(ckpt.extra.get(key), dict):
            schema = dict(ckpt.extra[key])
            break
    if not schema:
        schema = _schema_from_dataset(Path(cfg.data.dataset_dir))
    default = DEFAULT_SCHEMAS.get(da, {})
    space = schema.get("action_space", default.get("action_space"))
    names = list(schema.get("action_names") or default.get("action_names") or [f"a{i}" for i in range(da)])
    units = schema.get("units")
    if isinstance(units, dict):
        units = units.get("actions")
    if not isinstance(units, list) or len(units) != len(names):
        units = default.get("units") if len(default.get("units", [])) == len(names) else ["1"] * len(names)
    if space is None or len(names) != da:
        raise ExportError(
            f"{ckpt.path}: action schema: expected {da} action names (model.action_dim) and an action space, "
            f"found space={space!r}, names={names}"
        )
    return {
        "space": space,
        "names": names,
        "units": list(units),
        "frame": schema.get("frame", "fr3_link0"),
        "control_rate_hz": float(schema.get("control_rate_hz", DEFAULT_CONTROL_RATE_HZ)),
        "orientation_xyzw": schema.get("orientation_xyzw", TOP_DOWN_XYZW if space == "ee_position" else None),
    }


def _schema_from_dataset(dataset_dir: Path) -> dict[str, Any]:
    """Attributes of the first episode of the training dataset, when it is still on disk."""
    episodes = sorted(dataset_dir.glob("episode_*.h5")) if dataset_dir.is_dir() else []
    if not episodes:
        return {}
    from dm1.data.episode import read_episode

    ep = read_episode(episodes[0], load_images=False)
    return {
        "action_space": ep.action_space,
        "action_names": list(ep.action_names),
        "units": ep.units,
        "frame": ep.frame,
        "control_rate_hz": ep.control_rate_hz,
    }


def build_card(ckpt: Checkpoint, name: str, onnx_sha256: str, parameters: int) -> ModelCard:
    """The model card for a checkpoint's policy (schema per `action_schema`)."""
    cfg: TrainConfig = ckpt.train_config
    h, w = cfg.model.image_size
    keys = list(cfg.data.proprio_keys)
    a = action_schema(ckpt)
    return ModelCard(
        name=name,
        cameras=[CameraSpec(c, (h, w, 3)) for c in cfg.model.camera_names],
        proprio=ProprioSpec(keys=keys, dims=proprio_dims(keys), units=proprio_units(keys)),
        noise_shape=(cfg.model.chunk_length, cfg.model.action_dim),
        action=ActionSpec(chunk_length=cfg.model.chunk_length, **a),
        onnx_sha256=onnx_sha256,
        normalization={k: v.to_dict() for k, v in ckpt.normalizers.items()},
        training_config=cfg.to_dict(),
        dataset_sha256=ckpt.dataset_sha256 if _SHA256.match(ckpt.dataset_sha256 or "") else None,
        parameters=parameters,
    )


def random_inputs(card: ModelCard, proprio_lo: np.ndarray, proprio_hi: np.ndarray, seed: int):
    """Random observation in the runtime's format: ({camera: (H, W, 3) u8}, proprio (P,), noise (Ta, Da))."""
    rng = np.random.default_rng(seed)
    images = {c.name: rng.integers(0, 256, c.shape, dtype=np.uint8) for c in card.cameras}
    proprio = rng.uniform(proprio_lo, proprio_hi).astype(np.float32)  # (P,)
    noise = rng.standard_normal(card.noise_shape).astype(np.float32)  # (Ta, Da)
    return images, proprio, noise


def torch_predict(policy: DM1Policy, images: dict[str, np.ndarray], proprio: np.ndarray, noise: np.ndarray):
    """Reference one-step prediction in torch for one observation → (Ta, Da) numpy."""
    with torch.inference_mode():
        imgs = {k: torch.from_numpy(v)[None] for k, v in images.items()}
        out = policy(imgs, torch.from_numpy(proprio)[None], torch.from_numpy(noise)[None])  # (1, Ta, Da)
    return out[0].numpy()


def export_model(
    checkpoint_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
    verify_samples: int = 4,
    optimize: bool = True,
) -> ExportResult:
    """Export, verify and publish; see the module docstring. Raises `ExportError` (or `CheckpointError`)."""
    start = time.monotonic()
    out = Path(out_dir)
    _check_replaceable(out, overwrite)
    ckpt = load_checkpoint(checkpoint_dir)
    cfg = ckpt.train_config
    if cfg.objective != "meanflow":
        raise ExportError(
            f"{ckpt.path}: train_config.objective: expected 'meanflow' (the ONNX graph is the one-step "
            f"u(eps, t=1, r=0) policy), found {cfg.objective!r}; evaluate flow-matching runs with K-step "
            "sampling via `dm1 ablate`"
        )
    if cfg.model.obs_history != 1:
        raise ExportError(
            f"{ckpt.path}: train_config.model.obs_history: expected 1 (the ONNX contract takes one frame), "
            f"found {cfg.model.obs_history}"
        )
    policy = build_policy(ckpt)
    parameters = count_parameters(policy.net)
    cams = list(cfg.model.camera_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        p_norm = ckpt.normalizers["proprio"]
        draft = build_card(ckpt, name or out.name, "0" * 64, parameters)
        images, proprio, noise = random_inputs(draft, p_norm.min, p_norm.max, seed=0)
        args = (
            *(torch.from_numpy(images[c])[None] for c in cams),
            torch.from_numpy(proprio)[None],
            torch.from_numpy(noise)[None],
        )
        onnx_path = tmp / ONNX_FILENAME
        _trace_to_onnx(OnnxPolicy(policy, cams).eval(), args, onnx_path, cams, opset)
        rewrites = _optimize_onnx(onnx_path) if optimize else {}
        card = build_card(ckpt, name or out.name, file_sha256(onnx_path), parameters)
        card.save(tmp / CARD_FILENAME)
        max_diff = _verify(tmp, policy, card, p_norm.min, p_norm.max, verify_samples, tolerance)
        _publish(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, max_diff, parameters, time.monotonic() - start, rewrites)


def export_onnx(
    checkpoint_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> Path:
    """Export a checkpoint to `out_dir/{model.onnx, model_card.json}` and return `out_dir`."""
    return export_model(checkpoint_dir, out_dir, name=name, opset=opset, overwrite=overwrite).path


def _trace_to_onnx(
    module: nn.Module, args: tuple[Tensor, ...], path: Path, cams: list[str], opset: int
) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notices
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[f"image_{c}" for c in cams] + ["proprio", "noise"],
                output_names=["actions"],
                do_constant_folding=True,
            )
        except Exception as exc:  # e.g. an opset torch cannot write (5, 99): one line, not a torch traceback
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"torch.onnx.export failed (--opset {opset}): {why}") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name}: onnx.checker rejected the exported graph: {exc}") from exc


def _optimize_onnx(path: Path) -> dict[str, int]:
    """Apply `dm1.onnx_optimize.optimize_graph` to the file in place and re-check it; returns the rewrites."""
    import onnx

    from dm1.onnx_optimize import optimize_graph

    model = onnx.load(str(path))
    rewrites = optimize_graph(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name}: onnx.checker rejected the optimized graph: {exc}") from exc
    onnx.save(model, str(path))
    return rewrites


def _verify(
    model_dir: Path,
    policy: DM1Policy,
    card: ModelCard,
    lo: np.ndarray,
    hi: np.ndarray,
    samples: int,
    tol: float,
) -> float:
    """Max |onnxruntime − torch| over `samples` random observations; raises `ExportError` above `tol`."""
    rt = PolicyRuntime.load(model_dir, providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed in range(1, samples + 1):
        images, proprio, noise = random_inputs(card, lo, hi, seed)
        diff = float(
            np.max(np.abs(rt.predict(images, proprio, noise) - torch_predict(policy, images, proprio, noise)))
        )
        worst = max(worst, diff)
    if not worst <= tol:
        raise ExportError(
            f"ONNX vs torch: expected max abs diff <= {tol:g}, found {worst:.3g}; export not published"
        )
    return worst


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """Raise `ExportError` unless `out` is absent, or is an earlier export (or empty) and `overwrite` is set:
    `--force` replaces a model directory, never a dataset, a checkpoint or a file put there by mistake."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise ExportError(
            f"{out}: already exists (`dm1 export --force`, or overwrite=True, replaces an earlier export)"
        )
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"{out}: expected an earlier export directory to replace, found a file")
    others = sorted(p.name for p in out.iterdir() if p.name not in (ONNX_FILENAME, CARD_FILENAME))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ExportError(
            f"{out}: expected an earlier export to replace ({ONNX_FILENAME}, {CARD_FILENAME} only), "
            f"found {shown}; nothing was replaced: choose another output directory"
        )


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temporary directory to `out` (replacing an old export only when allowed)."""
    if out.exists():
        _check_replaceable(out, overwrite)  # again: the directory may have changed during the export
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
