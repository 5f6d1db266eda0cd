"""Hostile inputs for the service: a seeded generator of broken, oversized, misnamed, linked and
otherwise unfriendly files (tests/test_hostile.py drops them into a running service).

Every case says what must become of it:
  "fail"      quarantined with one of `codes` (never an output);
  "either"    quarantined with a known code, or processed into a complete output (a bit-flip in
              a JPEG's entropy data still decodes: masking what decodes is right);
  "ok"        processed (an odd name, a hostile sidecar that is rejected or applied);
  "untouched" left where it is, not followed, not read (links, FIFOs).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KNOWN_CODES = {"corrupt_media", "unsupported_media", "too_large", "regions_invalid"}


@dataclass
class Case:
    rel: str  # path in the inbox
    data: bytes | None  # None: made by `make` (links, FIFOs)
    expect: str  # fail | either | ok | untouched
    codes: set[str] = field(default_factory=lambda: set(KNOWN_CODES))
    sidecar: bytes | None = None
    out: str | None = None  # the output's path when not `rel` (content other than the name says)

    @property
    def output(self) -> str:
        return self.out or self.rel


def _picture(seed: int, h: int = 72, w: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 215, (h // 8, w // 8, 3), np.uint8)
    return np.kron(base, np.ones((8, 8, 1), np.uint8))  # blocky: compresses, decodes plainly


def _image(fmt: str, seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_picture(seed)).save(buf, format=fmt)
    return buf.getvalue()


def clip_bytes(container: str, seed: int, frames: int = 24, size: tuple[int, int] = (96, 64)) -> bytes:
    """An H.264 clip (`container`: mp4, matroska...) of a blocky picture sliding sideways."""
    import av

    buf = io.BytesIO()
    pic = _picture(seed, size[1], size[0])
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(pic, 2 * i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _dav_bytes(seed: int) -> bytes:
    """A Dahua .dav of the same clip (tests/dav.py)."""
    import av

    from dav import dav_bytes

    with av.open(io.BytesIO(clip_bytes("h264", seed)), format="h264") as src:
        packets = [(bytes(p), p.is_keyframe) for p in src.demux(video=0) if p.size]
    return dav_bytes(packets, fps=24, width=96, height=64)


def _garbage_packets_video(container: str, seed: int) -> bytes:
    """A valid container (a real clip's streams and timing) whose every video packet's payload
    is random bytes of the same length."""
    import av

    rng = np.random.default_rng(seed)
    src = av.open(io.BytesIO(clip_bytes(container, seed)))
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size == 0:
                continue
            junk = av.Packet(rng.integers(0, 256, packet.size, np.uint8).tobytes())
            junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
            junk.is_keyframe = packet.is_keyframe
            junk.stream = stream
            out.mux(junk)
    src.close()
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bomb(width: int, height: int) -> bytes:
    """A PNG header declaring width x height, with a small zlib stream of zeros behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 << 20), 9)  # 1 MiB of zeros in ~1 KB: a decompression bomb
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _tiff_bomb(width: int, height: int) -> bytes:
    """A little-endian TIFF whose only IFD declares width x height RGB in one small strip."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 2), (273, 4, 1, 8 + 2 + 12 * 10 + 4), (277, 3, 1, 3), (278, 4, 1, height),
               (279, 4, 1, 16), (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHII", tag, typ, count, value) if typ == 4 else struct.pack("<HHIHH", tag, typ, count, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\0" * 16


def _jpeg_bomb(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 frame size is rewritten to width x height."""
    data = bytearray(_image("JPEG", 99))
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def _flip(data: bytes, seed: int, count: int, start: int = 0, end: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    end = len(out) if end is None else min(end, len(out))
    for at in rng.integers(start, end, count):
        out[at] ^= int(rng.integers(1, 256))
    return bytes(out)


def cases() -> list[Case]:
    bases = {
        "jpg": _image("JPEG", 1), "png": _image("PNG", 2), "webp": _image("WEBP", 3),
        "tiff": _image("TIFF", 4), "mp4": clip_bytes("mp4", 5), "mkv": clip_bytes("matroska", 6),
        "264": clip_bytes("h264", 7), "dav": _dav_bytes(8),
    }
    out: list[Case] = []
    for ext, data in bases.items():
        renamed = ".mp4" if ext == "dav" else ""  # FFmpeg writes no DHAV: outputs are MP4

        def case(rel: str, data: bytes) -> Case:
            return Case(rel, data, "either", out=rel + renamed if renamed else None)

        for k, frac in enumerate((0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)):
            rel = f"truncated/{ext}/t{k}.{ext}"
            out.append(case(rel, data[: max(1, int(len(data) * frac))]))
        for seed in range(18):
            count = (1, 2, 4, 8, 16, 64)[seed % 6]
            rel = f"flipped/{ext}/f{seed:02d}.{ext}"
            out.append(case(rel, _flip(data, seed, count, start=64)))
        for seed in range(4):
            rel = f"flipped/{ext}/h{seed}.{ext}"
            out.append(case(rel, _flip(data, 100 + seed, 2, end=64)))
    too_large = {"too_large"}
    out += [
        Case("bombs/png-50000.png", _png_bomb(50_000, 50_000), "fail", too_large),
        Case("bombs/png-15000.png", _png_bomb(15_000, 15_000), "fail", too_large),
        Case("bombs/tiff-100000.tiff", _tiff_bomb(100_000, 100_000), "fail", too_large),
        Case("bombs/tiff-16000.tif", _tiff_bomb(16_000, 16_000), "fail", too_large),
        Case("bombs/jpeg-65000.jpg", _jpeg_bomb(65_000, 65_000), "fail", too_large),
        Case("bombs/jpeg-20000.jpeg", _jpeg_bomb(20_000, 15_000), "fail", too_large),
    ]
    for ext in ("jpg", "png", "webp", "tiff", "mp4", "mkv"):
        out.append(Case(f"empty/zero.{ext}", b"", "fail", {"corrupt_media"}))
    garbage = np.random.default_rng(7).integers(0, 256, 5000, np.uint8).tobytes()
    out += [
        Case("garbage/packets.mp4", _garbage_packets_video("mp4", 8), "fail"),
        Case("garbage/packets.mkv", _garbage_packets_video("matroska", 9), "fail"),
        Case("garbage/random.mp4", garbage, "fail", {"unsupported_media"}),
        Case("garbage/random.jpg", garbage, "fail", {"unsupported_media"}),
        Case("garbage/text.mkv", b"just some text, not a video\n" * 50, "fail", {"unsupported_media"}),
        # Right magic, nothing behind it: an elementary stream's start code, a DHAV chunk tag.
        Case("garbage/startcode.264", b"\x00\x00\x00\x01\x67" + garbage, "fail"),
        Case("garbage/header.dav", b"DHAV\xfd" + garbage, "fail"),
    ]
    out += [
        # Handled by what they hold; the output's name gets the real format's extension.
        Case("misnamed/png-as.jpg", bases["png"], "ok", out="misnamed/png-as.jpg.png"),
        Case("misnamed/jpeg-as.png", bases["jpg"], "ok", out="misnamed/jpeg-as.png.jpg"),
        Case("misnamed/jpeg-as.mp4", bases["jpg"], "ok", out="misnamed/jpeg-as.mp4.jpg"),
        Case("misnamed/mp4-as.jpg", bases["mp4"], "ok", out="misnamed/mp4-as.jpg.mp4"),
        Case("misnamed/webp-as.tiff", bases["webp"], "ok", out="misnamed/webp-as.tiff.webp"),
        Case("misnamed/mkv-as.webp", bases["mkv"], "ok", out="misnamed/mkv-as.webp.mkv"),
        Case("misnamed/no-extension", bases["mp4"], "ok", out="misnamed/no-extension.mp4"),
    ]
    names = ["Jane\nDoe.jpg", "Jane 'quoted' \"Doe\".jpg", "-Jane Doe.jpg", "Jane\\Doe.jpg",
             "Jåne Døe 😀.jpg", "J" + "é" * 125 + ".jpg"]  # the last: 255 bytes of UTF-8
    assert len(names[-1].encode()) == 255
    out += [Case(f"names/{name}", _image("JPEG", 20 + i), "ok") for i, name in enumerate(names)]
    many = {"version": 1, "regions": [{"rect": {"x": i % 90, "y": i % 60, "w": 4, "h": 4}}
                                      for i in range(10_000)]}
    huge = {"version": 1, "regions": [{"polygon": [[-1e12, -1e12], [1e12, -1e12], [1e12, 1e12]]},
                                      {"rect": {"x": 1e12, "y": 0, "w": 1e300, "h": 5}}]}
    out += [
        Case("sidecars/many.jpg", _image("JPEG", 30), "ok", sidecar=json.dumps(many).encode()),
        Case("sidecars/huge-coordinates.jpg", _image("JPEG", 31), "ok", sidecar=json.dumps(huge).encode()),
        Case("sidecars/not-json.jpg", _image("JPEG", 32), "ok", sidecar=b"{" * 100_000),
        Case("sidecars/deep.jpg", _image("JPEG", 33), "ok", sidecar=b"[" * 50_000 + b"]" * 50_000),
    ]
    out += [Case(f"links/{n}", None, "untouched") for n in
            ("to-outside.jpg", "to-folder", "dangling.jpg", "to-inside.jpg", "fifo.jpg")]
    return out


def make(inbox: Path, outside: Path, case: Case) -> Path:
    """Write one case into the inbox (atomically for files: whole, then renamed in)."""
    path = inbox / case.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if case.data is not None:
        if case.sidecar is not None:
            side = path.with_name(path.name + ".regions.json")
            side.write_bytes(case.sidecar)
        tmp = path.with_name(f".incoming-{zlib.crc32(case.rel.encode()):08x}.tmp")
        tmp.write_bytes(case.data)
        os.rename(tmp, path)
        return path
    name = path.name
    if name == "to-outside.jpg":
        os.symlink(outside / "secret.jpg", path)
    elif name == "to-folder":
        os.symlink(outside, path, target_is_directory=True)
    elif name == "dangling.jpg":
        os.symlink(outside / "missing.jpg", path)
    elif name == "to-inside.jpg":
        os.symlink(inbox / "names", path)
    elif name == "fifo.jpg":
        os.mkfifo(path)
    return path
