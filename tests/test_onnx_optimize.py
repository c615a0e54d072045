"""Export-time ONNX rewrites (dm1.onnx_optimize): each keeps the function and fires only on its pattern."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dm1.network import Attention
from dm1.onnx_optimize import MS_DOMAIN, optimize_graph


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), args, buf, dynamo=False, opset_version=18, input_names=["x"], output_names=["y"]
        )
    return onnx.load_from_string(buf.getvalue())


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


class ScaledConv(torch.nn.Module):
    """uint8 image → [-0.5, 0.5] → conv, like `dm1.network.preprocess_image` + the patchifier."""

    def __init__(self, padding: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=4, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, H, W, 3) uint8
        return self.conv(x.permute(0, 3, 1, 2).float() / 255.0 - 0.5)


def test_image_scaling_is_folded_into_an_unpadded_conv() -> None:
    x = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    model = _export(ScaledConv(padding=0), (torch.from_numpy(x),))
    expected = _run(model, x)
    stats = optimize_graph(model)
    onnx.checker.check_model(model, full_check=True)
    assert stats["fold_input_scaling"] == 1
    assert "Div" not in _ops(model) and "Sub" not in _ops(model)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert next(n for n in model.graph.node if conv.input[0] in n.output).op_type == "Cast"
    np.testing.assert_allclose(_run(model, x), expected, atol=1e-5, rtol=0)


def test_padded_conv_is_not_folded() -> None:
    """Zero padding is not shifted by the affine map, so folding would change the border outputs."""
    x = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    model = _export(ScaledConv(padding=1), (torch.from_numpy(x),))
    before = _ops(model)
    assert optimize_graph(model, ["fold_input_scaling"])["fold_input_scaling"] == 0
    assert [op for op in _ops(model) if op != "Constant"] == [op for op in before if op != "Constant"]


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_hand_written_attention_becomes_one_fused_node(heads: int) -> None:
    torch.manual_seed(heads)
    attn = Attention(32, heads)
    x = np.random.default_rng(heads).standard_normal((1, 9, 32)).astype(np.float32)
    model = _export(attn, (torch.from_numpy(x),))
    stats = optimize_graph(model)
    onnx.checker.check_model(model, full_check=True)
    assert stats["fuse_attention"] == 1
    fused = [n for n in model.graph.node if n.op_type == "Attention"]
    assert len(fused) == 1 and fused[0].domain == MS_DOMAIN
    assert not {"Softmax", "Gather", "Transpose"} & set(_ops(model))
    assert any(o.domain == MS_DOMAIN for o in model.opset_import)
    with torch.inference_mode():
        reference = attn(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(_run(model, x) - reference)) <= 1e-5


class NotQuiteAttention(Attention):
    """Same ops, but softmax over the query axis: not attention as onnxruntime computes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-2)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


def test_a_different_pattern_is_left_alone() -> None:
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 9, 32)).astype(np.float32)
    model = _export(NotQuiteAttention(32, 2), (torch.from_numpy(x),))
    expected = _run(model, x)
    assert optimize_graph(model)["fuse_attention"] == 0
    assert "Softmax" in _ops(model) and "Attention" not in _ops(model)
    np.testing.assert_array_equal(_run(model, x), expected)
