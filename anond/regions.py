"""Manual regions: operator-supplied masks and exclusions, read from a sidecar JSON file.

Faces and plates are found by detectors; logos, tattoos, badges, documents, screens and house
numbers are not. The operator puts `<media file name>.regions.json` beside the media (e.g.
`photo.jpg.regions.json`) listing rectangles or polygons in pixel coordinates of the upright
image or frame. A `mask` region is masked like a detection; an `exclude` region suppresses the
automatic detections inside it (a poster face the operator has cleared). For video a region
may have a time span (seconds or frame numbers) and keyframes, linearly interpolated, so it
can follow a moving object. Format and examples: docs/REGIONS.md, docs/regions.schema.json.

Error messages name the region by its index in the `regions` array and the problem; never a
file name or a path (the caller adds the job id).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RegionsError, RegionsMissing
from .types import Detections, Target

SIDECAR_SUFFIX = ".regions.json"
SCHEMA_VERSION = 1
# An automatic detection is excluded when at least this fraction of its box area lies inside
# one exclude region. High on purpose: a real face that merely brushes past a cleared poster
# stays masked; draw exclude regions generously around what they clear.
EXCLUDE_MIN_INSIDE = 0.8
MAX_SIDECAR_BYTES = 1 << 20  # a sidecar is a short hand-written list, not a data dump
_TIME_EPS = 1e-6  # frame timestamps are floats; a frame exactly at `end` is inside the span

Policy = Literal["off", "optional", "required"]
MaskMode = Literal["blur", "pixelate", "solid"]
Point = tuple[float, float]


# ---------------------------------------------------------------------------------------------
# The file format (pydantic models; docs/regions.schema.json is generated from these)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rect(_Model):
    """An axis-aligned rectangle: top-left corner and size, in pixels."""

    x: float = Field(description="left edge, pixels from the left of the upright frame")
    y: float = Field(description="top edge, pixels from the top of the upright frame")
    w: float = Field(description="width in pixels (> 0)")
    h: float = Field(description="height in pixels (> 0)")


_POLYGON = dict(
    description="at least 3 [x, y] points in pixels of the upright frame, in drawing order",
    json_schema_extra={"minItems": 3},
)


class Keyframe(_Model):
    """The region's shape at one moment; shapes in between are linearly interpolated."""

    t: float | None = Field(None, ge=0, description="time in seconds from the start of the video")
    frame: int | None = Field(None, ge=0, description="frame number, 0 = first frame")
    rect: Rect | None = None
    polygon: list[Point] | None = Field(None, **_POLYGON)


class Region(_Model):
    """One manual region: exactly one of `rect`, `polygon` or `keyframes`."""

    type: Literal["mask", "exclude"] = Field(
        "mask",
        description="mask: mask this area; exclude: keep automatic detections inside it unmasked",
    )
    mode: MaskMode | None = Field(None, description="mask mode; default: the profile's mask.mode")
    rect: Rect | None = None
    polygon: list[Point] | None = Field(None, **_POLYGON)
    keyframes: list[Keyframe] | None = Field(
        None, description="video: shapes over time; all rects, or all polygons with the same number of points"
    )
    start: float | None = Field(None, ge=0, description="video: first second the region applies (inclusive)")
    end: float | None = Field(None, ge=0, description="video: last second the region applies (inclusive)")
    start_frame: int | None = Field(None, ge=0, description="video: first frame the region applies (inclusive)")
    end_frame: int | None = Field(None, ge=0, description="video: last frame the region applies (inclusive)")


class Sidecar(_Model):
    """`<media file name>.regions.json`: manual regions for one image or video."""

    model_config = ConfigDict(extra="forbid", title="anond manual regions sidecar")

    version: Literal[1] = Field(description="format version; this anond reads version 1")
    regions: list[Region] = Field(description="regions, referred to by their index in error messages")


def json_schema() -> dict:
    """The JSON Schema of the sidecar format (committed as docs/regions.schema.json)."""
    schema = Sidecar.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# ---------------------------------------------------------------------------------------------
# Compiled regions: what the pipelines use


