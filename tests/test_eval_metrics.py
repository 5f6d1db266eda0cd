"""The metric code on small hand-made cases whose answers are known, and against the library."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anond.evaluation.metrics import (
    ImageResult,
    coco_ap,
    coverage_fractions,
    iou_matrix,
    match,
    object_sizes,
    over_mask_fraction,
    size_bucket,
    summarize,
)

# Four objects, well apart, in one 200x200 image.
GT = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 90, 90], [100, 100, 200, 200]], float)


def _result(det, score, gt=GT, **kw) -> ImageResult:
    return ImageResult(gt=gt, det=np.asarray(det, float).reshape(-1, 4), score=score, **kw)


def test_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 10]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0, 0.5]])


def test_perfect_detector_scores_one_everywhere():
    s = summarize([_result(GT, [0.9, 0.8, 0.7, 0.6])], threshold=0.5)
    assert (s.tp, s.fp, s.fn) == (4, 0, 0)
    assert s.precision == s.recall == s.f1 == 1.0
    assert s.ap50 == pytest.approx(1.0) and s.ap50_95 == pytest.approx(1.0)
    assert s.fp_per_image == 0.0


def test_detector_that_misses_half_has_recall_one_half():
    s = summarize([_result(GT[:2], [0.9, 0.8])], threshold=0.5)
    assert (s.tp, s.fp, s.fn) == (2, 0, 2)
    assert s.recall == 0.5 and s.precision == 1.0
    assert s.f1 == pytest.approx(2 / 3)
    # COCO 101-point AP: precision 1 up to recall 0.5 (51 of the 101 recall points), 0 after.
    assert s.ap50 == pytest.approx(51 / 101)


def test_duplicates_count_as_false_positives():
    dup = GT[0] + [1, 0, 1, 0]  # IoU 0.82 with the first object
    s = summarize([_result(np.vstack([GT, dup]), [0.9, 0.8, 0.7, 0.6, 0.95])], threshold=0.5)
    assert (s.tp, s.fp, s.fn) == (4, 1, 0)
    assert s.precision == pytest.approx(0.8) and s.recall == 1.0
    assert s.fp_per_image == 1.0


def test_higher_score_wins_the_match_and_the_other_is_the_duplicate():
    det = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], float)
    m = match(det, [0.2, 0.9], GT[:1])
    assert m.det_tp.tolist() == [False, True] and m.det_fp.tolist() == [True, False]


def test_hand_made_case_has_the_known_ap():
    # Two objects; scores 0.9 hit, 0.8 miss, 0.7 hit: precision 1 up to recall 0.5, then 2/3.
    gt = GT[:2]
    det = np.array([gt[0], [150, 150, 160, 160], gt[1]])
    ap50, ap5095 = coco_ap([_result(det, [0.9, 0.8, 0.7], gt=gt)])
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert ap50 == pytest.approx(expected) and ap5095 == pytest.approx(expected)


def test_ap_counts_box_quality_across_iou_thresholds():
    # One object, one detection with IoU 0.6: a hit at 0.5..0.6 (3 of the 10 thresholds).
    gt = np.array([[0, 0, 100, 100]], float)
    det = np.array([[0, 0, 100, 60]], float)
    assert iou_matrix(det, gt)[0, 0] == pytest.approx(0.6)
    ap50, ap5095 = coco_ap([_result(det, [0.9], gt=gt)])
    assert ap50 == pytest.approx(1.0) and ap5095 == pytest.approx(0.3)


def test_threshold_applies_to_precision_recall_but_ap_uses_every_score():
    s = summarize([_result(GT, [0.9, 0.8, 0.3, 0.2])], threshold=0.5)
    assert (s.tp, s.fn, s.detections) == (2, 2, 2)
    assert s.ap50 == pytest.approx(1.0)


def test_ap_uses_the_low_threshold_run_when_given():
    # The operating point finds two objects; a separate run down to 0.05 finds all four.
    r = ImageResult(gt=GT, det=GT[:2], score=[0.9, 0.8], ap_det=GT, ap_score=[0.9, 0.8, 0.1, 0.07])
    s = summarize([r], threshold=0.5)
    assert s.recall == 0.5 and s.ap50 == pytest.approx(1.0)


def test_size_buckets_use_sqrt_area_with_inclusive_lower_edges():
    assert [size_bucket(v) for v in (0, 15.9, 16, 31.99, 32, 95.9, 96, 1e6)] == [
        "<16", "<16", "16-32", "16-32", "32-96", "32-96", ">=96", ">=96"]
    gt = np.array([
        [0, 0, 10, 10],      # 10  -> <16
        [0, 0, 16, 16],      # 16  -> 16-32
        [0, 0, 20, 40],      # 28.3 -> 16-32
        [0, 0, 32, 32],      # 32  -> 32-96
        [0, 0, 8, 200],      # 40  -> 32-96 (thin: sqrt(area), not the short side)
        [0, 0, 100, 100],    # 100 -> >=96
    ], float)
    np.testing.assert_allclose(object_sizes(gt), [10, 16, np.sqrt(800), 32, 40, 100])
    # Spread them out so they do not overlap, then detect only the second and fourth.
    gt = gt + np.arange(len(gt))[:, None] * 300
    s = summarize([_result(gt[[1, 3]], [0.9, 0.9], gt=gt)], threshold=0.5, ap=False)
    by = s.recall_by_size
    assert {k: v["objects"] for k, v in by.items()} == {"<16": 1, "16-32": 2, "32-96": 2, ">=96": 1}
    assert {k: v["recall"] for k, v in by.items()} == {"<16": 0.0, "16-32": 0.5, "32-96": 0.5, ">=96": 0.0}


def test_ignored_objects_are_neither_missed_nor_false_positives():
    ignore = np.array([False, False, False, True])
    s = summarize([_result(GT, [0.9, 0.8, 0.7, 0.6], gt_ignore=ignore)], threshold=0.5)
    assert (s.objects, s.ignored_objects, s.tp, s.fp, s.fn) == (3, 1, 3, 0, 0)
    s = summarize([_result(GT[:3], [0.9, 0.8, 0.7], gt_ignore=ignore)], threshold=0.5)
    assert (s.tp, s.fp, s.fn) == (3, 0, 0)


def test_coverage_fractions_count_the_pixels_inside_each_box():
    mask = np.zeros((100, 100), bool)
    mask[0:10, 0:10] = True          # box A fully covered
    mask[20:30, 20:25] = True        # box B half covered
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [95, 95, 120, 120]], float)
    np.testing.assert_allclose(coverage_fractions(boxes, mask), [1.0, 0.5, 0.0, 0.0])
    mask[95:, 95:] = True            # box D: only its in-image part counts
    assert coverage_fractions(boxes, mask)[3] == 1.0


def test_masked_recall_uses_the_cover_fraction():
    covered = np.array([1.0, 0.85, 0.5, 0.0])
    s = summarize([_result(GT[:1], [0.9], covered=covered)], threshold=0.5, mask_cover=0.8, ap=False)
    assert s.masked_recall == 0.5 and s.recall == 0.25
    s = summarize([_result(GT[:1], [0.9], covered=covered)], threshold=0.5, mask_cover=0.4, ap=False)
    assert s.masked_recall == 0.75
    assert sum(v["objects"] for v in s.recall_by_size.values()) == 4


def test_over_mask_counts_masked_pixels_far_from_every_labelled_object():
    gt = np.array([[40, 40, 60, 50]], float)  # 20 x 10: "near" is x 20..80, y 30..60
    mask = np.zeros((100, 100), bool)
    mask[35:55, 30:70] = True                 # the plate's mask with a margin: near, not counted
    assert over_mask_fraction(gt, mask) == 0.0
    mask[0:10, 0:10] = True                   # a false mask in a corner: 100 of 10,000 pixels
    assert over_mask_fraction(gt, mask) == pytest.approx(0.01)
    assert over_mask_fraction(np.zeros((0, 4)), mask) == pytest.approx(mask.mean())
    results = [_result(GT[:1], [0.9], over_mask=0.01), _result(GT[:1], [0.9], over_mask=0.03)]
    assert summarize(results, threshold=0.5, ap=False).over_mask == pytest.approx(0.02)
    assert summarize([_result(GT[:1], [0.9])], threshold=0.5, ap=False).over_mask is None


def test_no_detections_at_all():
    s = summarize([_result(np.zeros((0, 4)), [])], threshold=0.5)
    assert (s.tp, s.fp, s.fn, s.precision, s.recall, s.f1) == (0, 0, 4, 0.0, 0.0, 0.0)
    assert s.ap50 == 0.0


def _generated_case(seed: int, images: int = 25) -> list[ImageResult]:
    """Random objects and a noisy detector: jittered hits, misses, duplicates, false alarms."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(images):
        n = int(rng.integers(0, 12))
        xy = rng.uniform(0, 600, (n, 2))
        wh = rng.uniform(4, 150, (n, 2))
        gt = np.hstack([xy, xy + wh])
        keep = rng.random(n) < 0.75
        jitter = rng.normal(0, 0.12, (n, 4)) * np.hstack([wh, wh])
        det = (gt + jitter)[keep]
        dup = det[rng.random(len(det)) < 0.15] + rng.normal(0, 3, (1, 4))
        m = int(rng.integers(0, 4))
        fxy = rng.uniform(0, 600, (m, 2))
        false = np.hstack([fxy, fxy + rng.uniform(5, 80, (m, 2))])
        det = np.vstack([det, dup, false])
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        out.append(ImageResult(gt=gt, det=det, score=rng.uniform(0.05, 1.0, len(det))))
    return out


