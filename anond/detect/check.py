"""A second look at a detector's candidates: a small classifier on a crop around each box.

A one-stage detector small enough to be cheap (anond-plate-mnet025, 0.42 M parameters) finds
nearly every plate but also many things that look like one at its scale: window frames, text,
grilles, signs. A classifier that sees each candidate box with some context around it, at a
fixed size, tells them apart at a fraction of the detector's cost (a few hundred candidates a
second on one core). The detector's manifest entry names its check model and the probability
a candidate must reach (`check = { model = "...", threshold = ..., min_width = ... }`);
rejected boxes are dropped before they are masked, tracked or counted, and boxes narrower than
`min_width` pixels are kept without a look (a few pixels of plate say too little to reject on).

The crop geometry lives here and nowhere else: training (training/plates/check.py) cuts its
examples with `crops()`, so what is trained is what anond checks.
"""

from __future__ import annotations

import numpy as np

from ..config import RuntimeSettings
from ..models import InstalledModel
from ..pixels import cut_resized
from .runtime import create_session

CROP_H, CROP_W = 40, 96  # network input (height, width), BGR uint8 as float32 0..255
ASPECT = CROP_W / CROP_H
CONTEXT = 1.5  # the crop spans this many box widths (or aspect-scaled heights, if larger)
MAX_BATCH = 256


def regions(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) crop regions x0, y0, x1, y1 (float): centred on each box, CROP_W:CROP_H aspect,
    CONTEXT times the box's width or its height times the aspect, whichever is larger."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    w = np.maximum(xyxy[:, 2] - xyxy[:, 0], 1.0)
    h = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)
    cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
    rw = CONTEXT * np.maximum(w, h * ASPECT)
    rh = rw / ASPECT
    return np.stack([cx - rw / 2, cy - rh / 2, cx + rw / 2, cy + rh / 2], axis=1)


def crops(image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """(N, CROP_H, CROP_W, 3) uint8: each box's region, edges replicated past the image, area
    averaged when shrinking (no aliasing on large boxes), bilinear when enlarging."""
    out = np.empty((len(xyxy), CROP_H, CROP_W, 3), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(regions(xyxy)):
        ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
        ix1, iy1 = max(ix0 + 1, int(np.ceil(x1))), max(iy0 + 1, int(np.ceil(y1)))
        out[i] = cut_resized(image, ix0, iy0, ix1, iy1, CROP_W, CROP_H)
    return out


class CropCheck:
    """The check model of one detector: `accept(image, xyxy)` says which boxes to keep."""

    rule = "check"  # its name in a job report's `rules`

    def __init__(self, installed: InstalledModel, runtime: RuntimeSettings, threshold: float,
                 min_width: float = 0.0) -> None:
        self.spec = installed.spec
        self.sha256 = installed.sha256
        self.threshold = threshold
        self.min_width = min_width
        self.session, self.provider = create_session(installed.path, runtime)
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """P(the box is a real object of the detector's target), one per box."""
        if not len(xyxy):
            return np.zeros(0, np.float32)
        batch = crops(image, xyxy)
        out = []
        for start in range(0, len(batch), MAX_BATCH):
            blob = batch[start:start + MAX_BATCH].transpose(0, 3, 1, 2).astype(np.float32)
            out.append(self.session.run(None, {self.input_name: blob})[0][:, 1])
        return np.concatenate(out).astype(np.float32)

    def accept(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """Boxes narrower than `min_width` pixels are kept unchecked: a few pixels of plate
        say too little to reject on, and a small false mask costs little."""
        keep = np.ones(len(xyxy), bool)
        looked = np.flatnonzero(xyxy[:, 2] - xyxy[:, 0] >= self.min_width) if len(xyxy) else []
        if len(looked):
            keep[looked] = self.probabilities(image, xyxy[looked]) >= self.threshold
        return keep

    def first_threshold(self, threshold: float) -> float:
        """The detector's own threshold for candidates (a check only removes)."""
        return threshold

    def review(self, image: np.ndarray, xyxy: np.ndarray, score: np.ndarray,
               threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(boxes kept, their scores): the Engine's second stage (see also rescale.SecondLook)."""
        return self.accept(image, xyxy), score

    def warmup(self) -> None:
        self.probabilities(np.zeros((64, 64, 3), np.uint8), np.array([[8, 8, 40, 24]], np.float32))
