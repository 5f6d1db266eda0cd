"""Verify: run the detectors again on the masked result and mask whatever they still find.

A mask that leaves a face detectable (a tilted face only half inside its ellipse, a plate
found at a second scale after the first pass) is caught here. Same targets, same thresholds
as the first pass; rounds, each on the result of the previous one, go on until one finds
nothing left outside the masks (at most `max_rounds` detector runs). One algorithm,
`verify_frames`, for photos and video frames; they differ in where it looks (a photo: the
whole picture at its whole-image scale, a small photo's enlarged detail view around the
masks, every target, up to MAX_ROUNDS, a local model's later rounds only around what the round
before masked; a video frame: around what masking changed,
the targets it fixed, up to MAX_VIDEO_ROUNDS — the rest of a decoded frame was searched at a
lower threshold already) and `verify` is the photo's entry.

Rounds go on because masking changes what the detector sees: at low thresholds a blurred,
skin-toned oval on a plain background is itself face-like, and a detection on its edge (partly
on the mask) is masked, which moves the edge. Measured on face_mask at face_threshold 0.2: most
photos settle after 1-2 rounds that fix something, a crowd photo after 6 (a mask "crawling"
along a shop front). A round that fixes something must be followed by one that checks.

A detection lying (almost) entirely on pixels that are already masked is the detector seeing
the mask itself: a blurred 10-px head is still a head-shaped blob, and at that size the face
model fires on blobs (measured on the face_mask crowd photos: scores 0.43-0.53, again after
every re-blur). Those pixels are already irreversibly masked, so masking them again changes
nothing; when the caller says which pixels are masked (`covered`), such detections are counted
as `on_mask` and left alone, and only detections reaching into unmasked pixels are fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import log, mask
from .config import Profile
from .detect.nms import merge
from .detect.tiling import merge_rects
from .media.frames import Orientation
from .report import JobReport
from .types import Detections

# Detector runs on the masked result; the last one only confirms that nothing is left.
MAX_ROUNDS = 8
# Video frames: round one around what masking changed, round two around round one's masks.
MAX_VIDEO_ROUNDS = 2
# A residual with at least this fraction of its box on already-masked pixels is the mask itself.
ON_MASK_FRACTION = 0.9
# Video verification looks again only around what masking changed: each changed box grown by
# this many times its size on every side (at least NEAR_MIN_PX), see `neighbourhoods`.
NEAR_CONTEXT = 0.5
NEAR_MIN_PX = 32
# ...and shown to a model with a dynamic input scaled down so that the smallest mask in it is
# about this many pixels on its short side (never scaled up): what masking can newly reveal
# is at the scale of the masks (a face a mask covers partly), and detectors find 48 px faces
# reliably; a 200 px face costs 1/16 of the work this way.
NEAR_OBJECT_PX = 48
# A detector call's fixed cost (session call, input blob, decoding, NMS) in input pixels of a
# dynamic-input model: RetinaFace-MobileNet0.25 on one CPU thread takes ~1.3 ms for a 96 x 128
# view and ~16 ms for 384 x 640 (about 0.06 us per pixel plus ~0.6 ms a call).
VIEW_CALL_PX = 10_000


def on_mask(detections: Detections, covered: np.ndarray, fraction: float = ON_MASK_FRACTION) -> np.ndarray:
    """Boolean per detection: at least `fraction` of its box lies on `covered` pixels."""
    h, w = covered.shape
    out = np.zeros(len(detections), bool)
    for i, (x0, y0, x1, y1) in enumerate(detections.xyxy):
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        if c1 > c0 and r1 > r0:
            out[i] = covered[r0:r1, c0:c1].mean() >= fraction
    return out


def neighbourhoods(
    boxes: np.ndarray,
    shape_hw: tuple[int, int],
    *,
    min_hw: tuple[int, int] = (64, 64),
    context: float = NEAR_CONTEXT,
    object_px: float | None = None,
) -> list[tuple[int, int, int, int]]:
    """Rectangles (x0, y0, x1, y1) of the image worth re-detecting after `boxes` were masked.

    On a frame the detector already searched, pixels far from every mask are unchanged, so
    only a detection near a mask can be new: a face the mask covers partly, or one whose
    context the mask changed. Each box grows by `context` x its size on every side, to at
    least `min_hw` (a fixed-input model letterboxes a smaller crop up, which it was not
    trained for), clipped to the image. Overlapping rectangles are merged into one when that
    costs the detector less (`_view_cost`): always for a fixed-input model (`object_px` None:
    every view is a whole input); for a dynamic one only when the union is not much larger
    than its parts, since a chain of masks across a crowd would otherwise merge into a view of
    almost the whole frame, at the scale of its smallest mask (`neighbourhood_scale`).
    """
    h, w = shape_hw
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rects: list[tuple[int, int, int, int]] = []
    for x0, y0, x1, y1 in boxes:
        if not np.isfinite([x0, y0, x1, y1]).all():
            continue
        gx = max(NEAR_MIN_PX, (x1 - x0) * context)
        gy = max(NEAR_MIN_PX, (y1 - y0) * context)
        r = [x0 - gx, y0 - gy, x1 + gx, y1 + gy]
        for lo, hi, need, size in ((0, 2, min_hw[1], w), (1, 3, min_hw[0], h)):
            short = need - (r[hi] - r[lo])
            if short > 0:
                r[lo] -= short / 2
                r[hi] += short / 2
            if r[lo] < 0:  # shift inside the image before clipping, to keep the size
                r[hi] -= r[lo]
                r[lo] = 0
            if r[hi] > size:
                r[lo] -= r[hi] - size
                r[hi] = size
        c0, r0 = max(0, int(np.floor(r[0]))), max(0, int(np.floor(r[1])))
        c1, r1 = min(w, int(np.ceil(r[2]))), min(h, int(np.ceil(r[3])))
        if c1 > c0 and r1 > r0:
            rects.append((c0, r0, c1, r1))

    costs: dict[tuple[int, int, int, int], float] = {}

    def cost(r: tuple[int, int, int, int]) -> float:
        if object_px is None:
            return 1.0
        if r not in costs:  # pairs are looked at again after every merge
            costs[r] = _view_cost(boxes, r, object_px)
        return costs[r]

    return merge_rects(rects, cost)


def _view_cost(boxes: np.ndarray, rect: tuple[int, int, int, int], object_px: float) -> float:
    """What re-detecting in `rect` costs a dynamic-input model, in input pixels: the crop at
    its `neighbourhood_scale`, plus a detector call's fixed cost (VIEW_CALL_PX)."""
    scale = neighbourhood_scale(boxes, rect, object_px)
    return VIEW_CALL_PX + (rect[2] - rect[0]) * (rect[3] - rect[1]) * scale * scale


