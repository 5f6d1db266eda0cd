"""Video stages, streamed: decode ▶ detect (batched) ▶ track ▶ mask ▶ verify ▶ encode.

    decode thread ──frames──▶ window (lookahead) ──final frames + boxes, in batches──▶ mask
                 ──packets (audio, subtitles, data), in batches──┐           threads: mask,
                                                                  ▼           verify, composite
    output thread ◀── in order: remux packets; encode each batch once it is ready ◀──────┘

Frames enter a window as they are decoded and are detected in batches (every frame, or every
`detect_stride`-th; plates on every `plate_detect_stride`-th of those). A frame leaves the
window, in order, once the frames `horizon` after it have been detected: by then the tracker
knows whether an object missed on it was seen before and after (interpolated), is about to
appear (`pre_frames`) or just left (`post_frames`).
The window is the only thing that grows with the frame rate, nothing grows with the length.

Verification looks again only around what masking changed (`verify.neighbourhoods`): the
rest of a detected frame is the decoded picture, already searched at a lower threshold. A frame
left undetected by `detect_stride` (or whose plates were not detected) is checked for every
target around its interpolated masks.

Three stages run at once: detection and tracking in the job's thread (on the CPU,
`video.cpu_detect_threads` detector calls at a time), masking and verification of batches of
final frames, and compositing them back into the decoded frames, in `video.mask_threads`
threads (batches are independent: each frame is masked and verified on its own), encoding
and remuxing in the output thread, which takes the batches and the copied packets strictly
in the order the job's thread handed them on. The
writer is only ever called from the output thread (the container is not thread-safe), which
is drained before the file is closed. Stage durations are each thread's busy time, so they
overlap and add up to more than the job's wall time.

Masked frames keep every unmasked pixel exactly as decoded; frames without anything to mask
go to the encoder untouched. Detection runs on the upright picture (display matrix applied)
and boxes are mapped back to the stored orientation, which the output keeps.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import log, mask
from ..config import Profile, Settings
from ..errors import CorruptMedia
from ..media import kind_of
from ..media import video as vio
from ..report import JobReport, ModelFacts
from ..track import Tracker
from .plan import VideoPlan
from ..types import Detections, DetectorEngine, Target
from ..verify import FrameToVerify, verify_frames

PACKET_BATCH = 256  # copied packets handed on at once, at most (see _PacketRelay)

_log = log.get("anond.pipeline.video")


@dataclass(eq=False)
class _Slot:
    """One decoded frame waiting in the window."""

    index: int
    frame: object  # av.VideoFrame
    t: float  # seconds from the first frame (for manual regions)
    detected: bool = False
    skipped: tuple[str, ...] = ()  # targets not detected on this detected frame (plate stride)
    anchor: bool = False  # the last frame: every target is detected on it


@dataclass
class _Counts:
    detections: dict[str, int] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)
    verify_fixes: int = 0
    verify_on_mask: int = 0
    frames_masked: int = 0
    frames_verified: int = 0
    verify_views: int = 0  # crops around masks given to the detector again
    # Weak faces the second face model looked at: seen there too, or demoted (job thread only).
    second_look: dict[str, int] = field(default_factory=lambda: {"supported": 0, "demoted": 0})

    def add_masking(self, other: "_Counts") -> None:
        """Add what one batch's mask thread counted (each counts its own; the output thread
        adds them up). `detections` is the job thread's alone."""
        JobReport.add_counts(self.masked, other.masked)
        for name in ("verify_fixes", "verify_on_mask", "frames_masked", "frames_verified",
                     "verify_views"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def process_video(
    src: Path,
    out: Path,
    *,
    settings: Settings,
    engine: DetectorEngine,
    profile: Profile,
    report: JobReport,
    regions=None,
    regions_policy: str = "optional",
    progress=None,
    fmt: str | None = None,
    observer: "VideoObserver | None" = None,
) -> None:
    """Anonymize one video from `src` into `out` (a temporary path), filling `report`;
    `progress(frames written, frames expected or 0)` after each encoded batch.

    `observer` (a `VideoObserver`) is told what the job decided, frame by frame (`anond eval
    --video` measures with it). `fmt` is the content format (`anond.media.kind_of`; sniffed
    when None). The output is
    written in the container `anond.media.containers` chooses, whatever `out` is called:
    callers name it with `containers.output_name`.

    `regions` is a sidecar path, an already loaded `Regions`, or None (look beside `src`).
    Raises CorruptMedia/UnsupportedMedia when the file cannot be opened or holds no decodable
    video; a file damaged part-way is processed as far as it decodes (report.skipped_packets).
    """
    vs = settings.video
    engine = engine.for_video()  # faces in videos may have a model of their own
    report.use_engine(engine)
    t0 = time.perf_counter()
    if fmt is None:
        fmt = kind_of(src).format
    reader = vio.VideoReader(src, fmt=fmt, decoder=vs.decoder, threads=vs.threads,
                             drop_data_tags=vs.drop_data_tags, max_megapixels=vs.max_megapixels,
                             raw_fps=vs.raw_fps)
    report.add_duration("decode", time.perf_counter() - t0)
    try:
        job = _VideoJob(src, out, reader, settings, engine, profile, report, regions, regions_policy)
        job.progress = progress
        job.observer = observer
        job.run()
    finally:
        reader.close()


class VideoObserver(Protocol):
    """What a video job tells an observer (measurement: `anond.evaluation.video`)."""

    def tracker_input(self, frame: int, dets: Detections) -> None:
        """The detections given to the tracker for a detected frame (stored coordinates,
        manual exclusions applied); the observer must copy what it keeps."""

    def frame_masked(self, frame: int, coverage: np.ndarray | None) -> None:
        """Each frame as it is encoded, in order: the pixels composited as masked (tracked
        boxes, manual regions and verification residuals together), None when none."""

    def frame_boxes(self, frame: int, xyxy: np.ndarray, dets: Detections) -> None:
        """The tracked detections masked on a frame, `xyxy` in upright pixels (`dets` holds
        them in stored ones, with their classes and track ids)."""


class _PacketRelay:
    """Packets of copied streams (audio, subtitles, data) to the muxer, in the order they came
    between the frames: held until the output is open, then handed to the output thread in
    batches queued with the frame batches (the same file for the same input, whatever the
    threads' timing), not one thread hand-over per packet (each can wait a GIL switch
    interval: hamilton's 470 audio packets one by one cost ~2 s of a 12 s job)."""

    def __init__(self) -> None:
        self.writer: vio.VideoWriter | None = None
        self.output: vio.Background | None = None
        self.held: list = []  # before the output is open
        self.outgoing: list = []  # on their way to the output thread

    def add(self, packet) -> None:
        if self.writer is None:
            if len(self.held) >= vio.MAX_PENDING_PACKETS:
                raise CorruptMedia("no video frame could be decoded")
            self.held.append(packet)
            return
        self.outgoing.append(packet)
        if len(self.outgoing) >= PACKET_BATCH:
            self.send()

    def open(self, writer: vio.VideoWriter, output: vio.Background) -> None:
        self.writer, self.output = writer, output
        if self.held:
            self.output.submit(self._write, self.held)
            self.held = []

    def send(self) -> None:
        if self.outgoing:
            packets, self.outgoing = self.outgoing, []
            self.output.submit(self._write, packets)

    def _write(self, packets: list) -> None:
        for packet in packets:
            self.writer.copy(packet)


class _VideoJob:
    def __init__(self, src, out, reader, settings, engine, profile, report, regions, regions_policy):
        self.src, self.out = Path(src), Path(out)
        self.reader: vio.VideoReader = reader
        self.vs = settings.video
        self.engine = engine
        self.profile = profile
        self.report = report
        self.regions_arg, self.regions_policy = regions, regions_policy
        self.counts = _Counts()
        self.progress = None  # progress(frames written, frames expected or 0), or None
        self.observer: VideoObserver | None = None
        self.writer: vio.VideoWriter | None = None
        self.mask_pool: ThreadPoolExecutor | None = None  # mask + verify of final frames
        self.output: vio.Background | None = None  # the writer's calls, in order, off-thread
        self.window: deque[_Slot] = deque()
        self.pending: list[_Slot] = []
        self.packets = _PacketRelay()  # copied-stream packets, in order, to the muxer
        self.next_index = 0
        self.last_detected = -1
        self.verify_candidates = 0
        self.first_pts: int | None = None
        info = reader.info
        self.plan = VideoPlan.build(self.vs, profile, info.fps, engine)
        self.tracker = Tracker(self.plan.track)
        self.orient = vio.Orientation(0, (info.height, info.width))  # set by the first frame
        self.regions = None
        threads = self.plan.detect_threads
        self.detect_pool = ThreadPoolExecutor(threads, "anond-detect") if threads > 1 else None
        self.support = self._support(settings.video.track)

    # -- the loop

    def run(self) -> None:
        source = vio.Prefetch(self.reader.items(), size=2 * self.vs.batch_size + 4)
        try:
            for item in source:
                if not hasattr(item, "planes"):  # a packet of a copied stream
                    self.packets.add(item)
                    continue
                self._enter(item)
                if len(self.pending) >= self.vs.batch_size:
                    self._detect()
                self._leave(final=False)
            if self.writer is None:
                raise CorruptMedia("no video frame could be decoded")
            if self.window and not self.window[-1].detected and self.window[-1] not in self.pending:
                self.window[-1].anchor = True  # the last frame anchors the track ends
                self.pending.append(self.window[-1])
            self._detect()
            self._leave(final=True)
            self.packets.send()
            self.output.drain()
            with self.report.stage("encode"):
                self.writer.close()
        except BaseException:
            if self.mask_pool is not None:  # upstream first: batches not begun are dropped
                self.mask_pool.shutdown(wait=False, cancel_futures=True)
            if self.output is not None:
                self.output.cancel()
            if self.writer is not None:
                self.writer.abort()
            raise
        finally:
            source.close()
            for pool in (self.detect_pool, self.mask_pool):
                if pool is not None:
                    pool.shutdown()
        _fill_report(self)

    def _enter(self, frame) -> None:
        if self.writer is None:
            self._start(frame)
        if self.first_pts is None:
            self.first_pts = frame.pts
        t = float((frame.pts - self.first_pts) * self.reader.time_base)
        slot = _Slot(self.next_index, frame, t)
        self.next_index += 1
        self.window.append(slot)
        if slot.index % self.vs.detect_stride == 0:
            self.pending.append(slot)

    def _start(self, first_frame) -> None:
        """Open the output once the first frame shows the real format and rotation."""
        vs = self.vs
        self.orient = vio.Orientation(vio.frame_rotation(first_frame),
                                      (first_frame.height, first_frame.width))
        self.regions = self._load_regions()  # a required sidecar that is bad stops us here
        with self.report.stage("encode"):
            self.writer = vio.VideoWriter(self.out, self.reader, first_frame,
                                          container=self.reader.output_container(), crf=vs.crf,
                                          preset=vs.preset, encoder=vs.encoder, threads=vs.threads,
                                          keep_metadata=vs.keep_metadata)
        # The mask threads and the output thread (module docstring). ONNX Runtime, OpenCV and
        # PyAV release the GIL while they work, so masking overlaps inference. The output
        # queue holds batches; its bound also bounds the batches being masked (one more than
        # it holds), so memory stays flat.
        self.mask_pool = ThreadPoolExecutor(vs.mask_threads, "anond-mask")
        self.output = vio.Background(size=vs.mask_threads + 1)
        self.packets.open(self.writer, self.output)

    def _load_regions(self):
        from ..regions import Regions, resolve

        if isinstance(self.regions_arg, Regions):
            self.report.manual_regions.sidecar = "applied"
            return self.regions_arg
        up_h, up_w = self.orient.upright_hw
        info = self.reader.info
        regions, status = resolve(
            self.src, regions_path=self.regions_arg, policy=self.regions_policy,
            width=up_w, height=up_h, frames=info.frames_declared or None, fps=info.fps,
            duration=info.duration_s or None, video=True)
        self.report.manual_regions.sidecar = status
        return regions

    # -- detect ▶ track

    def _detect(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        with self.report.stage("detect"):
            images = [self.orient.upright(vio.to_bgr(s.frame)) for s in batch]
            found = self._detect_targets(batch, images)
            if self.support is not None:
                self._second_look(images, found)
        with self.report.stage("track"):
            for slot, image, dets in zip(batch, images, found):
                # The report's rule (anond.report): confident detections after the exclusions.
                dets, _ = self.regions.filter_detections(dets, slot.index, slot.t,
                                                         counted=self._confident(dets))
                JobReport.add_counts(self.counts.detections, dets.select(self._confident(dets)).counts())
                dets.xyxy = self.orient.to_stored(dets.xyxy)
                if self.observer is not None:
                    self.observer.tracker_input(slot.index, dets)
                self.tracker.update(slot.index, dets)
                self._look_at_new_tracks(slot.index, image)
                slot.detected = True
                self.last_detected = slot.index

    def _look_at_new_tracks(self, index: int, image: np.ndarray) -> None:
        """Tracks of a looked-at class (a plate model with a track look) waiting for their
        look are shown to it on this frame, all in one call; the tracker masks those accepted
        (anond/track.py)."""
        waiting = self.tracker.to_look(index)
        for cls in sorted({c for _, c, _ in waiting}):
            ids = [i for i, c, _ in waiting if c == cls]
            boxes = self.orient.to_upright(np.array([b for _, c, b in waiting if c == cls], np.float32))
            look = self.engine.track_looks[Target(cls).label]
            self.tracker.looked_at(index, ids, look.scores(image, boxes), look.threshold)

    def _detect_targets(self, batch: list[_Slot], images: list[np.ndarray]) -> list[Detections]:
        """Every target on every frame, except plates off their stride (`plate_detect_stride`)."""
        due = [s.anchor or (s.index // self.vs.detect_stride) % self.plan.plate_every == 0 for s in batch]
        if all(due):
            return self._run_detector(images, self.plan.detect_low, pool=self.detect_pool)
        others = [t for t in self.profile.targets if t != "plate"]
        found = (self._run_detector(images, self.plan.detect_low, others, pool=self.detect_pool)
                 if others else [Detections() for _ in images])
        on = [i for i, d in enumerate(due) if d]
        if on:
            plates = self._run_detector([images[i] for i in on], self.plan.detect_low, ["plate"],
                                        pool=self.detect_pool)
            for i, dets in zip(on, plates):
                found[i] = Detections.concat([found[i], dets])
        for slot, d in zip(batch, due):
            slot.skipped = () if d else ("plate",)
        return found

    def _run_detector(self, images: list[np.ndarray], detect, targets=None,
                      pool: ThreadPoolExecutor | None = None) -> list[Detections]:
        """Detections per image, `detector_batch` images a call; calls in `pool` if given."""
        targets = self.profile.targets if targets is None else targets
        chunks = [images[i : i + self.plan.detector_batch]
                  for i in range(0, len(images), self.plan.detector_batch)]
        mapper = pool.map if pool is not None else map
        return [dets for found in mapper(self.engine.detect, chunks, repeat(detect), repeat(targets))
                for dets in found]

    def _support(self, track):
        """The second face model's look at weak faces (anond/detect/support.py), or None."""
        second = getattr(self.engine, "second", {}).get("face")
        if second is None or "face" not in self.profile.targets or not track.support_below:
            return None
        from ..detect.support import Support

        if all(m.name != second.spec.name for m in self.report.models):  # it runs too: listed
            self.report.models.append(ModelFacts(second.spec.name, second.sha256, second.provider))
        return Support(second, track.support_threshold)

    def _second_look(self, images: list[np.ndarray], found: list[Detections]) -> None:
        """Faces that could start a track without being confident (`track.support_below`),
        unseen by the second model, are demoted (in place) to just under the threshold that
        starts tracks: they may extend one, not start one. Counted per outcome."""
        face = int(Target.FACE)
        start = self.plan.track.high_score.get(face, 0.0)
        below = self.vs.track.support_below
        weak = [(d.cls == face) & (d.score >= start) & (d.score < below) for d in found]
        seen = self.support.supported(images, [d.xyxy[w] for d, w in zip(found, weak)])
        for dets, w, ok in zip(found, weak, seen):
            demote = np.flatnonzero(w)[~ok]
            dets.score[demote] = np.nextafter(np.float32(start), np.float32(0))
            self.counts.second_look["supported"] += int(ok.sum())
            self.counts.second_look["demoted"] += len(demote)

    def _confident(self, dets: Detections) -> np.ndarray:
        high = np.array([self.plan.track.high_score.get(int(c), 0.0) for c in dets.cls], np.float32)
        return dets.score >= high

    # -- mask ▶ verify ▶ encode, in order

    def _leave(self, final: bool) -> None:
        """Hand the frames no later detection can change, with their final boxes, on to be
        masked (in batches); the tracker forgets them."""
        horizon = self.tracker.horizon
        ready: list[_Slot] = []
        while self.window:
            head = self.window[0]
            if not final and (head.index + horizon > self.last_detected or head in self.pending):
                break
            ready.append(self.window.popleft())
            if len(ready) >= self.vs.batch_size:
                self._hand_over(ready)
                ready = []
        if ready:
            self._hand_over(ready)

    def _hand_over(self, slots: list[_Slot]) -> None:
        """Final boxes, manual regions and what to verify per frame (decided here, in order),
        then the batch to a mask thread and its place in the output queue."""
        with self.report.stage("track"):
            boxes = [self.tracker.boxes(slot.index) for slot in slots]
            self.tracker.release(slots[-1].index + 1)
        plans = []
        for slot, dets in zip(slots, boxes):
            if self.observer is not None:
                self.observer.frame_boxes(slot.index, self.orient.to_upright(dets.xyxy), dets)
            manual = self.regions.masks_at(slot.index, slot.t) if self.regions else []
            targets = self._verify_targets(slot, dets, manual)
            if targets:
                self.verify_candidates += 1
                if (self.verify_candidates - 1) % self.vs.verify_every:
                    targets = []
            plans.append((slot, dets, manual, targets))
        self.packets.send()
        masked = self.mask_pool.submit(self._finish, plans)
        self.output.submit(self._emit_batch, masked)

    def _finish(self, plans: list) -> tuple[list, _Counts, list]:
        """Mask, verify and composite one batch of final frames (a mask thread): the frames
        to encode, in order, the batch's counts, and (index, coverage) per frame for the
        observer (empty without one)."""
        counts = _Counts()
        jobs: list[tuple[_Slot, FrameToVerify | None]] = []  # None: nothing to mask
        with self.report.stage("mask"):
            for slot, dets, manual, targets in plans:
                if not len(dets) and not manual and not targets:
                    jobs.append((slot, None))
                    continue
                bgr = vio.to_bgr(slot.frame)
                stored = [(self.orient.points_to_stored(polygon), mode) for polygon, mode in manual]
                done = mask.mask_frame(bgr, dets, stored, self.profile.mask)
                JobReport.add_counts(counts.masked, dets.counts())
                jobs.append((slot, FrameToVerify(slot.index, slot.t, bgr, done.coverage, targets,
                                                 done.changed)))
        to_verify = [f for _, f in jobs if f is not None and f.targets]
        if to_verify:
            counts.frames_verified += len(to_verify)
            with self.report.stage("verify"):
                checked = verify_frames(
                    to_verify, self.profile, self.plan.detect_verify, self._run_detector,
                    self.engine.fixed_input, self.orient,
                    lambda d, index, t: self.regions.filter_detections(d, index, t, count=False)[0])
            counts.verify_views += checked.views
            counts.verify_on_mask += checked.on_mask
            counts.verify_fixes += checked.fixes
            JobReport.add_counts(counts.masked, checked.masked)
        # Composited here, not in the output thread: a finished batch then holds frames in
        # their own pixel format, not BGR copies and coverage maps, while it waits its turn.
        frames, seen = [], []
        with self.report.stage("encode"):
            for slot, done in jobs:
                frame, slot.frame = slot.frame, None
                masked = done is not None and done.coverage.any()
                if masked:
                    frame = vio.composite(frame, done.bgr, done.coverage)
                    counts.frames_masked += 1
                frames.append(frame)
                if self.observer is not None:
                    seen.append((slot.index, done.coverage if masked else None))
        return frames, counts, seen

    def _emit_batch(self, masked) -> None:
        """Encode a batch, in order, once its mask thread is done (output thread)."""
        frames, counts, seen = masked.result()
        self.counts.add_masking(counts)
        with self.report.stage("encode"):
            for frame in frames:
                self.writer.encode(frame)
        for index, coverage in seen:
            self.observer.frame_masked(index, coverage)
        if self.progress is not None:
            info = self.reader.info
            expected = info.frames_declared or (int(round(info.duration_s * info.fps)) if info.fps else 0)
            self.progress(self.writer.frames_written, expected)

    def _verify_targets(self, slot: _Slot, dets: Detections, manual) -> list[str]:
        """Targets worth re-detecting around the masks of a frame once it is masked.

        Verification looks only near what masking changed, so a frame with no mask has
        nothing to verify. Around masks the detector never saw (detect_stride, a plate stride,
        manual regions) every target is searched; on a detected frame only the targets whose
        masks changed the picture, since the rest was searched at a lower threshold already.
        """
        if not self.profile.verify or (not len(dets) and not manual):
            return []
        if not slot.detected or slot.skipped or manual:
            return list(self.profile.targets)
        present = {Target(int(c)).label for c in set(dets.cls.tolist())}
        return [t for t in self.profile.targets if t in present]


def _fill_report(job: _VideoJob) -> None:
    """What the finished job tells its report: media facts, counts, the settings it ran with."""
    r, reader, info = job.report, job.reader, job.reader.info
    writer = job.writer
    m = r.media
    m.width, m.height = job.orient.stored_hw[1], job.orient.stored_hw[0]
    m.frames = writer.frames_written
    m.fps = round(info.fps, 3)
    m.codec = info.codec
    m.duration_s = round(writer.frames_written / info.fps, 3) if not info.duration_s else \
        round(info.duration_s, 3)
    m.bit_depth = _bit_depth(writer.pix_fmt)
    audio = [s for s in reader.container.streams.audio]
    if not audio:
        m.audio = "none"
    elif writer.dropped_streams or any(s not in reader.copy_streams for s in audio):
        m.audio = "dropped"
    else:
        m.audio = "copied"
    r.detections = dict(job.counts.detections)
    r.masked = dict(job.counts.masked)
    if job.regions is not None and job.regions.applied_count:
        r.masked[Target.MANUAL.label] = job.regions.applied_count
        r.manual_regions.applied = job.regions.applied_count
    if job.regions is not None:
        r.manual_regions.excluded = job.regions.excluded
    r.tracks = {Target(c).label: n for c, n in sorted(job.tracker.tracks_per_class.items())}
    r.verify_fixes = job.counts.verify_fixes
    r.verify_on_mask = job.counts.verify_on_mask
    if job.support is not None:
        r.rules["second_look"] = dict(job.counts.second_look)
    if job.plan.track.looked:
        r.rules["plate_track_look"] = dict(job.tracker.looks)
    r.decoder = reader.decoder_name
    r.encoder = writer.encoder_name + (f" ({writer.note})" if writer.note else "")
    r.skipped_packets = reader.skipped_packets
    r.parameters.setdefault("video", {
        "crf": job.vs.crf, "preset": job.vs.preset, "batch_size": job.plan.detector_batch,
        "detect_stride": job.vs.detect_stride, "plate_detect_stride": job.plan.plate_every,
        "lookahead_frames": job.plan.lookahead,
        "horizon_frames": job.tracker.horizon, "verify_every": job.vs.verify_every,
        "pix_fmt": writer.pix_fmt, "rotation": job.orient.rotation,
        "timestamps": reader.timing, "field_order": vio.FIELD_ORDERS.get(writer.field_order),
        "container": writer.output.container, "container_rule": writer.output.rule,
        "timestamp_fixes": reader.timestamp_fixes, "corrupt_frames": reader.corrupt_frames,
        "frames_masked": job.counts.frames_masked,
        "frames_verified": job.counts.frames_verified,
        "verify_views": job.counts.verify_views,
        "dropped_streams": reader.dropped_streams + writer.dropped_streams,
        "dropped_packets": writer.dropped_packets,
    })
    _log.info("video.done", job=r.job_id, frames=m.frames, skipped_packets=r.skipped_packets,
              verify_fixes=r.verify_fixes, decoder=r.decoder, encoder=writer.encoder_name,
              **{f"tracks_{k}": v for k, v in r.tracks.items()})


def _bit_depth(pix_fmt: str) -> int:
    for depth in (16, 14, 12, 10, 9):
        if f"p{depth}" in pix_fmt or f"{depth}le" in pix_fmt or f"{depth}be" in pix_fmt:
            return depth
    return 8
