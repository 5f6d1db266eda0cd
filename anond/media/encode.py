"""Writing the output video: encoder and pixel format choice, metadata allow-list, and
`VideoWriter`, which re-encodes the frames (timestamps kept) and copies the other streams'
packets into the container `anond.media.containers` chose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log
from ..errors import CorruptMedia, UnsupportedMedia
from . import containers
from .frames import TOP_FIRST, display_matrix, pyav

if TYPE_CHECKING:
    from .video import VideoReader

# Encoders per source codec family, in order of preference (CPU, then NVENC variants).
CPU_ENCODERS = {"h264": ["libx264"], "hevc": ["libx265", "libx264"]}
FALLBACK_ENCODERS = ["libx264", "libvpx-vp9", "libsvtav1", "wmv2", "mpeg4"]
ASF_ENCODERS = ("wmv2", "mpeg4")  # ASF output (WMA audio nothing else holds): WMV 8 video
NVENC = {"h264": "h264_nvenc", "hevc": "hevc_nvenc"}
LOCATION_KEY = re.compile(r"location|iso6709|xyz|gps|coordinates", re.IGNORECASE)

_log = log.get("anond.media.video")


# -- metadata ---------------------------------------------------------------------------------


def filter_metadata(metadata: dict[str, str], keep: Iterable[str]) -> dict[str, str]:
    """Metadata entries whose key (minus a `-lang` suffix) is allow-listed.

    Location tags pass only when their own name is listed; nothing else is ever added.
    """
    allowed = {k.lower() for k in keep}
    out = {}
    for key, value in metadata.items():
        base = key.lower()
        base_nolang = re.sub(r"-[a-z]{3}$", "", base)
        if base not in allowed and base_nolang not in allowed:
            continue
        if LOCATION_KEY.search(base) and base not in allowed and base_nolang not in allowed:
            continue
        out[key] = value
    return out


# -- writing ----------------------------------------------------------------------------------


def choose_pix_fmt(src: str, width: int, height: int, supported: list[str]) -> str:
    """The source pixel format if the encoder takes it at this size, else the nearest one.

    4:2:0 and 4:2:2 need even sizes: odd-sized video is encoded 4:4:4 (no padding, no
    resizing). Bit depth is kept (10-bit sources stay 10-bit).
    """
    av = pyav()
    try:
        fmt = av.VideoFormat(src, width, height)
        depth = max(c.bits for c in fmt.components)
        gray = len(fmt.components) == 1
        sub_w = any(c.width != width for c in fmt.components if c.is_chroma)
        sub_h = any(c.height != height for c in fmt.components if c.is_chroma)
    except (ValueError, TypeError):
        depth, gray, sub_w, sub_h = 8, False, True, True
    odd = (width % 2 == 1, height % 2 == 1)
    fits = not ((sub_w and odd[0]) or (sub_h and odd[1]))
    if src in supported and fits:
        return src
    if gray:
        candidates = ["gray10le", "gray"] if depth > 8 else ["gray"]
    elif depth > 8:
        candidates = ["yuv420p10le", "yuv422p10le", "yuv444p10le", "p010le", "yuv420p"]
    else:
        candidates = ["yuv420p", "yuv422p", "yuv444p", "nv12"]
    if src.startswith("yuvj") and not gray:
        candidates = [c.replace("yuv", "yuvj", 1) if c.startswith("yuv4") and "10" not in c else c
                      for c in candidates] + candidates
    if not sub_w and not sub_h and not gray:  # keep 4:4:4 sources 4:4:4
        candidates = [c for c in candidates if "444" in c] + candidates
    for c in candidates:
        if c not in supported:
            continue
        try:
            cf = av.VideoFormat(c, width, height)
        except (ValueError, TypeError):
            continue
        csub_w = any(x.width != width for x in cf.components if x.is_chroma)
        csub_h = any(x.height != height for x in cf.components if x.is_chroma)
        if (csub_w and odd[0]) or (csub_h and odd[1]):
            continue
        return c
    return supported[0]


def _encoder_works(name: str) -> bool:
    """Open a tiny encoder to find out whether the hardware behind it is really there."""
    av = pyav()
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height = 256, 256
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
        ctx.close() if hasattr(ctx, "close") else None
        return True
    except Exception:
        return False


def choose_encoder(src_codec: str, supported: set[str], hardware: str = "cpu") -> tuple[str, str]:
    """(encoder name, note) for a source codec and a muxer's supported codecs."""
    av = pyav()
    available = av.codecs_available
    note = ""
    if hardware == "nvenc":
        hw = NVENC.get(src_codec, "h264_nvenc")
        if hw in available and hw in supported and _encoder_works(hw):
            return hw, ""
        _log.warning("video.encoder_fallback", wanted="nvenc", used="cpu",
                     reason="not_in_build" if hw not in available else "no_device")
        note = "nvenc_unavailable"
    wanted = CPU_ENCODERS.get(src_codec, [])
    for name in wanted + FALLBACK_ENCODERS:
        if name in available and name in supported:
            if wanted and name != wanted[0]:
                note = note or f"{wanted[0]}_unavailable"
            return name, note
    raise UnsupportedMedia("no encoder for this container in this build")


