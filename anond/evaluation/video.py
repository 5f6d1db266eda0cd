"""Temporal metrics on a clip: mask stability, flicker, detections per frame, false positives/hour.

No labels are needed. The clip goes through the video pipeline's detect ▶ track ▶ mask ▶ verify
stages as `anond.pipeline.video` runs them (same thresholds incl. the tracker's low-score
second stage, batches, `detect_stride`, windowed finalisation after `horizon` frames, verify
rounds on the masked frame), without encoding, on the upright picture.

Two maskings are compared on the same detections:
- per-frame: what an anonymizer without tracking masks: the confident detections of each frame
  (score >= the profile threshold), with anond's mask geometry;
- anond: the tracker's final boxes (interpolated, pre/post extended, smoothed) plus
  verification residuals: what the output really gets.

Objects are followed by *reference tracks* built independently of anond's tracker: confident
detections linked greedily by IoU >= 0.3 across gaps of up to one second, kept when seen on at
least 3 frames. A track's life runs from its first to its last detection; on frames in between
where it was not detected its box is interpolated linearly. On each frame of its life an
object counts as masked when the mask covers >= `mask_cover` (0.8) of its box.

- stability: share of the frames of a track's life on which it is masked (mean over tracks);
- flicker event: masked → unmasked → masked within one track (each unmasked run with masked
  frames on both sides counts once);
- detections per frame: confident detections per frame, per class; masks per frame likewise;
- on a clip known to contain no face or plate (`negative=True`), every detection is false:
  false detections per hour (frame-level, what a per-frame anonymizer masks wrongly) and false
  masked objects per hour (anond's tracks started, each a blurred patch that should not be).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..types import Detections, Target
from .metrics import coverage_fractions, iou_matrix

LINK_IOU = 0.3
LINK_GAP_S = 1.0
MIN_HITS = 3


# --- pure metric code (unit-tested on hand-made sequences) --------------------------------

@dataclass
class RefTrack:
    """An object followed over frames: the frames it was detected on and its boxes there."""

    cls: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)

    @property
    def life(self) -> range:
        return range(self.frames[0], self.frames[-1] + 1)

    def box_at(self, frame: int) -> np.ndarray:
        """Observed box, or linear interpolation between the observations around `frame`."""
        k = int(np.searchsorted(self.frames, frame))
        if k < len(self.frames) and self.frames[k] == frame:
            return self.boxes[k]
        if k == 0 or k == len(self.frames):
            raise ValueError("frame outside the track's life")
        fa, fb = self.frames[k - 1], self.frames[k]
        t = (frame - fa) / (fb - fa)
        return self.boxes[k - 1] + (self.boxes[k] - self.boxes[k - 1]) * t


def link_reference_tracks(per_frame: list[Detections], max_gap: int, *, iou: float = LINK_IOU,
                          min_hits: int = MIN_HITS) -> list[RefTrack]:
    """Greedy IoU linking of per-frame detections into tracks (per class), gaps <= max_gap."""
    done: list[RefTrack] = []
    live: list[RefTrack] = []
    for f, dets in enumerate(per_frame):
        still = []
        for t in live:
            (still if f - t.frames[-1] <= max_gap else done).append(t)
        live = still
        for cls in sorted(set(int(c) for c in dets.cls)):
            boxes = dets.xyxy[dets.cls == cls].astype(np.float64)
            cands = [t for t in live if t.cls == cls]
            sim = iou_matrix(boxes, np.array([t.boxes[-1] for t in cands]).reshape(-1, 4))
            used_d, used_t = set(), set()
            for flat in np.argsort(-sim, axis=None) if sim.size else []:
                d, k = divmod(int(flat), sim.shape[1])
                if sim[d, k] < iou:
                    break
                if d in used_d or k in used_t:
                    continue
                used_d.add(d)
                used_t.add(k)
                cands[k].frames.append(f)
                cands[k].boxes.append(boxes[d])
            for d in range(len(boxes)):
                if d not in used_d:
                    live.append(RefTrack(cls, [f], [boxes[d]]))
    done.extend(live)
    return sorted((t for t in done if len(t.frames) >= min_hits), key=lambda t: (t.frames[0], t.cls))


def flicker_events(masked: np.ndarray) -> int:
    """Unmasked runs with masked frames on both sides (masked → unmasked → masked)."""
    m = np.asarray(masked, bool)
    if len(m) < 3:
        return 0
    starts = np.flatnonzero(m[:-1] & ~m[1:])  # masked then unmasked
    ends = np.flatnonzero(~m[:-1] & m[1:])  # unmasked then masked
    return int(sum(1 for s in starts if (ends > s).any()))


def stability(masked: np.ndarray) -> float:
    m = np.asarray(masked, bool)
    return float(m.mean()) if len(m) else 1.0


def summarize_tracks(masked_by_track: list[np.ndarray]) -> dict:
    """Stability and flicker over tracks (each a bool array over its life)."""
    if not masked_by_track:
        return {"tracks": 0, "track_frames": 0, "stability_mean": None, "stability_min": None,
                "fully_stable_tracks": 0, "flicker_events": 0, "masked_share": None}
    stab = [stability(m) for m in masked_by_track]
    frames = sum(len(m) for m in masked_by_track)
    return {
        "tracks": len(masked_by_track),
        "track_frames": frames,
        "stability_mean": float(np.mean(stab)),
        "stability_min": float(np.min(stab)),
        "fully_stable_tracks": int(sum(s == 1.0 for s in stab)),
        "flicker_events": int(sum(flicker_events(m) for m in masked_by_track)),
        "masked_share": float(sum(int(np.sum(m)) for m in masked_by_track) / frames),
    }


# --- the pipeline's stages on a clip --------------------------------------------------------

def _frames(path, max_frames: int | None):
    """(index, upright BGR) for each decoded video frame."""
    from ..errors import CorruptMedia
    from ..media import video as vio

    reader = vio.VideoReader(path)
    try:
        rotation = None
        n = 0
        for item in reader.items():
            if not hasattr(item, "planes"):
                continue
            if rotation is None:
                rotation = vio.frame_rotation(item)
            yield n, vio.upright(vio.to_bgr(item), rotation)
            n += 1
            if max_frames is not None and n >= max_frames:
                break
        if n == 0:
            raise CorruptMedia("no video frame could be decoded")
    finally:
        reader.close()


def _clip_facts(path) -> tuple[float, int]:
    """(frame rate, declared frame count or 0) as the pipeline's reader sees them."""
    from ..media import video as vio

    reader = vio.VideoReader(path)
    try:
        return reader.info.fps, reader.info.frames_declared
    finally:
        reader.close()


