"""Media kinds: which files anond handles, decided by extension AND content.

A file is processed only when its extension and its first bytes agree; a `.jpg` holding a PNG,
a text file named `.mp4` or an unknown extension is `UnsupportedMedia`. Messages never name
the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptMedia, UnsupportedMedia

IMAGE_EXTENSIONS = {
    ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg",
    ".png": "png",
    ".webp": "webp",
    ".tif": "tiff", ".tiff": "tiff",
    ".bmp": "bmp",
    ".heic": "heif", ".heif": "heif",
}
VIDEO_EXTENSIONS = {
    ".mp4": "isobmff", ".mov": "isobmff", ".m4v": "isobmff",
    ".mkv": "matroska", ".webm": "matroska",
    ".avi": "avi",
    ".ts": "mpegts",
}
SNIFF_BYTES = 1024
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_ISO_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


@dataclass(frozen=True)
class MediaKind:
    kind: str  # "image" | "video"
    format: str  # "jpeg", "png", ..., "isobmff", "matroska", "avi", "mpegts"


def is_supported_name(path: str | Path) -> bool:
    """True when the extension is one anond handles (content not checked)."""
    suffix = Path(path).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS


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
        return "matroska"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "heif" if head[8:12] in _HEIF_BRANDS else "isobmff"
    if len(head) >= 8 and head[4:8] in _ISO_TOP_BOXES:
        return "isobmff"  # old QuickTime files start with a box other than ftyp
    if len(head) >= 377 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "mpegts"
    return None


def kind_of(path: str | Path) -> MediaKind:
    """Decide image or video from the extension and the content; raise when they disagree."""
    path = Path(path)
    suffix = path.suffix.lower()
    expected = IMAGE_EXTENSIONS.get(suffix) or VIDEO_EXTENSIONS.get(suffix)
    if expected is None:
        raise UnsupportedMedia("unsupported file type (extension)")
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        raise CorruptMedia("empty file")
    found = sniff(head)
    if found is None:
        raise UnsupportedMedia(f"content is not a supported image or video (extension says {expected})")
    if found != expected:
        raise UnsupportedMedia(f"content ({found}) does not match the extension ({expected})")
    return MediaKind("image" if suffix in IMAGE_EXTENSIONS else "video", found)
