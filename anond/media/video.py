"""Video I/O with PyAV: demux every stream, decode the video, re-encode only the video.

- `VideoReader` opens a file, decodes the first video stream (threaded) and yields, in
  demux order, decoded frames (with exact, monotonic timestamps) and the packets of every
  other stream kept for copying. It counts what it had to skip.
- `VideoWriter` re-encodes the frames in the source's codec family, size and pixel format
  family, with the source's time base, colour description and display matrix (rotation),
  and copies the other streams packet for packet (remux). Container and stream metadata
  follow an allow-list; location tags never pass unless listed.
- `to_bgr` / `composite` move pixels between decoded frames and the BGR images the detector
  and the masker work on; `composite` leaves every unmasked pixel bit-exact.

Nothing here logs a path, a name or a pixel.
"""

from __future__ import annotations

import heapq
import math
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .. import log
from . import SNIFF_BYTES, containers, demuxer
from ..errors import CorruptMedia, MediaTooLarge, UnsupportedMedia
from ..pixels import copy_where

# Demuxers whose packets carry no presentation times (elementary streams): frames are numbered
# at the stream's own frame rate (H.264/H.265 VUI timing, MPEG-2 sequence header) when it
# announces one, else at `video.raw_fps`.
RAW_STREAMS = {"h264", "hevc", "m4v", "mjpeg", "mpegvideo", "rawvideo"}
# AVI's index holds one slot per frame period; a frame the recorder dropped is an empty slot.
# Frames take the slots of their packets (decode order, sorted: B-frames are reordered).
INDEXED = {"avi"}
# FFmpeg's AVFieldOrder: which field is coded / shown first.
FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
TOP_FIRST = {2, 4}
# Encoders per source codec family, in order of preference (CPU, then NVENC variants).
CPU_ENCODERS = {"h264": ["libx264"], "hevc": ["libx265", "libx264"]}
FALLBACK_ENCODERS = ["libx264", "libvpx-vp9", "libsvtav1", "wmv2", "mpeg4"]
ASF_ENCODERS = ("wmv2", "mpeg4")  # ASF output (WMA audio nothing else holds): WMV 8 video
NVENC = {"h264": "h264_nvenc", "hevc": "hevc_nvenc"}
NVDEC = {"h264": "h264_cuvid", "hevc": "hevc_cuvid", "vp9": "vp9_cuvid", "av1": "av1_cuvid",
         "mpeg4": "mpeg4_cuvid", "mpeg2video": "mpeg2_cuvid", "vp8": "vp8_cuvid"}
LOCATION_KEY = re.compile(r"location|iso6709|xyz|gps|coordinates", re.IGNORECASE)
MAX_ERRORS_IN_ROW = 200  # consecutive unreadable packets before the rest counts as lost
MAX_PENDING_PACKETS = 20000  # copied packets held while waiting for the first video frame
# A frame time this far after the previous frame's is damage (a flipped date in a DVR's chunk
# header), not a pause in recording: the frame is placed one frame period on instead.
MAX_JUMP_S = 6 * 3600

_log = log.get("anond.media.video")


def _av():
    import av  # heavy: imported when a video is really opened

    return av


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


# -- pixels -----------------------------------------------------------------------------------


def to_bgr(frame) -> np.ndarray:
    """The frame as a BGR uint8 image in its stored (not display) orientation."""
    return _reformat(frame, format="bgr24").to_ndarray()


# Patches converted back from BGR are cut to multiples of this many pixels (inside the frame),
# so that conversions of the same size come back and can reuse their swscale context.
PATCH_GRID = 32
_MAX_CONVERTERS = 32  # swscale contexts kept per thread

_converters = threading.local()


def _reformat(frame, **kwargs):
    """`frame.reformat(**kwargs)`, single-threaded, through a reformatter kept per thread and
    conversion (source size and format, arguments).

    PyAV's `VideoFrame.reformat` builds a new swscale context for every frame it is called on
    and slices the work over threads by default; for a patch both cost more than the
    conversion itself (a 620x300 BGR patch to yuv420p: 6.7 ms, 1.2 ms this way, same pixels).
    """
    cache = getattr(_converters, "by_key", None)
    if cache is None:
        cache = _converters.by_key = {}
    key = (frame.width, frame.height, frame.format.name, tuple(sorted(kwargs.items())))
    reformatter = cache.get(key)
    if reformatter is None:
        if len(cache) >= _MAX_CONVERTERS:
            cache.clear()
        reformatter = cache[key] = _av().video.reformatter.VideoReformatter()
    return reformatter.reformat(frame, threads=1, **kwargs)