def encoder_options(name: str, crf: int, preset: str, threads: int) -> dict[str, str]:
    """Quality and speed options per encoder family."""
    if name == "libx264":
        return {"crf": str(crf), "preset": preset, "threads": str(threads or 0)}
    if name == "libx265":
        return {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    if name.endswith("_nvenc"):
        return {"preset": "p4", "rc": "vbr", "cq": str(crf), "b": "0"}
    if name == "libvpx-vp9":
        return {"crf": str(min(63, crf + 10)), "b": "0", "deadline": "good", "cpu-used": "4",
                "row-mt": "1"}
    if name == "libsvtav1":
        return {"crf": str(min(63, crf + 10)), "preset": "8"}
    return {"flags": "+qscale", "global_quality": str(3 * 118)}  # -q:v 3 (FF_QP2LAMBDA = 118)


class VideoWriter:
    """Encode frames (timestamps kept) and copy other streams' packets into one file."""

    def __init__(self, path: str | Path, reader: VideoReader, first_frame, *,
                 container: "containers.OutputContainer", crf: int = 18,
                 preset: str = "veryfast", encoder: str = "cpu", threads: int = 0,
                 keep_metadata: Iterable[str] = ()) -> None:
        av = pyav()
        containers.check_video_name(Path(path), container)
        fmt = container.muxer
        self.container = av.open(str(path), "w", format=fmt,
                                 options={"avoid_negative_ts": "disabled", **container.options})
        self.output = container
        # Times are kept as they are in the input's own container. In another one they start
        # where the input's first stream starts, shifted alike (sync kept): a DVR's .dav counts
        # from 1970, which an MP4 would keep as a decades-long empty edit.
        start = reader.container.start_time if container.rule == "fallback" else None
        self._start_s = Fraction(start, 1_000_000) if start and start > 0 else Fraction(0)
        self.dropped_packets = 0
        self.frames_written = 0
        self._durations: dict[int, int] = {}
        try:
            self._setup(reader, first_frame, crf, preset, encoder, threads, list(keep_metadata), fmt)
        except BaseException:
            self.container.close()
            raise

    def _setup(self, reader, first_frame, crf, preset, encoder, threads, keep, fmt) -> None:
        av = pyav()
        out = self.container
        src = reader.info
        supported = set(out.supported_codecs)
        if fmt == "mpegts":  # the TS muxer answers "unknown" to codec queries; it takes these
            supported |= {"libx264", "libx265", "h264_nvenc", "hevc_nvenc", "mpeg4"}
        self.field_order = _field_order(reader, first_frame)
        interlaced = self.field_order > 1
        family = "h264" if interlaced and "libx264" in supported else src.codec
        if fmt == "asf":  # FFmpeg reads H.264 in ASF back a frame late: Windows Media's own
            supported = {c for c in ASF_ENCODERS if c in supported}
        # Neither x265 nor NVENC encodes interlaced here: interlaced sources go to x264.
        name, self.note = choose_encoder(family, supported, "cpu" if interlaced else encoder)
        if interlaced and encoder == "nvenc":
            self.note = "interlaced_on_cpu"
        self.encoder_name = name
        width, height = first_frame.width, first_frame.height
        codec = av.Codec(name, "w")
        pix_fmts = [f.name for f in (codec.video_formats or [])] or ["yuv420p"]
        src_fmt = first_frame.format.name
        if first_frame.format.name in ("cuda", "nv12") and src.pix_fmt:
            src_fmt = src.pix_fmt
        self.pix_fmt = choose_pix_fmt(src_fmt, width, height, pix_fmts)
        out.metadata.update(filter_metadata(dict(reader.container.metadata), keep))

        vs = out.add_stream(name, rate=reader.rate)
        ctx = vs.codec_context
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = self.pix_fmt
        ctx.time_base = reader.time_base
        vs.time_base = reader.time_base
        src_ctx = reader.video.codec_context
        for attr in ("color_primaries", "color_trc", "colorspace", "color_range"):
            value = getattr(src_ctx, attr, None)
            if value:
                setattr(ctx, attr, value)
        if src_ctx.sample_aspect_ratio:
            ctx.sample_aspect_ratio = src_ctx.sample_aspect_ratio
        if fmt in ("avi", "asf"):  # they keep decode order only: B-frames would come out misordered
            ctx.max_b_frames = 0
        ctx.options = encoder_options(name, crf, preset, threads)
        if interlaced:
            ctx.field_order = self.field_order
            if name == "libx264":
                ctx.options = {**ctx.options,
                               "x264-params": "tff=1" if self.field_order in TOP_FIRST else "bff=1"}
        if threads:
            ctx.thread_count = threads
        vs.metadata.update(filter_metadata(dict(reader.video.metadata), keep))
        matrix = display_matrix(first_frame)
        if matrix is not None:
            vs.set_display_matrix(matrix)
        self.video = vs
        self._add_copies(reader.copy_streams, keep)

    def _add_copies(self, streams, keep: list[str]) -> None:
        """Output streams for the packets copied unchanged; one the container refuses (e.g. a
        data track) is dropped, counted and logged."""
        av = pyav()
        self._copy: dict[int, object] = {}
        self.dropped_streams = 0
        for s in streams:
            try:
                o = self.container.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError):
                self.dropped_streams += 1
                _log.info("video.stream_dropped", kind=s.type, reason="container")
                continue
            o.metadata.update(filter_metadata(dict(s.metadata), keep))
            self._copy[s.index] = o

    def encode(self, frame) -> None:
        """Encode one frame; its pts (in the source time base) becomes the output pts."""
        ctx = self.video.codec_context
        if frame.format.name != self.pix_fmt or (frame.width, frame.height) != (ctx.width, ctx.height):
            # A damaged stream can change size mid-way; the output keeps the first frame's.
            pts, tb, dur = frame.pts, frame.time_base, frame.duration
            frame = frame.reformat(width=ctx.width, height=ctx.height, format=self.pix_fmt)
            frame.pts, frame.time_base = pts, tb
            frame.duration = dur
        if self._start_s:
            frame.pts -= _ticks(self._start_s, self.video.codec_context.time_base)
        if frame.duration:
            self._durations[frame.pts] = frame.duration
            if len(self._durations) > 1024:  # an encoder that renumbers pts: stay bounded
                self._durations.pop(min(self._durations))
        self._mux_encoded(self.video.encode(frame))
        self.frames_written += 1

    def _mux_encoded(self, packets) -> None:
        # Encoders lose per-frame durations across B-frame reordering; the muxer needs the
        # last one for the stream's duration, so each packet gets its frame's own.
        for packet in packets:
            duration = self._durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
            self._mux(packet)

    def _mux(self, packet) -> None:
        try:
            self.container.mux(packet)
        except pyav().error.FFmpegError as exc:  # e.g. a time gap the container cannot hold
            raise CorruptMedia(f"the video's timing cannot be written ({type(exc).__name__})") from None

    def copy(self, packet) -> None:
        """Remux one packet of an audio/subtitle/data stream unchanged."""
        av = pyav()
        out = self._copy.get(packet.stream.index)
        if out is None:
            return
        if packet.dts is None and packet.pts is None:
            self.dropped_packets += 1
            return
        if self._start_s:
            shift = _ticks(self._start_s, packet.time_base)
            packet.pts = None if packet.pts is None else packet.pts - shift
            packet.dts = None if packet.dts is None else packet.dts - shift
        packet.stream = out
        try:
            self.container.mux(packet)
        except av.error.FFmpegError:
            self.dropped_packets += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            self._mux_encoded(self.video.encode(None))
        finally:
            self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass


def _field_order(reader, first_frame) -> int:
    """The field order written (FFmpeg's AVFieldOrder). Interlaced video is encoded
    interlaced (x264's field coding) in its order; a source flagged per frame only is taken
    as top field first (the common order); anything else is written progressive."""
    if reader.interlaced:
        return reader.field_order
    return 2 if first_frame.interlaced_frame else 1


def _ticks(seconds: Fraction, time_base) -> int:
    return round(seconds / Fraction(time_base))
