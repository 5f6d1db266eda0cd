"""Temporal metrics on a clip: mask stability, flicker, detections per frame, false positives/hour.

No labels are needed. The clip goes through the real video pipeline
(`anond.pipeline.video.process_video`, output to a temporary file), observed through its
`VideoObserver` hook (nothing is patched): the detections it gives its tracker per frame and
the pixels it masks per frame.

Two maskings are compared on the same detections:
- per-frame: what an anonymizer without tracking masks: the confident detections of each frame
  (score >= the profile threshold), with anond's mask geometry;
- anond: the pixels the pipeline composites as masked (tracked boxes interpolated,
  pre/post extended and smoothed, plus verification residuals): what the output really gets.

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
  masked objects per hour (anond's tracks started, each a blurred patch that should not be);
- masked area: the share of the picture masked, mean over all frames and the worst frame (on
  a clip with no person, run for faces only, every masked pixel is a false face mask).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..media.containers import output_name
from ..types import Detections, iou_matrix
from .metrics import coverage_fractions

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


# --- the real video pipeline, observed ------------------------------------------------------

class _Recorder:
    """A `VideoObserver`: records what `process_video` decided, frame by frame.

    - the detections given to the tracker per detected frame;
    - the pixels composited as masked per frame (tracked boxes, manual regions and
      verification residuals together), packed to bits.
    """

    def __init__(self) -> None:
        self.raw: dict[int, Detections] = {}
        self.coverage: dict[int, np.ndarray] = {}  # packed bits
        self.shape: tuple[int, int] | None = None
        self.encoded = 0

    def tracker_input(self, frame: int, dets: Detections) -> None:
        self.raw[frame] = dets.select(np.ones(len(dets), bool))  # a copy

    def frame_masked(self, frame: int, coverage: np.ndarray | None) -> None:
        self.encoded += 1
        if coverage is not None:
            self.coverage[frame] = np.packbits(coverage)
            self.shape = coverage.shape

    def frame_boxes(self, frame: int, xyxy: np.ndarray, dets: Detections) -> None:
        pass  # measured from the tracker's input and the coverage

    def masked_area(self, frames: int) -> dict[str, float]:
        """Share of the picture masked: mean over all `frames` encoded, and the worst frame."""
        if not self.coverage or self.shape is None:
            return {"mean": 0.0, "worst": 0.0}
        pixels = self.shape[0] * self.shape[1]
        shares = [float(np.unpackbits(p)[:pixels].sum()) / pixels for p in self.coverage.values()]
        return {"mean": sum(shares) / max(frames, 1), "worst": max(shares)}

    def covered(self, frame: int) -> np.ndarray | None:
        packed = self.coverage.get(frame)
        if packed is None or self.shape is None:
            return None
        h, w = self.shape
        return np.unpackbits(packed)[: h * w].reshape(h, w).astype(bool)


def _first_frames(src, dst, n: int) -> None:
    """The first `n` frames of `src` re-encoded (x264, CRF 18) into `dst` (trial runs only)."""
    from fractions import Fraction

    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = Fraction(vin.average_rate or 25).limit_denominator(1001000)
        vout = out.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
        vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
        vout.pix_fmt = "yuv420p"
        vout.codec_context.time_base = 1 / rate
        for i, frame in enumerate(inp.decode(vin)):
            if i >= n:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(vout.encode(frame))
        out.mux(vout.encode(None))


def evaluate_video(path, settings, profile: str = "default", *, negative: bool = False,
                   mask_cover: float = 0.8, max_frames: int | None = None,
                   show_progress: bool | None = None, engine=None) -> dict:
    """Temporal metrics of anond's masking on one clip (see the module docstring)."""
    from ..detect.engine import Engine

    prof = settings.profiles[profile]
    engine = engine or Engine.load(settings, targets=prof.targets)
    started = time.monotonic()
    report, seen = _run_pipeline(Path(path), settings, prof, engine, max_frames)
    seconds = time.monotonic() - started
    n = seen.encoded
    fps = report.media.fps or 25.0

    raw = _confident_per_frame(seen, n, prof.detect.for_video().thresholds_by_class())
    masked_raw, masked_anond = _reference_coverage(
        raw, seen, seen.shape or (report.media.height, report.media.width), prof.mask, fps, mask_cover)
    duration_h = n / fps / 3600
    raw_counts: dict[str, int] = {}
    for d in raw:
        for label, c in d.counts().items():
            raw_counts[label] = raw_counts.get(label, 0) + c
    labels = list(prof.targets)
    tracks_started = dict(report.tracks)  # the tracker's own count per class
    masked_counts = dict(report.masked)
    out = {
        "frames": n, "fps": round(fps, 3), "duration_s": round(n / fps, 2),
        "targets": labels,
        "detected_frames": len(seen.raw),
        "detections_per_frame": {t: raw_counts.get(t, 0) / n for t in labels},
        "masks_per_frame": {t: masked_counts.get(t, 0) / n for t in labels},
        "frames_with_mask": len(seen.coverage) / n,
        "masked_area": seen.masked_area(n),
        "anond_tracks": {t: tracks_started.get(t, 0) for t in labels},
        "verify_residuals": report.verify_fixes,
        "reference_tracks": {
            "per_frame": summarize_tracks(masked_raw),
            "anond": summarize_tracks(masked_anond),
        },
        "settings": _run_settings(settings, profile, mask_cover, max_frames),
        "negative_clip": negative,
        "durations": {k: round(v, 2) for k, v in report.durations.items()},
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


def _run_pipeline(src, settings, prof, engine, max_frames: int | None):
    """anond's video pipeline on the clip (its first `max_frames` re-encoded, if given), output
    discarded: (report, what the observer saw)."""
    from ..pipeline.video import process_video
    from ..report import JobReport

    with tempfile.TemporaryDirectory(prefix="anond-eval-") as tmp:
        if max_frames is not None:
            trimmed = Path(tmp) / "first.mp4"
            _first_frames(src, trimmed, max_frames)
            src = trimmed
        report = JobReport.start("eval", "video", engine=engine, profile=prof)
        seen = _Recorder()
        out = Path(tmp) / output_name(src, "out" + src.suffix,
                                      drop_data_tags=settings.video.drop_data_tags)
        process_video(src, out, settings=settings, engine=engine, profile=prof, report=report,
                      observer=seen)
    return report, seen


def _run_settings(settings, profile: str, mask_cover: float, max_frames: int | None) -> dict:
    prof = settings.profiles[profile]
    return {"mask_cover": mask_cover, "link_iou": LINK_IOU, "link_gap_s": LINK_GAP_S,
            "min_hits": MIN_HITS, "profile": profile,
            "detect_stride": settings.video.detect_stride, "verify": prof.verify,
            "video_tiling": settings.video.tiling,
            "frames": "all" if max_frames is None else f"first {max_frames}, re-encoded"}


def _confident_per_frame(seen: "_Recorder", n: int, thresholds: dict[int, float]) -> list[Detections]:
    """Per-frame (no tracking) masking: the confident detections of each detected frame."""
    raw: list[Detections] = []
    for i in range(n):
        dets = seen.raw.get(i, Detections())
        high = np.array([thresholds.get(int(c), 0.0) for c in dets.cls], np.float32)
        raw.append(dets.select(dets.score >= high))
    return raw


def _reference_coverage(raw: list[Detections], seen: "_Recorder", shape, mask_settings, fps: float,
                        mask_cover: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Reference tracks linked from the per-frame detections; for each, per frame of its life,
    whether per-frame masking and whether anond's output covered it."""
    from .. import mask

    refs = link_reference_tracks(raw, max_gap=max(1, int(round(LINK_GAP_S * fps))))
    alive: dict[int, list[int]] = {}
    for k, t in enumerate(refs):
        for f in t.life:
            alive.setdefault(f, []).append(k)
    masked_raw = [np.zeros(len(t.life), bool) for t in refs]
    masked_anond = [np.zeros(len(t.life), bool) for t in refs]
    for i, ks in alive.items():
        cov_anond = seen.covered(i)
        if cov_anond is None:
            cov_anond = np.zeros(shape, bool)
        cov_raw = mask.coverage_mask(shape, raw[i], mask_settings)
        for k in ks:
            box = refs[k].box_at(i)[None, :]
            j = i - refs[k].frames[0]
            masked_anond[k][j] = coverage_fractions(box, cov_anond)[0] >= mask_cover
            masked_raw[k][j] = coverage_fractions(box, cov_raw)[0] >= mask_cover
    return masked_raw, masked_anond


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
