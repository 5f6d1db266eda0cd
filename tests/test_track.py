"""Tracking: association over time, gap filling in both directions, smoothing, bounded state."""

from __future__ import annotations

import numpy as np
import pytest

from anond.track import TrackParams, Tracker, greedy_match
from anond.types import iou_matrix
from anond.types import Detections, Target

FACE, PLATE = int(Target.FACE), int(Target.PLATE)


def params(**kw) -> TrackParams:
    base = dict(high_score={FACE: 0.5, PLATE: 0.5}, pre_frames=4, post_frames=3, max_gap=10,
                smooth=5, gap_growth=0.02)
    base.update(kw)
    return TrackParams(**base)


def det(boxes, scores=None, cls=FACE) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = [0.9] * len(boxes) if scores is None else scores
    return Detections(boxes, scores, [cls] * len(boxes))


def moving_box(f: int, speed: float = 3.0, size: float = 40.0) -> list[float]:
    x = 10 + speed * f
    return [x, 50, x + size, 50 + size]


def run(tracker: Tracker, frames: range, detections: dict[int, Detections]) -> dict[int, Detections]:
    """Feed every frame's detections, finalise frames as the horizon allows, return all boxes."""
    out: dict[int, Detections] = {}
    nxt = frames.start
    for f in frames:
        tracker.update(f, detections.get(f, Detections()))
        while nxt + tracker.horizon <= f:
            out[nxt] = tracker.boxes(nxt)
            tracker.release(nxt + 1)
            nxt += 1
    for f in range(nxt, frames.stop):
        out[f] = tracker.boxes(f)
        tracker.release(f + 1)
    return out


def covers(outer, inner, tol: float = 0.5) -> bool:
    return (outer[0] <= inner[0] + tol and outer[1] <= inner[1] + tol
            and outer[2] >= inner[2] - tol and outer[3] >= inner[3] - tol)


def test_iou_and_greedy_match():
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], np.float64)
    b = np.array([[100, 100, 110, 110], [5, 0, 15, 10]], np.float64)
    iou = iou_matrix(a, b)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[1, 0] == pytest.approx(1.0)
    assert sorted(greedy_match(iou, 0.2)) == [(0, 1), (1, 0)]
    assert greedy_match(iou, 0.5) == [(1, 0)]


def test_missed_frames_inside_a_track_are_interpolated():
    frames = range(0, 40)
    missed = {12, 13, 14, 15, 16, 17}
    dets = {f: det([moving_box(f)]) for f in frames if f not in missed}
    out = run(Tracker(params()), frames, dets)
    for f in missed:
        assert len(out[f]) == 1, f"frame {f} lost its mask"
        assert covers(out[f].xyxy[0], moving_box(f)), f"interpolated box misses the object at {f}"
    assert {len(out[f]) for f in frames} == {1}


def test_masks_start_before_first_and_end_after_last_detection():
    frames = range(0, 50)
    dets = {f: det([moving_box(f, speed=1)]) for f in range(10, 30)}
    p = params(pre_frames=4, post_frames=3)
    out = run(Tracker(p), frames, dets)
    masked = [f for f in frames if len(out[f])]
    assert masked == list(range(10 - 4, 30 - 1 + 3 + 1))
    # Extended boxes are the nearest observation's, grown: they contain it.
    assert covers(out[7].xyxy[0], moving_box(10, speed=1))
    assert covers(out[31].xyxy[0], moving_box(29, speed=1))


def test_gap_longer_than_max_gap_is_not_bridged():
    frames = range(0, 60)
    dets = {f: det([moving_box(0, speed=0)]) for f in list(range(0, 10)) + list(range(40, 50))}
    tracker = Tracker(params(max_gap=10, post_frames=2, pre_frames=2))
    out = run(tracker, frames, dets)
    assert len(out[20]) == 0 and len(out[30]) == 0
    assert tracker.tracks_per_class == {FACE: 2}


