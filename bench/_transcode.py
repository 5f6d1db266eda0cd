#!/usr/bin/env python3
"""The floor: decode a clip and re-encode its video with anond's encoder settings, nothing else.

    python bench/_transcode.py SRC DST

Plain PyAV: demux, decode (threaded, as anond's reader), encode with the encoder, options
and pixel format anond would choose (`anond.media.video.choose_encoder`/`encoder_options`,
`[video] crf/preset/threads`), audio packets copied. No detection, no colour conversion,
no masking: no anonymizer that re-encodes can be faster than this.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def transcode(src: str, dst: str) -> int:
    import av

    from anond.config import load_settings
    from anond.media.containers import FFMPEG_MUXER, SUFFIXES
    from anond.media.encode import choose_encoder, encoder_options

    vs_cfg = load_settings(None).video
    with av.open(src) as inp:
        vin = inp.streams.video[0]
        vin.codec_context.thread_type = "AUTO"
        vin.codec_context.thread_count = vs_cfg.threads
        audio = list(inp.streams.audio)
        container = next(c for c, suffixes in SUFFIXES.items() if Path(dst).suffix.lower() in suffixes)
        fmt = FFMPEG_MUXER.get(container, container)
        with av.open(dst, "w", format=fmt) as out:
            name, _ = choose_encoder(vin.codec_context.name, set(out.supported_codecs))
            rate = vin.average_rate or vin.guessed_rate or Fraction(25)
            vout = out.add_stream(name, rate=rate)
            vout.codec_context.width = vin.codec_context.width
            vout.codec_context.height = vin.codec_context.height
            vout.codec_context.pix_fmt = vin.codec_context.pix_fmt or "yuv420p"
            vout.codec_context.time_base = Fraction(1) / Fraction(rate)
            if fmt == "avi":
                vout.codec_context.max_b_frames = 0
            vout.codec_context.options = encoder_options(name, vs_cfg.crf, vs_cfg.preset, vs_cfg.threads)
            aout = {a.index: out.add_stream_from_template(a) for a in audio}
            n = 0
            for packet in inp.demux(vin, *audio):
                if packet.stream.index in aout:
                    if packet.dts is not None:
                        packet.stream = aout[packet.stream.index]
                        out.mux(packet)
                    continue
                for frame in packet.decode():
                    frame.pts, frame.time_base = n, vout.codec_context.time_base
                    n += 1
                    out.mux(vout.encode(frame))
            out.mux(vout.encode(None))
    print(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(transcode(sys.argv[1], sys.argv[2]))
