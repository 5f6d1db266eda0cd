"""Photos: decode upright (EXIF orientation applied), keep nothing personal, encode alike.

Read: JPEG, PNG, WebP, TIFF, BMP, and HEIC/HEIF when the optional `heic` extra (pillow-heif)
is installed. The image is turned upright before detection; the output is written upright and
carries no orientation tag, so every viewer shows the same thing.

Write: same format, same size, alpha kept, metadata stripped. Only allow-listed fields survive
(`ImageSettings.keep_metadata`): "datetime" (DateTime, DateTimeOriginal, DateTimeDigitized with
their sub-second and offset fields) and "icc_profile". Resolution (dpi) is kept: it says how
to print, not who or where. GPS, maker notes, the EXIF thumbnail (an unmasked copy of the
photo), XMP, IPTC and comments are never written.

Format notes, decided here:
- 16-bit PNG/TIFF: detection and masking run on an 8-bit copy (the top byte); the output keeps
  16 bits: untouched pixels are the original 16-bit values, masked pixels are the masked 8-bit
  values scaled to 16 bits. These files are written by OpenCV: for PNG the ICC profile is kept
  when allowed, other metadata is not carried (TIFF: none).
- Grayscale stays grayscale; palette images are written as RGB (RGBA with transparency):
  re-quantising would change pixels outside the masks. CMYK/YCbCr are written as RGB (their
  ICC profile, which describes CMYK, is then dropped).
- TIFF keeps its compression when Pillow can write it. Only DateTime (IFD0) survives in TIFF:
  Pillow does not write a TIFF's EXIF sub-IFD.
- WebP stays lossless when it was lossless; lossy WebP uses `webp_quality`.
- Multi-picture JPEG (MPO, e.g. camera previews or depth maps): only the main picture is
  written; the other pictures are dropped with the rest of the metadata. Animated images and
  multi-page TIFFs are refused (UnsupportedMedia).
- JPEG is re-encoded, so pixels away from any mask change within JPEG noise (`jpeg_quality`,
  default 95, chroma subsampling kept as in the source).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ImageSettings
from ..errors import CorruptMedia, MediaTooLarge, UnsupportedMedia

# "datetime" in keep_metadata keeps these tags: IFD0 and the EXIF sub-IFD.
_DATETIME_IFD0 = (0x0132,)  # DateTime
_DATETIME_EXIF = (0x9003, 0x9004, 0x9010, 0x9011, 0x9012, 0x9290, 0x9291, 0x9292)
_EXIF_IFD = 0x8769
_ORIENTATION = 0x0112
_PIL_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff",
                "BMP": "bmp", "HEIF": "heif"}
_TIFF_COMPRESSIONS = {"raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits",
                      "jpeg", "webp", "tiff_ccitt", "group3", "group4"}
_TIFF_SAFE_COMPRESSIONS = {"raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits"}


@dataclass
class ImageMeta:
    """What the writer needs to produce a file like the input: format facts + allowed metadata."""

    format: str  # jpeg | png | webp | tiff | bmp | heif
    mode: str  # Pillow mode of the source ("RGB", "L", "P", "I;16", "BGR;16"...)
    width: int  # upright
    height: int
    bit_depth: int = 8
    gray: bool = False
    has_alpha: bool = False
    dpi: tuple[float, float] | None = None
    icc_profile: bytes | None = None  # only when "icc_profile" is allowed
    exif_ifd0: dict[int, Any] = field(default_factory=dict)  # allowed tags only
    exif_sub: dict[int, Any] = field(default_factory=dict)  # allowed EXIF sub-IFD tags only
    jpeg_subsampling: int | None = None
    webp_lossless: bool = False
    tiff_compression: str | None = None


@dataclass
class DecodedImage:
    """An upright photo as the pipeline sees it, plus what it takes to write it back."""

    bgr: np.ndarray  # (H, W, 3) uint8, what detection and masking work on
    alpha: np.ndarray | None  # (H, W) uint8 or uint16, put back by the writer
    meta: ImageMeta
    deep: np.ndarray | None = None  # 16-bit source pixels (H, W[, 3]), upright, BGR
    original8: np.ndarray | None = field(default=None, repr=False)  # kept for 16-bit output only


# Bytes per pixel no photo file exceeds uncompressed (16-bit RGBA), with room for metadata.
_MAX_FILE_BYTES_PER_PIXEL = 10


def read(path: str | Path, settings: ImageSettings) -> DecodedImage:
    """Decode a photo file upright; raise CorruptMedia / UnsupportedMedia (no file name)."""
    limit = settings.max_megapixels * 1e6 * _MAX_FILE_BYTES_PER_PIXEL
    if Path(path).stat().st_size > limit:  # not even read into memory
        raise MediaTooLarge(f"file larger than any photo of image.max_megapixels "
                            f"({settings.max_megapixels:g}) can be")
    data = Path(path).read_bytes()
    return decode(data, settings)


def decode(data: bytes, settings: ImageSettings) -> DecodedImage:
    """Decode photo bytes upright (see `read`)."""
    from PIL import Image

    if not data:
        raise CorruptMedia("empty file")
    _register_heif_if_possible(data)
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise MediaTooLarge("image too large (decompression bomb limit)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for non-images
        from . import sniff

        announced = sniff(data[:64])
        if announced in ("jpeg", "png", "webp", "tiff", "bmp", "heif"):  # right magic, bad body
            raise CorruptMedia(_corrupt_message(exc, announced)) from None
        raise UnsupportedMedia("not a supported image") from None
    fmt = _PIL_FORMATS.get(img.format or "")
    if fmt is None:
        raise UnsupportedMedia(f"unsupported image format ({img.format})")
    megapixels = img.size[0] * img.size[1] / 1e6
    if megapixels > settings.max_megapixels:
        raise MediaTooLarge(f"image of {megapixels:.0f} MP is larger than image.max_megapixels "
                            f"({settings.max_megapixels:g})")
    if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":
        raise UnsupportedMedia(f"animated or multi-page {fmt.upper()} is not supported")
    try:
        img.load()
        exif = img.getexif()
    except Exception as exc:  # noqa: BLE001 - truncated/garbled data, any decoder
        raise CorruptMedia(_corrupt_message(exc, fmt)) from None
    meta = _meta(img, exif, data, fmt, settings)
    if _is_16bit(img, data, fmt):
        return _decode_16bit(data, exif.get(_ORIENTATION, 1), meta)
    return _decode_8bit(img, meta)


def write(path: str | Path, image: np.ndarray, decoded: DecodedImage, settings: ImageSettings,
          *, changed: np.ndarray | None = None) -> int:
    """Encode the (masked) BGR image like the source; return the number of bytes written.

    `changed` (bool H x W) marks masked pixels; it matters for 16-bit output only, where
    untouched pixels keep their 16-bit values (default: every pixel that differs in 8 bits).
    """
    data = encode(image, decoded, settings, changed=changed)
    with open(path, "wb") as fh:
        fh.write(data)
    return len(data)


def encode(image: np.ndarray, decoded: DecodedImage, settings: ImageSettings,
           *, changed: np.ndarray | None = None) -> bytes:
    """The bytes `write` writes."""
    meta = decoded.meta
    if image.shape[:2] != (meta.height, meta.width):
        raise ValueError("masked image does not have the size of the source")
    if decoded.deep is not None:
        return _encode_16bit(image, decoded, changed)
    return _encode_8bit(image, decoded.alpha, meta, settings)


# --- decoding -------------------------------------------------------------------------------

def _meta(img, exif, data: bytes, fmt: str, settings: ImageSettings) -> ImageMeta:
    keep = set(settings.keep_metadata)
    meta = ImageMeta(format=fmt, mode=img.mode, width=0, height=0)
    dpi = img.info.get("dpi")
    if dpi and all(isinstance(v, (int, float)) and v > 0 for v in dpi):
        meta.dpi = (float(dpi[0]), float(dpi[1]))
    if "icc_profile" in keep and img.mode not in ("CMYK", "YCbCr"):
        meta.icc_profile = img.info.get("icc_profile") or None
    if "datetime" in keep:
        meta.exif_ifd0 = {t: exif[t] for t in _DATETIME_IFD0 if t in exif}
        sub = exif.get_ifd(_EXIF_IFD)
        meta.exif_sub = {t: sub[t] for t in _DATETIME_EXIF if t in sub}
    if fmt == "jpeg":
        from PIL import JpegImagePlugin

        sampling = JpegImagePlugin.get_sampling(img)
        meta.jpeg_subsampling = sampling if sampling in (0, 1, 2) else None
    elif fmt == "webp":
        meta.webp_lossless = _webp_is_lossless(data)
    elif fmt == "tiff":
        comp = img.info.get("compression")
        meta.tiff_compression = comp if comp in _TIFF_COMPRESSIONS else "tiff_adobe_deflate"
    return meta


def _decode_8bit(img, meta: ImageMeta) -> DecodedImage:
    import cv2
    from PIL import ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001
        raise CorruptMedia(_corrupt_message(exc, meta.format)) from None
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    elif mode in ("1", "I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_l(img)
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode in ("RGBa", "La"):
        img = img.convert("RGBA" if mode == "RGBa" else "LA")
    elif mode == "RGBX":
        img = img.convert("RGB")
    mode = img.mode
    arr = np.asarray(img)
    alpha = None
    if mode in ("RGBA", "LA"):
        alpha = np.ascontiguousarray(arr[..., -1])
        arr = arr[..., :-1] if mode == "RGBA" else arr[..., 0]
    if mode in ("L", "LA"):
        meta.gray = True
        bgr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_GRAY2BGR)
    elif mode in ("RGB", "RGBA"):
        bgr = np.ascontiguousarray(arr[..., ::-1])
    else:
        raise UnsupportedMedia(f"unsupported pixel format ({meta.mode})")
    meta.width, meta.height = img.size
    meta.has_alpha = alpha is not None
    return DecodedImage(bgr=bgr, alpha=alpha, meta=meta)


def _to_l(img):
    """Single-channel images of any depth to 8-bit L (16-bit ones take the 16-bit path)."""
    if img.mode == "1":
        return img.convert("L")
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        from PIL import Image

        return Image.fromarray(arr, "L")
    raise UnsupportedMedia(f"unsupported pixel format ({img.mode})")


def _is_16bit(img, data: bytes, fmt: str) -> bool:
    if fmt == "png":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth
    if fmt == "tiff":
        bits = img.tag_v2.get(258) if hasattr(img, "tag_v2") else None
        bits = bits if isinstance(bits, tuple) else (bits,)
        return 16 in bits
    return False


def _decode_16bit(data: bytes, orientation: int, meta: ImageMeta) -> DecodedImage:
    import cv2

    deep = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if deep is None or deep.dtype != np.uint16 or deep.ndim not in (2, 3):
        raise UnsupportedMedia(f"unsupported 16-bit {meta.format.upper()} layout")
    deep = np.ascontiguousarray(orient(deep, orientation))
    alpha = None
    if deep.ndim == 3 and deep.shape[2] == 4:
        alpha, deep = np.ascontiguousarray(deep[..., 3]), np.ascontiguousarray(deep[..., :3])
    elif deep.ndim == 3 and deep.shape[2] == 2:
        alpha, deep = np.ascontiguousarray(deep[..., 1]), np.ascontiguousarray(deep[..., 0])
    elif deep.ndim == 3 and deep.shape[2] != 3:
        raise UnsupportedMedia(f"unsupported 16-bit {meta.format.upper()} layout")
    top = (deep >> 8).astype(np.uint8)
    meta.gray = deep.ndim == 2
    bgr = cv2.cvtColor(top, cv2.COLOR_GRAY2BGR) if meta.gray else top
    meta.bit_depth = 16
    meta.height, meta.width = deep.shape[:2]
    meta.has_alpha = alpha is not None
    return DecodedImage(bgr=bgr, alpha=alpha, meta=meta, deep=deep, original8=bgr.copy())


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W[, C]) array, as Pillow's exif_transpose."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(int(orientation) if isinstance(orientation, int) else 1)
    return op(arr) if op else arr


def _webp_is_lossless(data: bytes) -> bool:
    """True when the first image chunk of a WebP file is VP8L (lossless)."""
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if tag in (b"VP8L", b"VP8 "):
            return tag == b"VP8L"
        pos += 8 + size + (size & 1)
    return False


def _looks_like_heif(data: bytes) -> bool:
    from . import sniff

    return sniff(data[:64]) == "heif"


def _register_heif_if_possible(data: bytes) -> None:
    if not _looks_like_heif(data):
        return
    try:
        import pillow_heif  # type: ignore[import-not-found]
    except ImportError:
        raise UnsupportedMedia("HEIC/HEIF needs the optional 'heic' extra (pillow-heif)") from None
    pillow_heif.register_heif_opener()


def _corrupt_message(exc: BaseException, fmt: str) -> str:
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text or "premature end" in text:
        return f"corrupt image (truncated {fmt.upper()})"
    return f"corrupt image (undecodable {fmt.upper()} data)"


# --- encoding -------------------------------------------------------------------------------

def _exif_bytes(meta: ImageMeta) -> bytes | None:
    if not meta.exif_ifd0 and not meta.exif_sub:
        return None
    from PIL import Image

    exif = Image.Exif()
    for tag, value in meta.exif_ifd0.items():
        exif[tag] = value
    if meta.exif_sub:
        sub = exif.get_ifd(_EXIF_IFD)
        sub.update(meta.exif_sub)
    return exif.tobytes()


def _encode_8bit(image: np.ndarray, alpha: np.ndarray | None, meta: ImageMeta,
                 settings: ImageSettings) -> bytes:
    import cv2
    from PIL import Image

    if meta.gray:
        img = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), "L")
    else:
        img = Image.fromarray(np.ascontiguousarray(image[..., ::-1]), "RGB")
    if alpha is not None:
        img.putalpha(Image.fromarray(alpha, "L"))
    kwargs: dict[str, Any] = {}
    exif = _exif_bytes(meta)
    if exif and meta.format != "bmp":
        kwargs["exif"] = exif
    if meta.icc_profile and meta.format != "bmp":
        kwargs["icc_profile"] = meta.icc_profile
    if meta.dpi and meta.format in ("jpeg", "png", "tiff"):
        kwargs["dpi"] = meta.dpi
    if meta.format == "jpeg":
        if img.mode == "RGBA":  # JPEG has no alpha; cannot happen for a JPEG source
            img = img.convert("RGB")
        kwargs["quality"] = settings.jpeg_quality
        if meta.jpeg_subsampling is not None and img.mode == "RGB":
            kwargs["subsampling"] = meta.jpeg_subsampling
        pil_format = "JPEG"
    elif meta.format == "png":
        pil_format = "PNG"
    elif meta.format == "webp":
        pil_format = "WEBP"
        if meta.webp_lossless:
            kwargs.update(lossless=True, exact=True)
        else:
            kwargs["quality"] = settings.webp_quality
    elif meta.format == "tiff":
        pil_format = "TIFF"
        comp = meta.tiff_compression or "raw"
        if comp not in _TIFF_SAFE_COMPRESSIONS:
            comp = "tiff_adobe_deflate"  # JPEG/WebP/fax compressions: lossless instead
        kwargs["compression"] = comp
    elif meta.format == "bmp":
        pil_format = "BMP"
    elif meta.format == "heif":
        pil_format = "HEIF"
        kwargs["quality"] = settings.jpeg_quality
    else:  # pragma: no cover - decode never produces another format
        raise UnsupportedMedia(f"cannot write {meta.format}")
    buf = io.BytesIO()
    img.save(buf, pil_format, **kwargs)
    return buf.getvalue()


def _encode_16bit(image: np.ndarray, decoded: DecodedImage, changed: np.ndarray | None) -> bytes:
    import cv2

    meta, deep = decoded.meta, decoded.deep
    assert deep is not None
    if decoded.original8 is not None:  # every pixel that differs in 8 bits, plus `changed`
        differs = (image != decoded.original8).any(axis=-1)
        changed = differs if changed is None else (changed | differs)
    elif changed is None:
        raise ValueError("16-bit output needs the masked pixels (changed)")
    out = deep.copy()
    masked = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if meta.gray else image
    out[changed] = masked[changed].astype(np.uint16) * 257
    if decoded.alpha is not None:
        planes = [out] if out.ndim == 2 else [out[..., i] for i in range(3)]
        out = np.dstack(planes + [decoded.alpha])
    ext = ".png" if meta.format == "png" else ".tiff"
    ok, buf = cv2.imencode(ext, out)
    if not ok:
        raise UnsupportedMedia(f"cannot write 16-bit {meta.format.upper()}")
    data = buf.tobytes()
    if meta.format == "png" and meta.icc_profile:
        data = _png_with_icc(data, meta.icc_profile)
    return data


def _png_with_icc(png: bytes, icc: bytes) -> bytes:
    """Insert an iCCP chunk right after IHDR (OpenCV does not write one)."""
    body = b"icc\x00\x00" + zlib.compress(icc)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]
