#!/usr/bin/env python3
"""Train the plate detector's check model: a small classifier that tells real plates from the
things a 0.42 M-parameter detector mistakes for them (see anond/detect/check.py).

    python training/plates/check.py mine      # detector candidates on the training photos
    python training/plates/check.py train     # classifier, resumes from .train/plates-check/last.pt
    python training/plates/check.py sweep     # end-to-end figures on the validation split
    python training/plates/check.py --export models/anond-plate-check.onnx
    python training/plates/check.py --detector anond-plate-db --also .train/plates-check   # anond-plate-db-check

Examples are mined the way anond meets them: the shipped detector (`anond-plate-mnet025`, run
through anond's own Engine with the default tiling) on every training photo at three scales
(as photographed, and its longer side at 1280 and 640 px like video frames), threshold 0.1; per view every plate candidate and at most 60 background ones (the 40 highest-
scoring, 20 others at random).
A candidate is a plate (1) when it overlaps a labelled plate at IoU >= 0.3 or covers most of
it while not much larger; background (0) when it overlaps none at IoU >= 0.05 and contains no
plate's centre; otherwise it is not used. Every labelled plate is added as a positive too.
Crops are cut with anond's `check.crops`. Same validation split as the detector (8 % of each
source, seed 0); no evaluation set is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import data as D  # noqa: E402
from common import resume, save, sha256, step  # noqa: E402
from anond.detect.check import CROP_H, CROP_W, crops  # noqa: E402
from anond.evaluation.metrics import coverage_fractions  # noqa: E402
from anond.types import iou_matrix  # noqa: E402
from anond.mask import coverage_mask  # noqa: E402
from anond.types import Detections, Target  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCALES = (None, 1280, 640)  # as photographed; longer side 1280; longer side 640
# Per detector: (mining threshold: below the lowest the pipeline uses, e.g. video's 0.3 x
# low_score_ratio 0.5 for mnet025; the DB model's regions all score above its binarisation 0.3;
# default output folder; detector thresholds the sweep tries, its operating point among them).
DETECTORS = {"anond-plate-mnet025": (0.1, ".train/plates-check", (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)),
             "anond-plate-db": (0.3, ".train/plates-db-check", (0.4, 0.5, 0.6, 0.7))}
NEG_PER_VIEW = (40, 20)  # background crops kept per view: the highest-scoring, and random others
NEG_RATIO = 6
MAX_LOSS = 0.01  # masked recall the check may cost on the validation split


# ------------------------------------------------------------------ network

def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CheckNet(nn.Module):
    """40x96 BGR crop (0..255) -> logits (background, plate). ~0.1 M parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True),  # 20x48
            block(24, 32, 1), block(32, 64, 2),      # 10x24
            block(64, 64, 1), block(64, 128, 2),     # 5x12
            block(128, 128, 1), block(128, 128, 1))
        self.pool = nn.AdaptiveAvgPool2d((1, 3))  # left / middle / right of the crop
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(128 * 3, 64),
                                  nn.ReLU(inplace=True), nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features((x - 128.0) / 64.0)))


