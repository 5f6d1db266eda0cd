"""Detection metrics on boxes: matching, precision/recall/F1, size buckets, masked recall, AP.

Conventions (stated in every report):
- Boxes are float ``xyxy`` in pixels. IoU is area-based, no +1 pixel convention.
- A detection matches a ground-truth box at IoU >= ``iou`` (default 0.5). Matching is greedy,
  per image, by descending score; each detection takes the unmatched ground truth with the
  highest IoU (the COCO rule). A second detection on an already matched object is a false
  positive (duplicates count against precision).
- Ground truth marked *ignore* (VOC ``difficult``, COCO ``iscrowd``, WIDER ``invalid``) counts
  neither way: it is not a miss, and a detection on it is not a false positive.
- Object size is ``sqrt(width * height)`` of the ground-truth box, the measure behind COCO's
  small/medium/large areas (32², 96²); buckets are < 16, 16-32, 32-96 and >= 96 px.
- Masked recall: share of ground-truth objects whose box area the final mask covers by at
  least ``mask_cover`` (default 0.8), from `coverage_fractions` on the real mask geometry.
- AP@0.5 and AP@[.5:.95] come from faster-coco-eval (COCO protocol, 101-point interpolation),
  fed in-memory COCO dicts of a detection run down to a low score (0.05); ``maxDets`` is raised to 1000 so crowds of more than 100 faces are
  not cut off.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field

import numpy as np

from ..types import iou_matrix

SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<16", 0.0, 16.0),
    ("16-32", 16.0, 32.0),
    ("32-96", 32.0, 96.0),
    (">=96", 96.0, math.inf),
)
COCO_MAX_DETS = (1, 10, 1000)


@dataclass
class ImageResult:
    """Ground truth and detections of one image (one target), plus mask coverage per object.

    gt: (N, 4) xyxy; gt_ignore: (N,) bool; det: (M, 4) xyxy; score: (M,);
    covered: (N,) fraction of each ground-truth box's pixels under the final mask (or None).
    Precision/recall use the detections in `det` scoring at or above the configured
    threshold. AP uses `ap_det`/`ap_score` (a run down to a low score) when given, else `det`.
    """

    gt: np.ndarray
    det: np.ndarray
    score: np.ndarray
    gt_ignore: np.ndarray | None = None
    covered: np.ndarray | None = None
    ap_det: np.ndarray | None = None
    ap_score: np.ndarray | None = None
    over_mask: float | None = None  # share of the image masked far from every labelled object
    seconds: float | None = None  # the photo pipeline's time on it: decode, detect, mask, verify

    def __post_init__(self) -> None:
        self.gt = np.asarray(self.gt, np.float64).reshape(-1, 4)
        self.det = np.asarray(self.det, np.float64).reshape(-1, 4)
        self.score = np.asarray(self.score, np.float64).reshape(-1)
        if len(self.score) != len(self.det):
            raise ValueError("det and score differ in length")
        if self.gt_ignore is None:
            self.gt_ignore = np.zeros(len(self.gt), bool)
        self.gt_ignore = np.asarray(self.gt_ignore, bool).reshape(-1)
        if len(self.gt_ignore) != len(self.gt):
            raise ValueError("gt and gt_ignore differ in length")
        if self.ap_det is None:
            self.ap_det, self.ap_score = self.det, self.score
        self.ap_det = np.asarray(self.ap_det, np.float64).reshape(-1, 4)
        self.ap_score = np.asarray(self.ap_score, np.float64).reshape(-1)
        if len(self.ap_score) != len(self.ap_det):
            raise ValueError("ap_det and ap_score differ in length")
        if self.covered is not None:
            self.covered = np.asarray(self.covered, np.float64).reshape(-1)
            if len(self.covered) != len(self.gt):
                raise ValueError("gt and covered differ in length")


@dataclass
class Match:
    """Outcome of matching one image's detections to its ground truth."""

    det_tp: np.ndarray  # (M,) bool: matched a (non-ignored) object
    det_ignored: np.ndarray  # (M,) bool: matched only an ignored object: neither TP nor FP
    gt_matched: np.ndarray  # (N,) bool

    @property
    def det_fp(self) -> np.ndarray:
        return ~(self.det_tp | self.det_ignored)


