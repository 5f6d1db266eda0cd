#!/usr/bin/env python3
"""Train `anond-plate-db-look`: the second look of anond-plate-db (anond/detect/rescale.py).

    python training/plates/look.py             # mine (cached), train; resumes from .train/plates-look/last.pt
    python training/plates/look.py --export models/anond-plate-db-look.onnx

anond-plate-db maps a whole frame at once, at whatever scale each object has there, and big
bright plain rectangles (headlights, rear windows, grilles) score like plates. Its second look
shows each region again on a fixed canvas (CANVAS_H x CANVAS_W), scaled so that the square root
of the region's area is `size` px (the manifest's `second_look.size`), with the car around it;
the region's score becomes the mean of the first score and the map's mean inside the region
there. The detector itself can take that look (it does, untrained for it); this trains a copy
of it for that one view.

Initialisation: anond-plate-db's own weights (the shipped `models/anond-plate-db.onnx`, or its
checkpoint `.train/plates-db/best.pt` with --init), fine-tuned whole, in the same graph
(training/plates/seg.py: load_graph, to_torch, write_onnx).

Data: ../shared/data/plates/train only, the same split (8 % validation per source, seed 0).
Samples: every labelled plate, and every region the first look finds on the training photos at
the second look's `floor` (through anond's Engine, tiling and detail pass; cached in
`mined.npz`), each cut with `rescale.canvases` at a jittered scale and centre (what is trained
is what anond looks at), flipped half the time, with the photometric augmentation of the
detector (data.photometric). Target: every labelled plate's quadrilateral inside the canvas
(whatever the sample was cut around); plates under 3 px there weigh nothing. Half the samples
(MASKED_SHARE) are cut from the photo with its labelled plates masked as anond masks them (blur
and noise, margin included), those plates weighing nothing: verification (anond/verify.py)
searches the masked photo again, and a whole-frame first look scores a plain bumper or road
beside a masked plate 0.1-0.2 higher than beside the plate; the look must not follow it. Loss:
seg.py's (BCE with hard negatives + dice).

Selection: the epoch whose second look, on the validation photos' first-look regions, gives the
highest masked recall at an over-mask no higher than REF_OVER_MASK (platedet's on the same
validation photos through the same Engine, `seg.py --sweep --model platedet-yolov8s-seg`). The
shipped threshold then comes from `seg.py --sweep` with the exported model in the manifest.
No evaluation set is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seg  # noqa: E402  (torch, the graph helpers, the input convention)
import data as D  # noqa: E402
from common import add_training_args, end_epoch, resume, sha256  # noqa: E402
from anond.detect.rescale import canvases, mean_inside, placements, to_canvas, windows  # noqa: E402
from anond.evaluation.metrics import coverage_fractions, over_mask_fraction  # noqa: E402
from anond.mask import apply as apply_mask, coverage_mask, margined_boxes  # noqa: E402
from anond.models import load_manifest  # noqa: E402
from anond.types import Detections, Target  # noqa: E402

torch = seg.torch
ROOT = seg.ROOT
_SPEC = load_manifest()["anond-plate-db"]
SIZE = _SPEC.second_look_size
FLOOR = _SPEC.second_look_floor
# platedet-yolov8s-seg's over-mask on the validation photos (threshold 0.1, anond's Engine),
# measured 2026-12-05 (models/README.md): the level the second look must reach.
REF_OVER_MASK = 0.0017
GRID = tuple(np.round(np.arange(0.45, 0.80, 0.025), 3))
# Share of samples cut from the photo with its labelled plates masked as anond masks them: the
# view verification gives the look (anond/verify.py re-searches the masked photo), where a
# region beside a masked plate must not become a plate (those plates weigh nothing there).
MASKED_SHARE = 0.5


def first_looks(photos: list[D.Photo], cache: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per photo, the first look's regions (xyxy, score) at FLOOR through anond's Engine
    (shipped anond-plate-db, no second look), cached in `cache`."""
    if cache.exists():
        z = np.load(cache, allow_pickle=True)
        if list(z["paths"]) == [str(p.path) for p in photos]:
            return list(zip(z["xyxy"], z["score"]))
    from anond.config import load_settings
    from anond.detect.engine import Engine, _load_detector

    s = load_settings(None)
    engine = Engine({"plate": _load_detector(s, "anond-plate-db", "plate")})
    detect = s.profile.detect.model_copy(update={"plate_threshold": FLOOR})
    out, t0 = [], time.time()
    for i, photo in enumerate(photos):
        d = engine.detect([cv2.imread(str(photo.path))], detect, ["plate"])[0]
        out.append((d.xyxy.astype(np.float32), d.score.astype(np.float32)))
        if i % 200 == 0:
            print(f"first look {i}/{len(photos)} {time.time() - t0:.0f} s", flush=True)
    xyxy, score = np.empty(len(out), object), np.empty(len(out), object)
    for i, (b, s_) in enumerate(out):
        xyxy[i], score[i] = b, s_
    np.savez(cache, paths=np.array([str(p.path) for p in photos]), xyxy=xyxy, score=score)
    return out


