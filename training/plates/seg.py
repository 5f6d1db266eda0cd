#!/usr/bin/env python3
"""Train `anond-plate-db`: PP-OCRv4's text detector (Apache-2.0, rapidocr-onnxruntime 1.4.4)
fine-tuned to answer one question per pixel: is this a licence plate?

    python training/plates/seg.py                 # train; resumes from .train/plates-db/last.pt
    python training/plates/seg.py --hours 1.5     # stop after 1.5 h (resume later)
    python training/plates/seg.py --export models/anond-plate-db.onnx
    python training/plates/seg.py --sweep         # thresholds through anond's Engine (validation)

Why this network: a plate is a line of characters on a plain rectangle. The text detector has
already learnt from a large corpus what characters look like at every size, and it answers with a
map at the frame's own resolution and aspect ratio (no letterbox, no anchors); its regions follow
the plate, so the mask does not spill over. What it must learn here is which text is a plate
(not a sign, a poster, a badge) and to find plates too small to read.

Initialisation: the ONNX graph `anond models install ppocr-v4-det` writes, converted to PyTorch
with onnx2torch (its Constant nodes turned into initializers first, the final Sigmoid dropped so
the loss sees logits). Batch norms are folded into the convolutions in that graph; the three
that remain keep their statistics (eval mode). The trained weights are written back into the
same graph (node for node), which graph.py then rewrites into fewer operators (the same function).

Data: ../shared/data/plates/train only (same 8 % validation split per source, seed 0, as the
other plate models), augmented by training/plates/data.py (plate-centred crops at every size,
whole scenes, pasted small plates, blur, night, JPEG). Target: each plate's quadrilateral (its
four corners where labelled, else its box) filled with 1; plates cut by the crop or under 4 px
are masked out of the loss. Loss: binary cross-entropy with hard-negative mining (3 background
pixels per plate pixel, at least 4,096) + dice.

Selection: the epoch with the best `masked recall - stray area` on the validation split, both
at `THRESHOLD` (one view, longer side 960). The shipped threshold (`detect.plate_threshold`)
comes from `--sweep`: the exported, installed model run through anond's own Engine (tiling and
detail pass as photos get them) on the validation photos at several thresholds; the rule,
fixed before the sweep was run: the highest threshold whose masked recall is within one point
of the lowest threshold's. No evaluation set is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# onnx2torch imports torchvision for two operators this graph does not use; the torchvision
# wheel beside the CPU torch build may not match it. Stand-ins keep the import from failing.
if "torchvision" not in sys.modules:
    _tv = types.ModuleType("torchvision")
    _tv.ops = types.ModuleType("torchvision.ops")
    _tv.ops.roi_align = _tv.ops.nms = _tv.ops.batched_nms = None
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = _tv, _tv.ops

import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import data as D  # noqa: E402
from common import add_training_args, end_epoch, resume, sha256, step  # noqa: E402
from graph import inference_graph  # noqa: E402
from anond.config import DEFAULT_MODELS_DIR, MaskSettings  # noqa: E402
from anond.detect.dbnet import regions  # noqa: E402
from anond.evaluation.metrics import coverage_fractions, over_mask_fraction  # noqa: E402
from anond.mask import coverage_mask  # noqa: E402
from anond.models import load_manifest  # noqa: E402
from anond.types import Detections, Target, iou_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# The input convention is the manifest's (PP-OCR's, BGR order): what is trained is what anond feeds.
_INPUT = load_manifest()["anond-plate-db"].input
MEAN = np.asarray(_INPUT.mean, np.float32)
SCALE = np.asarray(_INPUT.scale, np.float32)
THRESHOLD = 0.5  # region score the export is measured (and shipped) at
MASK = MaskSettings()


# ------------------------------------------------------------------ the network

def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Paddle's exporter stores every weight as a Constant node; onnx2torch wants initializers."""
    g = model.graph
    nodes = []
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    return model


def load_graph(path: Path) -> onnx.ModelProto:
    return constants_to_initializers(onnx.load(str(path)))


def to_torch(graph: onnx.ModelProto) -> torch.nn.Module:
    """The graph without its final Sigmoid, as a trainable module (outputs logits)."""
    from onnx2torch import convert

    m = onnx.ModelProto()
    m.CopyFrom(graph)
    g = m.graph
    last = g.node[-1]
    assert last.op_type == "Sigmoid", last.op_type
    out = onnx.helper.make_tensor_value_info(last.input[0], onnx.TensorProto.FLOAT, None)
    del g.node[-1]
    del g.output[:]
    g.output.append(out)
    return convert(m)


