"""A tiny model directory (model.onnx + model_card.json) built with onnx.helper: fast, no torch, real runtime.

The graph follows the contract's ONNX I/O. Its output is deterministic and easy to assert on:
``actions[0, i, :] = base[i] + noise_scale * noise[0, i, :]`` (+ NaN everywhere when ``nan=True``), where
``base[i] = (0.4 + 0.01 i, 0.0, 0.3, 0.0)`` for `ee_position` and ``(0.1 i, 0, ..., 0)`` for `joint_position`.
Images and proprio feed the graph through a zero-weighted mean so that every input is used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from dm1.modelcard import ActionSpec, CameraSpec, ModelCard, ProprioSpec
from dm1.proprio import proprio_dims, proprio_units
from onnx import TensorProto, helper, numpy_helper

EE_NAMES = ["x", "y", "z", "gripper"]
JOINT_NAMES = [f"fr3_joint{i}" for i in range(1, 8)] + ["gripper"]


def toy_base(space: str, chunk_length: int) -> np.ndarray:
    """The noise-free output of the toy model (Ta, Da)."""
    if space == "ee_position":
        base = np.zeros((chunk_length, 4), np.float32)
        base[:, 0] = 0.4 + 0.01 * np.arange(chunk_length)
        base[:, 2] = 0.3
        return base
    base = np.zeros((chunk_length, 8), np.float32)
    base[:, 0] = 0.1 * np.arange(chunk_length)
    return base


def build_toy_model(
    out_dir: Path,
    cameras: dict[str, tuple[int, int, int]] | None = None,
    proprio_keys: tuple[str, ...] = ("ee_pos", "ee_quat_xyzw", "gripper_width"),
    space: str = "ee_position",
    chunk_length: int = 8,
    control_rate_hz: float = 10.0,
    noise_scale: float = 0.0,
    nan: bool = False,
) -> Path:
    """Write `out_dir/{model.onnx, model_card.json}` and return `out_dir`."""
    cameras = cameras or {"front": (24, 32, 3), "wrist": (24, 32, 3)}
    out_dir.mkdir(parents=True, exist_ok=True)
    dims = proprio_dims(proprio_keys)
    names = EE_NAMES if space == "ee_position" else JOINT_NAMES
    ta, da, p = chunk_length, len(names), sum(dims)
    inputs = [
        helper.make_tensor_value_info(f"image_{n}", TensorProto.UINT8, [1, *s]) for n, s in cameras.items()
    ]
    inputs += [
        helper.make_tensor_value_info("proprio", TensorProto.FLOAT, [1, p]),
        helper.make_tensor_value_info("noise", TensorProto.FLOAT, [1, ta, da]),
    ]
    base = toy_base(space, ta)[None] + (np.float32(np.nan) if nan else np.float32(0.0))  # (1, Ta, Da)
    inits = [
        numpy_helper.from_array(base.astype(np.float32), "base"),
        numpy_helper.from_array(np.array(noise_scale, np.float32), "scale"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Mul", ["noise", "scale"], ["scaled"]),
        helper.make_node("Add", ["base", "scaled"], ["a0"]),
    ]
    last = "a0"
    for i, n in enumerate([*cameras, "proprio"]):
        src = "proprio" if n == "proprio" else f"image_{n}"
        if n != "proprio":
            nodes.append(helper.make_node("Cast", [src], [f"f{i}"], to=TensorProto.FLOAT))
            src = f"f{i}"
        nodes += [
            helper.make_node("ReduceMean", [src], [f"m{i}"], keepdims=0),
            helper.make_node("Mul", [f"m{i}", "zero"], [f"z{i}"]),
            helper.make_node("Add", [last, f"z{i}"], [f"a{i + 1}"]),
        ]
        last = f"a{i + 1}"
    nodes.append(helper.make_node("Identity", [last], ["actions"]))
    out = [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, ta, da])]
    graph = helper.make_graph(nodes, "toy_policy", inputs, out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    (out_dir / "model.onnx").write_bytes(data)
    card = ModelCard(
        name="toy",
        cameras=[CameraSpec(n, s) for n, s in cameras.items()],
        proprio=ProprioSpec(keys=list(proprio_keys), dims=dims, units=proprio_units(proprio_keys)),
        noise_shape=(ta, da),
        action=ActionSpec(
            space,
            list(names),
            ["m", "m", "m", "1"] if space == "ee_position" else ["rad"] * 7 + ["1"],
            "fr3_link0",
            ta,
            control_rate_hz,
            [1.0, 0.0, 0.0, 0.0] if space == "ee_position" else None,
        ),
        onnx_sha256=hashlib.sha256(data).hexdigest(),
    )
    card.save(out_dir)
    return out_dir


def corrupt_copy(model: Path, dst: Path) -> Path:
    """A copy of `model` whose ONNX is cut off mid-file; the card's hash is updated to match, so only
    onnxruntime can reject it."""
    import json
    import shutil

    shutil.copytree(model, dst)
    garbage = (dst / "model.onnx").read_bytes()[:200] + b"\x00garbage"
    (dst / "model.onnx").write_bytes(garbage)
    card = json.loads((dst / "model_card.json").read_text())
    card["onnx_sha256"] = hashlib.sha256(garbage).hexdigest()
    (dst / "model_card.json").write_text(json.dumps(card))
    return dst