def _reference_ap(results: list[ImageResult], thr: float) -> float:
    """Independent plain-numpy COCO AP at one IoU threshold (single class, no ignores)."""
    scores, hits, n_gt = [], [], 0
    for r in results:
        n_gt += len(r.gt)
        order = np.argsort(-r.score, kind="mergesort")
        taken = np.zeros(len(r.gt), bool)
        ious = iou_matrix(r.det, r.gt)
        for d in order:
            best, best_iou = -1, min(thr, 1 - 1e-10)
            for g in range(len(r.gt)):
                if not taken[g] and ious[d, g] >= best_iou:
                    best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
            scores.append(r.score[d])
            hits.append(best >= 0)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    hits = np.asarray(hits)[order]
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall, precision = tp / n_gt, tp / np.maximum(tp + fp, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


def test_eval_ap_agrees_with_the_library_run_on_files(tmp_path):
    """Our in-memory conversion gives what faster-coco-eval gives from COCO JSON files."""
    from faster_coco_eval import COCO, COCOeval_faster

    results = _generated_case(seed=7)
    ap50, ap5095 = summarize(results, threshold=0.4).ap50, summarize(results, threshold=0.4).ap50_95
    # The same case written as standard COCO files, evaluated with the library's defaults.
    images, anns, dets = [], [], []
    for i, r in enumerate(results):
        images.append({"id": 100 + i, "file_name": f"{i}.jpg", "width": 800, "height": 800})
        for j, b in enumerate(r.gt):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": 1000 * (i + 1) + j, "image_id": 100 + i, "category_id": 3,
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s in zip(r.det, r.score):
            dets.append({"image_id": 100 + i, "category_id": 3,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    (tmp_path / "gt.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 3, "name": "face"}]}))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    gt = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval_faster(gt, gt.loadRes(str(tmp_path / "dt.json")), iouType="bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert 0.2 < ap50 < 0.95  # a non-trivial case
    assert ap50 == pytest.approx(ev.stats[1], abs=1e-9)
    assert ap5095 == pytest.approx(ev.stats[0], abs=1e-9)
    # And the library agrees with an independent implementation of the COCO protocol.
    assert ap50 == pytest.approx(_reference_ap(results, 0.5), abs=1e-9)
    ref = np.mean([_reference_ap(results, t) for t in np.linspace(0.5, 0.95, 10)])
    assert ap5095 == pytest.approx(ref, abs=1e-9)
