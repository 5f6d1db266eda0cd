"""DB-style segmentation detectors (PP-OCR's text detector and the plate model fine-tuned from it).

The network maps a frame (any size, padded to /32) to one probability map of its own size: the
chance each pixel lies on the target (a plate, for `anond-plate-db`). Boxes are the map's
connected regions above `BINARY` probability; a region's score is its mean probability, so one
threshold (the configured detection threshold) applies as for every other family. Training
(training/plates/seg.py) decodes its validation maps with `regions()`: what is trained is what
anond decodes.
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import Boxes, Detector, empty_boxes

BINARY = 0.3  # a pixel belongs to a region above this probability (DB's usual binarisation)
MIN_PIXELS = 4  # smaller regions are noise, not a plate


def regions(prob: np.ndarray, threshold: float, height: int | None = None,
            width: int | None = None) -> Boxes:
    """Boxes (xyxy, pixel edges) and scores of the connected regions of one probability map
    whose mean probability is >= threshold, clipped to height x width (the unpadded view)."""
    h, w = prob.shape
    height, width = height or h, width or w
    prob = prob[:height, :width]
    binary = prob > BINARY
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8)
    if n <= 1:
        return empty_boxes()
    # Sums over the regions' pixels only (a few per cent of the frame; label 0 is the rest).
    sums = np.bincount(labels[binary], weights=prob[binary], minlength=n)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    score = (sums / np.maximum(area, 1.0))[1:]
    st = stats[1:]
    keep = (score >= threshold) & (st[:, cv2.CC_STAT_AREA] >= MIN_PIXELS)
    st, score = st[keep], score[keep]
    x0 = st[:, cv2.CC_STAT_LEFT].astype(np.float32)
    y0 = st[:, cv2.CC_STAT_TOP].astype(np.float32)
    xyxy = np.stack([x0, y0, x0 + st[:, cv2.CC_STAT_WIDTH], y0 + st[:, cv2.CC_STAT_HEIGHT]], axis=1)
    return xyxy.astype(np.float32), score.astype(np.float32)


class DBNet(Detector):
    """Dynamic input (padded to /32); one output, the sigmoid probability map [B, 1, H, W]."""

    def prepare(self, view: np.ndarray):
        return self.pad_to_stride(view), view.shape[:2]

    def decode(self, outputs, j, meta, threshold) -> Boxes:
        h, w = meta
        return regions(outputs[0][j, 0], threshold, h, w)

    def probability_maps(self, views: list[np.ndarray]) -> np.ndarray:
        """[N, H, W] probability maps of same-sized views (one batch; a second look's canvases,
        anond.detect.rescale), cropped back to the views' size."""
        h, w = views[0].shape[:2]
        blob = self.blob([self.pad_to_stride(v) for v in views])
        return self.session.run(None, {self.input_name: blob})[0][:, 0, :h, :w]
