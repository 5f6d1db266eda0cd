"""YOLOv8 detection / segmentation heads (platedet, or an operator's own model).

Output 0 is [B, 4 + nc (+ nm), N]: cx, cy, w, h in input pixels, class scores, and mask
coefficients when a second output (prototypes [B, nm, h, w]) exists. Masks are not used:
the box is masked.
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import Boxes, Detector

LETTERBOX_FILL = 114
DEFAULT_SIZE = 640  # for a model whose input size is dynamic and not stated in the manifest


class YoloV8(Detector):
    """Letterboxed to the model input size; fp16 or fp32 as the session input says."""

    def __init__(self, installed, runtime) -> None:
        super().__init__(installed, runtime)
        if self.fixed_size is None:
            self.fixed_size = (DEFAULT_SIZE, DEFAULT_SIZE)
        outs = self.session.get_outputs()
        self.mask_coeffs = int(outs[1].shape[1]) if len(outs) > 1 and len(outs[1].shape) == 4 else 0
        self.class_ids = list(self.spec.class_ids)

    def prepare(self, view: np.ndarray):
        mh, mw = self.fixed_size
        h, w = view.shape[:2]
        r = min(mh / h, mw / w)
        nh, nw = max(1, int(round(h * r))), max(1, int(round(w * r)))
        resized = view if (nh, nw) == (h, w) else cv2.resize(
            view, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
        )
        top, left = (mh - nh) // 2, (mw - nw) // 2
        canvas = np.full((mh, mw, 3), LETTERBOX_FILL, np.uint8)
        canvas[top : top + nh, left : left + nw] = resized
        return canvas, (r, left, top, h, w)

    def decode(self, outputs, j, meta, threshold) -> Boxes:
        r, left, top, h, w = meta
        pred = outputs[0][j].astype(np.float32)  # (C, N)
        nc = pred.shape[0] - 4 - self.mask_coeffs
        scores = pred[4 : 4 + nc][self.class_ids].max(axis=0)
        hit = np.nonzero(scores > threshold)[0]
        cx, cy, bw, bh = pred[0, hit], pred[1, hit], pred[2, hit], pred[3, hit]
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        xyxy[:, 0::2] = np.clip((xyxy[:, 0::2] - left) / r, 0, w)
        xyxy[:, 1::2] = np.clip((xyxy[:, 1::2] - top) / r, 0, h)
        return xyxy.astype(np.float32), scores[hit].astype(np.float32)
