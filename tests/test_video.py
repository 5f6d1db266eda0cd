"""Video: every frame, timestamp, audio packet and the rotation survive; no tracked face flashes.

The clips are generated here with PyAV: a real face (a crop of the `astronaut` photo) moves
over a textured background; each frame carries its number as a small barcode in the top-left
corner, so a wrapped detector can be made to miss chosen frames (fault injection on the real
Engine, not a mock).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from anond.errors import CorruptMedia, UnsupportedMedia  # noqa: E402
from anond.media import frames  # noqa: E402
from anond.media import video as vio  # noqa: E402
from anond.pipeline.video import process_video  # noqa: E402
from anond.report import JobReport  # noqa: E402
from anond.types import Detections  # noqa: E402

TB = Fraction(1, 15360)
FACE_W, FACE_H = 72, 84
BITS, BLOCK = 8, 8  # frame-number barcode: 8 blocks of 8x8 px at the top-left


# -- clip generation ---------------------------------------------------------------------------


def face_patch(astronaut: np.ndarray) -> np.ndarray:
    return cv2.resize(astronaut[30:190, 160:290], (FACE_W, FACE_H), interpolation=cv2.INTER_AREA)


def face_box(i: int, n: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Where the face is in upright frame i: it crosses the frame left to right, bobbing."""
    x = 20 + int((w - FACE_W - 40) * i / max(1, n - 1))
    y = (h - FACE_H) // 2 + int(12 * np.sin(i / 4))
    return x, y, x + FACE_W, y + FACE_H


def draw_index(img: np.ndarray, i: int) -> None:
    img[0 : BLOCK + 4, 0 : BITS * BLOCK + 4] = 128
    for b in range(BITS):
        v = 255 if (i >> b) & 1 else 0
        img[2 : 2 + BLOCK, 2 + b * BLOCK : 2 + (b + 1) * BLOCK] = v


def read_index(img: np.ndarray) -> int:
    grey = img.mean(axis=2) if img.ndim == 3 else img
    i = 0
    for b in range(BITS):
        cy, cx = 2 + BLOCK // 2, 2 + b * BLOCK + BLOCK // 2
        if grey[cy - 1 : cy + 1, cx - 1 : cx + 1].mean() > 128:
            i |= 1 << b
    return i


