"""Decoded video frames and the BGR images anond works on: conversion, orientation, compositing.

- `to_bgr` / `composite` move pixels between decoded frames and the BGR images the detector
  and the masker work on; `composite` leaves every unmasked pixel bit-exact.
- `upright`, `boxes_to_stored`, `points_to_stored`...: between the stored image and the one a
  viewer sees (display matrix rotation); `frame_rotation`, `display_matrix` read it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from ..pixels import copy_where

# FFmpeg's AVFieldOrder: which field is coded / shown first.
FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
TOP_FIRST = {2, 4}


def pyav():
    import av  # heavy: imported when a video is really opened

    return av


# -- pixels -----------------------------------------------------------------------------------


def to_bgr(frame) -> np.ndarray:
    """The frame as a BGR uint8 image in its stored (not display) orientation."""
    return _reformat(frame, format="bgr24").to_ndarray()


# Patches converted back from BGR are cut to multiples of this many pixels (inside the frame),
# so that conversions of the same size come back and can reuse their swscale context.
PATCH_GRID = 32
_MAX_CONVERTERS = 32  # swscale contexts kept per thread

_converters = threading.local()


def _reformat(frame, **kwargs):
    """`frame.reformat(**kwargs)`, single-threaded, through a reformatter kept per thread and
    conversion (source size and format, arguments).

    PyAV's `VideoFrame.reformat` builds a new swscale context for every frame it is called on
    and slices the work over threads by default; for a patch both cost more than the
    conversion itself (a 620x300 BGR patch to yuv420p: 6.7 ms, 1.2 ms this way, same pixels).
    """
    cache = getattr(_converters, "by_key", None)
    if cache is None:
        cache = _converters.by_key = {}
    key = (frame.width, frame.height, frame.format.name, tuple(sorted(kwargs.items())))
    reformatter = cache.get(key)
    if reformatter is None:
        if len(cache) >= _MAX_CONVERTERS:
            cache.clear()
        reformatter = cache[key] = pyav().video.reformatter.VideoReformatter()
    return reformatter.reformat(frame, threads=1, **kwargs)


def upright(image: np.ndarray, rotation: int, *, contiguous: bool = True) -> np.ndarray:
    """The image as displayed: rotated counter-clockwise by `rotation` (a multiple of 90).

    With `contiguous=False` a rotated image is a strided view, not a copy (for callers that
    only cut crops of it)."""
    k = (rotation // 90) % 4
    if not k:
        return image
    view = np.rot90(image, k)
    return np.ascontiguousarray(view) if contiguous else view


def boxes_to_stored(xyxy: np.ndarray, rotation: int, stored_hw: tuple[int, int]) -> np.ndarray:
    """Map boxes found on `upright(stored, rotation)` back to the stored image's pixels."""
    k = (rotation // 90) % 4
    if k == 0 or len(xyxy) == 0:
        return xyxy
    h, w = stored_hw
    x0, y0, x1, y1 = (xyxy[:, i].astype(np.float32) for i in range(4))
    # One quarter turn (np.rot90, k=1) of an image of width W sends (x, y) to (y, W - x);
    # undo the k turns last to first, each with the width of the image it was applied to.
    for step in range(k, 0, -1):
        width = w if (step - 1) % 2 == 0 else h
        x0, y0, x1, y1 = width - y1, x0, width - y0, x1
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)