class Probabilities(nn.Module):
    def __init__(self, net: CheckNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return F.softmax(self.net(x), dim=1)


# ------------------------------------------------------------------ mining

def baseline(detector: str) -> float:
    """The detector's own operating point (its manifest threshold, models/README.md)."""
    from anond.models import load_manifest

    return float(load_manifest()[detector].threshold)


def _engine(detector: str):
    from anond.config import load_settings
    from anond.detect.engine import Engine

    s = load_settings(None)
    s = s.model_copy(update={"models": s.models.model_copy(update={"plate": detector})})
    engine = Engine.load(s, ["plate"])
    for d in engine.checks.values():  # mine what the detector alone proposes
        d.threshold = 0.0
    detect = s.profile.detect.model_copy(update={"plate_threshold": DETECTORS[detector][0]})
    return engine, detect


def mine(args) -> None:
    engine, detect = _engine(args.detector)
    photos = D.load_photos(args.data)
    train, val = D.split(photos, 0.08, 0)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, group in (("val", val), ("train", train)):
        path = args.out / f"mined_{name}.npz"
        if path.exists():
            print(f"{path} exists: kept", flush=True)
            continue
        X, y, score, src, gt_flag, cand = [], [], [], [], [], []
        rng = np.random.default_rng(0)
        t0 = time.time()
        for pi, photo in enumerate(group):
            full = cv2.imread(str(photo.path))
            if full is None:
                continue
            for side in SCALES:
                s = 1.0 if side is None else min(1.0, side / max(full.shape[:2]))
                if side is not None and s >= 1.0:
                    continue
                img = full if s == 1.0 else cv2.resize(full, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                gt = photo.boxes * s
                dets = engine.detect([img], detect, ["plate"])[0]
                lab = D.label_candidates(dets.xyxy, gt)
                use = lab == 1
                bg = np.nonzero(lab == 0)[0]
                hard = bg[np.argsort(-dets.score[bg])[:NEG_PER_VIEW[0]]]
                rest = np.setdiff1d(bg, hard)
                use[hard] = True
                use[rng.choice(rest, min(len(rest), NEG_PER_VIEW[1]), replace=False)] = True
                boxes = np.concatenate([dets.xyxy[use], gt])
                labels = np.concatenate([lab[use], np.ones(len(gt), np.int8)])
                X.append(crops(img, boxes))
                y.append(labels)
                score.append(np.concatenate([dets.score[use], np.full(len(gt), -1.0, np.float32)]))
                src.append(np.full(len(boxes), pi, np.int32))
                gt_flag.append(np.r_[np.zeros(int(use.sum()), bool), np.ones(len(gt), bool)])
                cand.append(len(dets))
            if pi % 100 == 0:
                n = sum(len(v) for v in y)
                print(f"{name} {pi}/{len(group)} photos, {n} crops, {(time.time() - t0) / (pi + 1):.2f} s/photo", flush=True)
        np.savez(path, X=np.concatenate(X), y=np.concatenate(y), score=np.concatenate(score),
                 photo=np.concatenate(src), gt=np.concatenate(gt_flag))
        yy = np.concatenate(y)
        print(f"{name}: {len(yy)} crops, {int((yy == 1).sum())} plate, {int((yy == 0).sum())} background, "
              f"{np.mean(cand):.1f} candidates per view", flush=True)


# ------------------------------------------------------------------ training

def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One crop: small shift/scale (the detector's boxes wander), mirror, small-plate blur
    (down to 1/6 and back), then the detector's photometric degradations."""
    if rng.random() < 0.7:
        s = float(np.exp(rng.uniform(np.log(0.85), np.log(1.2))))
        tx, ty = rng.uniform(-0.08, 0.08) * CROP_W, rng.uniform(-0.1, 0.1) * CROP_H
        M = np.array([[s, 0, (1 - s) * CROP_W / 2 + tx], [0, s, (1 - s) * CROP_H / 2 + ty]], np.float32)
        x = cv2.warpAffine(x, M, (CROP_W, CROP_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    if rng.random() < 0.3:
        f = rng.uniform(2, 6)
        small = cv2.resize(x, (max(4, int(CROP_W / f)), max(2, int(CROP_H / f))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (CROP_W, CROP_H), interpolation=cv2.INTER_LINEAR)
    return D.photometric(np.ascontiguousarray(x), rng)


class CropSet(torch.utils.data.Dataset):
    def __init__(self, X, y, seed):
        self.X, self.y, self.seed, self.epoch = X, y, seed, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        x = augment(self.X[i], rng)
        return torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32)), int(self.y[i])


@torch.no_grad()
def predict(net: CheckNet, X: np.ndarray, batch: int = 512) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, len(X), batch):
        x = torch.from_numpy(X[i:i + batch].transpose(0, 3, 1, 2).astype(np.float32))
        out.append(F.softmax(net(x), 1)[:, 1].numpy())
    net.train()
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train(args) -> None:
    """Train on the detector's mined crops (and those of `--also` folders: another detector's
    candidates on the same training photos); validate on the detector's own validation crops."""
    sets = [np.load(d / "mined_train.npz") for d in [args.out, *args.also]]
    va = np.load(args.out / "mined_val.npz")
    X = np.concatenate([t["X"] for t in sets])
    y = np.concatenate([t["y"] for t in sets]).astype(np.int64)
    # Per epoch: every plate crop twice (two augmentations), NEG_RATIO x as many background crops
    # (a fresh random draw each epoch, so the whole mined background is seen over the run).
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    print(f"train: {len(pos)} plate crops, {len(neg)} background crops", flush=True)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = CheckNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    start, history, _ = resume(args.out / "last.pt", net, opt)
    ds = CropSet(X, y, 0)
    n_neg = min(len(neg), NEG_RATIO * len(pos))
    per_epoch = 2 * len(pos) + n_neg
    steps = per_epoch // args.batch
    for epoch in range(start, args.epochs):
        ds.epoch = epoch
        rng = np.random.default_rng(1000 + epoch)
        idx = np.concatenate([pos, pos, rng.choice(neg, n_neg, replace=False)])
        rng.shuffle(idx)
        sampler = torch.utils.data.SubsetRandomSampler(idx.tolist(), generator=torch.Generator().manual_seed(epoch))
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, sampler=sampler, num_workers=1, drop_last=True)
        t0, total = time.time(), 0.0
        for it, (xb, yb) in enumerate(loader):
            lr = 2e-3 * 0.5 * (1 + np.cos(np.pi * (epoch * steps + it) / (args.epochs * steps)))
            loss = step(opt, F.cross_entropy(net(xb), yb, label_smoothing=0.05), lr)
            total += loss
            if it % 100 == 0:
                print(f"epoch {epoch} it {it}/{steps} loss {loss:.4f} lr {lr:.2e} "
                      f"{(time.time() - t0) / (it + 1):.3f} s/it", flush=True)
        p = predict(net, va["X"])
        vy = va["y"]
        row = {"epoch": epoch, "loss": total / max(1, it + 1), "seconds": time.time() - t0,
               **{f"plate_kept@{t}": float((p[vy == 1] >= t).mean()) for t in (0.1, 0.3, 0.5)},
               **{f"background_kept@{t}": float((p[vy == 0] >= t).mean()) for t in (0.1, 0.3, 0.5)}}
        history.append(row)
        print(json.dumps(row), flush=True)
        state = {"model": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "history": history}
        save(state, args.out / "last.pt")


# ------------------------------------------------------------------ validation sweep

def sweep(args) -> None:
    """Masked recall and stray detections per photo on the validation photos, as anond's Engine
    produces them (default tiling, the check applied), for detector x check thresholds; and the
    operating point: the pair with the least stray area whose masked recall is at least the
    detector's alone at its own operating point (its manifest threshold, check off).

    The operating point keeps the detector's threshold (for mnet025: a lower one multiplies the
    candidates the check must look at in video, where the tracker's low threshold is half of
    it: 110 a 640x360 frame at 0.075 against 19 at 0.15) and takes the highest check threshold
    that loses at most MAX_LOSS of the validation plates' masked recall."""
    from anond.config import MaskSettings

    engine, detect = _engine(args.detector)
    base = baseline(args.detector)
    net = CheckNet()
    net.load_state_dict(torch.load(args.out / "last.pt", map_location="cpu", weights_only=False)["model"])
    photos = D.load_photos(args.data)
    _, val = D.split(photos, 0.08, 0)
    mask = MaskSettings()
    det_ts, chk_ts = DETECTORS[args.detector][2], (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    masked = {(a, b): 0 for a in det_ts for b in chk_ts}
    stray = dict.fromkeys(masked, 0)
    area = dict.fromkeys(masked, 0.0)
    n_gt = 0
    for photo in val:
        img = cv2.imread(str(photo.path))
        dets = engine.detect([img], detect, ["plate"])[0]
        p = predict(net, crops(img, dets.xyxy))
        gt = photo.boxes
        n_gt += len(gt)
        iou = iou_matrix(dets.xyxy, gt)
        far = iou.max(axis=1, initial=0.0) < 0.1
        h, w = img.shape[:2]
        for a, b in masked:
            keep = (dets.score >= a) & ((p >= b) | (dets.xyxy[:, 2] - dets.xyxy[:, 0] < args.min_width))
            shown = Detections(dets.xyxy[keep], dets.score[keep], np.full(int(keep.sum()), int(Target.PLATE)))
            cover = coverage_mask((h, w), shown, mask)
            masked[a, b] += int((coverage_fractions(gt, cover) >= 0.8).sum())
            stray[a, b] += int((far & keep).sum())
            if (far & keep).any():
                area[a, b] += float(coverage_mask((h, w), shown.select(far[keep]), mask).mean())
    print(f"{len(val)} validation photos, {n_gt} plates; stray: detections with IoU < 0.1 with every "
          "plate; stray area: share of the photo under their masks")
    print("| detector t | check t | masked recall | stray / photo | stray area % |")
    print("|---|---|---|---|---|")
    for a, b in masked:
        print(f"| {a} | {b} | {100 * masked[a, b] / n_gt:.1f} % | {stray[a, b] / len(val):.2f} | "
              f"{100 * area[a, b] / len(val):.2f} |")
    floor = masked[base, 0.0]
    b = max(t for t in chk_ts if masked[base, t] >= floor - MAX_LOSS * n_gt)
    print(f"operating point: detector {base}, check {b}: masked recall "
          f"{100 * masked[base, b] / n_gt:.1f} % (alone {100 * floor / n_gt:.1f} %), stray "
          f"{stray[base, b] / len(val):.2f} / photo (alone {stray[base, 0.0] / len(val):.2f}), "
          f"stray area {100 * area[base, b] / len(val):.2f} % (alone {100 * area[base, 0.0] / len(val):.2f} %)")


def plot_history(history: list[dict], path: Path) -> None:
    """The training curve: loss, and the validation crops kept at 0.1 / 0.3, per epoch."""
    from plot import plot_history as plot

    plot(history, path, losses=("loss",), loss_title="training loss (cross-entropy, label smoothing 0.05)",
         validation=("plate_kept@0.1", "plate_kept@0.3", "background_kept@0.1", "background_kept@0.3"),
         validation_title="validation crops kept (mined from the validation split)", legend="center right")


def export(args) -> None:

    import onnx

    net = CheckNet()
    ck = torch.load(args.out / "last.pt", map_location="cpu", weights_only=False)
    net.load_state_dict(ck["model"])
    model = Probabilities(net).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, CROP_H, CROP_W),), str(args.export), input_names=["crops"],
                      output_names=["prob"], opset_version=13,
                      dynamic_axes={"crops": {0: "batch"}, "prob": {0: "batch"}}, dynamo=False)
    m = onnx.load(str(args.export))
    del m.metadata_props[:]
    for k, v in {"name": f"anond plate check (crop classifier for {args.detector})",
                 "licence": "MIT (weights trained by the anond project; data attributions in models/README.md)",
                 "epoch": str(ck["epoch"]), "val": json.dumps(ck["history"][-1])}.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(args.export))
    plot_history(ck["history"], args.export.with_suffix(".curve.png"))
    print(f"exported epoch {ck['epoch']} to {args.export} sha256 "
          f"{sha256(args.export)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", nargs="?", choices=("mine", "train", "sweep", "all"), default="all")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/plates/train")
    ap.add_argument("--detector", choices=sorted(DETECTORS), default="anond-plate-mnet025",
                    help="the detector whose candidates are mined and checked")
    ap.add_argument("--out", type=Path, help="working folder (default: per detector, under .train/)")
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="other working folders whose mined training crops are trained on too")
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-width", type=float, default=0.0,
                    help="sweep: boxes narrower than this are kept unchecked (the manifest's min_width)")
    ap.add_argument("--export", type=Path, help="write the trained classifier as ONNX here and exit")
    args = ap.parse_args(argv)
    args.out = args.out or ROOT / DETECTORS[args.detector][1]
    if args.export:
        export(args)
        return 0
    if args.step in ("mine", "all"):
        mine(args)
    if args.step in ("train", "all"):
        train(args)
    if args.step in ("sweep", "all"):
        sweep(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