def make_clip(path: Path, astronaut: np.ndarray, *, size=(320, 240), n: int = 36, rotation: int = 0,
              vfr: bool = True, audio: bool = True, codec: str = "libx264", pix_fmt: str = "yuv420p",
              face: bool = True, metadata: dict | None = None, options: dict | None = None) -> dict:
    """Write a clip; return what was put in it (upright face boxes, pts, audio packets)."""
    w, h = size  # upright size; stored size is swapped for 90/270 degrees
    stored_w, stored_h = (h, w) if rotation % 180 else (w, h)
    patch = face_patch(astronaut)
    rng = np.random.default_rng(7)
    background = cv2.GaussianBlur(rng.integers(40, 215, (h, w, 3)).astype(np.uint8), (0, 0), 6)
    out = av.open(str(path), "w", options={"avoid_negative_ts": "disabled"})
    out.metadata.update(metadata or {})
    vs = out.add_stream(codec, rate=30)
    vs.width, vs.height, vs.pix_fmt = stored_w, stored_h, pix_fmt
    vs.time_base = TB
    vs.codec_context.time_base = TB
    if options:
        vs.codec_context.options = options
    if rotation:
        vs.set_display_rotation(rotation)
    aus = None
    if audio:
        aus = out.add_stream("aac", rate=22050)
        aus.layout = "mono"
    pts, boxes, t = [], [], 0
    for i in range(n):
        img = background.copy()
        if face:
            x0, y0, x1, y1 = face_box(i, n, w, h)
            img[y0:y1, x0:x1] = patch
            boxes.append((x0, y0, x1, y1))
        draw_index(img, i)
        stored = np.ascontiguousarray(np.rot90(img, -(rotation // 90))) if rotation else img
        frame = av.VideoFrame.from_ndarray(stored, format="bgr24")
        frame.pts, frame.time_base = t, TB
        pts.append(t)
        t += (1024 if i % 4 == 3 else 512) if vfr else 512  # 30 fps with irregular gaps
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if aus is not None:
        seconds = float(t * TB)
        for k in range(int(seconds * 22050 / 1024) + 1):
            samples = (0.2 * np.sin(np.arange(1024) * 0.05 + k)).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            af.sample_rate, af.pts = 22050, k * 1024
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)
    out.close()
    return {"pts": pts, "boxes": boxes, "size": (w, h), "rotation": rotation}


def decode_all(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        tb = v.time_base
        frames, pts, rotation = [], [], None
        for f in c.decode(v):
            if rotation is None:
                rotation = vio.frame_rotation(f)
            frames.append(f.to_ndarray(format="bgr24"))
            pts.append(f.pts)
        info = dict(codec=v.codec_context.name, pix_fmt=v.codec_context.pix_fmt,
                    width=v.codec_context.width, height=v.codec_context.height, tb=tb,
                    metadata=dict(c.metadata))
    with av.open(str(path)) as c:
        audio = [bytes(p) for p in c.demux(audio=0) if p.size] if c.streams.audio else []
    return dict(frames=frames, pts=pts, times=[p * tb for p in pts], rotation=rotation or 0,
                audio=audio, **info)


# -- fault injection on the real engine --------------------------------------------------------


class MissingFrames:
    """The real Engine, made to find nothing on chosen frames (read from the frame's barcode)."""

    def __init__(self, engine, missed: set[int]):
        self.engine, self.missed = engine, set(missed)
        self.seen: list[int] = []
        self.frame_hw: tuple[int, int] | None = None  # upright frame size, from the first call

    def for_video(self):  # the wrapper stays in front of the engine video jobs use
        self.engine = self.engine.for_video()
        return self

    def __getattr__(self, name):  # everything else is the real engine's
        return getattr(self.engine, name)

    def detect(self, images, detect, targets, memos=None, rules=None):
        found = self.engine.detect(images, detect, targets, memos, rules)
        self.frame_hw = self.frame_hw or images[0].shape[:2]
        out = []
        for img, dets in zip(images, found):
            if img.shape[:2] != self.frame_hw:  # a verification crop around a mask: untouched
                out.append(dets)
                continue
            i = read_index(img)
            self.seen.append(i)
            out.append(Detections() if i in self.missed else dets)
        return out


# -- helpers -----------------------------------------------------------------------------------


def run(src: Path, out: Path, settings, engine, **video) -> JobReport:
    if video:
        settings = settings.model_copy(update={"video": settings.video.model_copy(update=video)})
    profile = settings.profile
    report = JobReport.start("test", "video", engine=engine, profile=profile)
    process_video(src, out, settings=settings, engine=engine, profile=profile, report=report)
    return report


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    return np.rot90(img, (rotation // 90) % 4) if rotation else img


def masked_frames(src: dict, out: dict) -> list[bool]:
    """Per frame: was the face region changed clearly (masked) in the output?"""
    result = []
    for a, b, (x0, y0, x1, y1) in zip(src["frames"], out["frames"], src["boxes"]):
        a, b = upright(a, src["rotation"]), upright(b, src["rotation"])
        # the face's core (the margin-less middle): where eyes, nose and mouth are
        dx, dy = (x1 - x0) // 5, (y1 - y0) // 5
        core = (slice(y0 + dy, y1 - dy), slice(x0 + dx, x1 - dx))
        diff = np.abs(a[core].astype(np.int16) - b[core].astype(np.int16)).mean()
        result.append(diff > 12)
    return result


def background_diff(src: dict, out: dict) -> float:
    """Mean difference far from the face (bottom strip): re-encoding only, no masking."""
    diffs = [np.abs(a[-20:].astype(np.int16) - b[-20:].astype(np.int16)).mean()
             for a, b in zip(src["frames"], out["frames"])]
    return float(np.mean(diffs))


# -- the promises ------------------------------------------------------------------------------


MISSED = {0, 1, 2, 15, 16, 17, 18, 19, 33, 34, 35}  # start, middle and end of the face's track


@pytest.mark.parametrize(
    "name,size,rotation,pix_fmt",
    [
        ("rotated", (320, 240), 90, "yuv420p"),
        ("odd_size", (321, 241), 0, "yuv444p"),
    ],
)
def test_no_tracked_frame_is_left_unmasked_and_everything_else_survives(
    tmp_path, astronaut, face_settings, face_engine, name, size, rotation, pix_fmt
):
    src_path, out_path = tmp_path / "in.mp4", tmp_path / "out.mp4"
    made = make_clip(src_path, astronaut, size=size, rotation=rotation, pix_fmt=pix_fmt,
                     metadata={"location": "+48.8584+002.2945/", "creation_time": "2024-05-01T10:00:00Z"})
    engine = MissingFrames(face_engine, MISSED)
    report = run(src_path, out_path, face_settings, engine)

    src, out = decode_all(src_path), decode_all(out_path)
    src.update(boxes=made["boxes"], rotation=made["rotation"])
    # every frame, with its own timestamp (variable frame rate included)
    assert len(out["frames"]) == len(src["frames"]) == 36
    assert out["times"] == src["times"]
    assert len(set(np.diff(src["pts"]))) > 1  # the source really was VFR
    # the audio, byte for byte; rotation, size, codec family and pixel format kept
    assert out["audio"] and out["audio"] == src["audio"]
    assert out["rotation"] == src["rotation"] == rotation
    assert (out["width"], out["height"]) == (src["width"], src["height"])
    assert out["codec"] == "h264" and out["pix_fmt"] == pix_fmt
    # location stripped, allow-listed metadata kept
    assert not any("location" in k.lower() for k in out["metadata"])
    assert out["metadata"].get("creation_time", "").startswith("2024-05-01")

    # The detector really saw the face on the frames it was not told to miss...
    assert report.detections.get("face", 0) >= 0.8 * (36 - len(MISSED))
    # The detector was shown upright frames (the barcode reads back right only then).
    assert sorted(set(engine.seen)) == list(range(36))
    # ...and still no frame of the track went out with the face unmasked.
    masked = masked_frames(src, out)
    assert all(masked), f"unmasked frames: {[i for i, m in enumerate(masked) if not m]}"
    assert background_diff(src, out) < 3  # the rest of the picture is only re-encoded
    assert report.tracks == {"face": 1}
    assert report.media.frames == 36 and report.skipped_packets == 0
    assert report.media.audio == "copied"
    assert report.decoder == "h264" and report.encoder.startswith("libx264")
    # faces in videos come from models.video_face, and the report names it first; the photo
    # model follows as the second look at weak faces (track.support_below, on by default)
    assert [m.name for m in report.models] == [face_settings.models.video_face, face_settings.models.face]
    assert face_settings.models.video_face != face_settings.models.face
    for stage in ("decode", "detect", "track", "mask", "verify", "encode"):
        assert stage in report.durations


def test_without_gap_filling_the_injected_misses_would_show(tmp_path, astronaut, face_settings, face_engine):
    """Control for the test above: the fault injection bites when the tracker cannot help."""
    src_path, out_path = tmp_path / "in.mp4", tmp_path / "out.mp4"
    made = make_clip(src_path, astronaut, audio=False)
    no_fill = face_settings.video.track.model_copy(update={"pre_frames": 0, "post_frames": 0,
                                                           "max_gap_s": 0.0})
    run(src_path, out_path, face_settings, MissingFrames(face_engine, MISSED), track=no_fill)
    src, out = decode_all(src_path), decode_all(out_path)
    src.update(boxes=made["boxes"], rotation=0)
    unmasked = {i for i, m in enumerate(masked_frames(src, out)) if not m}
    assert {0, 1, 2, 16, 17, 18, 34, 35} <= unmasked <= MISSED


def test_detection_stride_is_filled_by_the_tracker(tmp_path, astronaut, face_settings, face_engine):
    src_path, out_path = tmp_path / "in.mkv", tmp_path / "out.mkv"
    made = make_clip(src_path, astronaut, n=30, vfr=False, audio=False)
    engine = MissingFrames(face_engine, set())
    run(src_path, out_path, face_settings.model_copy(
        update={"profile": face_settings.profile.model_copy(update={"verify": False})}),
        engine, detect_stride=3)
    src, out = decode_all(src_path), decode_all(out_path)
    src.update(boxes=made["boxes"], rotation=0)
    assert len(engine.seen) <= 30 // 3 + 1  # only every third frame (and the last) detected
    assert all(masked_frames(src, out))
    # Matroska keeps milliseconds: timestamps equal to the millisecond.
    assert [round(float(t), 3) for t in out["times"]] == [round(float(t), 3) for t in src["times"]]


def test_a_second_face_model_looks_at_weak_faces_when_asked(tmp_path, astronaut, face_settings, face_engine):
    """track.support_below: faces under it start tracks only when the photo face model sees
    them too (anond/detect/support.py). At 1.0 every face found is looked at: the real face is
    supported on every detected frame and masked throughout; the counts are in the report."""
    src_path, out_path = tmp_path / "in.mkv", tmp_path / "out.mkv"
    made = make_clip(src_path, astronaut, n=12, vfr=False, audio=False)
    track = face_settings.video.track.model_copy(update={"support_below": 1.0})
    report = run(src_path, out_path, face_settings, face_engine, track=track)
    looked = report.rules["second_look"]
    assert looked["supported"] >= 12 and looked["demoted"] == 0
    assert {m.name for m in report.models} >= {"retinaface-mnet025", "centerface"}  # both ran
    src, out = decode_all(src_path), decode_all(out_path)
    src.update(boxes=made["boxes"], rotation=0)
    assert all(masked_frames(src, out))
    # By default (support_below 0.5) only weak faces are looked at: this one is confident.
    assert run(src_path, out_path, face_settings, face_engine).rules["second_look"] == {
        "supported": 0, "demoted": 0}
    off = face_settings.video.track.model_copy(update={"support_below": 0.0})
    assert "second_look" not in run(src_path, out_path, face_settings, face_engine, track=off).rules


def test_a_weak_face_the_frame_cuts_is_supported_without_a_look(face_engine):
    """A weak face at the picture's edge (a profile half out of the frame) is not asked: the
    crop around it would be mostly replicated border. Inside the picture, a weak box on a
    plain grey frame is asked and not supported."""
    from anond.detect.support import Support, at_edge

    grey = np.full((360, 640, 3), 128, np.uint8)
    boxes = np.array([[0, 100, 40, 150], [600, 10, 640, 60], [300, 150, 340, 200]], np.float32)
    assert at_edge(boxes, grey.shape[:2]).tolist() == [True, True, False]
    second = face_engine.detectors["face"]  # the photo face model (CenterFace)
    assert Support(second, 0.1).supported([grey], [boxes])[0].tolist() == [True, True, False]


def test_threads_change_nothing_in_the_output(tmp_path, astronaut, face_settings, face_engine, monkeypatch):
    """Detector calls run concurrently (video.cpu_detect_threads), batches are masked and
    verified concurrently (video.mask_threads), copied packets reach the muxer in batches: the
    encoder gets the same frames, pixel for pixel and timestamp for timestamp, and the muxer
    the same audio packets in the same order, as with one thread for each.

    (What the encoder is given is compared, not the files: libx264 itself does not produce
    the same bitstream run to run for the same frames, even with threads=1, measured
    2026-12-03 with the PyAV wheel's libx264.)"""
    sent: list = []
    encode, copy = vio.VideoWriter.encode, vio.VideoWriter.copy

    def spy_encode(self, frame):
        sent.append(("frame", frame.pts, frame.to_ndarray().tobytes()))  # visible pixels
        return encode(self, frame)

    def spy_copy(self, packet):
        sent.append(("packet", packet.pts, bytes(packet)))
        return copy(self, packet)

    monkeypatch.setattr(vio.VideoWriter, "encode", spy_encode)
    monkeypatch.setattr(vio.VideoWriter, "copy", spy_copy)
    src_path = tmp_path / "in.mp4"
    make_clip(src_path, astronaut, n=30)
    streams, reports = [], []
    for threads in (1, 3):  # batches of 4 frames: 8 of them, several masked at once
        sent.clear()
        reports.append(run(src_path, tmp_path / f"out{threads}.mp4", face_settings, face_engine,
                           cpu_detect_threads=threads, mask_threads=threads, batch_size=4))
        streams.append(list(sent))
    one, many = streams
    assert sum(kind == "frame" for kind, _, _ in one) == 30
    # the audio, packet for packet in the source's order
    assert [data for kind, _, data in one if kind == "packet"] == decode_all(src_path)["audio"]
    assert one == many
    a, b = (r.to_dict() for r in reports)
    for key in ("detections", "masked", "tracks", "verify_fixes", "verify_on_mask"):
        assert a[key] == b[key], key
    assert a["parameters"]["video"] == b["parameters"]["video"]  # frames masked, verified...
    assert a["masked"].get("face", 0) >= 20


def test_a_failure_while_masking_stops_the_job_and_its_threads(tmp_path, astronaut, face_settings,
                                                               face_engine, monkeypatch):
    """An error in a mask thread reaches the caller as itself (not a hang, not a half-written
    file reported as done), and no thread of the job is left running."""
    import threading

    from anond import mask

    calls = {"n": 0}
    real_apply = mask.apply

    def failing_apply(image, dets, settings):
        calls["n"] += 1
        if calls["n"] == 12:  # part-way: some batches encoded, others queued or being masked
            raise RuntimeError("injected masking failure")
        return real_apply(image, dets, settings)

    monkeypatch.setattr(mask, "apply", failing_apply)
    src_path = tmp_path / "in.mp4"
    make_clip(src_path, astronaut, n=40)
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="injected masking failure"):
        run(src_path, tmp_path / "out.mp4", face_settings, face_engine, batch_size=4,
            mask_threads=3)
    left = [t.name for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("anond-") and t.is_alive()]
    assert not left
    assert calls["n"] >= 12


def test_ten_bit_stays_ten_bit_and_hevc_stays_hevc(tmp_path, astronaut, face_settings, face_engine):
    src_path, out_path = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src_path, astronaut, size=(192, 144), n=8, audio=False, codec="libx265",
              pix_fmt="yuv420p10le", options={"x265-params": "log-level=error"})
    report = run(src_path, out_path, face_settings, face_engine)
    src, out = decode_all(src_path), decode_all(out_path)
    assert (out["codec"], out["pix_fmt"]) == ("hevc", "yuv420p10le")
    assert report.encoder.startswith("libx265") and report.media.bit_depth == 10
    assert out["pts"] == src["pts"]


def test_avi_with_b_frames_keeps_every_frame_in_its_slot(tmp_path, astronaut, face_settings, face_engine):
    # AVI keeps decode order only; H.264 with B-frames decodes to frames whose own pts are
    # the coded order's slots: each frame must take its presentation slot.
    src_path, out_path = tmp_path / "in.avi", tmp_path / "out.avi"
    make_clip(src_path, astronaut, size=(160, 120), n=20, vfr=False, audio=False, face=False)
    report = run(src_path, out_path, face_settings, face_engine)
    out = decode_all(out_path)
    assert avi_slots(out_path) == avi_slots(src_path)
    assert [read_index(f) for f in out["frames"]] == list(range(20))
    assert report.parameters["video"]["timestamps"] == "index"


def avi_slots(path: Path) -> list:
    """An AVI's frame times: the index slots its video chunks sit in, in seconds."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return sorted(p.dts * v.time_base for p in c.demux(v) if p.size)


def test_other_codecs_become_h264_where_the_container_allows(tmp_path, astronaut, face_settings, face_engine):
    src_path, out_path = tmp_path / "in.mkv", tmp_path / "out.mkv"
    make_clip(src_path, astronaut, size=(160, 120), n=6, vfr=False, audio=False, face=False,
              codec="mpeg4")
    report = run(src_path, out_path, face_settings, face_engine)
    out = decode_all(out_path)
    assert out["codec"] == "h264" and len(out["frames"]) == 6
    assert report.encoder.startswith("libx264")


def test_gpu_codecs_are_reported_as_they_really_ran(tmp_path, astronaut, face_settings, face_engine, capsys):
    """Asking for NVDEC/NVENC where they cannot run falls back with a logged event, and the
    report names the decoder and encoder that really did the work."""
    src_path, out_path = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src_path, astronaut, size=(160, 120), n=6, audio=False, face=False)
    report = run(src_path, out_path, face_settings, face_engine, decoder="nvdec", encoder="nvenc")
    logged = capsys.readouterr().err  # log events go to stderr
    if report.decoder != "h264+nvdec":
        assert report.decoder == "h264" and "video.decoder_fallback" in logged
    if not report.encoder.startswith("h264_nvenc"):
        assert report.encoder == "libx264 (nvenc_unavailable)" and "video.encoder_fallback" in logged
    assert len(decode_all(out_path)["frames"]) == 6


def test_location_tags_are_stripped_unless_allow_listed():
    meta = {"location": "+1+2/", "location-eng": "+1+2/", "com.apple.quicktime.location.ISO6709": "x",
            "creation_time": "2024", "title": "Anna's birthday", "encoder": "Lavf"}
    keep = ["creation_time", "language", "handler_name", "timecode"]
    assert vio.filter_metadata(meta, keep) == {"creation_time": "2024"}
    assert vio.filter_metadata(meta, keep + ["location"]) == {
        "location": "+1+2/", "location-eng": "+1+2/", "creation_time": "2024"}


def test_odd_sizes_get_a_pixel_format_without_subsampling():
    x264 = [f.name for f in av.Codec("libx264", "w").video_formats]
    assert vio.choose_pix_fmt("yuv420p", 320, 240, x264) == "yuv420p"
    assert vio.choose_pix_fmt("yuv420p", 321, 241, x264) == "yuv444p"
    assert vio.choose_pix_fmt("yuv420p10le", 321, 240, x264) == "yuv444p10le"
    assert vio.choose_pix_fmt("nv12", 640, 360, x264) in ("nv12", "yuv420p")


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_boxes_found_upright_map_back_to_the_stored_frame(rotation):
    stored = np.zeros((50, 80), np.uint8)
    stored[10:20, 30:45] = 1
    up = vio.upright(stored, rotation)
    ys, xs = np.nonzero(up)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    assert vio.boxes_to_stored(box, rotation, stored.shape).tolist() == [[30, 10, 45, 20]]
    corners = np.array([[box[0, 0], box[0, 1]], [box[0, 2], box[0, 3]]])
    back = vio.points_to_stored(corners, rotation, stored.shape)
    assert sorted(back[:, 0].tolist()) == [30, 45] and sorted(back[:, 1].tolist()) == [10, 20]
    # ...and stored boxes map to the upright picture (verification crops around masks)
    assert vio.boxes_to_upright(np.array([[30, 10, 45, 20]], np.float32), rotation,
                                stored.shape).tolist() == box.tolist()


def test_verification_looks_around_masks_only():
    from anond.verify import neighbourhood_scale, neighbourhoods

    # a 40 px box grows by half its size on each side; one near the edge keeps its size
    assert neighbourhoods(np.array([[100, 100, 140, 140]]), (360, 640)) == [(68, 68, 172, 172)]
    (x0, y0, x1, y1), = neighbourhoods(np.array([[0, 0, 20, 20]]), (360, 640), min_hw=(128, 128))
    assert (x0, y0) == (0, 0) and x1 - x0 >= 128 and y1 - y0 >= 128  # shifted inside, not cut
    # overlapping neighbourhoods merge; distant ones stay apart; a fixed 640 input gets it all
    near = neighbourhoods(np.array([[100, 100, 140, 140], [150, 100, 190, 140],
                                    [500, 250, 540, 290]]), (360, 640))
    assert len(near) == 2 and near[0][0] <= 68 and near[0][2] >= 222
    assert neighbourhoods(np.array([[10, 10, 30, 30]]), (360, 640), min_hw=(640, 640)) == [(0, 0, 640, 360)]
    assert neighbourhoods(np.zeros((0, 4)), (360, 640)) == []
    # a dynamic-input model: overlapping neighbourhoods merge only where one view costs less
    # than two; a large face beside a small one stays apart (the union would be searched at
    # the small face's scale, almost a whole frame at full resolution)
    large_and_small = np.array([[100, 100, 300, 300], [410, 100, 430, 120]])
    assert len(neighbourhoods(large_and_small, (360, 640))) == 1
    apart = neighbourhoods(large_and_small, (360, 640), object_px=48)
    assert sorted(apart) == [(0, 0, 400, 360), (378, 68, 462, 152)]
    twins = np.array([[100, 100, 140, 140], [110, 100, 150, 140]])
    assert neighbourhoods(twins, (360, 640), object_px=48) == [(68, 68, 182, 172)]
    # a crop is shrunk so that its smallest mask is NEAR_OBJECT_PX across, never enlarged
    assert neighbourhood_scale(np.array([[0, 0, 192, 200]]), (0, 0, 300, 300)) == pytest.approx(0.25)
    assert neighbourhood_scale(np.array([[0, 0, 20, 20]]), (0, 0, 60, 60)) == 1.0


def test_a_failing_encoder_call_surfaces_in_the_job_thread():
    done = []
    out = vio.Background(size=2)
    out.submit(done.append, 1)
    out.submit(lambda: 1 / 0)
    out.submit(done.append, 3)  # skipped: the worker stopped at the failure
    with pytest.raises(ZeroDivisionError):
        out.drain()
    assert done == [1]
    out = vio.Background(size=1)
    out.submit(done.append, 4)
    out.cancel()  # the error path: stops without raising


@pytest.mark.parametrize("w,h,fmt", [(320, 240, "yuv420p"), (321, 241, "yuv420p"),
                                     (161, 121, "yuv420p10le"), (200, 150, "nv12")])
def test_unmasked_pixels_are_kept_exactly(astronaut, w, h, fmt):
    frame = av.VideoFrame.from_ndarray(astronaut[:h, :w].copy(), format="bgr24").reformat(format=fmt)
    frame.pts = 0
    bgr = frame.to_ndarray(format="bgr24")
    coverage = np.zeros(bgr.shape[:2], bool)
    coverage[h // 3 : h // 2, w // 3 : w // 2] = True
    coverage[h - 9 :, w - 13 :] = True  # touching the odd right and bottom edges
    bgr[coverage] = 0
    new = vio.composite(frame, bgr, coverage)
    assert (new.width, new.height, new.format.name) == (w, h, fmt)
    bps = 2 if "10" in fmt else 1
    for k, (po, pn) in enumerate(zip(frame.planes, new.planes)):  # every plane, own resolution
        comps = 2 if (fmt == "nv12" and k == 1) else 1
        row = po.width * comps * bps
        a = np.frombuffer(po, np.uint8).reshape(po.height, po.line_size)[:, :row]
        b = np.frombuffer(pn, np.uint8).reshape(pn.height, pn.line_size)[:, :row]
        keep = np.repeat(~frames._downsample_any(coverage, po.height, po.width), comps * bps, axis=1)
        assert keep.sum() > 0.5 * keep.size
        assert np.array_equal(a[keep], b[keep]), f"plane {k} changed outside the mask"
        assert not np.array_equal(a[~keep], b[~keep]), f"plane {k} not masked"
    luma = new.to_ndarray(format="gray") if fmt != "yuv420p10le" else None
    if luma is not None:
        assert luma[h // 3 + 2 : h // 2 - 2, w // 3 + 2 : w // 2 - 2].max() <= 18  # black


def test_manual_regions_follow_frames_and_the_upright_picture(tmp_path, astronaut, face_settings, face_engine):
    """Sidecar regions are in upright pixels: on a rotated clip a mask rect (frames 5-14)
    lands where the viewer sees it, and an exclude band over the face's path clears it."""
    import json

    src_path, out_path = tmp_path / "in.mp4", tmp_path / "out.mp4"
    made = make_clip(src_path, astronaut, size=(320, 240), n=20, rotation=90, audio=False)
    x0, y0, x1, y1 = 200, 196, 260, 236  # upright pixels, below the face's path
    assert all(b[1] >= 40 and b[3] <= 190 for b in made["boxes"])
    (tmp_path / "in.mp4.regions.json").write_text(json.dumps({"version": 1, "regions": [
        {"rect": {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0}, "start_frame": 5, "end_frame": 14,
         "mode": "solid"},
        {"type": "exclude", "rect": {"x": 0, "y": 30, "w": 320, "h": 165}},
    ]}))
    report = run(src_path, out_path, face_settings, face_engine)
    src, out = decode_all(src_path), decode_all(out_path)
    src.update(boxes=made["boxes"], rotation=90)
    assert report.manual_regions.sidecar == "applied"
    assert report.manual_regions.applied == 1
    for i, (a, b) in enumerate(zip(src["frames"], out["frames"])):
        a, b = upright(a, 90), upright(b, 90)
        region = b[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].astype(int)
        if 5 <= i <= 14:
            assert region.max() <= 20, f"frame {i}: region not masked"  # solid black
        else:
            assert np.abs(region - a[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]).mean() < 4, i
    # The operator cleared the face: found, excluded, left visible.
    assert report.manual_regions.excluded > 0
    assert report.masked.get("face", 0) == 0
    assert not any(masked_frames(src, out))


# -- bad input ---------------------------------------------------------------------------------


def test_damaged_video_is_processed_as_far_as_it_decodes(tmp_path, astronaut, face_settings, face_engine):
    good, bad, out_path = tmp_path / "good.mp4", tmp_path / "bad.mp4", tmp_path / "out.mp4"
    make_clip(good, astronaut, size=(160, 120), n=40, vfr=False, face=False)
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(1)
    at = int(len(data) * 0.4)
    data[at : at + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad.write_bytes(bytes(data))
    decodable = len(list(vio.VideoReader(bad).items()))  # frames and audio packets
    report = run(bad, out_path, face_settings, face_engine)
    out = decode_all(out_path)
    assert 0 < len(out["frames"]) < 40
    assert report.media.frames == len(out["frames"])
    assert report.skipped_packets > 0
    assert decodable > 0


def test_truncated_stream_keeps_what_arrived(tmp_path, astronaut, face_settings, face_engine):
    good, cut, out_path = tmp_path / "good.mkv", tmp_path / "cut.mkv", tmp_path / "out.mkv"
    make_clip(good, astronaut, size=(160, 120), n=60, vfr=False, face=False)
    data = good.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    report = run(cut, out_path, face_settings, face_engine)
    out = decode_all(out_path)
    assert 10 < len(out["frames"]) < 60
    shown = [read_index(f) for f in out["frames"]]
    # in order, nothing invented; B-frames whose reference was cut off are lost with it
    assert shown == sorted(set(shown)) and shown[:30] == list(range(30))
    assert report.skipped_packets > 0  # the frames announced but never delivered


@pytest.mark.parametrize("content", [b"", b"not a video at all\n" * 50, os.urandom(4096)])
def test_unreadable_file_fails_clearly_and_writes_nothing(tmp_path, face_settings, face_engine, content):
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    src.write_bytes(content)
    with pytest.raises((CorruptMedia, UnsupportedMedia)):
        run(src, out, face_settings, face_engine)
    assert not out.exists()


def test_audio_only_file_is_unsupported(tmp_path, face_settings, face_engine):
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    with av.open(str(src), "w") as c:
        a = c.add_stream("aac", rate=22050)
        a.layout = "mono"
        for k in range(10):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 22050, k * 1024
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    with pytest.raises(UnsupportedMedia):
        run(src, out, face_settings, face_engine)
    assert not out.exists()


def test_an_observer_sees_every_frame_in_order_and_the_tracker_input(tmp_path, astronaut,
                                                                     face_settings, face_engine):
    class Seen:
        def __init__(self):
            self.tracked, self.masked, self.boxes = [], [], {}

        def frame_boxes(self, frame, xyxy, dets):
            self.boxes[frame] = xyxy.copy()

        def tracker_input(self, frame, dets):
            self.tracked.append((frame, len(dets)))

        def frame_masked(self, frame, coverage):
            self.masked.append((frame, None if coverage is None else int(coverage.sum())))

    src_path, out_path = tmp_path / "in.mp4", tmp_path / "out.mp4"
    made = make_clip(src_path, astronaut, n=12, audio=False)
    seen = Seen()
    profile = face_settings.profile
    report = JobReport.start("test", "video", engine=face_engine, profile=profile)
    process_video(src_path, out_path, settings=face_settings, engine=face_engine, profile=profile,
                  report=report, observer=seen)
    assert [f for f, _ in seen.masked] == list(range(12))  # every frame, in encode order
    assert [f for f, _ in seen.tracked] == list(range(12))  # detect_stride 1: every frame
    x0, y0, x1, y1 = made["boxes"][5]
    assert seen.masked[5][1] >= 0.5 * (x1 - x0) * (y1 - y0)  # the face's pixels were masked
    # The boxes masked on each frame, in upright pixels (what the review editor draws).
    from anond.types import iou_matrix

    assert sorted(seen.boxes) == list(range(12))
    assert all(iou_matrix(seen.boxes[i], np.array([made["boxes"][i]], np.float32)).max() > 0.3
               for i in range(12))
