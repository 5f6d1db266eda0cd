"""A second look at a segmentation detector's regions, each at one canonical scale.

A DB-style plate map (anond-plate-db) is computed over the whole frame at whatever scale each
object happens to have there: a headlight filling a fifth of a close-up photo, a rear window,
a grille are bright plain rectangles at that scale and score like plates (0.8-0.9). Shown again
small, with the car around it in view, the same network tells them apart: each region is cut
from the image on a fixed canvas (CANVAS_H x CANVAS_W, centred on it), scaled so that the
square root of its area is `size` pixels, and the map's mean inside the region there is its
second score. A region's score becomes the mean of its two looks, so one threshold applies.

The manifest names it on the detector's entry: `second_look = { model = "...", size = 48 }`
(the model may be the detector itself, or one trained for this view). Training cuts its
examples with `canvases()`, so what is trained is what anond looks at.
"""

from __future__ import annotations

import numpy as np

from ..pixels import cut_resized

CANVAS_H, CANVAS_W = 128, 320  # the view every region is shown in (pixels)
MAX_BATCH = 32


def placements(xyxy: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Per box: the scale putting sqrt(area) at `size` px, and the image point at the canvas's
    centre (the box's centre)."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    w = np.maximum(xyxy[:, 2] - xyxy[:, 0], 1.0)
    h = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)
    scale = size / np.sqrt(w * h)
    centre = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)
    return scale, centre


def windows(scale: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(N, 4) integer image rectangles x0, y0, x1, y1 each canvas shows (may pass the edges)."""
    out = np.empty((len(scale), 4), np.int64)
    for i, (s, (cx, cy)) in enumerate(zip(scale, centre)):
        x0, y0 = int(round(cx - CANVAS_W / (2 * s))), int(round(cy - CANVAS_H / (2 * s)))
        out[i] = (x0, y0, max(x0 + 1, int(round(cx + CANVAS_W / (2 * s)))),
                  max(y0 + 1, int(round(cy + CANVAS_H / (2 * s)))))
    return out


def to_canvas(points: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Image points (..., 2) in a canvas showing `window` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in window)
    return (np.asarray(points, np.float32) - np.float32([x0, y0])) * np.float32(
        [CANVAS_W / (x1 - x0), CANVAS_H / (y1 - y0)])


def canvases(image: np.ndarray, xyxy: np.ndarray, size: float,
             scale: np.ndarray | None = None, centre: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(N, CANVAS_H, CANVAS_W, 3) uint8 views, one per box, and each box's place in its view
    (N, 4 xyxy). Past the image's edges the view is the image's edge pixels replicated; area
    averaged when shrinking, bilinear when enlarging. `scale` / `centre` override
    `placements` (training jitters them)."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    if scale is None or centre is None:
        scale, centre = placements(xyxy, size)
    out = np.empty((len(xyxy), CANVAS_H, CANVAS_W, 3), np.uint8)
    inside = np.empty((len(xyxy), 4), np.float32)
    for i, (ix0, iy0, ix1, iy1) in enumerate(windows(scale, centre)):
        out[i] = cut_resized(image, ix0, iy0, ix1, iy1, CANVAS_W, CANVAS_H)
        inside[i] = to_canvas(xyxy[i].reshape(2, 2), (ix0, iy0, ix1, iy1)).reshape(4)
    return out, inside


class SecondLook:
    """`scores(image, xyxy)`: each region's second score; `rescored(...)`: the mean of both."""

    rule = "second_look"  # its name in a job report's `rules`

    def __init__(self, detector, size: float, floor: float) -> None:
        self.detector = detector  # a DB-family Detector (anond.detect.dbnet)
        self.spec, self.sha256, self.provider = detector.spec, detector.sha256, detector.provider
        self.size = size
        self.floor = floor  # candidates need this first score (or the threshold, if lower)

    def first_threshold(self, threshold: float) -> float:
        """What the detector must score a region for it to be looked at again: a region
        under the threshold may still reach it as the mean of its two looks."""
        return min(threshold, self.floor)

    def review(self, image: np.ndarray, xyxy: np.ndarray, score: np.ndarray,
               threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(regions kept, their scores): the mean of both looks, kept at >= threshold."""
        score = self.rescored(image, xyxy, score)
        return score >= threshold, score

    def scores(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        if not len(xyxy):
            return np.zeros(0, np.float32)
        views, inside = canvases(image, xyxy, self.size)
        out = []
        for start in range(0, len(views), MAX_BATCH):
            chunk = views[start:start + MAX_BATCH]
            prob = self.detector.probability_maps(list(chunk))
            for k, p in enumerate(prob):
                out.append(mean_inside(p, inside[start + k]))
        return np.asarray(out, np.float32)

    def rescored(self, image: np.ndarray, xyxy: np.ndarray, score: np.ndarray) -> np.ndarray:
        return ((score + self.scores(image, xyxy)) / 2).astype(np.float32)

    def warmup(self) -> None:
        self.scores(np.zeros((64, 64, 3), np.uint8), np.array([[8, 8, 40, 24]], np.float32))


def mean_inside(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean of a probability map over a box (clipped to the map; 0 if nothing is left)."""
    h, w = prob.shape
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, max(x0 + 1, int(np.ceil(box[2])))), min(h, max(y0 + 1, int(np.ceil(box[3]))))
    region = prob[y0:y1, x0:x1]
    return float(region.mean()) if region.size else 0.0


class TrackLook:
    """A look per video track (manifest `track_look`): `scores(image, xyxy)` is what the look
    model, seeing each new track's box at one canonical scale with its surroundings, makes of
    it (the second look's view, on the look's score alone: the video detector's own scores are
    another model's); a track is masked once its recent looks average `threshold`. The tracker asks
    per track, not per frame (anond/track.py), so the cost follows the tracks."""

    def __init__(self, look: SecondLook, threshold: float) -> None:
        self.look = look
        self.spec, self.sha256, self.provider = look.spec, look.sha256, look.provider
        self.threshold = threshold

    def scores(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        return self.look.scores(image, xyxy)

    def warmup(self) -> None:
        self.look.warmup()
