"""What every detector family shares: session, input conventions, batching of views."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import cv2
import numpy as np

from ..config import RuntimeSettings
from ..models import InstalledModel
from .nms import nms
from .runtime import create_session

Boxes = tuple[np.ndarray, np.ndarray]  # xyxy float32 (N, 4), score float32 (N,)

MAX_BATCH = 8  # views per inference call for models with a dynamic batch dimension
PRE_NMS_IOU = 0.5  # light NMS per view; the Engine merges views with the configured IoU


class Detector:
    """One ONNX model of one family. `detect(views, threshold)` gives boxes per view, in view pixels."""

    # Outputs at a point depend only on the pixels around it (convolutions only, no global
    # pooling): after a change, only detections near it can differ (`Engine.detect`'s `recent`).
    local = False

    def __init__(self, installed: InstalledModel, runtime: RuntimeSettings) -> None:
        self.spec = installed.spec
        self.sha256 = installed.sha256
        self.session, self.provider = create_session(installed.path, runtime)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if self.spec.input.dtype == "session":
            self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        else:
            self.dtype = np.dtype(self.spec.input.dtype).type
        shape = list(inp.shape)
        self.batch_limit = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else MAX_BATCH
        if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
            self.fixed_size: tuple[int, int] | None = (int(shape[2]), int(shape[3]))
        else:
            self.fixed_size = self.spec.input.size
        conv = self.spec.input
        self._mean = np.asarray(conv.mean, np.float32).reshape(1, 1, 1, 3)
        self._scale = np.asarray(conv.scale, np.float32).reshape(1, 1, 1, 3)

    # -- public

    def detect(self, views: list[np.ndarray], threshold: float) -> list[Boxes]:
        """Boxes with score >= threshold for each BGR uint8 view, in that view's pixels."""
        prepared = [self.prepare(v) for v in views]
        results: list[Boxes | None] = [None] * len(views)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (canvas, _) in enumerate(prepared):
            groups[canvas.shape].append(i)
        for idx in groups.values():
            for start in range(0, len(idx), self.batch_limit):
                chunk = idx[start : start + self.batch_limit]
                blob = self.blob([prepared[i][0] for i in chunk])
                outputs = self.session.run(None, {self.input_name: blob})
                for j, i in enumerate(chunk):
                    xyxy, score = self.decode(outputs, j, prepared[i][1], threshold)
                    keep = nms(xyxy, score, PRE_NMS_IOU)
                    results[i] = (xyxy[keep].astype(np.float32), score[keep].astype(np.float32))
        return results  # type: ignore[return-value]

    def warmup(self) -> None:
        """One tiny inference, so the first real frame does not pay for lazy initialisation."""
        size = self.fixed_size or (64, 64)
        self.detect([np.zeros((size[0], size[1], 3), np.uint8)], 0.99)

    # -- per family

    def prepare(self, view: np.ndarray) -> tuple[np.ndarray, Any]:
        """Canvas (H, W, 3 uint8 BGR) fed to the network and what decode needs to map back."""
        raise NotImplementedError

    def decode(self, outputs: list[np.ndarray], j: int, meta: Any, threshold: float) -> Boxes:
        raise NotImplementedError

    # -- shared helpers

    def blob(self, canvases: list[np.ndarray]) -> np.ndarray:
        """Stack BGR canvases into the NCHW tensor this model expects."""
        # Plane by plane into one float32 NCHW buffer: the same float32 arithmetic as
        # (x - mean) * scale on the stacked batch (bit-identical), without its four full copies.
        h, w = canvases[0].shape[:2]
        out = np.empty((len(canvases), 3, h, w), np.float32)
        order = (2, 1, 0) if self.spec.input.colour == "RGB" else (0, 1, 2)
        mean, scale = self._mean.ravel(), self._scale.ravel()
        for i, canvas in enumerate(canvases):
            planes = cv2.split(np.ascontiguousarray(canvas))
            for ch, src in enumerate(order):
                plane = out[i, ch]
                plane[...] = planes[src]
                if mean[ch] != 0:
                    plane -= mean[ch]
                if scale[ch] != 1:
                    plane *= scale[ch]
        return out if self.dtype is np.float32 else out.astype(self.dtype)

    def pad_to_stride(self, view: np.ndarray) -> np.ndarray:
        """Pad bottom/right so both sides are multiples of the model stride (no resampling)."""
        stride = self.spec.input.stride
        h, w = view.shape[:2]
        ph, pw = -h % stride, -w % stride
        if ph == 0 and pw == 0:
            return view
        fill = np.asarray(self.spec.input.mean, np.float32)
        if self.spec.input.colour == "RGB":
            fill = fill[::-1]
        value = [int(v) for v in np.clip(fill, 0, 255).astype(np.uint8)]
        return cv2.copyMakeBorder(np.ascontiguousarray(view), 0, ph, 0, pw, cv2.BORDER_CONSTANT,
                                  value=value)


def empty_boxes() -> Boxes:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
