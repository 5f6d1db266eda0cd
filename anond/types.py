"""Small typed data passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

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