@dataclass
class Summary:
    """Everything `anond eval` reports for one target on one data set."""

    images: int
    objects: int
    ignored_objects: int
    detections: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    fp_per_image: float
    ap50: float | None
    ap50_95: float | None
    masked_recall: float | None
    over_mask: float | None = None  # mean over images of `over_mask_fraction`
    recall_by_size: dict[str, dict] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def box_area(xyxy: np.ndarray) -> np.ndarray:
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)


def match(det: np.ndarray, score: np.ndarray, gt: np.ndarray, gt_ignore: np.ndarray | None = None,
          iou: float = 0.5) -> Match:
    """Greedy matching by descending score; ignored objects are matched only as a last resort."""
    det = np.asarray(det, np.float64).reshape(-1, 4)
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    ignore = np.zeros(len(gt), bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    det_tp = np.zeros(len(det), bool)
    det_ignored = np.zeros(len(det), bool)
    gt_matched = np.zeros(len(gt), bool)
    if not len(det) or not len(gt):
        return Match(det_tp, det_ignored, gt_matched)
    ious = iou_matrix(det, gt)
    for d in np.argsort(-np.asarray(score, np.float64), kind="stable"):
        candidates = np.where(~gt_matched & ~ignore & (ious[d] >= iou))[0]
        if len(candidates):
            g = candidates[np.argmax(ious[d, candidates])]
            gt_matched[g] = True
            det_tp[d] = True
        elif (ignore & (ious[d] >= iou)).any():
            det_ignored[d] = True
    return Match(det_tp, det_ignored, gt_matched)


def size_bucket(size: float) -> str:
    for name, lo, hi in SIZE_BUCKETS:
        if lo <= size < hi:
            return name
    return SIZE_BUCKETS[-1][0]


def object_sizes(gt: np.ndarray) -> np.ndarray:
    """sqrt(area) of each box: the size measure used for the buckets."""
    return np.sqrt(box_area(gt))


OVER_MASK_REACH = 1.0  # "far": beyond this many box sizes from every labelled object


def over_mask_fraction(gt: np.ndarray, mask: np.ndarray, reach: float = OVER_MASK_REACH) -> float:
    """Share of the image's pixels masked far from every labelled object: outside each
    ground-truth box grown by `reach` x its width and height on every side (margins, loose
    boxes and the object's own surroundings do not count; a false mask elsewhere does, and so
    does a real but unlabelled object, equally for every model)."""
    h, w = mask.shape[:2]
    near = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in np.asarray(gt, np.float64).reshape(-1, 4):
        gx, gy = (x1 - x0) * reach, (y1 - y0) * reach
        c0, r0 = max(0, int(np.floor(x0 - gx))), max(0, int(np.floor(y0 - gy)))
        c1, r1 = min(w, int(np.ceil(x1 + gx))), min(h, int(np.ceil(y1 + gy)))
        near[r0:r1, c0:c1] = True
    return float((mask & ~near).sum()) / float(max(1, h * w))


def coverage_fractions(gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For each xyxy box, the fraction of its pixels (those it touches, clipped) that are True."""
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    h, w = mask.shape[:2]
    out = np.zeros(len(gt))
    if not len(gt):
        return out
    # Integral image: the covered count of any rectangle in O(1).
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)
    for i, (x0, y0, x1, y1) in enumerate(gt):
        # Pixels whose centre lies inside the box; at least one pixel for a non-empty box.
        c0, r0 = int(np.clip(np.floor(x0 + 0.5), 0, w)), int(np.clip(np.floor(y0 + 0.5), 0, h))
        c1, r1 = int(np.clip(np.floor(x1 + 0.5), 0, w)), int(np.clip(np.floor(y1 + 0.5), 0, h))
        if c1 <= c0 and x1 > x0:
            c0, c1 = min(c0, w - 1), min(c0, w - 1) + 1
        if r1 <= r0 and y1 > y0:
            r0, r1 = min(r0, h - 1), min(r0, h - 1) + 1
        n = (c1 - c0) * (r1 - r0)
        if n <= 0:
            continue
        covered = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
        out[i] = covered / n
    return out


def coco_ap(results: list[ImageResult], max_dets: tuple[int, ...] = COCO_MAX_DETS) -> tuple[float, float]:
    """(AP@0.5, AP@[.5:.95]) with faster-coco-eval, single class; -1 when there is no object."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt_dict, dets = coco_dicts(results)
    if not any(a["iscrowd"] == 0 for a in gt_dict["annotations"]):
        return -1.0, -1.0
    with contextlib.redirect_stdout(io.StringIO()):  # the library prints its tables
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else _empty_results(coco_gt)
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])


