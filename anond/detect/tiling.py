"""Which views of an image a detector looks at: the whole image, plus detail tiles.

A view is a crop of the image resized by `scale`. Boxes found in a view map back with
`box / scale + (x0, y0)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..config import DetectSettings


@dataclass(frozen=True)
class View:
    x0: int
    y0: int
    w: int  # crop size in image pixels
    h: int
    scale: float  # view pixels per image pixel

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The view's pixels (BGR uint8)."""
        crop = image[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]
        if self.scale == 1.0:
            return crop
        size = (max(1, round(self.w * self.scale)), max(1, round(self.h * self.scale)))
        interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(crop, size, interpolation=interp)

    def to_image(self, xyxy: np.ndarray) -> np.ndarray:
        out = xyxy / self.scale
        out[:, 0::2] += self.x0
        out[:, 1::2] += self.y0
        return out


def starts(length: int, tile: int, overlap: float) -> list[int]:
    """Origins of the fewest equal tiles covering [0, length) with at least `overlap` shared,
    spread evenly, the first at 0 and the last flush with the end."""
    if length <= tile:
        return [0]
    step = max(1.0, tile * (1 - overlap))
    n = int(np.ceil((length - tile) / step)) + 1
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def plan(height: int, width: int, detect: DetectSettings, fixed_size: tuple[int, int] | None) -> list[View]:
    """Views for one image: a whole-image pass and, with tiling, a detail pass in tiles.

    Whole image: scaled down to `max_input_side` (a fixed-size model letterboxes it itself).
    Detail: the image at native resolution, or enlarged up to `upscale` for small images so its
    longer side reaches `upscale_to`, cut into overlapping `tile_size` tiles (taken whole by a
    model of dynamic input size when it fits `max_input_side`). Skipped when the whole-image
    pass already looks at that resolution.
    """
    side = max(height, width)
    if fixed_size is None:
        full_scale = min(1.0, detect.max_input_side / side)
        views = [View(0, 0, width, height, full_scale)]
        effective = full_scale
    else:
        views = [View(0, 0, width, height, 1.0)]
        effective = min(fixed_size[0] / height, fixed_size[1] / width)
    if not detect.tiling:
        return views
    detail = max(1.0, min(detect.upscale, detect.upscale_to / side))
    if effective >= detail * 0.95:
        return views
    if fixed_size is None and side * detail <= detect.max_input_side:
        # A model of any input size takes the enlarged image whole: no tile seams, less overlap.
        return views + [View(0, 0, width, height, detail)]
    crop = detect.tile_size / detail  # tile size in image pixels
    tile_px = max(1, int(round(crop)))
    for y0 in starts(height, tile_px, detect.tile_overlap):
        for x0 in starts(width, tile_px, detect.tile_overlap):
            views.append(View(x0, y0, min(tile_px, width - x0), min(tile_px, height - y0), detail))
    return views


# Verification searches a small photo's enlarged detail view again only around its masks
# (`around`; a large photo's tiles are left to the view memo, anond/detect/engine.py): each
# mask's box grown by this many times its size on every side, and by at least NEAR_DETAIL_PX
# image pixels. Elsewhere the detail views' pixels are those the first pass searched at that
# scale. Wide, because a model with global pooling (anond-plate-db's squeeze-excitation
# blocks) scores a crop differently from the whole view: on the plate validation photos
# (training/plates, 8 % split) 2x / 160 px kept masked recall (82.4 -> 83.0 %) and lowered
# over-mask (0.117 -> 0.102 %), where 1x / 64 px raised it to 0.143 %.
NEAR_DETAIL = 2.0
NEAR_DETAIL_PX = 160
# A later verification round of a local model (`Detector.local`) searches every view only
# around what the previous round masked: each new mask grown by its size a side, at least
# RECENT_PX image pixels.
RECENT = 1.0
RECENT_PX = 32


def around(details: list[View], boxes: np.ndarray, height: int, width: int,
           grow: float = NEAR_DETAIL, min_px: int = NEAR_DETAIL_PX) -> list[View]:
    """The detail views (`details`, one scale) again, only around `boxes` (xyxy image pixels:
    what masking changed): a view at the detail's scale around each box grown by `grow` times
    its size (at least `min_px`) a side, overlapping ones merged when the union costs no more;
    `details` themselves when that would cover as much of the image."""
    rects = []
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        gx = max(min_px, (x1 - x0) * grow)
        gy = max(min_px, (y1 - y0) * grow)
        c0, r0 = max(0, int(np.floor(x0 - gx))), max(0, int(np.floor(y0 - gy)))
        c1, r1 = min(width, int(np.ceil(x1 + gx))), min(height, int(np.ceil(y1 + gy)))
        if c1 > c0 and r1 > r0:
            rects.append((c0, r0, c1, r1))
    rects = merge_rects(rects, _area)
    if sum(map(_area, rects)) >= sum(v.w * v.h for v in details):
        return details
    scale = details[0].scale
    return [View(c0, r0, c1 - c0, r1 - r0, scale) for c0, r0, c1, r1 in rects]


def _area(r: tuple[int, int, int, int]) -> float:
    return float((r[2] - r[0]) * (r[3] - r[1]))


def merge_rects(rects: list[tuple[int, int, int, int]], cost) -> list[tuple[int, int, int, int]]:
    """Overlapping rectangles (x0, y0, x1, y1) merged pairwise while `cost(union)` is no
    more than the parts' costs together."""
    rects = list(rects)
    merged = True
    while merged and len(rects) > 1:
        merged = False
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                a, b = rects[i], rects[j]
                if not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]):
                    continue
                union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                if cost(union) <= cost(a) + cost(b):
                    rects[i] = union
                    del rects[j]
                    merged = True
                    break
            if merged:
                break
    return rects
