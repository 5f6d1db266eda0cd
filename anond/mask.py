"""Masking: make every found object unrecognisable, in place, at full resolution.

One geometry serves both `apply` (which changes pixels) and `coverage_mask` (which says which
pixels `apply` changes), so "masked recall" measured with `coverage_mask` is what the output got:

- each box grows by a margin on every side, as a fraction of its width/height
  (`face_margin`, `plate_margin`; manual regions get none: the operator drew them exactly);
- the shape per class is the margined box or the ellipse inscribed in it
  (`face_shape`, `plate_shape`, `manual_shape`);
- boxes partly outside the image are clipped; nothing is ever written outside its bounds.

Modes: `blur`, `pixelate`, `solid` (see `blur_patch` for why the blur cannot be undone); their
strength is `mask.blur_cells` / `mask.pixel_blocks` (chosen from the attack measurements of
`anond eval --attack`, docs/PRIVACY.md).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .config import MaskMode, MaskSettings, MaskShape
from .pixels import copy_where
from .types import Detections, Target

# Strength when no MaskSettings is given: the settings' defaults (chosen from the attack
# measurements of `anond eval --attack`, docs/PRIVACY.md).
DEFAULT_STRENGTH = MaskSettings()
BLUR_CELLS = DEFAULT_STRENGTH.blur_cells
PIXEL_BLOCKS = DEFAULT_STRENGTH.pixel_blocks
# Blur: the smoothing runs at no more than this many pixels per cell, then is scaled up.
BLUR_CELL_PX = 8
# Standard deviation (grey levels) of the noise added over blurred regions.
BLUR_NOISE_SIGMA = 5.0

_Region = tuple[tuple[slice, slice], np.ndarray, float]  # (roi, bool mask of the roi, object size)


def margin_for(cls: int, mask: MaskSettings) -> float:
    """Margin fraction for a class id: faces and plates have their own, manual regions none."""
    return mask.margin(Target(cls).label)


def shape_for(cls: int, mask: MaskSettings) -> MaskShape:
    """Mask shape for a class id."""
    return mask.shape(Target(cls).label)


def margined_box(xyxy: Sequence[float], margin: float) -> tuple[float, float, float, float]:
    """The box grown by `margin` x its width (height) on the left and right (top and bottom)."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return x0 - dx, y0 - dy, x1 + dx, y1 + dy


def _shape_region(shape_hw: tuple[int, int], box, shape: MaskShape) -> _Region | None:
    """Pixels of a (margined, float) box or its inscribed ellipse, clipped to the image."""
    h, w = shape_hw
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0) or not all(map(math.isfinite, box)):
        return None
    # Any pixel the box touches is covered (conservative rounding outwards).
    c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    c1, r1 = min(w, math.ceil(x1)), min(h, math.ceil(y1))
    if c1 <= c0 or r1 <= r0:
        return None
    roi = (slice(r0, r1), slice(c0, c1))
    size = max(x1 - x0, y1 - y0)
    if shape == "box":
        return roi, np.ones((r1 - r0, c1 - c0), bool), size
    # Ellipse inscribed in the unclipped box, tested at pixel centres; +0.5 px on each axis so
    # the thin ends of small ellipses still cover the pixels they cross.
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax, ay = (x1 - x0) / 2 + 0.5, (y1 - y0) / 2 + 0.5
    xs = (np.arange(c0, c1, dtype=np.float32) + 0.5 - cx) / ax
    ys = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy) / ay
    inside = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
    if not inside.any():
        return None
    return roi, inside, size


def regions(shape_hw: tuple[int, int], detections: Detections, mask: MaskSettings) -> Iterator[_Region]:
    """The pixel regions that masking `detections` covers, one per detection (clipped)."""
    for xyxy, cls in zip(detections.xyxy, detections.cls):
        box = margined_box(xyxy, margin_for(int(cls), mask))
        region = _shape_region(shape_hw, box, shape_for(int(cls), mask))
        if region is not None:
            yield region


def coverage_mask(shape_hw: tuple[int, int], detections: Detections, mask: MaskSettings) -> np.ndarray:
    """Boolean (H, W): True where `apply` with the same arguments changes the image."""
    out = np.zeros(tuple(shape_hw[:2]), bool)
    for roi, inside, _ in regions(tuple(shape_hw[:2]), detections, mask):
        out[roi] |= inside
    return out