def neighbourhood_scale(boxes: np.ndarray, rect: tuple[int, int, int, int],
                        object_px: float = NEAR_OBJECT_PX) -> float:
    """Factor (<= 1) to resize the crop `rect` by before re-detecting in it (see NEAR_OBJECT_PX):
    the smallest box whose centre lies in `rect` ends up `object_px` on its short side."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    inside = (cx >= rect[0]) & (cx < rect[2]) & (cy >= rect[1]) & (cy < rect[3])
    sides = np.minimum(b[inside, 2] - b[inside, 0], b[inside, 3] - b[inside, 1])
    sides = sides[np.isfinite(sides) & (sides > 0)]
    if not len(sides):
        return 1.0
    return float(min(1.0, object_px / sides.min()))


def verify_view(image: np.ndarray, rect, boxes: np.ndarray, scalable: bool):
    """The crop `rect` of `image` for verification and its (x, y) scale factors: for a
    dynamic-input model scaled down so its mask is NEAR_OBJECT_PX across (`neighbourhood_scale`)."""
    x0, y0, x1, y1 = rect
    view = np.ascontiguousarray(image[y0:y1, x0:x1])
    scale = neighbourhood_scale(boxes, rect) if scalable else 1.0
    if scale >= 1.0:
        return view, (1.0, 1.0)
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    view = cv2.resize(view, size, interpolation=cv2.INTER_AREA)
    return view, (size[0] / (x1 - x0), size[1] / (y1 - y0))


def dedupe(dets: Detections, iou: float) -> Detections:
    """One detection per object where overlapping verification views found it twice."""
    if len(dets) < 2:
        return dets
    parts = []
    for c in np.unique(dets.cls):
        one = dets.select(dets.cls == c)
        xyxy, score = merge(one.xyxy, one.score, iou)
        parts.append(Detections(xyxy, score, np.full(len(score), c, one.cls.dtype)))
    return Detections.concat(parts)


def verify(
    image: np.ndarray,
    engine,
    profile: Profile,
    *,
    max_rounds: int = MAX_ROUNDS,
    keep: Callable[[Detections], Detections] | None = None,
    covered: np.ndarray | None = None,
    memo=None,
) -> "Verified":
    """Verify a photo (masked in place): `verify_frames` on it as one frame searched whole, all
    targets every round, up to `max_rounds` detector runs; the counts.

    `keep` filters residuals before masking (e.g. the operator's exclude regions); `covered`
    (bool H x W, updated in place) marks the pixels already masked, see the module docstring.
    With `covered`, a small photo's enlarged detail view is searched again only around its
    masked regions (`Engine.detect`'s `near`, anond/detect/tiling.py `around`): elsewhere its
    pixels are the ones the first pass searched at that scale; the whole-image view is
    searched whole every round, a large photo's tiles where masks changed them (`memo`). A
    local model (`Detector.local`, the face models) searches later rounds, whole view and
    detail views, only around what was masked since its last search (`Engine.detect`'s
    `recent`): elsewhere its outputs are those of that search. `memo`
    (`anond.detect.engine.ViewMemo`, filled by the first pass and each round): views of the
    photo whose pixels no mask has changed since they were run are not run again (they would
    find what they found); the search is the same.
    """
    h, w = image.shape[:2]
    frame = FrameToVerify(0, 0.0, image, covered if covered is not None else np.zeros((h, w), bool),
                          list(profile.targets), None)

    searched: dict[str, np.ndarray] = {}  # per target, the coverage when it last searched

    def run(views, detect, targets):
        # Detail views only around the masks so far (`Engine.detect`'s `near`), when known;
        # a local model's later rounds only around what was masked since its last search.
        # Their boxes are found only if the Engine asks (connected regions of a 24 MP mask:
        # ~0.1 s): a large photo's tiles and a model that is not local never do.
        near = recent = None
        if covered is not None:
            now = frame.coverage.copy()
            near = [lambda: masked_boxes(now)]
            before = searched.get(targets[0])
            if before is not None:
                recent = [lambda: masked_boxes(now & ~before)]
            searched[targets[0]] = now
        return engine.detect(views, detect, targets, memos=[memo] if memo is not None else None,
                             near=near, recent=recent)

    checked = verify_frames(
        [frame], profile, profile.detect, run, engine.fixed_input, Orientation(0, (h, w)),
        (lambda dets, index, t: keep(dets)) if keep is not None else None, max_rounds)
    if not checked.settled:
        # Everything found was masked, but the last masks were not checked again.
        log.get().warning("verify.unsettled", rounds=checked.rounds, fixes=checked.fixes)
    return checked


def masked_boxes(covered: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy boxes of the connected regions of masked pixels."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(covered.astype(np.uint8), connectivity=8)
    st = stats[1:]
    x0, y0 = st[:, cv2.CC_STAT_LEFT], st[:, cv2.CC_STAT_TOP]
    return np.stack([x0, y0, x0 + st[:, cv2.CC_STAT_WIDTH], y0 + st[:, cv2.CC_STAT_HEIGHT]],
                    axis=1).astype(np.float32).reshape(-1, 4)


@dataclass
class FrameToVerify:
    """One masked frame (stored orientation): its pixels and coverage are updated in place."""

    index: int
    t: float
    bgr: np.ndarray
    coverage: np.ndarray  # bool (H, W): pixels masked so far
    targets: list[str]  # targets to search for again (see the video job's `_verify_targets`)
    # (N, 4) stored-frame boxes around what masking changed: only their neighbourhoods are
    # searched; None: the whole picture (a photo), every round, with every target.
    changed: np.ndarray | None


@dataclass
class Verified:
    """What verifying found and masked (counts only)."""

    fixes: int = 0  # residual objects masked
    on_mask: int = 0  # detections of the mask itself (already masked), left alone, every round
    views: int = 0  # pictures or crops given to the detector
    rounds: int = 0  # detector rounds run
    settled: bool = False  # the last round found nothing to fix (so no mask is left unchecked)
    masked: dict[str, int] = field(default_factory=dict)  # fixes per target label


def verify_frames(frames: list[FrameToVerify], profile: Profile, detect, run_detector,
                  fixed_input: Callable[[str], tuple[int, int] | None], orient,
                  keep: Callable[[Detections, int, float], Detections] | None,
                  max_rounds: int = MAX_VIDEO_ROUNDS) -> Verified:
    """Re-detect on masked frames (batched per target); mask and count what is found, in
    rounds, each on the result of the previous one, until a round fixes nothing or
    `max_rounds` ran. The one verification of photos (`verify`) and video frames.

    A video frame is searched only in the neighbourhood of what masking changed
    (`neighbourhoods`): elsewhere its pixels are the decoded ones, already searched at a lower
    threshold; round two looks around the masks round one added, for the targets it fixed. A
    photo (`changed` None) is searched whole every round. `run_detector(views, detect,
    [target])` runs the detector on pictures or crops; `orient` maps between stored frames and
    upright pictures (`media.frames.Orientation`); `keep(dets, index, t)` drops what the
    operator excluded.
    """
    result = Verified()
    active = list(frames)
    for _ in range(max_rounds):
        result.rounds += 1
        found = _found_around_masks(active, profile, detect, run_detector, fixed_input, orient, result)
        still = []
        for frame, parts in zip(active, found):
            dets = Detections.concat(parts)
            if frame.changed is not None:  # overlapping neighbourhoods see an object twice
                dets = dedupe(dets, profile.detect.nms_iou)
            if len(dets) and keep is not None:
                dets = keep(dets, frame.index, frame.t)
            if not len(dets):
                continue
            dets.xyxy = orient.to_stored(dets.xyxy)
            # The detector seeing the mask itself (a blurred head is still a head-shaped
            # blob) changes nothing when masked again: counted, left alone.
            seen_on_mask = on_mask(dets, frame.coverage)
            result.on_mask += int(seen_on_mask.sum())
            dets = dets.select(~seen_on_mask)
            if not len(dets):
                continue
            mask.apply(frame.bgr, dets, profile.mask)
            frame.coverage |= mask.coverage_mask(frame.bgr.shape[:2], dets, profile.mask)
            result.fixes += len(dets)
            fixed = dets.counts()
            JobReport.add_counts(result.masked, fixed)
            log.get().debug("verify.residual", round=result.rounds, **fixed)
            if frame.changed is None:
                still.append(frame)
            else:
                still.append(FrameToVerify(frame.index, frame.t, frame.bgr, frame.coverage,
                                           [t for t in profile.targets if t in fixed],
                                           mask.margined_boxes(dets, profile.mask)))
        if not still:
            result.settled = True
            break
        active = still
    return result


def _found_around_masks(active: list[FrameToVerify], profile: Profile, detect, run_detector,
                        fixed_input, orient, result: Verified) -> list[list[Detections]]:
    """Per frame, the detections (upright pixels) in the picture (`changed` None) or in the
    neighbourhoods of its changed boxes, one batched detector run per target."""
    found: list[list[Detections]] = [[] for _ in active]
    for target in profile.targets:
        views, owners = [], []
        fixed = fixed_input(target)
        for k, frame in enumerate(active):
            if target not in frame.targets:
                continue
            image = orient.upright(frame.bgr, contiguous=False)  # crops copy
            if frame.changed is None:
                views.append(image)
                owners.append((k, 0, 0, (1.0, 1.0)))
                continue
            boxes = orient.to_upright(frame.changed)
            for rect in neighbourhoods(boxes, image.shape[:2], min_hw=fixed or (64, 64),
                                       object_px=None if fixed else NEAR_OBJECT_PX):
                view, scale = verify_view(image, rect, boxes, fixed is None)
                views.append(view)
                owners.append((k, rect[0], rect[1], scale))
        if not views:
            continue
        result.views += len(views)
        for (k, x0, y0, (sx, sy)), dets in zip(owners, run_detector(views, detect, [target])):
            if len(dets):
                dets.xyxy[:, 0::2] = dets.xyxy[:, 0::2] / sx + x0
                dets.xyxy[:, 1::2] = dets.xyxy[:, 1::2] / sy + y0
                found[k].append(dets)
    return found
