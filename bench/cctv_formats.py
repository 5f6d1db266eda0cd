#!/usr/bin/env python3
"""CCTV export formats end to end: frames, frame times, audio, field order, container, faces left.

The real clip `video/hamilton` (640x360, 29.97 fps, 275 frames) is rewritten with PyAV the way
DVRs and export tools write, by the same makers the tests use (tests/cctv.py, tests/dav.py):
raw H.264 and H.265 elementary streams, MJPEG AVI with frames the recorder dropped (a 0.8 s
gap after the first frame, then every 7th frame missing) and PCM audio, interlaced MPEG-2 TS
(720x576, 25 fps, fields woven from successive frames: real motion between the fields, top
and bottom field first) with MP2 audio, AVI with G.711 µ-law, Dahua .dav with G.711 A-law,
ASF/WMV with WMA, MPEG-PS, and a TS named .mp4. Each goes through `process_file` with the
configured profile (default: faces and plates) and its output named by the output rule.

Columns: frames in/out; frame times equal (as a player reads them: container times, AVI index
slots, an elementary stream's announced rate; relative to the first frame); audio bytes equal
(packets concatenated); field order in/out; the output's container and the rule that chose it;
faces an independent detector (CenterFace and RetinaFace at 0.5, whole frames) finds in the
input and in the output.

    python bench/cctv_formats.py [--frames 275] [--no-append]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from fractions import Fraction

import _common as c  # noqa: E402  (sets sys.path for anond)

sys.path.insert(0, str(c.ROOT / "tests"))
sys.path.insert(0, str(c.ROOT / "bench"))


def hamilton(frames: int):
    import av

    clip = c.DATA / "video" / "hamilton" / "short_hamilton_clip.mp4"
    with av.open(str(clip)) as container:
        out = []
        for f in container.decode(video=0):
            out.append(f.to_ndarray(format="bgr24"))
            if len(out) == frames:
                break
    return out


def weave(images, size=(720, 576), top_first=True):
    """Interlaced frames: each field from a successive source frame (real motion between)."""
    import cv2

    out = []
    for a, b in zip(images[0::2], images[1::2]):
        first, second = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (a, b))
        woven = first.copy()  # the field shown first keeps the earlier frame's lines
        later = slice(1, None, 2) if top_first else slice(0, None, 2)
        woven[later] = second[later]
        out.append(woven)
    return out


def cases(images):
    n = len(images)
    dropped = [0] + [i for i in range(20, 20 + 2 * n) if i % 7][: n - 1]  # 0.8 s gap, 1 in 7 lost
    ntsc = Fraction(30000, 1001)
    return [
        ("raw H.264", "cam1.264", dict(muxer="h264", codec="libx264", rate=ntsc)),
        ("raw H.265", "cam2.265", dict(muxer="hevc", codec="libx265", rate=ntsc,
                                       options={"x265-params": "log-level=error"})),
        ("MJPEG AVI, dropped frames, PCM", "export.avi",
         dict(muxer="avi", codec="mjpeg", rate=25, slots=dropped, pix_fmt="yuvj420p",
              audio="pcm_s16le")),
        ("H.264 TS 576i TFF, MP2", "dvr-tff.ts",
         dict(muxer="mpegts", codec="libx264", rate=25, images="tff", audio="mp2", audio_rate=48000,
              audio_chunk=1152, options={"x264-params": "tff=1"})),
        ("MPEG-2 TS 576i BFF, MP2", "dvr-bff.ts",
         dict(muxer="mpegts", codec="mpeg2video", rate=25, images="bff", audio="mp2",
              audio_rate=48000, audio_chunk=1152, options={"flags": "+ildct+ilme", "b": "6M"})),
        ("AVI H.264, G.711 µ-law", "door.avi",
         dict(muxer="avi", codec="libx264", rate=ntsc, audio="pcm_mulaw", options={"bf": "0"})),
        ("Dahua .dav, G.711 A-law", "NVR_ch1.dav", None),
        ("ASF/WMV, WMA", "lobby.wmv", dict(muxer="asf", codec="wmv2", rate=ntsc, audio="wmav2",
                                          audio_rate=44100, audio_chunk=2048,
                                          options={"b": "4M"})),
        ("MPEG-PS (.mpg), MP2", "tape.mpg", dict(muxer="vob", codec="mpeg2video", rate=ntsc,
                                               audio="mp2", audio_rate=48000, audio_chunk=1152,
                                               options={"b": "6M"})),
        ("TS named .mp4 (wrong extension)", "clip.mp4",
         dict(muxer="mpegts", codec="libx264", rate=ntsc, audio="mp2", audio_rate=48000,
              audio_chunk=1152)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=275)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    from cctv import read_clip, write_clip, write_dav_clip
    from throughput import Checker

    from anond.detect.engine import Engine
    from anond.media.containers import output_name
    from anond.pipeline import process_file

    settings = c.settings()
    load_before = c.load()
    engine = Engine.load(settings, targets=settings.profile.targets)
    checker = Checker(settings)
    images = hamilton(args.frames)
    woven = {"tff": weave(images, top_first=True), "bff": weave(images, top_first=False)}
    work = c.WORK / "cctv_formats"
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)

    rows = []
    for label, name, spec in cases(images):
        src_path = work / name
        if spec is None:
            src = write_dav_clip(src_path, None, images=images, fps=30)
        else:
            spec = dict(spec)
            frames = woven[spec.pop("images")] if "images" in spec else images
            src = write_clip(src_path, None, images=frames, **spec)
        dst = work / "out" / output_name(src_path, drop_data_tags=settings.video.drop_data_tags)
        started = time.perf_counter()
        report = process_file(src_path, dst, settings=settings, engine=engine, job_id="bench")
        seconds = time.perf_counter() - started
        out = read_clip(dst)
        video = report.parameters["video"]
        faces_in = sum(checker.count(src_path).values())
        faces_out = sum(checker.count(dst).values())
        same_audio = "none" if not src.audio_codec else \
            ("yes" if src.audio == out.audio else f"NO ({len(src.audio)} / {len(out.audio)} B)")
        rows.append([label, f"{src.frames} / {out.frames}", "yes" if src.times == out.times else "NO",
                     f"{src.audio_codec or '-'}: {same_audio}",
                     f"{src.field_order} / {out.field_order}",
                     f"{dst.name} ({video['container']}, {video['container_rule']})",
                     video["timestamps"], f"{faces_in} / {faces_out}", f"{seconds:.1f}"])
        print(rows[-1], flush=True)
        del src, out

    table = c.table(["input", "frames in / out", "frame times equal", "audio bytes equal",
                     "field order in / out", "output (container, rule)", "frame times from",
                     "faces in / out (independent)", "s"], rows)
    section = c.header("CCTV export formats (issue 24)", c.command_line(), settings,
                       extra={"clip": f"video/hamilton, first {len(images)} frames, rewritten "
                                      "per format by tests/cctv.py; interlaced rows: 720x576 "
                                      "woven from successive frame pairs",
                              "checker": "CenterFace + RetinaFace-MobileNet0.25 at 0.5, every "
                                         "output frame, faces summed over both"},
                       load_before=load_before) + "\n" + table + "\n"
    print(section)
    if not args.no_append:
        c.append(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