class LookSet(torch.utils.data.Dataset):
    """One canvas per labelled plate and per first-look region of the training photos."""

    def __init__(self, photos: list[D.Photo], looks, seed: int) -> None:
        self.photos, self.seed, self.epoch = photos, seed, 0
        self.samples = []
        for i, (photo, (xyxy, _)) in enumerate(zip(photos, looks)):
            sizes = np.sqrt(np.prod(photo.boxes[:, 2:] - photo.boxes[:, :2], axis=1))
            self.samples += [(i, b) for b, s in zip(photo.boxes, sizes) if s >= 6]
            self.samples += [(i, b) for b in xyxy]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, j):
        rng = np.random.default_rng([self.seed, self.epoch, j])
        i, box = self.samples[j]
        photo = self.photos[i]
        image = cv2.imread(str(photo.path))
        masked = rng.random() < MASKED_SHARE and len(photo.boxes)
        if masked:
            plates = Detections(photo.boxes.astype(np.float32), np.ones(len(photo.boxes), np.float32),
                                np.full(len(photo.boxes), int(Target.PLATE), np.int16))
            apply_mask(image, plates, seg.MASK)
        box = np.asarray(box, np.float32)[None]
        scale, centre = placements(box, SIZE)
        scale = scale * float(np.exp(rng.normal(0, 0.2)))
        bw, bh = box[0, 2] - box[0, 0], box[0, 3] - box[0, 1]
        centre = centre + rng.uniform(-0.15, 0.15, 2).astype(np.float32) * np.float32([bw, bh])
        view = canvases(image, box, SIZE, scale, centre)[0][0]
        window = windows(scale, centre)[0]
        quads = to_canvas(np.where(np.isnan(photo.corners), D._box_corners(photo.boxes), photo.corners), window)
        target = np.zeros(view.shape[:2], np.uint8)
        weight = np.ones(view.shape[:2], np.uint8)
        for quad in quads:
            poly = np.round(quad).astype(np.int32).reshape(-1, 1, 2)
            lo, hi = quad.min(axis=0), quad.max(axis=0)
            if np.sqrt(max(0.0, float(np.prod(hi - lo)))) < 3:
                cv2.fillPoly(weight, [poly], 0)
            elif not masked:
                cv2.fillPoly(target, [poly], 1)
        if masked:  # a masked plate and its margin: neither plate nor background
            for x0, y0, x1, y1 in to_canvas(margined_boxes(plates, seg.MASK).reshape(-1, 2, 2), window).reshape(-1, 4):
                cv2.rectangle(weight, (int(x0), int(y0)), (int(np.ceil(x1)), int(np.ceil(y1))), 0, -1)
        if rng.random() < 0.5:
            view, target, weight = view[:, ::-1], target[:, ::-1], weight[:, ::-1]
        view = D.photometric(np.ascontiguousarray(view), rng)
        return (torch.from_numpy(seg.to_blob(view)), torch.from_numpy(np.ascontiguousarray(target)),
                torch.from_numpy(np.ascontiguousarray(weight)))


