"""The inference graph of a DB model: the same function in fewer, cheaper operators.

Paddle's exporter writes PPLCNetV3's activations and its learnable affine blocks (a scalar
scale and bias after a convolution or an activation) as chains of elementwise operators:

    hardswish(x)        Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(., 6)
    affine(conv(x))     Conv -> Mul(scale) -> Add(bias)
    conv1x1(affine(y))  Mul(y, scale) -> Add(bias) -> Conv 1x1

Each elementwise operator is a full pass over a feature map, and on the CPU each breaks ONNX
Runtime's blocked (NCHWc) layout, so the maps are reordered around it. `inference_graph`
rewrites the three patterns exactly: one HardSwish operator (opset 14), the affine folded into
the convolution's weights and bias before it, or into the 1x1 convolution after it (no
padding, so the bias folds exactly). Outputs agree to float rounding (~1e-6); on 2 CPU cores
a 704 x 1024 frame takes ~1.3x less time (docs/BENCHMARKS.md). The export (`seg.write_onnx`,
used by seg.py and look.py) writes the trained weights into the source graph and then rewrites
it; running it again finds nothing left to rewrite.

    python training/plates/graph.py IN.onnx OUT.onnx     # rewrite an exported model
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

OPSET = 14  # HardSwish


class _Graph:
    """Lookups over one graph: producers, consumers, scalar initializers and constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.graph = g
        self.inits = {t.name: t for t in g.initializer}
        self.constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
                          for n in g.node if n.op_type == "Constant" and n.attribute}
        self.producer = {o: n for n in g.node for o in n.output}
        self.users: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}

    def array(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        return self.constants.get(name)

    def scalar(self, name: str) -> float | None:
        value = self.array(name)
        return float(value.reshape(())) if value is not None and value.size == 1 else None

    def only_user(self, name: str, op_type: str):
        users = self.users.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type and name not in self.outputs:
            return users[0]
        return None

    def set_array(self, name: str, value: np.ndarray) -> None:
        self.inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    def add_array(self, name: str, value: np.ndarray) -> str:
        self.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        self.inits[name] = self.graph.initializer[-1]
        return name


def _scalar_operand(graph: _Graph, node, other: str) -> float | None:
    """The scalar `node` combines `other` with (its second operand), None if it has none."""
    rest = [i for i in node.input if i != other]
    return graph.scalar(rest[0]) if len(node.input) == 2 and len(rest) == 1 else None


def _replace(graph: onnx.GraphProto, drop: set[int], insert: dict[int, list]) -> None:
    nodes = []
    for n in graph.node:
        nodes += insert.get(id(n), [])
        if id(n) not in drop:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)


def fuse_hardswish(model: onnx.ModelProto) -> int:
    """x * clip(x + 3, 0, 6) / 6 as one HardSwish operator; the number fused."""
    g = _Graph(model)
    drop: set[int] = set()
    insert: dict[int, list] = {}
    for clip in g.graph.node:
        if clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        if g.scalar(clip.input[1]) != 0.0 or g.scalar(clip.input[2]) != 6.0:
            continue
        add = g.producer.get(clip.input[0])
        if add is None or add.op_type != "Add" or len(add.input) != 2:
            continue
        x = next((i for i in add.input if g.scalar(i) != 3.0), None)
        if x is None or _scalar_operand(g, add, x) != 3.0 or g.only_user(add.output[0], "Clip") is None:
            continue
        mul = g.only_user(clip.output[0], "Mul")
        if mul is None or sorted(mul.input) != sorted([x, clip.output[0]]):
            continue
        div = g.only_user(mul.output[0], "Div")
        if div is None or div.input[0] != mul.output[0] or g.scalar(div.input[1]) != 6.0:
            continue
        drop |= {id(add), id(clip), id(mul), id(div)}
        insert[id(div)] = [helper.make_node("HardSwish", [x], [div.output[0]], name=f"{div.name}.hardswish")]
    _replace(g.graph, drop, insert)
    return len(insert)


