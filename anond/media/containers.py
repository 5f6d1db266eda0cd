"""The output rule: which container a video is written in, and the output's name.

1. The input's own container when FFmpeg writes it and it holds every stream anond copies
   (audio, subtitles, data): MP4/MOV/3GP, Matroska/WebM, AVI, MPEG-TS and M2TS, FLV, and raw
   H.264/H.265 elementary streams (`.264` stays a raw H.264 stream).
2. Otherwise MP4; where MP4 cannot hold a copied stream (G.711 is the usual one), Matroska,
   then QuickTime MOV (which holds G.711 A-law/µ-law and most PCM). Dahua `.dav`, ASF/WMV,
   MPEG-PS (`.mpg`, `.vob`), MPEG video elementary streams and what only FFmpeg's probe
   recognised (MXF, DV, NUT...) take this route: FFmpeg writes no DHAV, and the others hold
   the H.264 anond encodes only in a form few players accept.
3. Where none of those holds a copied stream either, ASF/WMV stays ASF (with WMV 8 video,
   `media.video.ASF_ENCODERS`): WMA audio goes nowhere else.
4. Only when no container holds every stream are the rest dropped — counted in the report
   (`dropped_streams`, `audio = "dropped"`) and logged, never silently. Audio and subtitle
   streams decide the container; a data stream (timecode, a camera's own records) the chosen
   one cannot hold is dropped and counted rather than moving the file to another container.

The output keeps the input's file name when its extension fits the container written, and
gets that container's extension appended otherwise (`cam1.dav` -> `cam1.dav.mp4`,
`clip` holding MPEG-TS -> `clip.ts`), so no two inputs of one folder collide and the name
still says where the output came from. Images keep their format; the same naming applies.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from . import IMAGE_FORMATS, kind_of
from ..errors import AnondError, ConfigError

# Muxer -> extensions that name it (the first is given to outputs that need one).
SUFFIXES = {
    "mp4": (".mp4", ".m4v"), "mov": (".mov",), "3gp": (".3gp",), "3g2": (".3g2",),
    "matroska": (".mkv",), "webm": (".webm",), "avi": (".avi",),
    "mpegts": (".ts",), "m2ts": (".m2ts", ".mts"),
    "h264": (".264", ".h264"), "hevc": (".265", ".h265", ".hevc"), "flv": (".flv",),
    "asf": (".asf", ".wmv"),
}
IMAGE_SUFFIXES = {"jpeg": (".jpg", ".jpeg", ".jpe"), "png": (".png",), "webp": (".webp",),
                  "tiff": (".tiff", ".tif"), "bmp": (".bmp",), "heif": (".heic", ".heif")}
# Muxers FFmpeg is asked for, per output container (M2TS is the TS muxer in its 192-byte mode).
FFMPEG_MUXER = {"m2ts": "mpegts"}
MUXER_OPTIONS = {"m2ts": {"mpegts_m2ts_mode": "1"}}
FALLBACK = ("mp4", "matroska", "mov")
LAST_RESORT = {"asf": "asf"}  # input format -> its own container, when no fallback holds it
# The TS muxer accepts any codec and writes the ones it has no stream type for as private
# data, which no reader maps back: only these count as held.
TS_HOLDS = {"mp2", "mp3", "aac", "aac_latm", "ac3", "eac3", "dts", "truehd", "opus",
            "s302m", "pcm_bluray", "dvb_subtitle", "dvb_teletext", "hdmv_pgs_subtitle",
            "smpte_klv", "timed_id3", "arib_caption"}
_ISO_BRAND_MUXER = {"qt  ": "mov", "3gp": "3gp", "3g2": "3g2"}  # ftyp major brand -> muxer
_RAW = {"h264", "hevc"}


@dataclass(frozen=True)
class OutputContainer:
    """Where a video goes: the container, its extension and why it was chosen."""

    container: str  # a key of SUFFIXES
    rule: str  # "same" | "fallback"
    suffix: str
    options: dict = field(default_factory=dict)

    @property
    def muxer(self) -> str:
        return FFMPEG_MUXER.get(self.container, self.container)


def same_container(fmt: str, suffix: str, brand: str = "") -> str | None:
    """The container that writes the input's own format back, or None (DHAV, ASF, PS...)."""
    if fmt == "isobmff":
        by_name = {".mov": "mov", ".mp4": "mp4", ".m4v": "mp4", ".3gp": "3gp", ".3g2": "3g2"}.get(suffix)
        if by_name:
            return by_name
        return next((m for b, m in _ISO_BRAND_MUXER.items() if brand.startswith(b)), "mp4")
    return {"matroska": "matroska", "webm": "webm", "avi": "avi", "mpegts": "mpegts",
            "m2ts": "m2ts", "h264": "h264", "hevc": "hevc", "flv": "flv"}.get(fmt)