@dataclass
class CompiledRegion:
    """One validated region: its shape over time as polygons, ready to evaluate per frame."""

    index: int
    kind: Literal["mask", "exclude"]
    mode: MaskMode | None
    unit: Literal["s", "frame"] | None  # None: applies to every frame (and to still images)
    span: tuple[float, float]  # inclusive, in `unit`; (-inf, inf) when unbounded
    keys: np.ndarray  # (K,) keyframe positions in `unit`; (1,) zero for a static shape
    shapes: np.ndarray  # (K, N, 2) float32 polygons

    def position(self, frame_index: int, t: float) -> float:
        return float(frame_index) if self.unit == "frame" else float(t)

    def active(self, frame_index: int, t: float) -> bool:
        if self.unit is None:
            return True
        v = self.position(frame_index, t)
        eps = _TIME_EPS if self.unit == "s" else 0.0
        return self.span[0] - eps <= v <= self.span[1] + eps

    def polygon_at(self, frame_index: int, t: float) -> np.ndarray:
        """The shape at this moment; held at the first/last keyframe outside their range."""
        if len(self.keys) == 1:
            return self.shapes[0]
        v = self.position(frame_index, t)
        if v <= self.keys[0]:
            return self.shapes[0]
        if v >= self.keys[-1]:
            return self.shapes[-1]
        i = int(np.searchsorted(self.keys, v, side="right")) - 1
        a = (v - self.keys[i]) / (self.keys[i + 1] - self.keys[i])
        return ((1.0 - a) * self.shapes[i] + a * self.shapes[i + 1]).astype(np.float32)


@dataclass
class Regions:
    """All manual regions of one media file, plus counters for the job report."""

    regions: list[CompiledRegion] = field(default_factory=list)
    applied: set[int] = field(default_factory=set)  # indices of mask regions used on >= 1 frame
    excluded: int = 0  # automatic detections suppressed, summed over frames
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def empty(cls) -> "Regions":
        return cls()

    def __len__(self) -> int:
        return len(self.regions)

    @property
    def has_excludes(self) -> bool:
        return any(r.kind == "exclude" for r in self.regions)

    @property
    def applied_count(self) -> int:
        """Manual mask regions applied on at least one frame (the report's `manual_regions`)."""
        return len(self.applied)

    def masks_at(self, frame_index: int = 0, t: float = 0.0) -> list[tuple[np.ndarray, MaskMode | None]]:
        """Mask polygons for one frame with their mode (None: use the profile's mode)."""
        out = []
        for r in self.regions:
            if r.kind == "mask" and r.active(frame_index, t):
                out.append((r.polygon_at(frame_index, t), r.mode))
                self.applied.add(r.index)
        return out

    def exclude_at(self, frame_index: int = 0, t: float = 0.0) -> list[np.ndarray]:
        """Exclude polygons active on one frame."""
        return [
            r.polygon_at(frame_index, t)
            for r in self.regions
            if r.kind == "exclude" and r.active(frame_index, t)
        ]

    def filter_detections(
        self, dets: Detections, frame_index: int = 0, t: float = 0.0, count: bool = True,
        counted: np.ndarray | None = None,
    ) -> tuple[Detections, int]:
        """Drop automatic detections lying >= EXCLUDE_MIN_INSIDE inside one exclude region.
        `count`: add the dropped ones to `excluded` — those of them `counted` marks when given
        (the report's rule: the detection pass's confident detections only, not verification's
        re-detections, not the tracker's low-score ones). Returns the kept detections and how
        many were added."""
        if not len(dets):
            return dets, 0
        polygons = self.exclude_at(frame_index, t)
        if not polygons:
            return dets, 0
        drop = np.zeros(len(dets), bool)
        for i, (box, cls) in enumerate(zip(dets.xyxy, dets.cls)):
            if int(cls) == int(Target.MANUAL):
                continue
            drop[i] = any(inside_fraction(box, p) >= EXCLUDE_MIN_INSIDE for p in polygons)
        n = int((drop if counted is None else drop & counted).sum()) if count else 0
        if n:
            with self._lock:  # video: the job's thread and the mask threads filter at once
                self.excluded += n
        return (dets.select(~drop) if drop.any() else dets), n


