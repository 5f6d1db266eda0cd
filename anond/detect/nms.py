"""Non-maximum suppression and box helpers, vectorised with numpy."""

from __future__ import annotations

import numpy as np

from ..types import iou_matrix


def nms(xyxy: np.ndarray, score: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first."""
    n = len(xyxy)
    if n == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (xyxy[:, i].astype(np.float32) for i in range(4))
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-score, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def merge(xyxy: np.ndarray, score: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """NMS whose kept boxes grow to the union of the boxes they suppressed.

    For masking, every box the detectors put on one object (from the whole image, tiles and
    enlarged passes) should end up under the mask: the union covers what each one saw.
    """
    keep = nms(xyxy, score, iou)
    if len(keep) == 0:
        return xyxy[:0].astype(np.float32), score[:0].astype(np.float32)
    kept = xyxy[keep].astype(np.float32)
    overlap = iou_matrix(kept, xyxy)
    owner = overlap.argmax(axis=0)
    member = overlap.max(axis=0) > iou
    for i in range(len(keep)):
        group = xyxy[member & (owner == i)]
        if len(group):
            kept[i, :2] = np.minimum(kept[i, :2], group[:, :2].min(axis=0))
            kept[i, 2:] = np.maximum(kept[i, 2:], group[:, 2:].max(axis=0))
    return kept, score[keep].astype(np.float32)


def clip_boxes(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes clipped to the image."""
    out = xyxy.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out
