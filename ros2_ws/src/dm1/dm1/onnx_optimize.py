"""Export-time ONNX graph rewrites for batch-1 CPU latency (onnx + numpy only; no torch, no onnxruntime).

`optimize_graph(model)` rewrites the traced `DM1Policy` graph into an equivalent one that onnxruntime runs
faster, and reports how often each rewrite applied. `dm1.export` applies it before the parity check, so the
published `model.onnx` is still verified against torch (max abs diff <= tolerance) and its hash is the one in
the card. Rewrites that find no match leave the graph untouched, so any architecture still exports.

- `fold_input_scaling`: Cast(uint8 → float) → Div(255) → Sub(0.5) → Conv becomes Cast → Conv with the affine
  map folded into the (unpadded) convolution's weights and bias: two full-image passes fewer per camera.
- `fuse_attention`: the hand-written attention of `dm1.network.Attention` (MatMul + Add → Reshape →
  Transpose → 3×Gather → Q·Kᵀ → scale → Softmax → ·V → Transpose → Reshape) becomes one onnxruntime
  `com.microsoft.Attention` node (QKV projection with pre-packed weights, per-head softmax(QKᵀ·s)V). It
  replaces ~14 nodes per camera whose reshapes/transposes/splits cost more than their arithmetic at batch 1.
  onnxruntime's own layout/fusion passes (SkipLayerNormalization, Gelu, MatMul+Add → Gemm, NCHWc conv) run
  at session load (`ORT_ENABLE_ALL`) and are deliberately not baked in: they are hardware-specific.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


class _Graph:
    """Index over a graph: producer/consumers of every tensor and constant values (initializers, Constant)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.reindex()

    def reindex(self) -> None:
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)
        self.inits = {i.name: i for i in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer or Constant-node output, else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
        return None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The single node reading `name` (None if several, none, or it is a graph output)."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def node_by_output(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        """Add a new initializer with a name not used yet; returns the name."""
        used = set(self.inits) | set(self.producer) | {i.name for i in self.graph.input}
        base, k = name, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _scalar(value: np.ndarray | None) -> float | None:
    return float(value.reshape(())) if value is not None and value.size == 1 else None


def _affine_step(g: _Graph, node: onnx.NodeProto) -> tuple[str, float, float] | None:
    """(input, a, b) when `node` computes a*input + b with scalar constants (Div, Mul, Sub, Add)."""
    if node.op_type not in ("Div", "Mul", "Sub", "Add") or len(node.input) != 2:
        return None
    x, c = node.input
    value = _scalar(g.const(c))
    if value is None:
        if node.op_type in ("Mul", "Add") and _scalar(g.const(x)) is not None:
            x, value = c, _scalar(g.const(x))
        else:
            return None
    if node.op_type == "Div":
        return (x, 1.0 / value, 0.0) if value != 0.0 else None
    return {"Mul": (x, value, 0.0), "Sub": (x, 1.0, -value), "Add": (x, 1.0, value)}[node.op_type]


def fold_input_scaling(g: _Graph) -> int:
    """Fold scalar affine steps in front of an unpadded Conv into its weights/bias; returns folds made."""
    folds = 0
    for conv in list(g.graph.node):
        if conv.op_type != "Conv" or len(conv.input) < 2:
            continue
        w = g.const(conv.input[1])
        b = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        unpadded = all(int(p) == 0 for p in _attr(conv, "pads", [0])) and _attr(
            conv, "auto_pad", b"NOTSET"
        ) in (b"NOTSET", b"VALID")
        if w is None or not unpadded:
            continue  # zero padding is not shifted by the affine map: folding would be inexact
        a_total, b_total, removed, x = 1.0, 0.0, [], conv.input[0]
        while (node := g.producer.get(x)) is not None and g.only_consumer(x) is not None:
            step = _affine_step(g, node)
            if step is None:
                break
            x, a, c = step
            # conv(a_total*(a*x + c) + b_total) == conv(a_total*a*x + (a_total*c + b_total))
            a_total, b_total = a_total * a, a_total * c + b_total
            removed.append(node)
        if not removed:
            continue
        w64 = w.astype(np.float64)
        bias = (b.astype(np.float64) if b is not None else np.zeros(w.shape[0])) + b_total * w64.sum(
            axis=tuple(range(1, w.ndim))
        )
        new_w = g.add_initializer(f"{conv.input[1]}_folded", (w64 * a_total).astype(w.dtype))
        new_b = g.add_initializer(f"{conv.name or 'conv'}_bias_folded", bias.astype(w.dtype))
        conv.input[0] = x
        del conv.input[1:]
        conv.input.extend([new_w, new_b])
        for node in removed:
            g.graph.node.remove(node)
        g.reindex()
        folds += 1
    return folds


def _perm(node: onnx.NodeProto | None) -> list[int] | None:
    return list(_attr(node, "perm", [])) if node is not None and node.op_type == "Transpose" else None


def _match_attention(g: _Graph, softmax: onnx.NodeProto) -> dict[str, object] | None:
    """Walk back/forward from a Softmax over the `dm1.network.Attention` pattern; None if it differs."""
    if softmax.op_type != "Softmax" or int(_attr(softmax, "axis", -1)) not in (-1, 3):
        return None
    mul = g.producer.get(softmax.input[0])
    step = _affine_step(g, mul) if mul is not None and mul.op_type in ("Mul", "Div") else None
    scale = step[1] if step is not None else None
    qk = g.node_by_output(step[0], "MatMul") if step is not None else None
    av = g.only_consumer(softmax.output[0])
    if (
        scale is None
        or qk is None
        or av is None
        or av.op_type != "MatMul"
        or av.input[0] != softmax.output[0]
    ):
        return None
    k_t = g.node_by_output(qk.input[1], "Transpose")
    gathers = [
        g.node_by_output(qk.input[0], "Gather"),
        g.node_by_output(k_t.input[0], "Gather") if k_t else None,
    ]
    gathers.append(g.node_by_output(av.input[1], "Gather"))
    if _perm(k_t) != [0, 1, 3, 2] or any(n is None or int(_attr(n, "axis", 0)) != 0 for n in gathers):
        return None
    if [_scalar(g.const(n.input[1])) for n in gathers] != [0.0, 1.0, 2.0]:
        return None
    split = g.node_by_output(gathers[0].input[0], "Transpose")
    if _perm(split) != [2, 0, 3, 1, 4] or any(n.input[0] != split.output[0] for n in gathers):
        return None
    reshape = g.node_by_output(split.input[0], "Reshape")
    shape5 = g.const(reshape.input[1]) if reshape is not None else None
    add = g.node_by_output(reshape.input[0], "Add") if reshape is not None else None
    if shape5 is None or shape5.shape != (5,) or add is None or int(shape5[2]) != 3:
        return None
    mm, bias = None, None
    for i in (0, 1):
        cand, bias = g.node_by_output(add.input[i], "MatMul"), g.const(add.input[1 - i])
        if cand is not None and bias is not None:
            mm = cand
            break
    weight = g.const(mm.input[1]) if mm is not None else None
    heads, head_dim = int(shape5[3]), int(shape5[4])
    hidden = heads * head_dim
    if weight is None or weight.shape[-1:] != (3 * hidden,) or weight.ndim != 2 or bias is None:
        return None
    if bias.shape != (3 * hidden,) or g.only_consumer(mm.output[0]) is not add:
        return None
    merge = g.only_consumer(av.output[0])
    out = g.only_consumer(merge.output[0]) if _perm(merge) == [0, 2, 1, 3] else None
    out_shape = g.const(out.input[1]) if out is not None and out.op_type == "Reshape" else None
    if out_shape is None or out_shape.shape != (3,) or int(out_shape[2]) not in (hidden, -1):
        return None
    # every intermediate must feed only this pattern (it is removed as a whole)
    inner = [mm, add, reshape, split, *gathers, k_t, qk, mul, softmax, av, merge]
    for node in inner:
        for o in node.output:
            users = g.consumers.get(o, [])
            if o in g.outputs or any(u not in inner and u is not out for u in users):
                return None
    return {
        "input": mm.input[0], "weight": weight, "bias": bias, "heads": heads, "scale": scale,
        "output": out.output[0], "nodes": [*inner, out], "name": mm.name,
    }  # fmt: skip


def fuse_attention(g: _Graph) -> int:
    """Replace each matched hand-written attention by one `com.microsoft.Attention`; returns fusions made."""
    fused = 0
    for softmax in [n for n in g.graph.node if n.op_type == "Softmax"]:
        m = _match_attention(g, softmax)
        if m is None:
            continue
        prefix = str(m["name"]).rsplit("/qkv", 1)[0] or f"attention_{fused}"
        w = g.add_initializer(f"{prefix}/Attention.weight", m["weight"])  # (C, 3C): Q | K | V, head-major
        b = g.add_initializer(f"{prefix}/Attention.bias", m["bias"])
        node = helper.make_node(
            "Attention",
            [str(m["input"]), w, b],
            [str(m["output"])],
            name=f"{prefix}/Attention",
            domain=MS_DOMAIN,
            num_heads=int(m["heads"]),  # type: ignore[call-overload]
            scale=float(m["scale"]),  # type: ignore[arg-type]
        )
        nodes: list[onnx.NodeProto] = m["nodes"]  # type: ignore[assignment]
        index = min(list(g.graph.node).index(n) for n in nodes)
        for n in nodes:
            g.graph.node.remove(n)
        g.graph.node.insert(index, node)
        g.reindex()
        fused += 1
    if fused and not any(o.domain == MS_DOMAIN for o in g.model.opset_import):
        g.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return fused


def remove_unused(g: _Graph) -> int:
    """Drop nodes whose outputs nobody reads and initializers no node reads; returns nodes removed."""
    removed = 0
    while True:
        dead = [
            n for n in g.graph.node if all(o not in g.outputs and not g.consumers.get(o) for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            g.graph.node.remove(n)
        removed += len(dead)
        g.reindex()
    unused = [i for i in g.graph.initializer if i.name not in g.consumers]
    for init in unused:
        g.graph.initializer.remove(init)
    g.reindex()
    return removed


PASSES = {"fold_input_scaling": fold_input_scaling, "fuse_attention": fuse_attention}


def optimize_graph(model: onnx.ModelProto, passes: Iterable[str] | None = None) -> dict[str, int]:
    """Apply the rewrites (all by default) to `model` in place; returns {rewrite: times applied}."""
    g = _Graph(model)
    stats: Counter[str] = Counter()
    for name in passes if passes is not None else PASSES:
        stats[name] += PASSES[name](g)
    stats["removed_unused_nodes"] = remove_unused(g)
    return dict(stats)
