"""Media kinds: which files anond handles, decided by their content.

The first bytes of a file say what it is (`sniff`); the extension only names it. A file whose
extension is wrong or missing is handled by what it holds, and its output is named so that
the name says what it is (`anond.media.containers.output_name`): `clip` holding MPEG-TS comes
out as `clip.ts`, `photo.jpg` holding a PNG as `photo.jpg.png`. Content anond does not know
is `UnsupportedMedia`. Messages never name the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptMedia, UnsupportedMedia

# Content formats (what `sniff` answers) per kind. Each video format is read with the FFmpeg
# demuxer named here, forced, so that FFmpeg's own probing never second-guesses the sniff.
IMAGE_FORMATS = ("jpeg", "png", "webp", "tiff", "bmp", "heif")
DEMUXERS = {
    "isobmff": "mov", "matroska": "matroska", "webm": "matroska", "avi": "avi",
    "mpegts": "mpegts", "m2ts": "mpegts", "h264": "h264", "hevc": "hevc", "dhav": "dhav",
    "asf": "asf", "flv": "flv", "mpegps": "mpeg", "mpegvideo": "mpegvideo",
}
# Formats anond has no signature for that FFmpeg's own probe may recognise (`kind_of` asks it
# when the first bytes say nothing); they are written in the fallback containers.
PROBED = {"mxf": "mxf", "gxf": "gxf", "nut": "nut", "ivf": "ivf", "dv": "dv", "wtv": "wtv",
          "rm": "rm", "nsv": "nsv", "yuv4mpegpipe": "yuv4mpegpipe", "mpeg": "mpeg",
          "mpegts": "mpegts", "mpegtsraw": "mpegts", "r3d": "r3d", "smjpeg": "smjpeg"}
# Extensions anond recognises by name (a file without one of these is still sniffed).
IMAGE_EXTENSIONS = {
    ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg",
    ".png": "png",
    ".webp": "webp",
    ".tif": "tiff", ".tiff": "tiff",
    ".bmp": "bmp",
    ".heic": "heif", ".heif": "heif",
}
VIDEO_EXTENSIONS = {
    ".mp4": "isobmff", ".mov": "isobmff", ".m4v": "isobmff", ".3gp": "isobmff", ".3g2": "isobmff",
    ".mkv": "matroska", ".webm": "webm",
    ".avi": "avi",
    ".ts": "mpegts", ".m2ts": "m2ts", ".mts": "m2ts",
    ".264": "h264", ".h264": "h264", ".265": "hevc", ".h265": "hevc", ".hevc": "hevc",
    ".dav": "dhav",
    ".asf": "asf", ".wmv": "asf",
    ".flv": "flv",
    ".mpg": "mpegps", ".mpeg": "mpegps", ".vob": "mpegps", ".m2v": "mpegvideo",
}
SNIFF_BYTES = 1024
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_ISO_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_H264_FIRST_NALS = {5, 6, 7, 9}  # IDR slice, SEI, sequence parameter set, access unit delimiter
_HEVC_FIRST_NALS = {32, 33, 34, 35, 39}  # VPS, SPS, PPS, AUD, prefix SEI


@dataclass(frozen=True)
class MediaKind:
    kind: str  # "image" | "video"
    format: str  # a key of IMAGE_FORMATS or DEMUXERS: "jpeg", "isobmff", "mpegts", "h264"...


def demuxer(fmt: str | None) -> str | None:
    """The FFmpeg demuxer that reads content format `fmt` (None: let FFmpeg probe)."""
    if fmt and fmt.startswith("probed:"):
        return fmt.removeprefix("probed:")
    return DEMUXERS.get(fmt or "")


def recognised(path: str | Path) -> bool:
    """Whether `kind_of` finds a format anond handles in the file (whatever its name says)."""
    try:
        kind_of(path)
    except (UnsupportedMedia, CorruptMedia, OSError):
        return False
    return True


def is_supported_name(path: str | Path) -> bool:
    """True when the extension is one anond handles (content not checked)."""
    suffix = Path(path).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS


def _annex_b(head: bytes) -> str | None:
    """"h264" / "hevc" when `head` starts like a raw Annex B elementary stream."""
    start = head.find(b"\x00\x00\x01", 0, 64)
    if start < 0 or any(head[:start]) or len(head) < start + 5:
        return None  # only zero bytes may come before the first start code
    b0, b1 = head[start + 3], head[start + 4]
    if b0 & 0x81 == 0 and (b0 >> 1) in _HEVC_FIRST_NALS and b1 == 0x01:
        return "hevc"
    if b0 & 0x80 == 0 and (b0 & 0x1F) in _H264_FIRST_NALS \
            and ((b0 & 0x1F) != 6 or b0 & 0x60 == 0):  # an SEI is never a reference
        return "h264"
    return None


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a file announce, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"\x42\x82\x84webm" in head[:64] else "matroska"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "heif" if head[8:12] in _HEIF_BRANDS else "isobmff"
    if len(head) >= 8 and head[4:8] in _ISO_TOP_BOXES:
        return "isobmff"  # old QuickTime files start with a box other than ftyp
    if len(head) >= 377 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "mpegts"
    if len(head) >= 389 and head[4] == 0x47 and head[196] == 0x47 and head[388] == 0x47:
        return "m2ts"  # Blu-ray / AVCHD transport stream: 4-byte time code before each packet
    if head[:4] == b"DHAV" or head[:5] == b"DAHUA":  # DAHUA: a 1 KiB file header, then DHAV
        return "dhav"
    if head[:16] == _ASF_GUID:
        return "asf"
    if head[:4] == b"FLV\x01":
        return "flv"
    if head[:4] == b"\x00\x00\x01\xba" or head[:4] == b"IMKH":  # IMKH: Hikvision's header before PS
        return "mpegps"
    if head[:4] == b"\x00\x00\x01\xb3":
        return "mpegvideo"
    return _annex_b(head)


def kind_of(path: str | Path) -> MediaKind:
    """Decide image or video from the content; the extension only matters when the content is
    unknown (to say which of the two reasons applies)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        raise CorruptMedia("empty file")
    found = sniff(head) or _ffmpeg_probe(path)
    if found is None:
        suffix = path.suffix.lower()
        expected = IMAGE_EXTENSIONS.get(suffix) or VIDEO_EXTENSIONS.get(suffix)
        if expected is None:
            raise UnsupportedMedia("unsupported file type (neither the content nor the extension)")
        raise UnsupportedMedia(f"content is not a supported image or video (extension says {expected})")
    return MediaKind("image" if found in IMAGE_FORMATS else "video", found)


def _ffmpeg_probe(path: Path) -> str | None:
    """FFmpeg's guess for a file without a known signature, when it is a container in `PROBED`
    holding a video stream anond can decode; else None (then: unsupported)."""
    try:
        import av

        with av.open(str(path), metadata_errors="ignore") as container:
            name = container.format.name.split(",")[0]
            videos = [v for v in container.streams.video
                      if v.codec_context is not None and v.codec_context.width]
            return f"probed:{PROBED[name]}" if name in PROBED and videos else None
    except Exception:  # noqa: BLE001 - whatever FFmpeg makes of a hostile file: not ours
        return None