def boxes_to_upright(xyxy: np.ndarray, rotation: int, stored_hw: tuple[int, int]) -> np.ndarray:
    """Map boxes of the stored image to `upright(stored, rotation)` (the inverse of
    `boxes_to_stored`: the stored image is the upright one turned back by the same angle)."""
    k = (rotation // 90) % 4
    if k == 0 or len(xyxy) == 0:
        return np.asarray(xyxy, np.float32)
    return boxes_to_stored(np.asarray(xyxy, np.float32), (4 - k) * 90,
                           rotation_dims(stored_hw, rotation))


def points_to_stored(points: np.ndarray, rotation: int, stored_hw: tuple[int, int]) -> np.ndarray:
    """Map (N, 2) x, y points of the upright image back to the stored image's pixels."""
    k = (rotation // 90) % 4
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    if k == 0:
        return pts
    h, w = stored_hw
    x, y = pts[:, 0].copy(), pts[:, 1].copy()
    for step in range(k, 0, -1):
        width = w if (step - 1) % 2 == 0 else h
        x, y = width - y, x
    return np.stack([x, y], axis=1)


def rotation_dims(stored_hw: tuple[int, int], rotation: int) -> tuple[int, int]:
    h, w = stored_hw
    return (w, h) if (rotation // 90) % 2 else (h, w)


def composite(original, masked_bgr: np.ndarray, coverage: np.ndarray):
    """A frame like `original` whose pixels under `coverage` come from `masked_bgr`.

    Unmasked pixels keep the decoded values exactly (no colour round trip, 10-bit stays
    10-bit); masked ones are converted back with the frame's colour matrix and range. Only
    the bounding box of the coverage is converted.
    """
    av = pyav()
    fmt = original.format
    layout = _plane_layout(original)
    bx, by, bw, bh = cv2.boundingRect(np.ascontiguousarray(coverage).view(np.uint8))
    if layout is None or not bw:  # packed/exotic layout: the whole frame is converted
        return _carry_props(original, _from_bgr(masked_bgr, original))
    h, w = coverage.shape
    # The box, widened to whole chroma samples so planes stay aligned with it, and to the grid.
    fy = max(1, max(math.ceil(h / p.height) for p in original.planes))
    fx = max(1, max(math.ceil(w / p.width) for p in original.planes))
    y0, y1 = _grid_span(by, by + bh, h, fy)
    x0, x1 = _grid_span(bx, bx + bw, w, fx)
    patch = _from_bgr(np.ascontiguousarray(masked_bgr[y0:y1, x0:x1]), original)
    new = av.VideoFrame(w, h, fmt.name)
    cover = coverage[y0:y1, x0:x1]
    masks: dict[tuple[int, int], np.ndarray] = {}  # per plane size (chroma planes share one)
    for (comps, dtype), po, pn, pp in zip(layout, original.planes, new.planes, patch.planes):
        sy, sx = math.ceil(h / po.height), math.ceil(w / po.width)  # this plane's subsampling
        o = _plane_view(po, po.height, po.width, comps, dtype)
        n = _plane_view(pn, po.height, po.width, comps, dtype)
        np.copyto(n, o)
        q = _plane_view(pp, pp.height, pp.width, comps, dtype)
        py0, px0 = y0 // sy, x0 // sx
        region = n[py0 : py0 + pp.height, px0 : px0 + pp.width]
        m = masks.get((pp.height, pp.width))
        if m is None:
            m = masks[(pp.height, pp.width)] = _downsample_any(cover, pp.height, pp.width)
        rh, rw = region.shape[:2]
        copy_where(region, q[:rh, :rw], m[:rh, :rw])
    return _carry_props(original, new)


def _grid_span(lo: int, hi: int, size: int, align: int) -> tuple[int, int]:
    """[lo, hi) grown to a multiple of PATCH_GRID (at most `size`), inside [0, size), starting
    on a multiple of `align` (whole chroma samples)."""
    want = min(size, -(-(hi - lo) // PATCH_GRID) * PATCH_GRID)
    lo = lo // align * align
    hi = min(size, max(hi, lo + want))
    lo = max(0, hi - want) // align * align
    return lo, hi


def _from_bgr(bgr: np.ndarray, like):
    """A BGR image as a frame in `like`'s pixel format, colour matrix and range."""
    av = pyav()
    cs = like.colorspace if like.colorspace not in (0, 2) else None
    return _reformat(av.VideoFrame.from_ndarray(bgr, format="bgr24"), format=like.format.name,
                     dst_colorspace=cs, dst_color_range=like.color_range or None)


def _plane_layout(frame) -> list[tuple[int, type]] | None:
    """(components, dtype) per plane when each plane holds same-sized samples; else None."""
    fmt = frame.format
    per_plane: dict[int, list] = {}
    for c in fmt.components:
        per_plane.setdefault(c.plane, []).append(c)
    layout = []
    for i in range(len(frame.planes)):
        comps = per_plane.get(i)
        if not comps:
            return None
        bits = {c.bits for c in comps}
        sizes = {(c.width, c.height) for c in comps}
        if len(bits) != 1 or len(sizes) != 1:
            return None
        depth = bits.pop()
        dtype = np.uint8 if depth <= 8 else np.uint16
        plane = frame.planes[i]
        if plane.width * len(comps) * np.dtype(dtype).itemsize > plane.line_size:
            return None
        layout.append((len(comps), dtype))
    if fmt.name.startswith(("rgb", "bgr", "argb", "abgr", "0rgb", "0bgr")) and len(layout) == 1:
        return None  # packed RGB: converting back from BGR is exact anyway
    return layout


def _plane_view(plane, ph: int, pw: int, comps: int, dtype) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    buf = np.frombuffer(plane, np.uint8)
    rows = buf[: plane.line_size * ph].reshape(ph, plane.line_size)
    view = rows[:, : pw * comps * itemsize].view(dtype)
    return view.reshape(ph, pw, comps) if comps > 1 else view.reshape(ph, pw)


def _downsample_any(mask: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """Boolean mask at plane resolution: a plane sample is covered if any pixel it spans is."""
    h, w = mask.shape
    if (ph, pw) == (h, w):
        return mask
    fy, fx = math.ceil(h / ph), math.ceil(w / pw)
    padded = np.zeros((ph * fy, pw * fx), bool)
    padded[:h, :w] = mask
    out = np.zeros((ph, pw), bool)
    for dy in range(fy):  # element-wise ORs of strided views: far cheaper than any(axis=...)
        for dx in range(fx):
            out |= padded[dy::fy, dx::fx]
    return out


def _carry_props(original, new):
    new.pts = original.pts
    if original.time_base is not None:
        new.time_base = original.time_base
    try:
        new.duration = original.duration
    except (AttributeError, TypeError):
        pass
    new.colorspace = original.colorspace
    new.color_range = original.color_range
    return new


def display_matrix(frame) -> list[int] | None:
    """The frame's display matrix (9 int32) when it has one other than the identity."""
    try:
        for sd in frame.side_data:
            if "DISPLAYMATRIX" in str(sd.type):
                m = np.frombuffer(bytes(sd), np.int32)[:9].tolist()
                if m != [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]:
                    return m
    except Exception:
        return None
    return None


def frame_rotation(frame) -> int:
    """Counter-clockwise display rotation of the frame, rounded to a multiple of 90 degrees."""
    try:
        r = frame.rotation
    except Exception:
        return 0
    if r is None or not math.isfinite(r):
        return 0
    return int(round(r / 90.0)) * 90 % 360


@dataclass(frozen=True)
class Orientation:
    """A video's stored frames and the upright pictures detectors and regions see."""

    rotation: int  # degrees counter-clockwise, a multiple of 90
    stored_hw: tuple[int, int]

    def upright(self, image: np.ndarray, *, contiguous: bool = True) -> np.ndarray:
        return upright(image, self.rotation, contiguous=contiguous)

    def to_upright(self, xyxy: np.ndarray) -> np.ndarray:
        return boxes_to_upright(xyxy, self.rotation, self.stored_hw)

    def to_stored(self, xyxy: np.ndarray) -> np.ndarray:
        return boxes_to_stored(xyxy, self.rotation, self.stored_hw)

    def points_to_stored(self, points: np.ndarray) -> np.ndarray:
        return points_to_stored(points, self.rotation, self.stored_hw)

    @property
    def upright_hw(self) -> tuple[int, int]:
        return rotation_dims(self.stored_hw, self.rotation)