def weight_map(graph: onnx.ModelProto) -> dict[str, str]:
    """torch parameter name -> ONNX initializer name, for every trainable tensor."""
    out = {}
    for n in graph.graph.node:
        mod = n.name.replace(".", "/")
        if n.op_type in ("Conv", "ConvTranspose"):
            out[f"{mod}.weight"] = n.input[1]
            if len(n.input) > 2:
                out[f"{mod}.bias"] = n.input[2]
        elif n.op_type == "BatchNormalization":
            out[f"{mod}.weight"], out[f"{mod}.bias"] = n.input[1], n.input[2]
    return out


def freeze_batch_norm(net: torch.nn.Module) -> None:
    for mod in net.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.eval()


def write_onnx(net: torch.nn.Module, graph: onnx.ModelProto, path: Path, meta: dict[str, str]) -> None:
    m = onnx.ModelProto()
    m.CopyFrom(graph)
    inits = {t.name: t for t in m.graph.initializer}
    params = dict(net.named_parameters())
    for tname, iname in weight_map(graph).items():
        arr = params[tname].detach().numpy().astype(np.float32)
        assert tuple(inits[iname].dims) == arr.shape, (tname, arr.shape)
        inits[iname].CopyFrom(numpy_helper.from_array(arr, iname))
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    m, _ = inference_graph(m)  # the same function in cheaper operators (graph.py)
    onnx.save(m, str(path))


# ------------------------------------------------------------------ data

def to_blob(img: np.ndarray) -> np.ndarray:
    return ((img.astype(np.float32) - MEAN) * SCALE).transpose(2, 0, 1)


def target_maps(size: int, boxes: np.ndarray, corners: np.ndarray, ignore: np.ndarray):
    """(target, weight) maps: plates filled with 1; ignored plates (and a 2 px rim) weight 0."""
    target = np.zeros((size, size), np.uint8)
    weight = np.ones((size, size), np.uint8)
    quads = np.where(np.isnan(corners), D._box_corners(boxes), corners)
    for quad, ign in zip(quads, ignore):
        poly = np.round(quad).astype(np.int32).reshape(-1, 1, 2)
        if ign:
            cv2.fillPoly(weight, [poly], 0)
            cv2.polylines(weight, [poly], True, 0, thickness=3)
        else:
            cv2.fillPoly(target, [poly], 1)
    return target, weight


class SegSet(torch.utils.data.Dataset):
    """Half the samples centred on a plate at a random size, half whole or partial scenes."""

    def __init__(self, photos, size, crops, seed, text=None):
        self.photos, self.size, self.seed, self.epoch = photos, size, seed, 0
        self.aug = {m: D.Augmenter(size, crops, m, text) for m in ("plates", "scenes")}

    def __len__(self):
        return len(self.photos)

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        aug = self.aug["plates" if rng.random() < 0.5 else "scenes"]
        img, boxes, corners, ignore = aug(self.photos[i], rng)
        target, weight = target_maps(self.size, boxes, corners, ignore)
        return torch.from_numpy(to_blob(img)), torch.from_numpy(target), torch.from_numpy(weight)


def seg_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """BCE on every plate pixel and the hardest background pixels (3:1, at least 4,096) + dice."""
    logits = logits[:, 0]
    t = target.float()
    w = weight.float()
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none") * w
    pos = (t > 0) & (w > 0)
    n_pos = int(pos.sum())
    neg_loss = bce[(t == 0) & (w > 0)]
    k = min(len(neg_loss), max(3 * n_pos, 4096))
    hard, _ = torch.topk(neg_loss, k)
    l_bce = (bce[pos].sum() + hard.sum()) / (n_pos + k)
    p = torch.sigmoid(logits) * w
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + (t * w).sum() + 1)
    return l_bce + dice


# ------------------------------------------------------------------ validation

