"""Non-maximum suppression and box helpers, vectorised with numpy."""

from __future__ import annotations

import numpy as np


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


def clip_boxes(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes clipped to the image."""
    out = xyxy.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out
