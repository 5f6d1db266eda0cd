"""Small typed data passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import numpy as np


class Target(IntEnum):
    """What a detection is. The integer is the class id carried in `Detections.cls`."""

    FACE = 0
    PLATE = 1
    MANUAL = 2  # a region supplied by the operator (sidecar), not a detector

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass
class Detections:
    """Boxes found in one image or frame, in pixel coordinates of the upright image.

    xyxy: float32 (N, 4); score: float32 (N,); cls: int16 (N,) of `Target`;
    track_id: int32 (N,), -1 where the box belongs to no track.
    """

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    score: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    cls: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int16))
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, np.float32).reshape(-1, 4)
        self.score = np.asarray(self.score, np.float32).reshape(-1)
        self.cls = np.asarray(self.cls, np.int16).reshape(-1)
        if self.track_id is None:
            self.track_id = np.full(len(self.xyxy), -1, np.int32)
        else:
            self.track_id = np.asarray(self.track_id, np.int32).reshape(-1)
        n = len(self.xyxy)
        if not (len(self.score) == len(self.cls) == len(self.track_id) == n):
            raise ValueError("Detections arrays differ in length")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> "Detections":
        return cls()

    @classmethod
    def concat(cls, parts: list["Detections"]) -> "Detections":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.cls for p in parts]),
            np.concatenate([p.track_id for p in parts]),
        )

    def select(self, keep: np.ndarray) -> "Detections":
        """Subset by boolean mask or index array."""
        return Detections(self.xyxy[keep], self.score[keep], self.cls[keep], self.track_id[keep])

    def of(self, target: Target) -> "Detections":
        return self.select(self.cls == int(target))

    def counts(self) -> dict[str, int]:
        """Number of boxes per target label: the only thing about detections that may be reported."""
        return {t.label: int((self.cls == int(t)).sum()) for t in Target if (self.cls == int(t)).any()}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of xyxy boxes; 0 where the union is empty.

    Computed in float32 when both are float32 (detector boxes: NMS decides on the same values
    every time), else in float64."""
    a, b = np.asarray(a).reshape(-1, 4), np.asarray(b).reshape(-1, 4)
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), dtype)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0).astype(dtype, copy=False)


class DetectorEngine(Protocol):
    """What the pipeline asks of a detector engine (`anond.detect.engine.Engine`; tests wrap
    the real one to inject faults)."""

    provider: str  # the ONNX Runtime provider really active ("CPUExecutionProvider"...)
    models: list  # name, sha256 (and provider) of each model loaded
    track_looks: dict  # target -> the look each new video track of it needs (detect.rescale.TrackLook)

    def detect(self, images: list[np.ndarray], detect, targets, memos=None, rules=None,
               near=None, recent=None) -> list[Detections]: ...

    def fixed_input(self, target: str) -> tuple[int, int] | None: ...

    def for_video(self) -> "DetectorEngine": ...
