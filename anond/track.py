"""Tracking: associate detections over time, then fill gaps in both directions.

Online part, ByteTrack-style and per class: each detected frame, confident detections are
matched to the tracks' predicted boxes (IoU, constant-velocity motion; then centre distance for
objects moving about their size per frame or more), then weaker detections may extend the tracks
still unmatched; unmatched confident detections start new tracks. Weak detections alone only
start a tentative track, masked once it has been seen on `confirm_hits` detected frames in a
row: temporal consistency stands in for the missing confidence. A track missed for longer than `max_gap` frames ends.

Classes in `looked` (plates, when the video plate model has a track look) need one more thing
before a track is masked: a look. The tracker lists the tracks waiting for one (`to_look`), the
caller looks at each on its latest frame with a model that sees it at a canonical scale
(anond.detect.rescale.TrackLook) and says what it saw (`looked_at`). An accepted track is
masked over its whole span, the frames before the look included (they are still in the
lookahead); a refused one stays alive without a mask, so the detections of the same object
extend it instead of starting new tracks, and it is looked at again (a plate coming closer):
`look_again` frames later, then twice as long after each refusal, at most half the lookahead
apart (so a plate accepted on a later look still has the frames since its last refusal in the
lookahead). A track is judged on the mean of its last LOOK_WINDOW looks: a false plate looked
at again and again does not pass on its luckiest look, a plate that came closer is not held
back by how it looked far away. One look per track, not one per frame: the cost follows the
tracks, and a false plate that stays in view costs fewer looks the longer it stays.

Offline part: video is processed with a bounded lookahead, so a frame is only finalised once
the frames `horizon` after it have been detected. By then it is known whether a track comes
back after a miss (the gap is interpolated), starts a little later (the mask starts
`pre_frames` early) or has ended (the mask is held `post_frames` longer). Boxes are smoothed
over a few observations so masks do not jitter, but never shrunk below what was detected.

Memory is bounded: observations behind the finalised frame are dropped (`release`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from .types import Detections, iou_matrix

MAX_GROWTH = 0.5  # interpolated/extended boxes grow at most this fraction on each axis
LOOK_WINDOW = 3  # a looked-at track is judged on the mean of its last this many looks


@dataclass(frozen=True)
class TrackParams:
    """Tracking parameters in frames, as the tracker uses them."""

    high_score: dict[int, float]  # class id -> threshold a detection needs to start a track
    match_iou: float = 0.2
    low_match_iou: float = 0.4
    pre_frames: int = 5
    post_frames: int = 5
    max_gap: int = 30
    smooth: int = 5
    gap_growth: float = 0.02
    confirm_hits: int = 0  # weak detections seen this many detected frames in a row start a track
    looked: frozenset[int] = frozenset()  # classes whose tracks are masked only once looked at
    look_again: int = 5  # frames before a refused track is looked at again (doubling after each refusal)...
    look_again_max: int = 25  # ...up to this many

    @classmethod
    def from_settings(cls, track, *, fps: float, lookahead_frames: int, stride: int,
                      high_score: dict[int, float], looked: frozenset[int] = frozenset()) -> "TrackParams":
        """Convert `TrackSettings` (seconds, frames) to frames bounded by the lookahead."""
        max_gap = int(round(track.max_gap_s * fps))
        max_gap = max(stride, min(max_gap, lookahead_frames))
        return cls(
            high_score=dict(high_score),
            match_iou=track.match_iou,
            low_match_iou=track.low_match_iou,
            # With a detection stride an object may appear (leave) up to stride - 1 frames
            # before (after) the detected frame that first (last) sees it.
            pre_frames=min(max(track.pre_frames, stride - 1), lookahead_frames),
            post_frames=max(track.post_frames, stride - 1),
            max_gap=max_gap,
            smooth=track.smooth_frames,
            gap_growth=track.gap_growth,
            confirm_hits=min(track.low_confirm_hits, lookahead_frames),
            looked=frozenset(looked),
            look_again=max(stride, int(round(track.look_again_s * fps))),
            look_again_max=max(stride, int(round(track.look_again_s * fps)), lookahead_frames // 2),
        )

    @property
    def horizon(self) -> int:
        """Frames of detections needed after a frame before its boxes are final."""
        return max(self.pre_frames, self.max_gap)


def centre_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - centre distance / (2 x box size): 0 beyond two sizes, or when sizes differ over 2x."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    ca = np.stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2], 1)
    cb = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
    sa = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    sb = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    dist = np.linalg.norm(ca[:, None] - cb[None], axis=2)
    size = np.maximum(sa[:, None], sb[None, :])
    ratio = np.maximum(sa[:, None], sb[None, :]) / np.maximum(np.minimum(sa[:, None], sb[None, :]), 1e-6)
    sim = np.clip(1.0 - dist / np.maximum(2.0 * size, 1e-6), 0.0, 1.0)
    return np.where(ratio <= 2.0, sim, 0.0).astype(np.float32)


def greedy_match(sim: np.ndarray, min_sim: float) -> list[tuple[int, int]]:
    """Pairs (row, col) by decreasing similarity, each row and column used once, sim >= min_sim."""
    pairs: list[tuple[int, int]] = []
    if sim.size == 0:
        return pairs
    order = np.argsort(-sim, axis=None)
    used_r, used_c = set(), set()
    for flat in order:
        r, c = divmod(int(flat), sim.shape[1])
        if sim[r, c] < min_sim or sim[r, c] <= 0:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


def _to_cxcywh(box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], np.float64)


def _to_xyxy(c: np.ndarray) -> np.ndarray:
    cx, cy, w, h = c
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float64)


def _grow(box: np.ndarray, fraction: float) -> np.ndarray:
    c = _to_cxcywh(box)
    c[2:] *= 1.0 + 2.0 * fraction
    return _to_xyxy(c)


@dataclass
class _Track:
    id: int
    cls: int
    first: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)  # raw observed xyxy (float64)
    scores: list[float] = field(default_factory=list)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # cx, cy, w, h per frame
    ended: bool = False
    confirmed: bool = True  # False: not (yet) masked: tentative (weak detections), or unlooked/refused
    awaiting_look: bool = False  # its class is looked at (TrackParams.looked): masked once accepted
    looked: int = -1  # frame of its last look (-1: none yet)
    look_scores: list[float] = field(default_factory=list)  # what each look scored it

    @property
    def last(self) -> int:
        return self.frames[-1]

    def observe(self, frame: int, box: np.ndarray, score: float) -> None:
        if self.frames:
            dt = frame - self.frames[-1]
            v = (_to_cxcywh(box) - _to_cxcywh(self.boxes[-1])) / max(dt, 1)
            self.velocity = v if len(self.frames) == 1 else 0.5 * self.velocity + 0.5 * v
        self.frames.append(frame)
        self.boxes.append(np.asarray(box, np.float64))
        self.scores.append(float(score))

    def predict(self, frame: int) -> np.ndarray:
        """Constant-velocity guess of the box at `frame`, looser the longer it was unseen."""
        dt = frame - self.last
        c = _to_cxcywh(self.boxes[-1]) + self.velocity * min(dt, 10)
        c[2:] = np.maximum(c[2:], 1.0) * (1.0 + 0.05 * min(max(dt - 1, 0), 10))
        return _to_xyxy(c)

    def smoothed(self, i: int, radius: int) -> np.ndarray:
        """Observation i averaged with its neighbours, grown to contain the raw box."""
        lo, hi = max(0, i - radius), min(len(self.boxes), i + radius + 1)
        mean = np.mean([_to_cxcywh(b) for b in self.boxes[lo:hi]], axis=0)
        s = _to_xyxy(mean)
        raw = self.boxes[i]
        return np.array([min(s[0], raw[0]), min(s[1], raw[1]), max(s[2], raw[2]), max(s[3], raw[3])])

    def box_at(self, frame: int, p: TrackParams) -> np.ndarray | None:
        """The final box for `frame`: observed, interpolated, or extended; None outside the track."""
        if not self.confirmed:
            return None
        if frame < self.first - p.pre_frames or frame > self.last + p.post_frames:
            return None
        radius = p.smooth // 2
        k = bisect.bisect_left(self.frames, frame)
        if k < len(self.frames) and self.frames[k] == frame:
            return self.smoothed(k, radius)
        if k == 0:  # before the first kept observation: the mask starts early
            distance = self.frames[0] - frame
            box = self.smoothed(0, radius)
        elif k == len(self.frames):  # after the last: held a little longer
            distance = frame - self.frames[-1]
            box = self.smoothed(len(self.frames) - 1, radius)
        else:  # inside a gap: interpolated between the observations around it
            fa, fb = self.frames[k - 1], self.frames[k]
            t = (frame - fa) / (fb - fa)
            a, b = _to_cxcywh(self.smoothed(k - 1, radius)), _to_cxcywh(self.smoothed(k, radius))
            box = _to_xyxy(a + (b - a) * t)
            distance = min(frame - fa, fb - frame)
        return _grow(box, min(MAX_GROWTH, p.gap_growth * distance))

    def prune(self, before: int, radius: int) -> None:
        """Drop observations no longer needed once every frame < `before` is final."""
        k = bisect.bisect_left(self.frames, before)
        drop = max(0, k - radius - 1)
        if drop:
            del self.frames[:drop], self.boxes[:drop], self.scores[:drop]


class Tracker:
    """Per-class tracks over a stream of detected frames (strictly increasing frame numbers)."""

    def __init__(self, params: TrackParams) -> None:
        self.p = params
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._last_update = -1
        self.tracks_per_class: dict[int, int] = {}
        self.looks = {"accepted": 0, "refused": 0}  # track looks, by outcome

    @property
    def horizon(self) -> int:
        return self.p.horizon

    def update(self, frame: int, dets: Detections) -> None:
        """Associate the detections of one detected frame with the tracks."""
        if frame <= self._last_update:
            raise ValueError("frames must be given in increasing order")
        previous, self._last_update = self._last_update, frame
        for t in self._tracks:
            if not t.ended and frame - t.last > self.p.max_gap:
                t.ended = True
        # A tentative track must be seen on every detected frame until it is confirmed.
        self._tracks = [t for t in self._tracks if t.confirmed or t.awaiting_look or t.last >= previous]
        for cls in sorted(set(int(c) for c in dets.cls)):
            self._update_class(frame, cls, dets.select(dets.cls == cls))

    def _update_class(self, frame: int, cls: int, dets: Detections) -> None:
        live = [t for t in self._tracks if t.cls == cls and not t.ended]
        high = dets.score >= self.p.high_score.get(cls, 0.0)
        hi_idx, lo_idx = np.flatnonzero(high), np.flatnonzero(~high)
        preds = np.array([t.predict(frame) for t in live]).reshape(-1, 4)

        matched_tracks: set[int] = set()
        matched_hi: set[int] = set()
        for r, c in greedy_match(iou_matrix(dets.xyxy[hi_idx].astype(np.float64), preds), self.p.match_iou):
            live[c].observe(frame, dets.xyxy[hi_idx[r]], dets.score[hi_idx[r]])
            self._confirm(live[c])
            matched_tracks.add(c)
            matched_hi.add(r)

        # Objects faster than their own size per frame overlap nothing: match confident
        # detections left over to tracks left over by centre distance (within two box sizes,
        # similar scale), nearest first.
        rest = [c for c in range(len(live)) if c not in matched_tracks]
        left = [r for r in range(len(hi_idx)) if r not in matched_hi]
        if rest and left:
            sim = centre_similarity(dets.xyxy[hi_idx[left]].astype(np.float64), preds[rest])
            for r, c in greedy_match(sim, 1e-6):
                live[rest[c]].observe(frame, dets.xyxy[hi_idx[left[r]]], dets.score[hi_idx[left[r]]])
                self._confirm(live[rest[c]])
                matched_tracks.add(rest[c])
                matched_hi.add(left[r])

        rest = [c for c in range(len(live)) if c not in matched_tracks]
        matched_lo: set[int] = set()
        if rest and len(lo_idx):
            sim = iou_matrix(dets.xyxy[lo_idx].astype(np.float64), preds[rest])
            for r, c in greedy_match(sim, self.p.low_match_iou):
                live[rest[c]].observe(frame, dets.xyxy[lo_idx[r]], dets.score[lo_idx[r]])
                self._confirm(live[rest[c]], weak=True)
                matched_lo.add(r)

        for r in range(len(hi_idx)):
            if r not in matched_hi:
                self._start(frame, cls, dets.xyxy[hi_idx[r]], dets.score[hi_idx[r]], confirmed=True)
        # Weak detections alone start tentative tracks: masked only once the same object was
        # seen on `confirm_hits` detected frames in a row (temporal evidence instead of score).
        if self.p.confirm_hits > 0:
            for r in range(len(lo_idx)):
                if r not in matched_lo:
                    self._start(frame, cls, dets.xyxy[lo_idx[r]], dets.score[lo_idx[r]],
                                confirmed=self.p.confirm_hits <= 1)

    def _start(self, frame: int, cls: int, box, score, *, confirmed: bool) -> None:
        t = _Track(self._next_id, cls, frame, confirmed=False)
        t.observe(frame, box, score)
        self._next_id += 1
        self._tracks.append(t)
        if confirmed:
            self._confirm(t)

    def _confirm(self, t: _Track, weak: bool = False) -> None:
        if t.confirmed or t.awaiting_look or (weak and len(t.frames) < self.p.confirm_hits):
            return
        if t.cls in self.p.looked:
            t.awaiting_look = True  # masked once a look accepts it (`looked_at`)
            return
        self._mask(t)

    def _mask(self, t: _Track) -> None:
        """From now on the track is masked (over its whole span) and counted."""
        t.confirmed = True
        self.tracks_per_class[t.cls] = self.tracks_per_class.get(t.cls, 0) + 1

    def to_look(self, frame: int) -> list[tuple[int, int, np.ndarray]]:
        """(track id, class, its box on `frame`) for each track waiting for a look and observed
        on `frame`: never looked at, or refused at least `look_again` frames ago."""
        return [(t.id, t.cls, t.boxes[-1]) for t in self._tracks
                if t.awaiting_look and not t.confirmed and not t.ended and t.last == frame
                and (t.looked < 0 or frame - t.looked >= self._look_interval(t))]

    def _look_interval(self, t: _Track) -> int:
        """Frames between a refused track's looks: look_again, doubled after each refusal."""
        refusals = max(len(t.look_scores), 1)
        return min(self.p.look_again * 2 ** min(refusals - 1, 16), self.p.look_again_max)

    def looked_at(self, frame: int, ids: list[int], scores: np.ndarray, threshold: float) -> None:
        """What the looks of `to_look(frame)` scored: a track whose last LOOK_WINDOW looks
        average at least `threshold` is masked from now on (its whole span); the others wait
        for their next look. A mean, not the last look: a false plate looked at again and again
        would otherwise pass on its luckiest look (a wheel arch seen 7 times: 0.03-0.05, then
        0.16)."""
        scored = dict(zip(ids, np.asarray(scores, np.float64).tolist()))
        for t in self._tracks:
            if t.id not in scored:
                continue
            t.looked = frame
            t.look_scores.append(scored[t.id])
            if np.mean(t.look_scores[-LOOK_WINDOW:]) >= threshold:
                self._mask(t)
                self.looks["accepted"] += 1
            else:
                self.looks["refused"] += 1

    def boxes(self, frame: int) -> Detections:
        """Final boxes of every track at `frame` (call once detections reach frame + horizon)."""
        xyxy, score, cls, ids = [], [], [], []
        for t in self._tracks:
            box = t.box_at(frame, self.p)
            if box is None:
                continue
            xyxy.append(box)
            score.append(float(np.mean(t.scores)))
            cls.append(t.cls)
            ids.append(t.id)
        if not xyxy:
            return Detections()
        return Detections(np.array(xyxy, np.float32), score, cls, ids)

    def release(self, before: int) -> None:
        """Forget what only frames < `before` needed (they are final and gone)."""
        radius = self.p.smooth // 2
        keep = []
        for t in self._tracks:
            if t.last + self.p.post_frames < before and (t.ended or before - t.last > self.p.max_gap):
                continue
            t.prune(before, radius)
            keep.append(t)
        self._tracks = keep

    @property
    def live_tracks(self) -> int:
        return len(self._tracks)
