"""Photo I/O: upright decoding, formats kept, metadata stripped, broken files refused."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps

from anond.config import ImageSettings
from anond.errors import CorruptMedia, UnsupportedMedia
from anond.media import image as image_io
from anond.media import kind_of, sniff
from anond.media.containers import output_name

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>creator=Jane</rdf:RDF></x:xmpmeta>'


def marker_image(w=60, h=40):
    """Upright RGB test card: red block top-left, blue block bottom-right, grey elsewhere."""
    rgb = np.full((h, w, 3), 128, np.uint8)
    rgb[: h // 4, : w // 4] = (255, 0, 0)
    rgb[-h // 4:, -w // 4:] = (0, 0, 255)
    return rgb


def exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """EXIF with orientation 6, GPS, DateTimeOriginal and an IFD1 JPEG thumbnail.

    Pillow does not write IFD1, so it is appended by hand: IFD0's next-IFD offset points to it.
    """
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.DateTime] = "2021:02:03 04:05:06"
    exif[ExifTags.Base.Make] = "ACME"
    exif.get_ifd(EXIF_IFD)[ExifTags.Base.DateTimeOriginal] = "2020:01:02 03:04:05"
    exif.get_ifd(EXIF_IFD)[ExifTags.Base.MakerNote] = b"secret serial 1234"
    gps = exif.get_ifd(GPS_IFD)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    raw = exif.tobytes()
    assert raw[:6] == b"Exif\x00\x00" and raw[6:8] in (b"II", b"MM")
    e = "<" if raw[6:8] == b"II" else ">"
    tiff = bytearray(raw[6:])
    ifd0 = struct.unpack_from(e + "I", tiff, 4)[0]
    count = struct.unpack_from(e + "H", tiff, ifd0)[0]
    next_at = ifd0 + 2 + 12 * count
    assert struct.unpack_from(e + "I", tiff, next_at)[0] == 0
    ifd1 = len(tiff)
    struct.pack_into(e + "I", tiff, next_at, ifd1)
    data_at = ifd1 + 2 + 2 * 12 + 4
    tiff += struct.pack(e + "H", 2)
    tiff += struct.pack(e + "HHII", 0x0201, 4, 1, data_at)  # JPEGInterchangeFormat
    tiff += struct.pack(e + "HHII", 0x0202, 4, 1, len(thumbnail))  # ...Length
    tiff += struct.pack(e + "I", 0) + thumbnail
    return b"Exif\x00\x00" + bytes(tiff)


@pytest.fixture
def camera_jpeg():
    """A JPEG as a phone writes it: stored sideways with orientation 6, GPS, thumbnail, XMP."""
    upright = marker_image()
    stored = np.rot90(upright, 1)  # orientation 6 = "rotate 90 clockwise to view"
    thumb = io.BytesIO()
    Image.fromarray(np.rot90(upright, 1).copy()).resize((16, 24)).save(thumb, "JPEG")
    buf = io.BytesIO()
    Image.fromarray(stored.copy()).save(buf, "JPEG", quality=95, exif=exif_with_thumbnail(thumb.getvalue()),
                                        xmp=XMP, comment=b"shot at Jane's house")
    data = buf.getvalue()
    # Check the fixture really carries what the product must remove.
    check = Image.open(io.BytesIO(data))
    assert check.getexif()[ExifTags.Base.Orientation] == 6
    assert check.getexif().get_ifd(GPS_IFD) and check.getexif().get_ifd(ExifTags.IFD.IFD1)
    assert b"creator=Jane" in data and data.count(b"\xff\xd8\xff") == 2
    return data


def assert_marker_upright(bgr):
    h, w = bgr.shape[:2]
    assert (w, h) == (60, 40)
    rgb = bgr[..., ::-1].astype(int)
    assert np.abs(rgb[3, 3] - (255, 0, 0)).max() < 30, "red marker must be top-left"
    assert np.abs(rgb[-3, -3] - (0, 0, 255)).max() < 30, "blue marker must be bottom-right"
    assert np.abs(rgb[h // 2, w // 2] - 128).max() < 30


def test_decoded_photo_is_upright(camera_jpeg):
    decoded = image_io.decode(camera_jpeg, ImageSettings())
    assert decoded.bgr.dtype == np.uint8 and decoded.bgr.shape == (40, 60, 3)
    assert_marker_upright(decoded.bgr)
    assert decoded.meta.format == "jpeg" and decoded.alpha is None


def test_output_is_upright_and_carries_no_metadata(camera_jpeg):
    decoded = image_io.decode(camera_jpeg, ImageSettings())
    data = image_io.encode(decoded.bgr, decoded, ImageSettings())
    out = Image.open(io.BytesIO(data))
    assert out.format == "JPEG" and out.size == (60, 40)
    assert_marker_upright(np.asarray(out)[..., ::-1])
    exif = out.getexif()
    assert ExifTags.Base.Orientation not in exif
    assert not exif.get_ifd(GPS_IFD) and not exif.get_ifd(ExifTags.IFD.IFD1)
    assert ExifTags.Base.Make not in exif and not exif.get_ifd(EXIF_IFD)
    assert "xmp" not in out.info and "comment" not in out.info and "exif" not in out.info
    assert b"creator=Jane" not in data and b"Jane's house" not in data and b"secret serial" not in data
    assert data.count(b"\xff\xd8\xff") == 1, "an embedded thumbnail JPEG survived"


def test_keep_datetime_keeps_only_the_dates(camera_jpeg):
    settings = ImageSettings(keep_metadata=["datetime"])
    decoded = image_io.decode(camera_jpeg, settings)
    data = image_io.encode(decoded.bgr, decoded, settings)
    exif = Image.open(io.BytesIO(data)).getexif()
    assert exif[ExifTags.Base.DateTime] == "2021:02:03 04:05:06"
    assert exif.get_ifd(EXIF_IFD) == {ExifTags.Base.DateTimeOriginal: "2020:01:02 03:04:05"}
    assert ExifTags.Base.Orientation not in exif and ExifTags.Base.Make not in exif
    assert not exif.get_ifd(GPS_IFD) and b"creator=Jane" not in data
    assert data.count(b"\xff\xd8\xff") == 1


def test_icc_profile_only_when_allowed():
    icc = b"\x00\x00\x02\x0cfake-icc-profile" * 8
    buf = io.BytesIO()
    Image.fromarray(marker_image()).save(buf, "PNG", icc_profile=icc)
    for keep, expected in (([], None), (["icc_profile"], icc)):
        settings = ImageSettings(keep_metadata=keep)
        decoded = image_io.decode(buf.getvalue(), settings)
        out = Image.open(io.BytesIO(image_io.encode(decoded.bgr, decoded, settings)))
        assert out.info.get("icc_profile") == expected


def test_unknown_metadata_names_are_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ImageSettings(keep_metadata=["gps"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_orientation_matches_pillow(orientation):
    arr = np.arange(12 * 7, dtype=np.uint8).reshape(7, 12)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    img.info["exif"] = exif.tobytes()
    img.getexif()[ExifTags.Base.Orientation] = orientation
    expected = np.asarray(ImageOps.exif_transpose(img))
    assert np.array_equal(image_io.orient(arr, orientation), expected)


def encode_pil(rgb_or_rgba: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb_or_rgba).save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_png_with_alpha_keeps_alpha_and_pixels():
    rgba = np.dstack([marker_image(), np.tile(np.arange(60, dtype=np.uint8) * 4, (40, 1))])
    decoded = image_io.decode(encode_pil(rgba, "PNG"), ImageSettings())
    assert decoded.alpha is not None and decoded.meta.has_alpha
    decoded.bgr[:5, :5] = 0  # a "mask" in the colour planes
    out = Image.open(io.BytesIO(image_io.encode(decoded.bgr, decoded, ImageSettings())))
    assert out.format == "PNG" and out.mode == "RGBA"
    got = np.asarray(out)
    assert np.array_equal(got[..., 3], rgba[..., 3])
    assert np.array_equal(got[5:, 5:, :3], rgba[5:, 5:, :3]) and (got[:5, :5, :3] == 0).all()


@pytest.mark.parametrize("fmt,kwargs,exact", [
    ("WEBP", {"lossless": True}, True),
    ("WEBP", {"quality": 90}, False),
    ("TIFF", {"compression": "tiff_lzw"}, True),
    ("TIFF", {}, True),
    ("BMP", {}, True),
    ("PNG", {}, True),
])
def test_formats_round_trip(fmt, kwargs, exact):
    rgb = marker_image()
    src = encode_pil(rgb, fmt, **kwargs)
    decoded = image_io.decode(src, ImageSettings())
    data = image_io.encode(decoded.bgr, decoded, ImageSettings())
    out = Image.open(io.BytesIO(data))
    assert out.format == fmt and out.size == (60, 40) and out.mode == "RGB"
    got = np.asarray(out).astype(int)
    if exact:
        assert np.array_equal(got, rgb)
    else:
        assert np.abs(got - rgb).mean() < 3
    if fmt == "TIFF":
        assert out.info.get("compression") == Image.open(io.BytesIO(src)).info.get("compression")
    if fmt == "WEBP":
        assert decoded.meta.webp_lossless == bool(kwargs.get("lossless"))


def test_grayscale_stays_grayscale():
    gray = marker_image()[..., 0]
    decoded = image_io.decode(encode_pil(gray, "PNG"), ImageSettings())
    assert decoded.bgr.shape == (40, 60, 3) and decoded.meta.gray
    out = Image.open(io.BytesIO(image_io.encode(decoded.bgr, decoded, ImageSettings())))
    assert out.mode == "L" and np.array_equal(np.asarray(out), gray)


def test_palette_png_with_transparency_is_written_as_rgba():
    pal = Image.fromarray(marker_image()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    decoded = image_io.decode(buf.getvalue(), ImageSettings())
    out = Image.open(io.BytesIO(image_io.encode(decoded.bgr, decoded, ImageSettings())))
    assert out.mode == "RGBA"
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGBA"))
    assert (expected[..., 3] == 0).any(), "the fixture must have transparent pixels"
    assert np.array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16bit_keeps_its_depth_outside_masks(ext):
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (40, 60, 3), dtype=np.uint16)
    ok, buf = cv2.imencode(ext, deep)
    assert ok
    decoded = image_io.decode(buf.tobytes(), ImageSettings())
    assert decoded.meta.bit_depth == 16 and decoded.bgr.dtype == np.uint8
    assert np.array_equal(decoded.bgr, (deep >> 8).astype(np.uint8))
    decoded.bgr[10:20, 10:20] = (0, 0, 255)  # a solid mask
    changed = np.zeros((40, 60), bool)
    changed[10:20, 10:20] = True
    data = image_io.encode(decoded.bgr, decoded, ImageSettings(), changed=changed)
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == deep.shape
    assert np.array_equal(out[~changed], deep[~changed])
    assert (out[10:20, 10:20] == np.array([0, 0, 255 * 257], np.uint16)).all()


def test_16bit_png_keeps_an_allowed_icc_profile():
    ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint16))
    icc_png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(icc_png, "PNG", icc_profile=b"icc" * 40)
    icc = Image.open(icc_png).info["icc_profile"]
    decoded = image_io.decode(buf.tobytes(), ImageSettings(keep_metadata=["icc_profile"]))
    decoded.meta.icc_profile = icc  # the 16-bit source above had none; the writer must add it
    data = image_io.encode(decoded.bgr, decoded, ImageSettings(), changed=np.zeros((8, 8), bool))
    assert Image.open(io.BytesIO(data)).info.get("icc_profile") == icc


def test_animated_png_is_refused():
    frames = [Image.fromarray(marker_image()), Image.fromarray(255 - marker_image())]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedMedia, match="animated"):
        image_io.decode(buf.getvalue(), ImageSettings())


def test_broken_files_are_refused_with_a_short_message(tmp_path, camera_jpeg):
    truncated = tmp_path / "Jane_Doe.jpg"
    truncated.write_bytes(camera_jpeg[:-200])  # cut inside the compressed pixels
    with pytest.raises(CorruptMedia) as exc:
        image_io.read(truncated, ImageSettings())
    assert str(exc.value) == "corrupt image (truncated JPEG)"
    with pytest.raises(CorruptMedia, match="corrupt image"):  # cut inside the EXIF block
        image_io.decode(camera_jpeg[:400], ImageSettings())
    with pytest.raises(CorruptMedia, match="empty"):
        image_io.decode(b"", ImageSettings())
    with pytest.raises(UnsupportedMedia) as exc:
        image_io.decode(b"Dear Jane, this is not a picture", ImageSettings())
    assert "Jane" not in str(exc.value)


def test_kind_is_decided_by_content_and_the_output_named_for_it(tmp_path, camera_jpeg):
    good = tmp_path / "a.JPG"
    good.write_bytes(camera_jpeg)
    assert kind_of(good).kind == "image" and kind_of(good).format == "jpeg"
    assert output_name(good) == "a.JPG"
    png_as_jpg = tmp_path / "b.jpg"
    png_as_jpg.write_bytes(encode_pil(marker_image(), "PNG"))
    assert kind_of(png_as_jpg).format == "png"
    assert output_name(png_as_jpg) == "b.jpg.png"
    nameless = tmp_path / "photo"
    nameless.write_bytes(camera_jpeg)
    assert kind_of(nameless).format == "jpeg" and output_name(nameless) == "photo.jpg"
    text = tmp_path / "c.jpg"
    text.write_text("hello")
    with pytest.raises(UnsupportedMedia):
        kind_of(text)
    unknown = tmp_path / "d.gif"
    unknown.write_bytes(b"GIF89a")
    with pytest.raises(UnsupportedMedia, match="neither"):
        kind_of(unknown)
    assert output_name(unknown) == "d.gif"  # what cannot be opened keeps its name (and fails)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(CorruptMedia):
        kind_of(empty)


def test_sniff_knows_the_video_containers():
    assert sniff(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00") == "isobmff"
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "heif"
    assert sniff(b"\x1a\x45\xdf\xa3\x01\x00") == "matroska"
    assert sniff(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert sniff(bytes([0x47] + [0] * 187 + [0x47] + [0] * 187 + [0x47] + [0] * 10)) == "mpegts"
    assert sniff(bytes(([0] * 4 + [0x47] + [0] * 187) * 3)) == "m2ts"
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm\x42\x87") == "webm"
    assert sniff(b"DHAV\xfd\x00\x00\x00") == "dhav"
    assert sniff(bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c") + b"\x00" * 8) == "asf"
    assert sniff(b"FLV\x01\x05\x00\x00\x00\x09") == "flv"
    assert sniff(b"\x00\x00\x01\xba\x44\x00") == "mpegps"
    # Annex B elementary streams: the first NAL unit after the start code says which codec.
    assert sniff(b"\x00\x00\x00\x01\x67\x64\x00\x1f") == "h264"  # SPS
    assert sniff(b"\x00\x00\x00\x01\x09\x10\x00\x00") == "h264"  # access unit delimiter
    assert sniff(b"\x00\x00\x00\x01\x40\x01\x0c\x01") == "hevc"  # VPS
    assert sniff(b"\x00\x00\x00\x01\x46\x01\x10\x00") == "hevc"  # access unit delimiter
    assert sniff(b"\x00\x00\x00\x01\x41\x9a\x00\x00") is None  # a P slice: no stream starts so
    assert sniff(b"\x01\x00\x00\x01\x67\x64\x00\x1f") is None  # data before the start code


def test_heic_round_trip_when_the_extra_is_installed():
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    src = encode_pil(marker_image(), "HEIF", quality=95)
    assert sniff(src[:64]) == "heif"
    decoded = image_io.decode(src, ImageSettings())
    assert decoded.meta.format == "heif"
    assert_marker_upright(decoded.bgr)
    out = Image.open(io.BytesIO(image_io.encode(decoded.bgr, decoded, ImageSettings())))
    assert out.format == "HEIF" and out.size == (60, 40)
    assert np.abs(np.asarray(out).astype(int) - marker_image()).mean() < 4