def upright(image: np.ndarray, rotation: int, *, contiguous: bool = True) -> np.ndarray:
    """The image as displayed: rotated counter-clockwise by `rotation` (a multiple of 90).

    With `contiguous=False` a rotated image is a strided view, not a copy (for callers that
    only cut crops of it)."""
    k = (rotation // 90) % 4
    if not k:
        return image
    view = np.rot90(image, k)
    return np.ascontiguousarray(view) if contiguous else view


def boxes_to_stored(xyxy: np.ndarray, rotation: int, stored_hw: tuple[int, int]) -> np.ndarray:
    """Map boxes found on `upright(stored, rotation)` back to the stored image's pixels."""
    k = (rotation // 90) % 4
    if k == 0 or len(xyxy) == 0:
        return xyxy
    h, w = stored_hw
    x0, y0, x1, y1 = (xyxy[:, i].astype(np.float32) for i in range(4))
    # One quarter turn (np.rot90, k=1) of an image of width W sends (x, y) to (y, W - x);
    # undo the k turns last to first, each with the width of the image it was applied to.
    for step in range(k, 0, -1):
        width = w if (step - 1) % 2 == 0 else h
        x0, y0, x1, y1 = width - y1, x0, width - y0, x1
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)


def boxes_to_upright(xyxy: np.ndarray, rotation: int, stored_hw: tuple[int, int]) -> np.ndarray:
    """Map boxes of the stored image to `upright(stored, rotation)` (the inverse of
    `boxes_to_stored`: the stored image is the upright one turned back by the same angle)."""
    k = (rotation // 90) % 4
    if k == 0 or len(xyxy) == 0:
        return np.asarray(xyxy, np.float32)
    return boxes_to_stored(np.asarray(xyxy, np.float32), (4 - k) * 90,
                           rotation_dims(stored_hw, rotation))


def points_to_stored(points: np.ndarray, rotation: int, stored_hw: tuple[int, int]) -> np.ndarray:
    """Map (N, 2) x, y points of the upright image back to the stored image's pixels."""
    k = (rotation // 90) % 4
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    if k == 0:
        return pts
    h, w = stored_hw
    x, y = pts[:, 0].copy(), pts[:, 1].copy()
    for step in range(k, 0, -1):
        width = w if (step - 1) % 2 == 0 else h
        x, y = width - y, x
    return np.stack([x, y], axis=1)


def rotation_dims(stored_hw: tuple[int, int], rotation: int) -> tuple[int, int]:
    h, w = stored_hw
    return (w, h) if (rotation // 90) % 2 else (h, w)


def composite(original, masked_bgr: np.ndarray, coverage: np.ndarray):
    """A frame like `original` whose pixels under `coverage` come from `masked_bgr`.

    Unmasked pixels keep the decoded values exactly (no colour round trip, 10-bit stays
    10-bit); masked ones are converted back with the frame's colour matrix and range. Only
    the bounding box of the coverage is converted.
    """
    av = _av()
    fmt = original.format
    layout = _plane_layout(original)
    bx, by, bw, bh = cv2.boundingRect(np.ascontiguousarray(coverage).view(np.uint8))
    if layout is None or not bw:  # packed/exotic layout: the whole frame is converted
        return _carry_props(original, _from_bgr(masked_bgr, original))
    h, w = coverage.shape
    # The box, widened to whole chroma samples so planes stay aligned with it, and to the grid.
    fy = max(1, max(math.ceil(h / p.height) for p in original.planes))
    fx = max(1, max(math.ceil(w / p.width) for p in original.planes))
    y0, y1 = _grid_span(by, by + bh, h, fy)
    x0, x1 = _grid_span(bx, bx + bw, w, fx)
    patch = _from_bgr(np.ascontiguousarray(masked_bgr[y0:y1, x0:x1]), original)
    new = av.VideoFrame(w, h, fmt.name)
    cover = coverage[y0:y1, x0:x1]
    masks: dict[tuple[int, int], np.ndarray] = {}  # per plane size (chroma planes share one)
    for (comps, dtype), po, pn, pp in zip(layout, original.planes, new.planes, patch.planes):
        sy, sx = math.ceil(h / po.height), math.ceil(w / po.width)  # this plane's subsampling
        o = _plane_view(po, po.height, po.width, comps, dtype)
        n = _plane_view(pn, po.height, po.width, comps, dtype)
        np.copyto(n, o)
        q = _plane_view(pp, pp.height, pp.width, comps, dtype)
        py0, px0 = y0 // sy, x0 // sx
        region = n[py0 : py0 + pp.height, px0 : px0 + pp.width]
        m = masks.get((pp.height, pp.width))
        if m is None:
            m = masks[(pp.height, pp.width)] = _downsample_any(cover, pp.height, pp.width)
        rh, rw = region.shape[:2]
        copy_where(region, q[:rh, :rw], m[:rh, :rw])
    return _carry_props(original, new)


def _grid_span(lo: int, hi: int, size: int, align: int) -> tuple[int, int]:
    """[lo, hi) grown to a multiple of PATCH_GRID (at most `size`), inside [0, size), starting
    on a multiple of `align` (whole chroma samples)."""
    want = min(size, -(-(hi - lo) // PATCH_GRID) * PATCH_GRID)
    lo = lo // align * align
    hi = min(size, max(hi, lo + want))
    lo = max(0, hi - want) // align * align
    return lo, hi


def _from_bgr(bgr: np.ndarray, like):
    """A BGR image as a frame in `like`'s pixel format, colour matrix and range."""
    av = _av()
    cs = like.colorspace if like.colorspace not in (0, 2) else None
    return _reformat(av.VideoFrame.from_ndarray(bgr, format="bgr24"), format=like.format.name,
                     dst_colorspace=cs, dst_color_range=like.color_range or None)


def _plane_layout(frame) -> list[tuple[int, type]] | None:
    """(components, dtype) per plane when each plane holds same-sized samples; else None."""
    fmt = frame.format
    per_plane: dict[int, list] = {}
    for c in fmt.components:
        per_plane.setdefault(c.plane, []).append(c)
    layout = []
    for i in range(len(frame.planes)):
        comps = per_plane.get(i)
        if not comps:
            return None
        bits = {c.bits for c in comps}
        sizes = {(c.width, c.height) for c in comps}
        if len(bits) != 1 or len(sizes) != 1:
            return None
        depth = bits.pop()
        dtype = np.uint8 if depth <= 8 else np.uint16
        plane = frame.planes[i]
        if plane.width * len(comps) * np.dtype(dtype).itemsize > plane.line_size:
            return None
        layout.append((len(comps), dtype))
    if fmt.name.startswith(("rgb", "bgr", "argb", "abgr", "0rgb", "0bgr")) and len(layout) == 1:
        return None  # packed RGB: converting back from BGR is exact anyway
    return layout


def _plane_view(plane, ph: int, pw: int, comps: int, dtype) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    buf = np.frombuffer(plane, np.uint8)
    rows = buf[: plane.line_size * ph].reshape(ph, plane.line_size)
    view = rows[:, : pw * comps * itemsize].view(dtype)
    return view.reshape(ph, pw, comps) if comps > 1 else view.reshape(ph, pw)


def _downsample_any(mask: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """Boolean mask at plane resolution: a plane sample is covered if any pixel it spans is."""
    h, w = mask.shape
    if (ph, pw) == (h, w):
        return mask
    fy, fx = math.ceil(h / ph), math.ceil(w / pw)
    padded = np.zeros((ph * fy, pw * fx), bool)
    padded[:h, :w] = mask
    out = np.zeros((ph, pw), bool)
    for dy in range(fy):  # element-wise ORs of strided views: far cheaper than any(axis=...)
        for dx in range(fx):
            out |= padded[dy::fy, dx::fx]
    return out


def _carry_props(original, new):
    new.pts = original.pts
    if original.time_base is not None:
        new.time_base = original.time_base
    try:
        new.duration = original.duration
    except (AttributeError, TypeError):
        pass
    new.colorspace = original.colorspace
    new.color_range = original.color_range
    return new


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
        self.timing = "source"
        if fmt_names & RAW_STREAMS:
            announced = _valid_rate(ctx.framerate)
            self.timing = "stream_rate" if announced else "configured_rate"
            rate = announced or Fraction(raw_fps).limit_denominator(1001000)
        else:
            rate = _valid_rate(self.video.average_rate) or _valid_rate(self.video.guessed_rate) \
                or _valid_rate(self.video.base_rate) or Fraction(25)
            if fmt_names & INDEXED:
                self.timing = "index"
        self.rate = rate
        fps = float(rate)
        self.regenerate_pts = self.timing in ("stream_rate", "configured_rate")
        self.time_base = (Fraction(1) / self.rate) if self.regenerate_pts else self.video.time_base
        if self.time_base is None:
            self.time_base = Fraction(1) / self.rate
            self.regenerate_pts, self.timing = True, "configured_rate"
        self._slots: list[int] = []  # "index": the packets' slots not yet given to a frame
        self._exact_counts = bool(fmt_names & {"mov", "mp4"})
        duration = 0.0
        if self.video.duration and self.video.time_base:
            duration = float(self.video.duration * self.video.time_base)
        elif self.container.duration:
            duration = self.container.duration / 1_000_000
        self.info = VideoInfo(
            codec=ctx.name, width=ctx.width, height=ctx.height,
            pix_fmt=ctx.pix_fmt or "yuv420p", fps=fps, time_base=self.time_base,
            frames_declared=int(self.video.frames or 0), duration_s=duration,
            container=self.container.format.name,
        )
        if not self.decoder_name:
            self.decoder_name = ctx.name
        self._prev_pts: int | None = None
        self._first_pts: int | None = None
        self._step = max(1, round(1 / (fps * float(self.time_base)))) if not self.regenerate_pts else 1
        self._closed = False

    def output_container(self) -> "containers.OutputContainer":
        """The container the output is written in (`anond.media.containers`' rule)."""
        with open(self.path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
        return containers.choose(self.format or "", self.path.suffix, head, self.copy_streams)

    @property
    def interlaced(self) -> bool:
        return self.field_order in FIELD_ORDERS and self.field_order > 1

    def _open(self, path, decoder: str, demuxer: str | None):
        av = _av()
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
        av = _av()
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


class Prefetch:
    """Run an iterator in a thread, `size` items ahead, so decoding overlaps detection."""

    _END = object()

    def __init__(self, source: Iterator, size: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), name="anond-decode", daemon=True)
        self._thread.start()

    def _run(self, source: Iterator) -> None:
        try:
            for item in source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_end(self._END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put_end(exc)

    def _put_end(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _Cancelled(Exception):
    pass


class Background:
    """Run calls in order in one worker thread, at most `size` waiting, so that compositing
    and encoding overlap detection (PyAV and ONNX Runtime release the GIL while they work).

    The first call that fails stops the worker; its exception is raised by the next
    `submit` or by `drain`, in the caller's thread.
    """

    _END = object()

    def __init__(self, size: int, name: str = "anond-encode") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if self._error is None:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc

    def submit(self, fn, *args) -> None:
        self._raise()
        self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait until every submitted call ran; raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(self._END)
            self._thread.join()
        self._raise()

    def cancel(self) -> None:
        """Skip what is still waiting and stop the worker (on the error path; raises nothing)."""
        if self._error is None:
            self._error = _Cancelled()
        if self._thread.is_alive():
            self._queue.put(self._END)
            self._thread.join()
        self._error = None

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


# -- writing ----------------------------------------------------------------------------------


def choose_pix_fmt(src: str, width: int, height: int, supported: list[str]) -> str:
    """The source pixel format if the encoder takes it at this size, else the nearest one.

    4:2:0 and 4:2:2 need even sizes: odd-sized video is encoded 4:4:4 (no padding, no
    resizing). Bit depth is kept (10-bit sources stay 10-bit).
    """
    av = _av()
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
    av = _av()
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
    av = _av()
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
        av = _av()
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
        av = _av()
        out = self.container
        src = reader.info
        supported = set(out.supported_codecs)
        if fmt == "mpegts":  # the TS muxer answers "unknown" to codec queries; it takes these
            supported |= {"libx264", "libx265", "h264_nvenc", "hevc_nvenc", "mpeg4"}
        # Interlaced video is encoded interlaced (x264's field coding) in its field order;
        # neither x265 nor NVENC does that here, so interlaced sources go to x264.
        self.field_order = reader.field_order
        if first_frame.interlaced_frame and not reader.interlaced:
            self.field_order = 2  # flagged per frame only: top field first, the common order
        interlaced = self.field_order > 1
        if not interlaced:
            self.field_order = 1  # written progressive (a source that did not say is read so too)
        family = "h264" if interlaced and "libx264" in supported else src.codec
        if fmt == "asf":  # FFmpeg reads H.264 in ASF back a frame late: Windows Media's own
            supported = {c for c in ASF_ENCODERS if c in supported}
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

        self._copy: dict[int, object] = {}
        self.dropped_streams = 0
        for s in reader.copy_streams:
            try:
                o = out.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError):
                self.dropped_streams += 1  # e.g. a subtitle format this container cannot hold
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
        except _av().error.FFmpegError as exc:  # e.g. a time gap the container cannot hold
            raise CorruptMedia(f"the video's timing cannot be written ({type(exc).__name__})") from None

    def copy(self, packet) -> None:
        """Remux one packet of an audio/subtitle/data stream unchanged."""
        av = _av()
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


def _ticks(seconds: Fraction, time_base) -> int:
    return round(seconds / Fraction(time_base))


def display_matrix(frame) -> list[int] | None:
    """The frame's display matrix (9 int32) when it has one other than the identity."""
    try:
        for sd in frame.side_data:
            if "DISPLAYMATRIX" in str(sd.type):
                m = np.frombuffer(bytes(sd), np.int32)[:9].tolist()
                if m != [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]:
                    return m
    except Exception:
        return None
    return None


def frame_rotation(frame) -> int:
    """Counter-clockwise display rotation of the frame, rounded to a multiple of 90 degrees."""
    try:
        r = frame.rotation
    except Exception:
        return 0
    if r is None or not math.isfinite(r):
        return 0
    return int(round(r / 90.0)) * 90 % 360
