"""Write small Dahua ``.dav`` (DHAV) files, so tests can exercise FFmpeg's ``dhav`` demuxer
without a downloaded sample.

The layout follows what libavformat/dhav.c (FFmpeg, LGPL-2.1) reads; that file was only read to
learn the layout, no code is copied from it. A file is a plain sequence of chunks (no file header,
no index):

    offset  size  field
    0       4     b"DHAV"
    4       1     type: 0xFD video I-frame, 0xFC video P-frame, 0xF0 audio (0xF1 is skipped)
    5       1     sub type (0)
    6       1     channel (0)
    7       1     frame sub number (0)
    8       4     frame number, LE (per stream here, from 0; the demuxer only uses it as a fallback)
    12      4     chunk length, LE: header + extension + payload + 8-byte trailer
    16      4     date, LE bits: sec 0-5, min 6-11, hour 12-16, day 17-21, month 22-25,
                  year-2000 26-31 (whole seconds; the demuxer reads it as UTC)
    20      2     timestamp, LE: free-running millisecond counter (wraps at 16 bits)
    22      1     extension length in bytes
    23      1     checksum (the demuxer ignores it; written as the byte sum of bytes 0-22)
    24      n     extension records:
                    0x81 video info:  81 00 <codec> <frame rate>       (codec 0x08 H.264, 0x0C HEVC)
                    0x82 video size:  82 00 00 00 <width LE16> <height LE16>
                    0x83 audio info:  83 <channels> <codec> <rate index>
                                      (codec 0x0E A-law, 0x0A mu-law; index into the demuxer's
                                       table 8000, 4000, 8000, 11025, 16000, 20000, 22050, 32000,
                                       44100, 48000, 96000, 192000, 64000)
    24+n    ...   payload (Annex B H.264/HEVC access unit, or raw G.711 bytes)
    end-8   4     b"dhav"
    end-4   4     chunk length, LE (same value as at offset 12)

How the demuxer uses it (and so what a test should expect):
  * Probe: a file starting with b"DHAV" followed by type 0xF0/0xF1/0xFC/0xFD scores the maximum, so
    ``av.open(path)`` detects "dhav" without forcing the format; the first chunk written is always the
    first video I-frame.
  * The video stream is created on the first 0xFD chunk from the extension values seen so far
    (codec, frame rate, width, height); P-frames before it would be dropped. Hence the first packet
    must be a keyframe, and every I-frame here carries the 0x81 and 0x82 records (P-frames carry none).
  * Time base is 1/1000. A packet's pts is ``timegm(date) * 1000`` when its date second differs from
    the previous packet of the same stream, otherwise the previous pts plus the timestamp difference
    (plus 65535 if the counter went backwards). So pts are ABSOLUTE Unix milliseconds: with the
    default start_time (2000-01-01 00:00:00) the first pts is 946684800000; subtract the first pts
    (or ``stream.start_time``) to get i/fps.
  * avg_frame_rate is the 0x81 frame rate over 1 (an integer); stream duration is the difference
    of the first and last chunks' whole-second dates, so it is coarse (whole seconds).
  * Packets only get a pts (no dts), and the key flag comes from the chunk type.

What this writer can represent:
  * H.264 ("h264") or HEVC ("hevc"/"h265") Annex B access units, one per chunk, at an integer frame
    rate of 1..255; frame i is stamped at round(i * 1000 / fps) ms after start_time, which the
    demuxer turns back into exactly that pts offset (the first frame of each second lands on the
    whole second, so the date reset loses nothing). start_time must be a whole second.
  * Optional mono G.711 audio (A-law by default, mu-law with audio_codec="pcm_mulaw"), one chunk per
    (bytes, sample_rate) item, interleaved with the video by start time (video first on a tie), at
    one of the sample rates in the demuxer's table. Audio pts are exact only when every chunk that
    starts a new second starts on the whole second (e.g. 8000 Hz in chunks of 320, 400, 800 or 1600
    bytes); otherwise the demuxer snaps that chunk's pts down to the whole second and the later
    chunks of that second keep the error (8000 Hz in 1024-byte chunks: 0, 128, ..., 896, 1000,
    1128 instead of 1024, 1152).

What it cannot represent:
  * B-frames / reordered streams: chunks carry one timestamp that becomes the pts, in file order;
    encode with B-frames off (libx264 ``bf=0``, libx265 ``bframes=0``).
  * Non-integer frame rates, frame sizes over 65535, MPEG-4/MJPEG video, other audio codecs,
    stereo audio, several channels (cameras) in one file, the 1 KiB "DAHUA" file header of some
    recorders, 0xF1 (skipped) chunks and the other extension records (0x88, 0x9B, ...).
  * A counter wrap inside one second: the 16-bit millisecond counter wraps every 65.536 s and the
    demuxer adds 65535 (not 65536), so a wrap that falls between two packets of the same second
    makes that stream's later pts in that second 1 ms early. Clips under 65 s never wrap.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from os import PathLike

__all__ = ["dav_bytes", "write_dav"]

TYPE_AUDIO = 0xF0
TYPE_P_FRAME = 0xFC
TYPE_I_FRAME = 0xFD

VIDEO_CODECS = {"h264": 0x08, "hevc": 0x0C, "h265": 0x0C}
AUDIO_CODECS = {"pcm_alaw": 0x0E, "pcm_mulaw": 0x0A}
# The demuxer's sample-rate table, by index (8000 appears twice; 2 is used here for it).
SAMPLE_RATES = (8000, 4000, 8000, 11025, 16000, 20000, 22050, 32000, 44100, 48000, 96000, 192000, 64000)
_RATE_INDEX = {rate: index for index, rate in reversed(list(enumerate(SAMPLE_RATES)))}
_RATE_INDEX[8000] = 2

DEFAULT_START = datetime(2000, 1, 1)  # the earliest date the 6-bit year field holds


def _date_field(when: datetime) -> int:
    if not 2000 <= when.year <= 2063:
        raise ValueError(f"DHAV dates hold years 2000..2063, not {when.year}")
    return (
        when.second
        | when.minute << 6
        | when.hour << 12
        | when.day << 17
        | when.month << 22
        | (when.year - 2000) << 26
    )


def _chunk(kind: int, number: int, when: datetime, ms: int, ext: bytes, payload: bytes) -> bytes:
    length = 24 + len(ext) + len(payload) + 8
    head = struct.pack(
        "<4sBBBBIIIHB",
        b"DHAV", kind, 0, 0, 0, number & 0xFFFFFFFF, length, _date_field(when), ms & 0xFFFF, len(ext),
    )
    head += bytes([sum(head) & 0xFF])
    return head + ext + payload + struct.pack("<4sI", b"dhav", length)


def _start(start_time: datetime | None) -> datetime:
    if start_time is None:
        return DEFAULT_START
    if start_time.microsecond:
        raise ValueError("start_time must be a whole second (the DHAV date field has no fraction)")
    if start_time.tzinfo is not None:  # the demuxer reads the fields as UTC
        start_time = start_time.astimezone(timezone.utc).replace(tzinfo=None)
    return start_time


def dav_bytes(
    packets: list[tuple[bytes, bool]],
    *,
    fps: int,
    width: int,
    height: int,
    codec: str = "h264",
    start_time: datetime | None = None,
    audio: list[tuple[bytes, int]] | None = None,
    audio_codec: str = "pcm_alaw",
) -> bytes:
    """The bytes of a Dahua DHAV (.dav) file that FFmpeg's dhav demuxer reads back.

    packets: [(annexb_bytes, keyframe)] in decode order, one access unit each, no B-frames; the
        first must be a keyframe carrying its parameter sets (SPS/PPS, plus VPS for HEVC), as the
        stream has no extradata. Frame i is stamped round(i * 1000 / fps) ms after start_time.
    fps: integer frame rate 1..255 (becomes the stream's avg_frame_rate).
    width, height: the frame size written to the 0x82 record (the stream's codecpar size).
    codec: "h264" or "hevc" ("h265").
    start_time: the first frame's wall-clock time, a whole second in 2000..2063; naive means UTC,
        aware is converted to UTC. Default 2000-01-01 00:00:00 (first pts 946684800000 ms).
    audio: optional [(g711_bytes, sample_rate)], mono, consecutive chunks from time 0; interleaved
        with the video by start time.
    audio_codec: "pcm_alaw" (default) or "pcm_mulaw".
    """
    if codec not in VIDEO_CODECS:
        raise ValueError(f"codec must be one of {sorted(VIDEO_CODECS)}, not {codec!r}")
    if not isinstance(fps, int) or not 1 <= fps <= 255:
        raise ValueError("fps must be an integer 1..255 (the DHAV frame-rate field is one byte)")
    if not (0 < width <= 0xFFFF and 0 < height <= 0xFFFF):
        raise ValueError("width and height must be 1..65535")
    if not packets:
        raise ValueError("at least one video packet is needed")
    if not packets[0][1]:
        raise ValueError("the first packet must be a keyframe (the demuxer makes the stream on it)")
    start = _start(start_time)

    # (start ms, stream order, number, type, extension, payload): sorting puts each chunk at its
    # start time, video before audio at the same millisecond.
    events: list[tuple[int, int, int, int, bytes, bytes]] = []
    video_ext = struct.pack("<BBBB", 0x81, 0, VIDEO_CODECS[codec], fps) + struct.pack(
        "<BBBBHH", 0x82, 0, 0, 0, width, height
    )
    for i, (data, key) in enumerate(packets):
        ms = (2 * i * 1000 + fps) // (2 * fps)  # round(i * 1000 / fps)
        kind = TYPE_I_FRAME if key else TYPE_P_FRAME
        events.append((ms, 0, i, kind, video_ext if key else b"", bytes(data)))

    if audio:
        if audio_codec not in AUDIO_CODECS:
            raise ValueError(f"audio_codec must be one of {sorted(AUDIO_CODECS)}, not {audio_codec!r}")
        rate = audio[0][1]
        if rate not in _RATE_INDEX:
            raise ValueError(f"sample rate {rate} is not in the demuxer's table {sorted(set(SAMPLE_RATES))}")
        audio_ext = struct.pack("<BBBB", 0x83, 1, AUDIO_CODECS[audio_codec], _RATE_INDEX[rate])
        samples = 0
        for j, (data, chunk_rate) in enumerate(audio):
            if chunk_rate != rate:
                raise ValueError("all audio chunks must share one sample rate")
            if not data:
                raise ValueError("empty audio chunk")
            ms = (2 * samples * 1000 + rate) // (2 * rate)  # G.711 mono: one byte per sample
            events.append((ms, 1, j, TYPE_AUDIO, audio_ext, bytes(data)))
            samples += len(data)

    events.sort(key=lambda e: e[:3])
    out = bytearray()
    for ms, _, number, kind, ext, payload in events:
        out += _chunk(kind, number, start + timedelta(milliseconds=ms), ms, ext, payload)
    return bytes(out)


def write_dav(path: str | PathLike[str], packets: list[tuple[bytes, bool]], **options) -> None:
    """Write a Dahua DHAV (.dav) file that FFmpeg's dhav demuxer reads back (`dav_bytes`)."""
    with open(path, "wb") as f:
        f.write(dav_bytes(packets, **options))