def holds(container: str, streams) -> bool:
    """Does the container hold every one of these (copied, not re-encoded) streams?"""
    if not streams:
        return True
    if container in _RAW:
        return False
    if container in ("mpegts", "m2ts"):
        return all(s.codec_context is not None and s.codec_context.name in TS_HOLDS for s in streams)
    import av

    out = av.open(io.BytesIO(), "w", format=FFMPEG_MUXER.get(container, container))
    try:
        for s in streams:
            out.add_stream_from_template(s)  # refuses a codec the muxer cannot hold
        out.start_encoding()  # writes the header: the muxer's own checks
        return True
    except (ValueError, av.error.FFmpegError):
        return False
    finally:
        try:
            out.close()
        except Exception:  # noqa: BLE001 - a header that failed leaves nothing to finish
            pass


def choose(fmt: str, suffix: str, brand: str, streams) -> OutputContainer:
    """Apply the output rule to an input of content format `fmt` with these copied streams.

    Audio and subtitles decide; data streams (timecode, a camera's own records) do not move
    a file to another container: one its container cannot hold is dropped and counted, as
    before the rule existed."""
    suffix = suffix.lower()
    streams = [s for s in streams if s.type in ("audio", "subtitle")]
    same = same_container(fmt, suffix, brand)
    if same is not None and holds(same, streams):
        return OutputContainer(same, "same", _suffix_for(same, suffix), MUXER_OPTIONS.get(same, {}))
    for container in FALLBACK:
        if holds(container, streams):
            return OutputContainer(container, "fallback", SUFFIXES[container][0])
    last = LAST_RESORT.get(fmt)
    if last is not None and holds(last, streams):
        return OutputContainer(last, "same", _suffix_for(last, suffix))
    return OutputContainer(FALLBACK[0], "fallback", SUFFIXES[FALLBACK[0]][0])


def _suffix_for(container: str, suffix: str) -> str:
    return suffix if suffix in SUFFIXES[container] else SUFFIXES[container][0]


def output_name(src: Path, name: str | None = None, *, drop_data_tags=()) -> str:
    """The name of `src`'s output: `name` (default: src's own) when its extension fits what
    anond writes for this file, else `name` + the written format's extension.

    A file anond cannot open keeps its name: processing it fails with the precise reason."""
    name = name or src.name
    suffix = Path(name).suffix.lower()
    try:
        kind = kind_of(src)
        if kind.format in IMAGE_FORMATS:
            wanted = IMAGE_SUFFIXES[kind.format]
        else:
            from .video import probe_output

            wanted = SUFFIXES[probe_output(src, kind.format, drop_data_tags).container]
    except (AnondError, OSError):
        return name
    return name if suffix in wanted else name + wanted[0]


def check_output_name(dst: Path, kind) -> None:
    """Refuse an output name whose extension says another format than the one written (a
    caller's mistake: outputs are named by `output_name`). Videos are checked by the
    writer, once their container is known."""
    if kind.format in IMAGE_SUFFIXES and Path(dst).suffix.lower() not in IMAGE_SUFFIXES[kind.format]:
        raise ConfigError(f"a {kind.format.upper()} image is written as {kind.format.upper()}: "
                          f"its output name must end in {IMAGE_SUFFIXES[kind.format][0]}")


def check_video_name(dst: Path, output: OutputContainer) -> None:
    if Path(dst).suffix.lower() not in SUFFIXES[output.container]:
        raise ConfigError(f"this video is written as {output.container.upper()}: its output name "
                          f"must end in {' or '.join(SUFFIXES[output.container])}")
