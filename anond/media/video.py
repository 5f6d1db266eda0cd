"""Video I/O with PyAV: demux every stream, decode the video, re-encode only the video.

- `VideoReader` (here) opens a file with the demuxer its content calls for, decodes the first
  video stream (threaded) and yields, in demux order, decoded frames with their frame times
  (the container's, AVI's index slots, or an elementary stream's announced rate) and the
  packets of every other stream kept for copying. It counts what it had to skip.
- `VideoWriter` (`anond.media.encode`) re-encodes the frames in the source's codec family,
  size, pixel format family and field order, with the source's time base, colour description
  and display matrix, and copies the other streams packet for packet into the container the
  output rule chose (`anond.media.containers`). Metadata follows an allow-list.
- `anond.media.frames`: pixels between decoded frames and BGR images (`to_bgr`,
  `composite`, which leaves every unmasked pixel bit-exact), orientation helpers.
- `anond.media.threads`: `Prefetch` and `Background`, so decoding and encoding overlap
  detection.

The pipeline reaches all of them through this module (`from ..media import video as vio`).
Nothing here logs a path, a name or a pixel.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .. import log
from ..errors import CorruptMedia, MediaTooLarge, UnsupportedMedia
from . import containers, demuxer
from .encode import VideoWriter, choose_encoder, choose_pix_fmt, encoder_options, filter_metadata
from .frames import (
    FIELD_ORDERS, TOP_FIRST, Orientation, boxes_to_stored, boxes_to_upright, composite,
    display_matrix, frame_rotation, points_to_stored, pyav, rotation_dims, to_bgr, upright,
)
from .threads import Background, Prefetch

__all__ = [  # this module's own, and the names the pipeline reaches through it
    "VideoInfo", "VideoReader", "copy_streams", "probe_output",
    "VideoWriter", "choose_encoder", "choose_pix_fmt", "encoder_options", "filter_metadata",
    "FIELD_ORDERS", "TOP_FIRST", "boxes_to_stored", "boxes_to_upright", "composite",
    "display_matrix", "frame_rotation", "points_to_stored", "rotation_dims", "to_bgr", "upright",
    "Orientation",
    "Background", "Prefetch",
]

# Demuxers whose packets carry no presentation times (elementary streams): frames are numbered
# at the stream's own frame rate (H.264/H.265 VUI timing, MPEG-2 sequence header) when it
# announces one, else at `video.raw_fps`.
RAW_STREAMS = {"h264", "hevc", "m4v", "mjpeg", "mpegvideo", "rawvideo"}
# AVI's index holds one slot per frame period; a frame the recorder dropped is an empty slot.
# Frames take the slots of their packets (decode order, sorted: B-frames are reordered).
INDEXED = {"avi"}
NVDEC = {"h264": "h264_cuvid", "hevc": "hevc_cuvid", "vp9": "vp9_cuvid", "av1": "av1_cuvid",
         "mpeg4": "mpeg4_cuvid", "mpeg2video": "mpeg2_cuvid", "vp8": "vp8_cuvid"}
MAX_ERRORS_IN_ROW = 200  # consecutive unreadable packets before the rest counts as lost
MAX_PENDING_PACKETS = 20000  # copied packets held while waiting for the first video frame
# A frame time this far after the previous frame's is damage (a flipped date in a DVR's chunk
# header), not a pause in recording: the frame is placed one frame period on instead.
MAX_JUMP_S = 6 * 3600

_log = log.get("anond.media.video")


# -- reading ----------------------------------------------------------------------------------


@dataclass
class VideoInfo:
    """What the pipeline needs to know about the source's video stream (no names, no paths)."""

    codec: str
    width: int
    height: int
    pix_fmt: str
    fps: float
    time_base: Fraction
    frames_declared: int
    duration_s: float
    container: str