@torch.no_grad()
def predict(net, img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """(probability map of the photo with its longer side shrunk to max_side, that scale)."""
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    view = img if s == 1.0 else cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    vh, vw = view.shape[:2]
    ph, pw = -vh % 32, -vw % 32
    blob = to_blob(cv2.copyMakeBorder(view, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0))
    prob = torch.sigmoid(net(torch.from_numpy(blob)[None]))[0, 0, :vh, :vw].numpy()
    return prob, s


def evaluate(net, photos, max_side: int = 960, threshold: float = THRESHOLD) -> dict:
    """Masked recall (>= 80 % of a plate under anond's default plate mask), stray detections
    (IoU < 0.1 with every plate) per photo and the share of the photo their masks cover."""
    net.eval()
    n_gt = masked = stray = 0
    area = 0.0
    for photo in photos:
        img = cv2.imread(str(photo.path))
        prob, s = predict(net, img, max_side)
        xyxy, score = regions(prob, threshold)
        xyxy = xyxy / s
        h, w = img.shape[:2]
        dets = Detections(xyxy, score, np.full(len(score), int(Target.PLATE)))
        cover = coverage_mask((h, w), dets, MASK)
        n_gt += len(photo.boxes)
        masked += int((coverage_fractions(photo.boxes, cover) >= 0.8).sum())
        far = iou_matrix(xyxy, photo.boxes).max(axis=1, initial=0.0) < 0.1
        stray += int(far.sum())
        if far.any():
            area += float(coverage_mask((h, w), dets.select(far), MASK).mean())
    net.train()
    freeze_batch_norm(net)
    return {"masked_recall": masked / max(n_gt, 1), "stray_per_photo": stray / len(photos),
            "stray_area": area / len(photos)}


SWEEP = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


def sweep(args) -> None:
    """The installed model through anond's Engine on the validation photos, per threshold: the
    pixels masked are the photo pipeline's (`final_coverage`: the detections, then verification
    on the masked photo at the same threshold), as bench/accuracy.py measures them."""
    from anond.config import load_settings
    from anond.detect.engine import Engine
    from anond.evaluation.runner import final_coverage

    s = load_settings(None)
    s = s.model_copy(update={"models": s.models.model_copy(update={"plate": args.model})})
    engine = Engine.load(s, ["plate"])
    grid = tuple(args.thresholds or SWEEP)
    profiles = {t: s.profile.model_copy(update={
        "targets": ["plate"], "detect": s.profile.detect.model_copy(update={"plate_threshold": t})})
        for t in grid}
    _, val = D.split(D.load_photos(args.data), 0.08, args.seed)
    masked, stray = dict.fromkeys(grid, 0), dict.fromkeys(grid, 0)
    first, over = dict.fromkeys(grid, 0.0), dict.fromkeys(grid, 0.0)
    n_gt, t0 = 0, time.time()
    for photo in val:
        img = cv2.imread(str(photo.path))
        dets = engine.detect([img], profiles[min(grid)].detect, ["plate"])[0]
        h, w = img.shape[:2]
        n_gt += len(photo.boxes)
        far = iou_matrix(dets.xyxy, photo.boxes).max(axis=1, initial=0.0) < 0.1
        for t in grid:
            keep = dets.score >= t
            shown = dets.select(keep)
            first[t] += over_mask_fraction(photo.boxes, coverage_mask((h, w), shown, profiles[t].mask))
            cover = final_coverage(img, shown, engine, profiles[t], "plate")
            masked[t] += int((coverage_fractions(photo.boxes, cover) >= 0.8).sum())
            over[t] += over_mask_fraction(photo.boxes, cover)
            stray[t] += int((far & keep).sum())
    print(f"{len(val)} validation photos, {n_gt} plates, {time.time() - t0:.0f} s; masked recall and "
          "over-mask (share masked farther than one box size from every plate) of the pixels the photo "
          "pipeline masks, verification included (bench/accuracy.py's measure); first pass: over-mask "
          "of the detections alone; stray: detections with IoU < 0.1 with every plate")
    print("| threshold | masked recall | over-mask | over-mask, first pass | stray / photo |")
    print("|---|---|---|---|---|")
    for t in grid:
        n = len(val)
        print(f"| {t} | {100 * masked[t] / n_gt:.1f} % | {100 * over[t] / n:.2f} % | {100 * first[t] / n:.2f} % "
              f"| {stray[t] / n:.2f} |")
    floor = masked[min(grid)] - 0.01 * n_gt
    pick = max(t for t in grid if masked[t] >= floor)
    print(f"highest threshold within one point of {min(grid)}'s masked recall: {pick}")


def plot_history(history: list[dict], path: Path) -> None:
    from plot import plot_history as plot

    plot(history, path, losses=("loss",), loss_title="training loss (BCE with hard negatives + dice)",
         validation=("masked_recall", "stray_area"),
         validation_title=f"validation split, region score >= {THRESHOLD}", legend="center right")


# ------------------------------------------------------------------ training

def lr_at(epoch: float, epochs: int, peak: float) -> float:
    """One epoch of linear warm-up, then cosine to 2 % of the peak."""
    if epoch < 1:
        return peak * max(epoch, 0.02)
    return peak * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / max(epochs - 1, 1))))