@torch.no_grad()
def second_scores(net, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """The second look's score of each region, by the network being trained."""
    if not len(xyxy):
        return np.zeros(0, np.float32)
    views, inside = canvases(image, xyxy, SIZE)
    blob = torch.from_numpy(np.stack([seg.to_blob(v) for v in views]))
    prob = torch.sigmoid(net(blob))[:, 0].numpy()
    return np.array([mean_inside(p, b) for p, b in zip(prob, inside)], np.float32)


def evaluate(net, val: list[D.Photo], looks) -> dict:
    """Masked recall and over-mask per threshold of the mean of both looks (validation)."""
    net.eval()
    masked, over = dict.fromkeys(GRID, 0), dict.fromkeys(GRID, 0.0)
    n_gt = 0
    for photo, (xyxy, score) in zip(val, looks):
        image = cv2.imread(str(photo.path))
        h, w = image.shape[:2]
        n_gt += len(photo.boxes)
        combined = (score + second_scores(net, image, xyxy)) / 2 if len(score) else score
        dets = Detections(xyxy, combined, np.full(len(score), int(Target.PLATE), np.int16))
        for t in GRID:
            cover = coverage_mask((h, w), dets.select(combined >= t), seg.MASK)
            masked[t] += int((coverage_fractions(photo.boxes, cover) >= 0.8).sum())
            over[t] += over_mask_fraction(photo.boxes, cover)
    net.train()
    seg.freeze_batch_norm(net)
    curve = {str(t): [masked[t] / n_gt, over[t] / len(val)] for t in GRID}
    ok = [masked[t] / n_gt for t in GRID if over[t] / len(val) <= REF_OVER_MASK]
    return {"recall_at_ref": max(ok, default=0.0), "curve": curve}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/plates/train")
    ap.add_argument("--init", type=Path, default=ROOT / "models/anond-plate-db.onnx",
                    help="anond-plate-db's weights: the shipped ONNX file, or its checkpoint "
                         "(.train/plates-db/best.pt, training/plates/seg.py)")
    ap.add_argument("--graph", type=Path, default=seg.DEFAULT_MODELS_DIR / "ppocr-v4-det.onnx",
                    help="the PP-OCRv4 graph the weights live in (`anond models install ppocr-v4-det`)")
    ap.add_argument("--out", type=Path, default=ROOT / ".train/plates-look")
    add_training_args(ap, epochs=6, batch=16, lr=2e-4)
    ap.add_argument("--export", type=Path, help="write best.pt into the graph as ONNX here and exit")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    graph = seg.load_graph(args.graph)
    net = seg.to_torch(graph)
    if args.export:
        ckpt = torch.load(args.out / "best.pt", map_location="cpu", weights_only=False)
        net.load_state_dict(ckpt["model"])
        seg.write_onnx(net, graph, args.export, {
            "name": "anond plate second look (anond-plate-db fine-tuned on one canonical view)",
            "licence": "MIT (weights trained by the anond project from PP-OCRv4 det, Apache-2.0; "
                       "data attributions in models/README.md)",
            "init": f"anond-plate-db ({args.init.name}) sha256 {sha256(args.init)}",
            "epoch": str(ckpt["epoch"]), "val": json.dumps({"recall_at_ref": ckpt["val"]["recall_at_ref"]})})
        history = torch.load(args.out / "last.pt", map_location="cpu", weights_only=False)["history"]
        from plot import plot_history

        plot_history(history, args.export.with_suffix(".curve.png"), losses=("loss",),
                     loss_title="training loss (BCE with hard negatives + dice)",
                     validation=("recall_at_ref",),
                     validation_title=f"validation masked recall at over-mask <= {100 * REF_OVER_MASK:.2f} %",
                     legend="lower right")
        print(f"exported epoch {ckpt['epoch']} to {args.export} sha256 {sha256(args.export)}")
        return 0

    train, val = D.split(D.load_photos(args.data), 0.08, args.seed)
    train_looks = first_looks(train, args.out / "mined-train.npz")
    val_looks = first_looks(val, args.out / "mined-val.npz")
    ds = LookSet(train, train_looks, args.seed)
    print(f"{len(train)} training photos, {len(ds)} samples; {len(val)} validation photos", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    start, history, ckpt = resume(args.out / "last.pt", net, opt)
    if ckpt is None:
        if args.init.suffix == ".onnx":  # the shipped export: the same graph, its weights
            net.load_state_dict(seg.to_torch(seg.load_graph(args.init)).state_dict())
        else:
            net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=False)["model"])
        row = {"epoch": -1, "loss": float("nan"), **evaluate(net, val, val_looks)}
        history.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    net.train()
    seg.freeze_batch_norm(net)
    t_start = time.time()
    for epoch in range(start, args.epochs):
        loss, seconds = seg.run_epoch(net, opt, ds, epoch, args)
        row = {"epoch": epoch, "loss": loss, "seconds": seconds, **evaluate(net, val, val_looks)}
        history.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
        state = {"model": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "history": history,
                 "val": row}
        best = row["recall_at_ref"] >= max(r["recall_at_ref"] for r in history)
        if end_epoch(state, args.out, best, t_start, args.hours):
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