class VideoReader:
    """Demux + decode one file. Iterate `items()` for frames and copied packets, in order.

    `fmt` is the content format `anond.media.sniff` found: the file is opened with that
    format's demuxer. Frame times (`timing`): "source" (the container's own), "index" (AVI:
    each frame in its index slot, dropped frames stay gaps), "stream_rate" / "configured_rate"
    (elementary streams: numbered at the stream's announced rate, else `raw_fps`).
    """

    def __init__(self, path: str | Path, *, fmt: str | None = None, decoder: str = "cpu",
                 threads: int = 0, drop_data_tags: Iterable[str] = (),
                 max_megapixels: float = float("inf"), raw_fps: float = 25.0) -> None:
        self.skipped_packets = 0
        self.corrupt_frames = 0
        self.timestamp_fixes = 0
        self.missing_packets = 0
        self.frames_decoded = 0
        self.decoder_name = ""
        self.hw_decoder_wanted = decoder == "nvdec"
        self.path, self.format = Path(path), fmt
        self.container = self._open(path, decoder, demuxer(fmt))
        videos = [s for s in self.container.streams.video if s.codec_context is not None]
        if not self.container.streams.video:
            self.container.close()
            raise UnsupportedMedia("the file has no video stream")
        if not videos:
            self.container.close()
            raise UnsupportedMedia("no decoder for the video stream's codec")
        self.video = videos[0]
        ctx = self.video.codec_context
        ctx.thread_type = "AUTO"
        ctx.thread_count = threads
        if not ctx.width or not ctx.height:
            self.container.close()
            raise CorruptMedia("the video stream has no frame size")
        self.max_pixels = max_megapixels * 1e6
        if ctx.width * ctx.height > self.max_pixels:
            self.container.close()
            raise MediaTooLarge(f"frames of {ctx.width * ctx.height / 1e6:.0f} MP are larger than "
                                f"video.max_megapixels ({max_megapixels:g})")
        self.copy_streams, self.dropped_streams = copy_streams(self.container, self.video,
                                                               drop_data_tags)
        self.field_order = int(ctx.field_order or 0)
        fmt_names = set(self.container.format.name.split(","))
        self.timing, self.rate = self._timing(fmt_names, raw_fps)
        fps = float(self.rate)
        self.regenerate_pts = self.timing in ("stream_rate", "configured_rate")
        self.time_base = (Fraction(1) / self.rate) if self.regenerate_pts else self.video.time_base
        if self.time_base is None:
            self.time_base = Fraction(1) / self.rate
            self.regenerate_pts, self.timing = True, "configured_rate"
        self._slots: list[int] = []  # "index": the packets' slots not yet given to a frame
        self._exact_counts = bool(fmt_names & {"mov", "mp4"})
        self.info = VideoInfo(
            codec=ctx.name, width=ctx.width, height=ctx.height,
            pix_fmt=ctx.pix_fmt or "yuv420p", fps=fps, time_base=self.time_base,
            frames_declared=int(self.video.frames or 0), duration_s=self._duration(),
            container=self.container.format.name,
        )
        if not self.decoder_name:
            self.decoder_name = ctx.name
        self._prev_pts: int | None = None
        self._first_pts: int | None = None
        self._step = max(1, round(1 / (fps * float(self.time_base)))) if not self.regenerate_pts else 1
        self._closed = False

    def _timing(self, fmt_names: set[str], raw_fps: float) -> tuple[str, Fraction]:
        """(where frame times come from, the frame rate): see the class docstring."""
        if fmt_names & RAW_STREAMS:
            announced = _valid_rate(self.video.codec_context.framerate)
            if announced:
                return "stream_rate", announced
            return "configured_rate", Fraction(raw_fps).limit_denominator(1001000)
        rate = _valid_rate(self.video.average_rate) or _valid_rate(self.video.guessed_rate) \
            or _valid_rate(self.video.base_rate) or Fraction(25)
        return ("index" if fmt_names & INDEXED else "source"), rate

    def _duration(self) -> float:
        """The duration the file announces, in seconds (0 when it announces none)."""
        if self.video.duration and self.video.time_base:
            return float(self.video.duration * self.video.time_base)
        if self.container.duration:
            return self.container.duration / 1_000_000
        return 0.0

    def output_container(self) -> "containers.OutputContainer":
        """The container the output is written in (`anond.media.containers`' rule); an ISO
        file's major brand (QuickTime, 3GP) as its demuxer read it."""
        brand = str(self.container.metadata.get("major_brand", ""))
        return containers.choose(self.format or "", self.path.suffix, brand, self.copy_streams)

    @property
    def interlaced(self) -> bool:
        return self.field_order in FIELD_ORDERS and self.field_order > 1

    def _open(self, path, decoder: str, demuxer: str | None):
        av = pyav()
        if decoder == "nvdec":
            try:
                from av.codec.hwaccel import HWAccel

                container = av.open(str(path), format=demuxer,
                                    hwaccel=HWAccel("cuda", allow_software_fallback=False))
                vs = container.streams.video
                if vs and vs[0].codec_context is not None and vs[0].codec_context.is_hwaccel:
                    self.decoder_name = f"{vs[0].codec_context.name}+nvdec"
                    return container
                container.close()
                reason = "codec_not_supported"
            except Exception as exc:  # no GPU, no driver, build without CUDA
                reason = type(exc).__name__
            _log.warning("video.decoder_fallback", wanted="nvdec", used="cpu", reason=reason)
        try:
            return av.open(str(path), format=demuxer, metadata_errors="ignore")
        except FileNotFoundError:
            raise
        except av.error.FFmpegError as exc:
            raise CorruptMedia(f"not a readable video ({type(exc).__name__})") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptMedia(f"not a readable video ({type(exc).__name__})") from None

    # -- iteration

    def items(self) -> Iterator:
        """Decoded video frames (av.VideoFrame) and packets of copied streams (av.Packet)."""
        av = pyav()
        streams = [self.video, *self.copy_streams]
        demux = self.container.demux(*streams)
        errors_in_row = 0
        video_packets = 0
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.EOFError:
                break
            except av.error.FFmpegError:
                self.skipped_packets += 1
                errors_in_row += 1
                if errors_in_row > MAX_ERRORS_IN_ROW:
                    break
                demux = self.container.demux(*streams)  # resume after the unreadable packet
                continue
            errors_in_row = 0
            if packet.stream.index != self.video.index:
                if packet.size:
                    yield packet
                continue
            if packet.size:
                video_packets += 1
            try:
                frames = self.video.decode(packet)
            except av.error.FFmpegError:
                self.skipped_packets += 1
                continue
            if self.timing == "index" and packet.size and packet.dts is not None:
                heapq.heappush(self._slots, packet.dts)
            for frame in frames:
                yield self._stamp(frame)
        try:  # drain the decoder (needed when demuxing ended early)
            for frame in self.video.decode(None):
                yield self._stamp(frame)
        except av.error.FFmpegError:
            pass
        self.missing_packets = self._missing(video_packets)
        self.skipped_packets += self.missing_packets

    def _missing(self, video_packets: int) -> int:
        """Video packets the file announced but never delivered (truncation, damage)."""
        if self._exact_counts:  # mp4/mov indexes list every sample
            return max(0, self.info.frames_declared - video_packets)
        if self.regenerate_pts or self._prev_pts is None or self._first_pts is None:
            return 0
        # Elsewhere only the announced duration tells: a video that stops well before it
        # (more than half a second and 5 %) was cut off; estimate the frames lost.
        decoded_s = float((self._prev_pts - self._first_pts) * self.time_base) + 1 / self.info.fps
        gap = self.info.duration_s - decoded_s
        if gap > max(0.5, 0.05 * self.info.duration_s):
            _log.info("video.truncated", missing_s=round(gap, 3))
            return int(round(gap * self.info.fps))
        return 0

    def _stamp(self, frame):
        """Give the frame its output timestamp: the source's, or a generated one without."""
        if frame.width * frame.height > self.max_pixels:  # a stream that grows on the way
            raise MediaTooLarge(f"a frame of {frame.width * frame.height / 1e6:.0f} MP is larger than "
                                "video.max_megapixels")
        if frame.is_corrupt:
            self.corrupt_frames += 1
        if self.regenerate_pts:
            pts = self.frames_decoded
            frame.time_base = self.time_base
            frame.duration = 1
        else:
            pts = heapq.heappop(self._slots) if self.timing == "index" and self._slots else frame.pts
            if pts is None:
                pts = 0 if self._prev_pts is None else self._prev_pts + self._step
                self.timestamp_fixes += 1
            elif self._prev_pts is not None and pts <= self._prev_pts:
                pts = self._prev_pts + 1  # a muxer refuses non-increasing timestamps
                self.timestamp_fixes += 1
            elif self._prev_pts is not None and (pts - self._prev_pts) * self.time_base > MAX_JUMP_S:
                pts = self._prev_pts + self._step
                self.timestamp_fixes += 1
        frame.pts = pts
        if self._first_pts is None:
            self._first_pts = pts
        frame.pict_type = 0  # let the encoder choose frame types
        self._prev_pts = pts
        self.frames_decoded += 1
        return frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _valid_rate(rate) -> Fraction | None:
    """A frame rate FFmpeg reported, when it is one (0.5 to 1000 fps)."""
    try:
        if rate and 0.5 <= float(rate) <= 1000:
            return Fraction(rate).limit_denominator(1001000)
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    return None