def inside_fraction(box: np.ndarray, polygon: np.ndarray) -> float:
    """Fraction of the area of box (x1, y1, x2, y2) that lies inside a simple polygon."""
    x1, y1, x2, y2 = (float(v) for v in box)
    area = (x2 - x1) * (y2 - y1)
    if area <= 0:
        # A degenerate box counts as inside when its centre is.
        return float(_point_in_polygon((x1 + x2) / 2, (y1 + y2) / 2, polygon))
    return _clipped_area(polygon, x1, y1, x2, y2) / area


def _clipped_area(polygon: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> float:
    # Sutherland-Hodgman: clipping any simple polygon by a convex window (the box) leaves a
    # polygon whose area is exactly the intersection area.
    pts = [(float(x), float(y)) for x, y in polygon]
    for axis, bound, keep_greater in ((0, x1, True), (0, x2, False), (1, y1, True), (1, y2, False)):
        if not pts:
            return 0.0
        out = []
        for j in range(len(pts)):
            cur, prev = pts[j], pts[j - 1]
            cur_in = cur[axis] >= bound if keep_greater else cur[axis] <= bound
            prev_in = prev[axis] >= bound if keep_greater else prev[axis] <= bound
            if cur_in != prev_in:
                a = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = (prev[0] + a * (cur[0] - prev[0]), prev[1] + a * (cur[1] - prev[1]))
                out.append(cross)
            if cur_in:
                out.append(cur)
        pts = out
    return abs(_signed_area(np.asarray(pts, np.float64))) if len(pts) >= 3 else 0.0


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _point_in_polygon(px: float, py: float, poly: np.ndarray) -> bool:
    inside = False
    n = len(poly)
    for i in range(n):
        xa, ya = poly[i]
        xb, yb = poly[i - 1]
        if (ya > py) != (yb > py) and px < xa + (py - ya) * (xb - xa) / (yb - ya):
            inside = not inside
    return inside


# ---------------------------------------------------------------------------------------------
# Finding and loading a sidecar


def sidecar_path(media_path: str | Path) -> Path:
    """Where the sidecar of `media_path` would be: the same name plus `.regions.json`."""
    media_path = Path(media_path)
    return media_path.with_name(media_path.name + SIDECAR_SUFFIX)


def is_sidecar(path: str | Path) -> bool:
    """True for `*.regions.json`: never media, never copied to an output folder."""
    return Path(path).name.lower().endswith(SIDECAR_SUFFIX)


def find_sidecar(media_path: str | Path) -> Path | None:
    """The sidecar beside `media_path`, or None when there is none (a media name of 255 bytes
    leaves no room for one: the longer name cannot exist)."""
    path = sidecar_path(media_path)
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def load_sidecar(
    path: str | Path,
    *,
    width: int,
    height: int,
    frames: int | None = None,
    fps: float | None = None,
    duration: float | None = None,
    video: bool | None = None,
) -> Regions:
    """Read and validate a sidecar against the upright frame size (and the video's length).

    A still image is assumed when `video` is not given and frames, fps and duration are all None.
    Raises RegionsError with a one-line message naming the region index and the problem.
    """
    try:
        raw = Path(path).read_bytes()[: MAX_SIDECAR_BYTES + 1]
    except OSError as exc:
        raise RegionsError(f"sidecar could not be read: {exc.strerror or type(exc).__name__}") from None
    return parse_sidecar(
        raw, width=width, height=height, frames=frames, fps=fps, duration=duration, video=video
    )


def parse_sidecar(
    raw: bytes | str,
    *,
    width: int,
    height: int,
    frames: int | None = None,
    fps: float | None = None,
    duration: float | None = None,
    video: bool | None = None,
) -> Regions:
    """Like load_sidecar, from the file's content."""
    if len(raw) > MAX_SIDECAR_BYTES:
        raise RegionsError(f"sidecar is larger than {MAX_SIDECAR_BYTES // (1 << 20)} MiB")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise RegionsError("sidecar is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RegionsError(
            f"sidecar is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise RegionsError("sidecar is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise RegionsError("sidecar must be a JSON object with `version` and `regions`")
    if "version" in data and data["version"] != SCHEMA_VERSION:
        raise RegionsError(
            f"sidecar version {data['version']!r} is not supported (this anond reads version {SCHEMA_VERSION})"
        )
    try:
        sidecar = Sidecar.model_validate(data)
    except ValidationError as exc:
        raise RegionsError(_format_validation_error(exc)) from None
    if video is None:
        video = frames is not None or fps is not None or duration is not None
    frame = _Frame(int(width), int(height), bool(video), frames or None, fps or None, duration or None)
    return Regions([_compile(i, r, frame) for i, r in enumerate(sidecar.regions)])


def resolve(
    media_path: str | Path,
    *,
    regions_path: str | Path | None = None,
    policy: Policy = "optional",
    width: int,
    height: int,
    frames: int | None = None,
    fps: float | None = None,
    duration: float | None = None,
    video: bool | None = None,
) -> tuple[Regions, str]:
    """Regions for one job and the report's `regions_status`: "none", "applied" or "rejected: …".

    `regions_path` overrides the sidecar found beside the media. With policy "required" a
    missing or bad sidecar raises RegionsError (the job fails); with "optional" a bad one is
    reported as rejected and the job goes on without manual regions; "off" ignores sidecars.
    """
    if policy == "off":
        return Regions.empty(), "none"
    path = Path(regions_path) if regions_path is not None else find_sidecar(media_path)
    if path is None or (regions_path is not None and not path.is_file()):
        if policy == "required":
            raise RegionsMissing("regions sidecar is required but missing")
        if regions_path is not None:
            return Regions.empty(), "rejected: regions file not found"
        return Regions.empty(), "none"
    try:
        regions = load_sidecar(
            path, width=width, height=height, frames=frames, fps=fps, duration=duration, video=video
        )
    except RegionsError as exc:
        if policy == "required":
            raise
        return Regions.empty(), f"rejected: {exc}"
    return regions, "applied"


# ---------------------------------------------------------------------------------------------
# Validation beyond types: geometry against the frame, timing against the video


@dataclass(frozen=True)
class _Frame:
    width: int
    height: int
    video: bool
    frames: int | None
    fps: float | None
    duration: float | None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def last_time(self) -> float | None:
        """Latest acceptable time in seconds: the duration plus one frame of slack."""
        duration = self.duration
        if duration is None and self.frames and self.fps:
            duration = self.frames / self.fps
        if duration is None:
            return None
        return duration + (1.0 / self.fps if self.fps else 1e-3)


def _compile(index: int, r: Region, frame: _Frame) -> CompiledRegion:
    where = f"regions[{index}]"

    def fail(problem: str) -> RegionsError:
        return RegionsError(f"{where}: {problem}")

    given = [name for name in ("rect", "polygon", "keyframes") if getattr(r, name) is not None]
    if len(given) != 1:
        raise fail("needs exactly one of rect, polygon or keyframes" + (f" (got {', '.join(given)})" if given else ""))
    if r.type == "exclude" and r.mode is not None:
        raise fail("an exclude region has no mask mode")

    seconds = [v is not None for v in (r.start, r.end)]
    frames = [v is not None for v in (r.start_frame, r.end_frame)]
    if r.keyframes:
        seconds.extend(k.t is not None for k in r.keyframes)
        frames.extend(k.frame is not None for k in r.keyframes)
    if any(seconds) and any(frames):
        raise fail("mixes seconds (start, end, t) and frame numbers (start_frame, end_frame, frame)")
    unit: Literal["s", "frame"] | None = "s" if any(seconds) else "frame" if any(frames) else None
    if unit is not None and not frame.video:
        raise fail("a time span or keyframes only apply to video, not to a still image")

    if r.keyframes is not None:
        keys, shapes = _keyframes(r.keyframes, unit, fail, frame)
    else:
        shape = _shape(r.rect, r.polygon, fail, frame, "")
        keys, shapes = np.zeros(1), shape[None]

    lo = r.start if unit == "s" else r.start_frame
    hi = r.end if unit == "s" else r.end_frame
    if r.keyframes is not None:
        lo = keys[0] if lo is None else lo
        hi = keys[-1] if hi is None else hi
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    if lo > hi:
        raise fail("span ends before it starts")
    if unit is not None:
        _check_within_video("span", lo, hi, unit, fail, frame)
        _check_within_video("keyframes", float(keys[0]), float(keys[-1]), unit, fail, frame)
    return CompiledRegion(index, r.type, r.mode, unit, (lo, hi), keys, shapes)


def _keyframes(keyframes: list[Keyframe], unit, fail, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
    if not keyframes:
        raise fail("keyframes is empty")
    keys, shapes = [], []
    for k, kf in enumerate(keyframes):
        if (kf.t is None) == (kf.frame is None):
            raise fail(f"keyframe {k} needs exactly one of t or frame")
        keys.append(float(kf.t if kf.t is not None else kf.frame))
        if (kf.rect is None) == (kf.polygon is None):
            raise fail(f"keyframe {k} needs exactly one of rect or polygon")
        if k and (kf.rect is None) != (keyframes[0].rect is None):
            raise fail(f"keyframe {k} mixes rect and polygon with keyframe 0")
        shape = _shape(kf.rect, kf.polygon, fail, frame, f"keyframe {k}: ")
        if k and len(shape) != len(shapes[0]):
            raise fail(f"keyframe {k} has {len(shape)} points, keyframe 0 has {len(shapes[0])}")
        if k and keys[k] <= keys[k - 1]:
            raise fail(f"keyframes out of order: keyframe {k} is not after keyframe {k - 1}")
        shapes.append(shape)
    return np.asarray(keys, np.float64), np.stack(shapes).astype(np.float32)


def _shape(rect: Rect | None, polygon: list | None, fail, frame: _Frame, prefix: str) -> np.ndarray:
    if rect is not None:
        if not (rect.w > 0 and rect.h > 0):
            raise fail(f"{prefix}rectangle has zero or negative size")
        pts = np.array(
            [[rect.x, rect.y], [rect.x + rect.w, rect.y], [rect.x + rect.w, rect.y + rect.h], [rect.x, rect.y + rect.h]],
            np.float64,
        )
        if not _in_frame(pts, frame).all():
            raise fail(f"{prefix}rectangle lies outside the {frame.size} frame")
        return pts.astype(np.float32)
    assert polygon is not None
    if len(polygon) < 3:
        raise fail(f"{prefix}polygon has {len(polygon)} point{'s' if len(polygon) != 1 else ''}, needs at least 3")
    pts = np.asarray(polygon, np.float64)
    if not np.isfinite(pts).all():
        raise fail(f"{prefix}polygon has a point that is not a finite number")
    outside = np.flatnonzero(~_in_frame(pts, frame))
    if len(outside):
        raise fail(f"{prefix}polygon point {int(outside[0])} lies outside the {frame.size} frame")
    if abs(_signed_area(pts)) < 1e-9:
        raise fail(f"{prefix}polygon has no area (its points lie on one line)")
    return pts.astype(np.float32)


def _in_frame(pts: np.ndarray, frame: _Frame) -> np.ndarray:
    return (
        np.isfinite(pts).all(axis=1)
        & (pts[:, 0] >= 0) & (pts[:, 0] <= frame.width)
        & (pts[:, 1] >= 0) & (pts[:, 1] <= frame.height)
    )


_ENDS = {"span": ("span starts", "span ends"), "keyframes": ("first keyframe is", "last keyframe is")}


def _check_within_video(what: str, lo: float, hi: float, unit: str, fail, frame: _Frame) -> None:
    if unit == "frame":
        if frame.frames is None:
            return
        last = frame.frames - 1
        for said, v in zip(_ENDS[what], (lo, hi)):
            if math.isfinite(v) and v > last:
                raise fail(f"{said} at frame {int(v)}, beyond the video's last frame {last}")
        return
    last_time = frame.last_time()
    if last_time is None:
        return
    length = last_time - (1.0 / frame.fps if frame.fps else 1e-3)
    for said, v in zip(_ENDS[what], (lo, hi)):
        if math.isfinite(v) and v > last_time + _TIME_EPS:
            raise fail(f"{said} at {v:.2f} s, beyond the {length:.2f} s video")


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = list(err["loc"])
        if len(loc) >= 2 and loc[0] == "regions" and isinstance(loc[1], int):
            key = f"regions[{loc[1]}]" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[2:])
        else:
            key = ".".join(str(p) for p in loc) or "(root)"
        parts.append(f"{key}: {err['msg']}")
    return "; ".join(parts)


if __name__ == "__main__":  # regenerate the committed schema: python -m anond.regions > docs/regions.schema.json
    print(json.dumps(json_schema(), indent=2))