def _empty_results(coco_gt):
    from faster_coco_eval import COCO

    coco_dt = COCO()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "categories":
                       list(coco_gt.dataset["categories"]), "annotations": []}
    coco_dt.createIndex()
    return coco_dt


def coco_dicts(results: list[ImageResult]) -> tuple[dict, list[dict]]:
    """COCO ground-truth dict and result list (xywh boxes, one category) for `results`."""
    images, annotations, dets = [], [], []
    ann_id = 1
    for image_id, r in enumerate(results, start=1):
        images.append({"id": image_id, "width": 0, "height": 0})
        for box, ign in zip(r.gt, r.gt_ignore):
            x0, y0, x1, y1 = (float(v) for v in box)
            w, h = x1 - x0, y1 - y0
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1,
                                "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": int(bool(ign))})
            ann_id += 1
        for box, s in zip(r.ap_det, r.ap_score):
            x0, y0, x1, y1 = (float(v) for v in box)
            dets.append({"image_id": image_id, "category_id": 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "object"}]}
    return gt, dets


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def summarize(results: list[ImageResult], threshold: float, *, iou: float = 0.5,
              mask_cover: float = 0.8, ap: bool = True) -> Summary:
    """Aggregate per-image results into the reported metrics (see the module docstring)."""
    tp = fp = fn = n_det = n_obj = n_ign = 0
    covered_hits = 0
    have_coverage = bool(results) and all(r.covered is not None for r in results)
    buckets = {name: {"objects": 0, "detected": 0, "masked": 0} for name, _, _ in SIZE_BUCKETS}
    for r in results:
        keep = r.score >= threshold
        m = match(r.det[keep], r.score[keep], r.gt, r.gt_ignore, iou)
        tp += int(m.det_tp.sum())
        fp += int(m.det_fp.sum())
        n_det += int(keep.sum())
        real = ~r.gt_ignore
        n_obj += int(real.sum())
        n_ign += int(r.gt_ignore.sum())
        fn += int((real & ~m.gt_matched).sum())
        masked = (r.covered >= mask_cover) if have_coverage else np.zeros(len(r.gt), bool)
        covered_hits += int((masked & real).sum())
        for size, hit, msk, is_real in zip(object_sizes(r.gt), m.gt_matched, masked, real):
            if not is_real:
                continue
            b = buckets[size_bucket(float(size))]
            b["objects"] += 1
            b["detected"] += int(hit)
            b["masked"] += int(msk)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, n_obj)
    f1 = _ratio(2 * precision * recall, precision + recall)
    by_size = {}
    for name, b in buckets.items():
        by_size[name] = {
            "objects": b["objects"],
            "recall": _ratio(b["detected"], b["objects"]) if b["objects"] else None,
            "masked_recall": (_ratio(b["masked"], b["objects"]) if b["objects"] and have_coverage
                              else None),
        }
    ap50 = ap5095 = None
    if ap:
        ap50, ap5095 = coco_ap(results)
        if ap50 < 0:
            ap50 = ap5095 = None
    return Summary(
        images=len(results), objects=n_obj, ignored_objects=n_ign, detections=n_det,
        tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1,
        fp_per_image=_ratio(fp, len(results)), ap50=ap50, ap50_95=ap5095,
        masked_recall=_ratio(covered_hits, n_obj) if have_coverage else None,
        over_mask=(float(np.mean([r.over_mask for r in results]))
                   if results and all(r.over_mask is not None for r in results) else None),
        recall_by_size=by_size,
        settings={"threshold": threshold, "iou": iou, "mask_cover": mask_cover,
                  "size": "sqrt(area) of the ground-truth box, px",
                  "ap": "faster-coco-eval, COCO protocol, maxDets=%d" % COCO_MAX_DETS[-1]},
    )