def apply(image: np.ndarray, detections: Detections, mask: MaskSettings) -> np.ndarray:
    """Mask every detection in `image` (BGR uint8, modified in place); return `image`."""
    for roi, inside, size in regions(image.shape[:2], detections, mask):
        _mask_region(image, roi, inside, size, mask.mode, mask.solid_color, mask)
    return image


def apply_polygons(
    image: np.ndarray,
    polygons: Sequence[np.ndarray | Sequence[Sequence[float]]],
    mode: MaskMode = "blur",
    *,
    solid_color: tuple[int, int, int] = (0, 0, 0),
    strength: MaskSettings | None = None,
) -> np.ndarray:
    """Mask the inside of each polygon ((N, 2) x, y pixel points) in place; return `image`."""
    for poly in polygons:
        region = polygon_region(image.shape[:2], poly)
        if region is not None:
            roi, inside, size = region
            _mask_region(image, roi, inside, size, mode, solid_color, strength)
    return image


def polygons_mask(shape_hw: tuple[int, int], polygons) -> np.ndarray:
    """Boolean (H, W): True where `apply_polygons` with the same polygons changes the image."""
    out = np.zeros(tuple(shape_hw[:2]), bool)
    for poly in polygons:
        region = polygon_region(tuple(shape_hw[:2]), poly)
        if region is not None:
            roi, inside, _ = region
            out[roi] |= inside
    return out