def copy_streams(container, video, drop_data_tags: Iterable[str] = ()) -> tuple[list, int]:
    """(streams copied packet for packet, streams dropped): audio, subtitles and data are
    copied, except data streams whose tag is listed (e.g. GPS tracks); further video
    streams (cover art, a second camera angle) are neither re-encoded nor copied."""
    drop = {t.lower() for t in drop_data_tags}
    kept, dropped = [], 0
    for s in container.streams:
        if s.index == video.index:
            continue
        if s.type in ("audio", "subtitle", "data", "attachment") or s.type is None:
            if s.type == "data" and _codec_tag(s) in drop:
                dropped += 1
                continue
            kept.append(s)
        else:
            dropped += 1
    return kept, dropped


def probe_output(path: str | Path, fmt: str, drop_data_tags: Iterable[str] = ()):
    """The output container for the video at `path` (content format `fmt`) without decoding."""
    with VideoReader(path, fmt=fmt, drop_data_tags=drop_data_tags) as reader:
        return reader.output_container()


def _codec_tag(stream) -> str:
    try:
        tag = stream.codec_context.codec_tag if stream.codec_context is not None else ""
    except Exception:
        tag = ""
    if not tag:
        tag = (stream.metadata or {}).get("handler_name", "")
    return str(tag).strip().lower()