def fold_affine_after_conv(model: onnx.ModelProto) -> int:
    """Conv -> Mul(scale) [-> Add(bias)] as the Conv alone, scaled; the number folded."""
    g = _Graph(model)
    drop: set[int] = set()
    count = 0
    for conv in g.graph.node:
        if conv.op_type != "Conv" or len(g.users.get(conv.input[1], [])) != 1:
            continue
        mul = g.only_user(conv.output[0], "Mul")
        scale = _scalar_operand(g, mul, conv.output[0]) if mul is not None else None
        if scale is None:
            continue
        chain, shift = [mul], 0.0
        add = g.only_user(mul.output[0], "Add")
        if add is not None and _scalar_operand(g, add, mul.output[0]) is not None:
            chain.append(add)
            shift = _scalar_operand(g, add, mul.output[0])
        weight = g.array(conv.input[1]).astype(np.float64)
        has_bias = len(conv.input) > 2 and conv.input[2]
        bias = g.array(conv.input[2]).astype(np.float64) if has_bias else np.zeros(weight.shape[0])
        if has_bias and len(g.users[conv.input[2]]) != 1:
            continue
        g.set_array(conv.input[1], weight * scale)
        name = conv.input[2] if has_bias else g.add_array(f"{conv.name}.bias", bias)
        g.set_array(name, bias * scale + shift)
        while len(conv.input) < 3:
            conv.input.append("")
        conv.input[2] = name
        conv.output[0] = chain[-1].output[0]
        drop |= {id(n) for n in chain}
        count += 1
    _replace(g.graph, drop, {})
    return count


def fold_affine_into_pointwise(model: onnx.ModelProto) -> int:
    """Mul(y, scale) -> Add(bias) read only by 1x1 convolutions without padding: folded into
    them (w' = w * scale, b' = b + bias * sum(w)); the number folded."""
    g = _Graph(model)
    drop: set[int] = set()

    def pointwise(conv, source: str) -> bool:
        if conv.op_type != "Conv" or conv.input[0] != source or len(g.users.get(conv.input[1], [])) != 1:
            return False
        attrs = {a.name: a for a in conv.attribute}
        if "pads" in attrs and any(attrs["pads"].ints) or "group" in attrs and attrs["group"].i != 1:
            return False
        if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"", b"NOTSET", b"VALID"):
            return False
        if len(conv.input) > 2 and conv.input[2] and len(g.users[conv.input[2]]) != 1:
            return False
        return g.array(conv.input[1]).shape[2:] == (1, 1)

    count = 0
    for mul in g.graph.node:
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        scalars = [i for i in mul.input if g.scalar(i) is not None]
        if len(scalars) != 1:
            continue
        y = next(i for i in mul.input if i != scalars[0])
        add = g.only_user(mul.output[0], "Add")
        shift = _scalar_operand(g, add, mul.output[0]) if add is not None else None
        if shift is None or add.output[0] in g.outputs:
            continue
        convs = g.users.get(add.output[0], [])
        if not convs or not all(pointwise(c, add.output[0]) for c in convs):
            continue
        scale = g.scalar(scalars[0])
        for conv in convs:
            weight = g.array(conv.input[1]).astype(np.float64)
            has_bias = len(conv.input) > 2 and conv.input[2]
            bias = g.array(conv.input[2]).astype(np.float64) if has_bias else np.zeros(weight.shape[0])
            g.set_array(conv.input[1], weight * scale)
            name = conv.input[2] if has_bias else g.add_array(f"{conv.name}.bias", bias)
            g.set_array(name, bias + shift * weight.sum(axis=(1, 2, 3)))
            while len(conv.input) < 3:
                conv.input.append("")
            conv.input[2] = name
            conv.input[0] = y
        drop |= {id(mul), id(add)}
        count += 1
    _replace(g.graph, drop, {})
    return count


def prune(model: onnx.ModelProto) -> None:
    """Drop initializers and Constant nodes nothing reads any more."""
    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = [n for n in g.node if n.op_type != "Constant" or n.output[0] in used]
    del g.node[:]
    g.node.extend(nodes)


def inference_graph(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """`model` rewritten (see the module docstring) and how many of each rewrite were made."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if opset < OPSET:
        model = version_converter.convert_version(model, OPSET)
    done = {"hardswish": fuse_hardswish(model),
            "affine_after_conv": fold_affine_after_conv(model),
            "affine_into_1x1": fold_affine_into_pointwise(model)}
    prune(model)
    if any(done.values()):
        note = ", ".join(f"{k} {v}" for k, v in done.items())
        for prop in [p for p in model.metadata_props if p.key == "inference_graph"]:
            model.metadata_props.remove(prop)
        model.metadata_props.add(key="inference_graph", value=f"training/plates/graph.py: {note}")
    onnx.checker.check_model(model)
    return model, done


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    model, done = inference_graph(onnx.load(args[0]))
    onnx.save(model, args[1])
    print(f"{Path(args[1]).name}: " + ", ".join(f"{k} {v}" for k, v in done.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