def run_epoch(net, opt, ds, epoch: int, args) -> tuple[float, float]:
    """One epoch of `seg_loss` over `ds` (its `epoch` seeds the augmentation), shuffled by seed
    and epoch, lr on `lr_at`'s schedule; (mean loss, seconds). seg.py and look.py train so."""
    ds.epoch = epoch
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch, shuffle=True, num_workers=1, drop_last=True,
        generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
    steps = len(loader)
    t0, total = time.time(), 0.0
    for it, (x, t, w) in enumerate(loader):
        lr = lr_at(epoch + it / steps, args.epochs, args.lr)
        loss = step(opt, seg_loss(net(x), t, w), lr)
        total += loss
        if it % 50 == 0:
            print(f"epoch {epoch} it {it}/{steps} loss {loss:.4f} lr {lr:.2e} "
                  f"{(time.time() - t0) / (it + 1):.2f} s/it", flush=True)
    return total / steps, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/plates/train")
    ap.add_argument("--init", type=Path, default=DEFAULT_MODELS_DIR / "ppocr-v4-det.onnx",
                    help="PP-OCRv4's text detector as `anond models install ppocr-v4-det` writes it")
    ap.add_argument("--out", type=Path, default=ROOT / ".train/plates-db")
    add_training_args(ap, epochs=16, batch=8, lr=5e-4)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--text-negatives", action="store_true",
                    help="paint lettering that is not a plate into training crops (data.TextNegatives)")
    ap.add_argument("--finetune", type=Path,
                    help="start from this checkpoint's weights (e.g. .train/plates-db/best.pt) instead of --init's")
    ap.add_argument("--export", type=Path, help="write best.pt into the source graph as ONNX here and exit")
    ap.add_argument("--sweep", action="store_true", help="validation figures per threshold through anond's Engine")
    ap.add_argument("--model", default="anond-plate-db", help="installed model --sweep runs")
    ap.add_argument("--thresholds", type=float, nargs="+", help=f"--sweep's thresholds (default {SWEEP})")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        sweep(args)
        return 0
    graph = load_graph(args.init)
    net = to_torch(graph)

    if args.export:
        ckpt = torch.load(args.out / "best.pt", map_location="cpu", weights_only=False)
        net.load_state_dict(ckpt["model"])
        write_onnx(net, graph, args.export, {
            "name": "anond plate detector (PP-OCRv4 text detector fine-tuned on plates)",
            "licence": "MIT (weights trained by the anond project from PP-OCRv4 det, Apache-2.0; "
                       "data attributions in models/README.md)",
            "init": f"rapidocr-onnxruntime 1.4.4 ch_PP-OCRv4_det_infer.onnx sha256 {sha256(args.init)}",
            "epoch": str(ckpt["epoch"]), "val": json.dumps(ckpt["val"])})
        history = torch.load(args.out / "last.pt", map_location="cpu", weights_only=False)["history"]
        plot_history(history, args.export.with_suffix(".curve.png"))
        print(f"exported epoch {ckpt['epoch']} to {args.export} sha256 {sha256(args.export)}")
        return 0

    photos = D.load_photos(args.data)
    train, val = D.split(photos, 0.08, args.seed)
    print(f"{len(train)} training photos, {len(val)} validation photos", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    start, history, ckpt = resume(args.out / "last.pt", net, opt)
    if ckpt is None and args.finetune:
        net.load_state_dict(torch.load(args.finetune, map_location="cpu", weights_only=False)["model"])
    if ckpt is None:
        row = {"epoch": -1, "loss": float("nan"), **evaluate(net, val)}
        history.append(row)
        print(json.dumps(row), flush=True)
    net.train()
    freeze_batch_norm(net)
    ds = SegSet(train, args.size, D.PlateCrops(train, seed=args.seed), args.seed,
                D.TextNegatives() if args.text_negatives else None)
    t_start = time.time()
    for epoch in range(start, args.epochs):
        loss, seconds = run_epoch(net, opt, ds, epoch, args)
        row = {"epoch": epoch, "loss": loss, "seconds": seconds, **evaluate(net, val)}
        history.append(row)
        print(json.dumps(row), flush=True)
        state = {"model": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "history": history,
                 "val": row}
        goal = [r["masked_recall"] - r["stray_area"] for r in history if r["epoch"] >= 0]
        if end_epoch(state, args.out, goal[-1] >= max(goal), t_start, args.hours):
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