def polygon_region(shape_hw: tuple[int, int], polygon) -> _Region | None:
    """Pixels inside a polygon (edges included), clipped to the image."""
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(pts) < 3 or not np.isfinite(pts).all():
        return None
    h, w = shape_hw
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    c1, r1 = min(w, math.ceil(x1) + 1), min(h, math.ceil(y1) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    local = np.zeros((r1 - r0, c1 - c0), np.uint8)
    shift = 4  # sub-pixel precision for fillPoly
    pts_local = np.round((pts - [c0, r0]) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(local, [pts_local], 1, lineType=cv2.LINE_8, shift=shift)
    cv2.polylines(local, [pts_local], True, 1, lineType=cv2.LINE_8, shift=shift)
    inside = local.astype(bool)
    if not inside.any():
        return None
    return (slice(r0, r1), slice(c0, c1)), inside, float(max(x1 - x0, y1 - y0))


def _mask_region(image: np.ndarray, roi, inside: np.ndarray, size: float, mode: str, solid_color,
                 strength: MaskSettings | None = None) -> None:
    patch = image[roi]
    if mode == "solid":
        patch[inside] = np.asarray(solid_color, np.uint8)[: patch.shape[-1]] if patch.ndim == 3 else solid_color[0]
        return
    strength = strength or DEFAULT_STRENGTH
    if mode == "pixelate":
        masked = pixelate_patch(patch, size, strength.pixel_blocks)
    elif mode == "blur":
        masked = blur_patch(patch, size, strength.blur_cells_for(size))
    else:
        raise ValueError(f"unknown mask mode: {mode}")
    copy_where(patch, masked.reshape(patch.shape), inside)  # cv2 drops a single channel axis


def pixelate_patch(patch: np.ndarray, size: float, blocks: float = PIXEL_BLOCKS) -> np.ndarray:
    """Mean colour per block; the object spans at most `blocks` blocks across."""
    block = max(2.0, size / blocks)
    h, w = patch.shape[:2]
    small = cv2.resize(patch, (max(1, math.ceil(w / block)), max(1, math.ceil(h / block))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def blur_patch(patch: np.ndarray, size: float, cells: float = BLUR_CELLS) -> np.ndarray:
    """A smooth colour field that keeps no detail of the object.

    A plain Gaussian blur is a linear filter: deconvolution or sharpening brings much of the
    detail back, and a weak one leaves faces detectable. Instead the region is first averaged
    down to about `cells` (BLUR_CELLS) cells across (area average: everything finer is gone, there is
    nothing left to invert), then scaled back up and Gaussian-smoothed with a sigma of half a
    cell so it looks like a blur rather than blocks. The smoothing runs on an intermediate of
    at most BLUR_CELL_PX pixels per cell and is then scaled linearly to full size, so its cost
    does not grow with the object (the field is smooth at that scale; nothing is lost).
    Slight noise hides the smooth gradients a face detector might still key on and leaves no
    exact linear relation to the cell averages. It is seeded from the region's own pixels, so
    the same input gives the same output (reproducible results and tests); the seed is no
    secret worth keeping, the detail is already gone with the averaging.
    """
    h, w = patch.shape[:2]
    cell = max(1.0, size / cells)
    small = cv2.resize(patch, (max(1, math.ceil(w / cell)), max(1, math.ceil(h / cell))),
                       interpolation=cv2.INTER_AREA)
    f = min(1.0, BLUR_CELL_PX / cell)  # intermediate pixels per full-resolution pixel
    mw, mh = (w, h) if f == 1.0 else (max(1, round(w * f)), max(1, round(h * f)))
    up = cv2.resize(small, (mw, mh), interpolation=cv2.INTER_LINEAR)
    smooth = cv2.GaussianBlur(up, (0, 0), sigmaX=max(0.8, cell * f / 2), borderType=cv2.BORDER_REPLICATE)
    if (mw, mh) != (w, h):
        smooth = cv2.resize(smooth, (w, h), interpolation=cv2.INTER_LINEAR)
    noise = _noise(smooth.shape, zlib.crc32(np.ascontiguousarray(patch).data))
    return cv2.add(smooth, noise, dtype=cv2.CV_8U)  # saturating: clipped to 0..255


def _noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Gaussian noise (sigma BLUR_NOISE_SIGMA, rounded to whole grey levels) of `shape`, int16,
    drawn afresh per region from `seed`.

    OpenCV's generator, not numpy's: 2-3x cheaper for the same normal distribution (noise was
    half of the masking time on hamilton). Its state is per thread (`cv::theRNG`), so seeding
    it here and drawing at once gives the same noise whatever other threads do.
    On hamilton the faces an independent CenterFace still finds in the output (all on masks:
    a blurred head) depend on the noise drawn: 5-12 of 688 over four seeds with numpy's
    normals, 4-10 with these (docs/BENCHMARKS.md); a precomputed tile cut per region was
    no better (12).
    """
    noise = np.empty(shape, np.int16)
    cv2.setRNGSeed(seed & 0x7FFFFFFF)
    cv2.randn(noise, (0.0,) * 4, (BLUR_NOISE_SIGMA,) * 4)
    return noise


def margined_boxes(dets: Detections, settings: MaskSettings) -> np.ndarray:
    """(N, 4) boxes that masking `dets` changes (margins included), in their coordinates."""
    return np.array([margined_box(b, margin_for(int(c), settings))
                     for b, c in zip(dets.xyxy, dets.cls)], np.float32).reshape(-1, 4)


@dataclass
class FrameMasks:
    """What masking one frame did: every changed pixel, and boxes around what changed."""

    coverage: np.ndarray  # bool (H, W)
    changed: np.ndarray  # (N, 4): margined detection boxes, then each polygon's bounds


def mask_frame(image: np.ndarray, dets: Detections, manual, settings: MaskSettings) -> FrameMasks:
    """The frame-level step photos and video frames share: mask `dets` (the detections kept
    after the operator's excludes) and then the manual `(polygon, mode)` regions in `image`
    (BGR uint8, in place, in the polygons' coordinate frame); mode None = the profile's."""
    coverage = np.zeros(image.shape[:2], bool)
    changed = [margined_boxes(dets, settings)]
    if len(dets):
        apply(image, dets, settings)
        coverage |= coverage_mask(image.shape[:2], dets, settings)
    for polygon, mode in manual:
        polygon = np.asarray(polygon)
        apply_polygons(image, [polygon], mode or settings.mode, solid_color=settings.solid_color,
                       strength=settings)
        coverage |= polygons_mask(image.shape[:2], [polygon])
        changed.append(np.concatenate([polygon.min(axis=0), polygon.max(axis=0)])[None])
    return FrameMasks(coverage, np.concatenate(changed))