def test_low_score_detections_extend_tracks_but_a_lone_one_starts_nothing():
    frames = range(0, 30)
    dets = {}
    for f in frames:
        score = 0.9 if f < 10 else 0.3  # the face turns away: weaker but still tracked
        dets[f] = det([moving_box(f)], [score])
    dets[5] = Detections.concat([dets[5], det([[200, 200, 230, 230]], [0.3])])  # lone weak one
    tracker = Tracker(params(post_frames=0, pre_frames=0))
    out = run(tracker, frames, dets)
    assert tracker.tracks_per_class == {FACE: 1}
    assert all(len(out[f]) == 1 for f in frames)
    assert not any(covers(out[5].xyxy[i], [200, 200, 230, 230]) for i in range(len(out[5])))


def test_weak_detections_seen_on_consecutive_frames_start_a_track():
    frames = range(0, 30)
    steady = {f: det([[300, 40, 330, 80]], [0.3]) for f in range(5, 12)}  # weak but persistent
    blip = {f: det([[100, 200, 130, 240]], [0.3]) for f in (20, 21)}  # weak, twice only
    dets = {f: Detections.concat([steady.get(f, Detections()), blip.get(f, Detections())])
            for f in frames}
    tracker = Tracker(params(confirm_hits=3, pre_frames=2, post_frames=2))
    out = run(tracker, frames, dets)
    masked = [f for f in frames if len(out[f])]
    assert masked == list(range(5 - 2, 11 + 2 + 1))  # from its first weak frame, pre/post too
    assert tracker.tracks_per_class == {FACE: 1}
    off = Tracker(params(confirm_hits=0))
    assert not any(len(b) for b in run(off, frames, dets).values())


def test_fast_object_is_followed_by_its_motion():
    # 30 px per frame with a 20 px box: consecutive boxes never overlap; prediction bridges it.
    frames = range(0, 20)
    dets = {f: det([moving_box(f, speed=30, size=20)]) for f in frames}
    tracker = Tracker(params(pre_frames=0, post_frames=0))
    run(tracker, frames, dets)
    assert tracker.tracks_per_class[FACE] <= 2  # first two frames give no velocity yet


def test_classes_are_tracked_separately():
    frames = range(0, 20)
    dets = {f: Detections.concat([det([moving_box(f)], cls=FACE), det([moving_box(f)], cls=PLATE)])
            for f in frames}
    tracker = Tracker(params())
    out = run(tracker, frames, dets)
    assert tracker.tracks_per_class == {FACE: 1, PLATE: 1}
    assert sorted(out[10].cls.tolist()) == [FACE, PLATE]


def test_smoothing_reduces_jitter_and_never_shrinks_below_the_detection():
    rng = np.random.default_rng(0)
    frames = range(0, 60)
    raw = {f: np.array([100, 100, 140, 140]) + rng.normal(0, 3, 4) for f in frames}
    out = run(Tracker(params(smooth=7)), frames, {f: det([raw[f]]) for f in frames})
    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
    raw_jitter = np.mean([np.linalg.norm(centre(raw[f + 1]) - centre(raw[f])) for f in frames[:-1]])
    out_jitter = np.mean([np.linalg.norm(centre(out[f + 1].xyxy[0]) - centre(out[f].xyxy[0]))
                          for f in frames[:-1]])
    assert out_jitter < 0.7 * raw_jitter
    assert all(covers(out[f].xyxy[0], raw[f], tol=1e-3) for f in frames)


def test_detection_stride_is_interpolated():
    frames = range(0, 40)
    stride = 4
    tracker = Tracker(params(max_gap=stride * 2))
    out: dict[int, Detections] = {}
    for f in frames:
        if f % stride == 0:
            tracker.update(f, det([moving_box(f)]))
    for f in frames:
        out[f] = tracker.boxes(f)
    for f in range(0, 37):
        assert len(out[f]) == 1 and covers(out[f].xyxy[0], moving_box(f), tol=1.0), f


