"""CCTV-style test clips made with PyAV: the formats DVRs and export tools write.

Each maker writes a short clip of a real face (a crop of the `astronaut` photo, as in
tests/test_video.py) moving over a textured background, each frame numbered by a barcode,
and returns what it put in: the frame times (seconds, relative to the first frame), audio
codec and bytes, field order. `read_clip` reads the same facts back from any file, the way
a player would see them, so a test compares input and output with one function.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dav import write_dav
from test_video import draw_index, face_box, face_patch, read_index

FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}


@dataclass
class Clip:
    """What a clip holds, as read back (or as written)."""

    frames: int
    times: list  # Fraction seconds from the first frame
    indexes: list  # the barcode of each frame, in presentation order
    size: tuple
    field_order: str
    interlaced: list  # per frame
    audio_codec: str | None = None
    audio: bytes = b""
    container: str = ""
    images: list = field(default_factory=list, repr=False)  # BGR frames
    boxes: list = field(default_factory=list, repr=False)  # the face's box per frame (written only)


def pictures(astronaut: np.ndarray, n: int, size=(320, 240)):
    """(BGR image, face box) for n frames."""
    w, h = size
    patch = face_patch(astronaut)
    rng = np.random.default_rng(11)
    import cv2

    background = cv2.GaussianBlur(rng.integers(40, 215, (h, w, 3)).astype(np.uint8), (0, 0), 6)
    out = []
    for i in range(n):
        img = background.copy()
        x0, y0, x1, y1 = face_box(i, n, w, h)
        img[y0:y1, x0:x1] = patch
        draw_index(img, i)
        out.append((img, (x0, y0, x1, y1)))
    return out


def _audio_frames(codec: str, rate: int, seconds: float, chunk: int):
    """Frames of a quiet tone, `chunk` samples each, in the sample format `codec` encodes."""
    fmt = av.Codec(codec, "w").audio_formats[0].name  # the encoder's own sample format
    total = int(seconds * rate)
    for k, start in enumerate(range(0, total, chunk)):
        t = np.arange(start, start + chunk)
        wave = 0.09 * np.sin(t * 0.07) + 0.015 * np.sin(t * 0.011 + k)
        samples = (wave * 32767).astype(np.int16) if fmt.startswith("s16") else wave.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples[None], format=fmt, layout="mono")
        frame.sample_rate, frame.pts = rate, start
        yield frame


def write_clip(path: Path, astronaut, *, muxer: str, codec: str, n: int = 16, rate=25,
               slots: list[int] | None = None, size=(320, 240), pix_fmt="yuv420p",
               options: dict | None = None, audio: str | None = None, audio_rate: int = 8000,
               audio_chunk: int = 400, images: list | None = None) -> Clip:
    """Encode a clip with PyAV into `muxer`. `slots`: each frame's pts in 1/rate units
    (gaps = frames the recorder dropped); default 0..n-1. `images`: BGR frames to write
    instead of the made-up face clip (then `astronaut` is unused and no boxes are known)."""
    if images is not None:
        n, size = len(images), (images[0].shape[1], images[0].shape[0])
        pics = [(img, None) for img in images]
    else:
        pics = pictures(astronaut, n, size)
    slots = slots or list(range(n))
    tb = Fraction(1) / Fraction(rate)
    with av.open(str(path), "w", format=muxer) as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], pix_fmt
        vs.codec_context.time_base = tb
        if options:
            vs.codec_context.options = options
        aus = None
        if audio:
            aus = out.add_stream(audio, rate=audio_rate)
            aus.layout = "mono"
            if not audio.startswith(("pcm", "adpcm")):
                aus.bit_rate = 64000
        for (img, _), slot in zip(pics, slots):
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts, frame.time_base = slot, tb
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if aus is not None:
            for frame in _audio_frames(audio, audio_rate, float((slots[-1] + 1) * tb), audio_chunk):
                for p in aus.encode(frame):
                    out.mux(p)
            for p in aus.encode():
                out.mux(p)
    clip = read_clip(path)
    clip.boxes = [b for _, b in pics]
    return clip


def write_dav_clip(path: Path, astronaut, *, n: int = 16, fps: int = 25,
                   images: list | None = None) -> Clip:
    """A Dahua .dav: H.264 (no B-frames, as DVRs write) and G.711 A-law audio."""
    pics = [(img, None) for img in images] if images is not None else pictures(astronaut, n)
    n = len(pics)
    height, width = pics[0][0].shape[:2]
    buf = io.BytesIO()
    packets = []
    with av.open(buf, "w", format="h264") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.options = {"bf": "0", "g": "8", "sc_threshold": "0"}
        for i, (img, _) in enumerate(pics):
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            packets += [(bytes(p), p.is_keyframe) for p in vs.encode(frame)]
        packets += [(bytes(p), p.is_keyframe) for p in vs.encode()]
    alaw = av.CodecContext.create("pcm_alaw", "w")
    alaw.sample_rate, alaw.layout, alaw.format = 8000, "mono", "s16"
    alaw.open()
    chunks = []
    for frame in _audio_frames("pcm_alaw", 8000, n / fps, 320):
        chunks += [(bytes(p), 8000) for p in alaw.encode(frame)]
    write_dav(path, packets, fps=fps, width=width, height=height, audio=chunks)
    clip = read_clip(path)
    clip.boxes = [b for _, b in pics]
    return clip


def read_clip(path: Path, *, fmt: str | None = None) -> Clip:
    """The facts of a file as a player sees them, in one pass. AVI frame times are its index
    slots; an elementary stream's come from its announced rate (FFmpeg numbers them so)."""
    images, interlaced, pts, slots, audio = [], [], [], [], []
    with av.open(str(path), format=fmt) as c:
        container = c.format.name
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        for packet in c.demux(*[s for s in (v, a) if s is not None]):
            if packet.stream.index != v.index:
                if packet.size:
                    audio.append(bytes(packet))
                continue
            if packet.size:
                slots.append(packet.dts)
            for f in v.decode(packet):  # the last, empty packet drains the decoder
                images.append(f.to_ndarray(format="bgr24"))
                interlaced.append(f.interlaced_frame)
                pts.append(f.pts)
        ctx, tb = v.codec_context, v.time_base
        rate = ctx.framerate or v.average_rate  # FFmpeg numbers a stream without timing at 25
        if container == "avi":
            times = [s * tb for s in sorted(slots)]
        elif container in ("h264", "hevc"):
            times = [Fraction(i) / Fraction(rate) for i in range(len(images))]
        else:
            times = [p * tb for p in pts]
        facts = dict(size=(ctx.width, ctx.height), field_order=FIELD_ORDERS.get(ctx.field_order, "?"),
                     audio_codec=a.codec_context.name if a is not None else None)
    times = [t - times[0] for t in times] if times else []
    return Clip(frames=len(images), times=times, indexes=[read_index(i) for i in images],
                interlaced=interlaced, audio=b"".join(audio), container=container, images=images,
                **facts)


def face_changed(src: Clip, out: Clip, margin: int = 4) -> list[float]:
    """Mean absolute change inside each frame's face box (input -> output)."""
    changes = []
    for a, b, (x0, y0, x1, y1) in zip(src.images, out.images, src.boxes):
        x0, y0 = x0 + margin, y0 + margin
        x1, y1 = x1 - margin, y1 - margin
        diff = np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1].astype(np.int16))
        changes.append(float(diff.mean()))
    return changes