def evaluate_video(path, settings, profile: str = "default", *, negative: bool = False,
                   mask_cover: float = 0.8, max_frames: int | None = None,
                   show_progress: bool | None = None, engine=None) -> dict:
    """Temporal metrics of anond's masking on one clip (see the module docstring)."""
    from .. import mask
    from ..detect.engine import Engine
    from ..track import TrackParams, Tracker
    from .runner import progress

    prof = settings.profiles[profile]
    vs = settings.video
    engine = engine or Engine.load(settings, targets=prof.targets)
    fps, declared = _clip_facts(path)
    lookahead = max(1, int(round(vs.lookahead_s * fps)))
    thresholds = {int(Target.FACE): prof.detect.face_threshold, int(Target.PLATE): prof.detect.plate_threshold}
    params = TrackParams.from_settings(vs.track, fps=fps, lookahead_frames=lookahead,
                                       stride=vs.detect_stride, high_score=thresholds)
    tracker = Tracker(params)
    tiling = prof.detect.tiling and getattr(vs, "tiling", True)
    ratio = vs.track.low_score_ratio
    detect_low = prof.detect.model_copy(update={
        "face_threshold": prof.detect.face_threshold * ratio,
        "plate_threshold": prof.detect.plate_threshold * ratio, "tiling": tiling})
    detect_verify = prof.detect.model_copy(update={"tiling": tiling})
    started = time.monotonic()

    # Pass 1: detect (batched, every detect_stride-th frame) ▶ track ▶ final boxes per frame.
    raw: list[Detections] = []
    tracked: dict[int, Detections] = {}
    detected: set[int] = set()
    pending: list[tuple[int, np.ndarray]] = []
    last = {"detected": -1, "final": 0}

    def run_batch():
        if not pending:
            return
        found = engine.detect([img for _, img in pending], detect_low, prof.targets)
        for (i, _), dets in zip(pending, found):
            high = np.array([thresholds.get(int(c), 0.0) for c in dets.cls], np.float32)
            raw[i] = dets.select(dets.score >= high)
            tracker.update(i, dets)
            detected.add(i)
            last["detected"] = i
        pending.clear()

    def finalize(upto: int):
        while last["final"] <= upto:
            tracked[last["final"]] = tracker.boxes(last["final"])
            last["final"] += 1

    n = 0
    last_image = None
    total = min(max_frames or declared, declared or max_frames or 0)
    for i, image in progress(_frames(path, max_frames), total or 0, show_progress, "frames pass 1"):
        raw.append(Detections())
        n = i + 1
        last_image = (i, image)
        if i % vs.detect_stride == 0:
            pending.append((i, image))
        if len(pending) >= vs.batch_size:
            run_batch()
            finalize(last["detected"] - tracker.horizon)
    if last_image is not None and last_image[0] not in detected and \
            all(j != last_image[0] for j, _ in pending):
        pending.append(last_image)  # the last frame anchors the track ends, as in the pipeline
    run_batch()
    finalize(n - 1)

    # Reference tracks from the confident per-frame detections.
    refs = link_reference_tracks(raw, max_gap=max(1, int(round(LINK_GAP_S * fps))))
    alive: dict[int, list[int]] = {}
    for k, t in enumerate(refs):
        for f in t.life:
            alive.setdefault(f, []).append(k)
    masked_raw = [np.zeros(len(t.life), bool) for t in refs]
    masked_anond = [np.zeros(len(t.life), bool) for t in refs]

    # Pass 2: mask ▶ verify on each frame as the pipeline does; coverage of each live track.
    final_counts: dict[str, int] = {}
    frames_masked = 0
    verify_candidates = 0
    residual_total = 0
    for i, image in progress(_frames(path, max_frames), n, show_progress, "frames pass 2"):
        dets = tracked.get(i, Detections())
        parts = [dets]
        wants_verify = prof.verify and (len(dets) > 0 or i not in detected)
        if wants_verify:
            verify_candidates += 1
            wants_verify = (verify_candidates - 1) % vs.verify_every == 0
        if wants_verify:
            work = mask.apply(image.copy(), dets, prof.mask) if len(dets) else image.copy()
            for _ in range(2):  # anond.pipeline.video.MAX_VERIFY_ROUNDS
                found = engine.detect([work], detect_verify, prof.targets)[0]
                if not len(found):
                    break
                mask.apply(work, found, prof.mask)
                parts.append(found)
                residual_total += len(found)
        final = Detections.concat(parts)
        for label, c in final.counts().items():
            final_counts[label] = final_counts.get(label, 0) + c
        frames_masked += int(len(final) > 0)
        if i in alive:
            shape = image.shape[:2]
            cov_anond = mask.coverage_mask(shape, final, prof.mask)
            cov_raw = mask.coverage_mask(shape, raw[i], prof.mask)
            for k in alive[i]:
                box = refs[k].box_at(i)[None, :]
                j = i - refs[k].frames[0]
                masked_anond[k][j] = coverage_fractions(box, cov_anond)[0] >= mask_cover
                masked_raw[k][j] = coverage_fractions(box, cov_raw)[0] >= mask_cover
    seconds = time.monotonic() - started

    duration_h = n / fps / 3600 if fps else float("nan")
    raw_counts: dict[str, int] = {}
    for d in raw:
        for label, c in d.counts().items():
            raw_counts[label] = raw_counts.get(label, 0) + c
    labels = [t for t in prof.targets]
    tracks_started = {Target(c).label: v for c, v in tracker.tracks_per_class.items()}
    out = {
        "frames": n, "fps": round(fps, 3), "duration_s": round(n / fps, 2),
        "targets": labels,
        "detected_frames": len(detected),
        "detections_per_frame": {t: raw_counts.get(t, 0) / n for t in labels},
        "masks_per_frame": {t: final_counts.get(t, 0) / n for t in labels},
        "frames_with_mask": frames_masked / n,
        "anond_tracks": {t: tracks_started.get(t, 0) for t in labels},
        "verify_residuals": residual_total,
        "reference_tracks": {
            "per_frame": summarize_tracks(masked_raw),
            "anond": summarize_tracks(masked_anond),
        },
        "settings": {"mask_cover": mask_cover, "link_iou": LINK_IOU, "link_gap_s": LINK_GAP_S,
                     "min_hits": MIN_HITS, "profile": profile, "detect_stride": vs.detect_stride,
                     "verify": prof.verify, "video_tiling": tiling},
        "negative_clip": negative,
        "seconds": round(seconds, 1),
    }
    if negative:
        out["false_positives_per_hour"] = {
            "detections (per-frame)": {t: raw_counts.get(t, 0) / duration_h for t in labels},
            "masked objects (anond tracks)": {t: tracks_started.get(t, 0) / duration_h for t in labels},
        }
    model_names = {m.task: m.name for m in engine.models}
    out["models"] = {t: model_names.get(t) for t in labels}
    return out


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def format_video(r: dict) -> str:
    """The human-readable table of `evaluate_video`."""
    lines = [f"anond eval --video: {r['frames']} frames, {r['duration_s']} s at {r['fps']} fps, "
             f"targets {', '.join(r['targets'])} (models {r['models']})",
             f"  frames with a mask {_pct(r['frames_with_mask'])}; verify residuals {r['verify_residuals']}",
             "  per frame        " + "  ".join(f"{t}: {r['detections_per_frame'][t]:.2f} detections, "
                                              f"{r['masks_per_frame'][t]:.2f} masks"
                                              for t in r["targets"]),
             "  anond tracks     " + ", ".join(f"{t} {n}" for t, n in r["anond_tracks"].items()),
             "",
             f"  reference tracks (>= {r['settings']['min_hits']} detections)   per-frame masking   anond"]
    a, p = r["reference_tracks"]["anond"], r["reference_tracks"]["per_frame"]
    for key, name in (("tracks", "tracks"), ("track_frames", "frames in track lives"),
                      ("stability_mean", "stability (mean)"), ("stability_min", "stability (worst)"),
                      ("fully_stable_tracks", "tracks masked throughout"),
                      ("flicker_events", "flicker events")):
        fmt = _pct if key.startswith("stability") else str
        lines.append(f"  {name:<38} {fmt(p[key]):>17}   {fmt(a[key])}")
    if r.get("false_positives_per_hour"):
        lines.append("")
        lines.append("  clip known to hold no face/plate: false positives per hour")
        for kind, per in r["false_positives_per_hour"].items():
            lines.append(f"    {kind:<30} " + ", ".join(f"{t} {v:.0f}" for t, v in per.items()))
    return "\n".join(lines)