def test_state_stays_bounded_over_a_long_stream():
    tracker = Tracker(params(max_gap=5, pre_frames=2, post_frames=2))
    peak_tracks = peak_obs = 0
    nxt = 0
    for f in range(0, 5000):
        # a new object every 50 frames, each seen for 30 frames, always one steady object too
        boxes = [[500, 500, 540, 540]]
        if f % 50 < 30:
            boxes.append(moving_box(f % 50))
        tracker.update(f, det(boxes))
        while nxt + tracker.horizon <= f:
            tracker.boxes(nxt)
            tracker.release(nxt + 1)
            nxt += 1
        peak_tracks = max(peak_tracks, tracker.live_tracks)
        peak_obs = max(peak_obs, max(len(t.frames) for t in tracker._tracks))
    assert tracker.tracks_per_class[FACE] == 1 + 100
    assert peak_tracks <= 4
    assert peak_obs <= tracker.horizon + tracker.p.smooth + 2


def test_frames_must_increase():
    tracker = Tracker(params())
    tracker.update(3, det([moving_box(3)]))
    with pytest.raises(ValueError):
        tracker.update(3, Detections())


def test_a_looked_at_class_is_masked_once_its_looks_average_the_threshold():
    """Plates with a track look: a new track waits for its look (nothing masked meanwhile); an
    accepted one is masked over its whole span, the frames before the look and pre_frames
    included; a refused one keeps the object's later detections (no new track) and is looked
    at again `look_again` frames later, then twice as long after each refusal (at most
    `look_again_max`); it is masked once the mean of its last three looks reaches the
    threshold, not on its luckiest look."""
    p = params(looked=frozenset({PLATE}), look_again=3, look_again_max=6, pre_frames=2, max_gap=30)
    tr = Tracker(p)
    plate, wheel = [100, 100, 140, 112], [300, 200, 330, 230]
    tr.update(0, det([plate, wheel], cls=PLATE))
    waiting = tr.to_look(0)
    assert [c for _, c, _ in waiting] == [PLATE, PLATE] and len(tr.boxes(0)) == 0
    ids = [i for i, _, _ in waiting]
    tr.looked_at(0, ids, np.array([0.6, 0.05]), 0.2)  # the plate accepted, the wheel refused
    assert tr.looks == {"accepted": 1, "refused": 1} and tr.tracks_per_class == {PLATE: 1}
    masked = tr.boxes(0)
    assert len(masked) == 1 and masked.track_id[0] == ids[0]

    looked = {}
    for f in range(1, 16):
        tr.update(f, det([plate, wheel], cls=PLATE))
        waiting = tr.to_look(f)
        if waiting:  # only the refused wheel, never a new track
            assert [i for i, _, _ in waiting] == [ids[1]]
            looked[f] = {3: 0.3, 9: 0.05, 15: 0.9}[f]  # one lucky look at frame 3
            tr.looked_at(f, [ids[1]], np.array([looked[f]]), 0.2)
            if f < 15:
                assert tr.tracks_per_class == {PLATE: 1} and len(tr.boxes(5)) == 1
    assert sorted(looked) == [3, 9, 15]  # after 3 frames, then 6 (doubled, the most)
    # (0.3 + 0.05 + 0.9) / 3 >= 0.2: accepted on its fourth look, masked from its first frame
    assert tr.looks == {"accepted": 2, "refused": 3}
    assert len(tr.boxes(0)) == 2 and tr.to_look(15) == []


def test_a_plate_coming_closer_is_judged_on_its_recent_looks():
    tr = Tracker(params(looked=frozenset({PLATE}), look_again=1, look_again_max=1, max_gap=30))
    box = [100, 100, 140, 112]
    scores = [0.05, 0.05, 0.05, 0.05, 0.4, 0.4]  # far away four times, then near
    for f, score in enumerate(scores):
        tr.update(f, det([box], cls=PLATE))
        (tid, _, _), = tr.to_look(f)
        tr.looked_at(f, [tid], np.array([score]), 0.2)
    assert tr.looks == {"accepted": 1, "refused": 5}  # the mean of all six (0.17) would refuse it
    assert len(tr.boxes(0)) == 1


def test_tracks_of_other_classes_need_no_look():
    tr = Tracker(params(looked=frozenset({PLATE})))
    tr.update(0, det([[10, 10, 50, 50]], cls=FACE))
    assert tr.to_look(0) == [] and len(tr.boxes(0)) == 1
