#!/usr/bin/env python3
"""Peak memory of `anond process` on long videos: flat, however long the video is.

Generates 720p H.264 + AAC clips of the given lengths (a real face, the `astronaut` photo of
scikit-image, moving over a still background; low bitrate so the files stay small), runs
`anond process` on each as a separate process and measures its peak RSS (the kernel's
ru_maxrss of the process, and the sampled sum over its process tree). Pass: the longest clip
needs at most 1.2x the peak memory of the shortest.

Only memory is under test, so by default detection runs on every 5th frame (the tracker fills
the frames between), verification on every 5th masked frame, faces only, at 10 fps: the
window (lookahead x fps frames) and the per-frame buffers are what a longer video could grow,
and they are the same whatever these speed settings are. Override with the options.

    python bench/video_memory.py [--minutes 1,10] [--fps 10] [--size 1280x720] [--stride 5]
                                 [--verify-every 5] [--targets face] [--keep] [--no-append]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import _common as c  # noqa: E402  (sets sys.path for anond)

LIMIT = 1.2  # longest / shortest peak RSS


def make_clip(path: Path, minutes: float, fps: int, size: tuple[int, int]) -> int:
    """A `minutes` long clip: a moving real face on a textured still background, with audio."""
    import av
    import cv2
    import numpy as np
    from skimage import data

    w, h = size
    n = int(round(minutes * 60 * fps))
    face = cv2.resize(data.astronaut()[30:190, 160:290, ::-1], (h // 8, int(h // 8 * 1.15)))
    fh, fw = face.shape[:2]
    rng = np.random.default_rng(3)
    background = cv2.GaussianBlur(rng.integers(30, 225, (h, w, 3)).astype(np.uint8), (0, 0), 9)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.options = {"preset": "ultrafast", "crf": "30"}
        aus = out.add_stream("aac", rate=22050)
        aus.layout = "mono"
        samples_per_frame = 22050 / fps
        audio_pts = 0
        for i in range(n):
            img = background.copy()
            t = i / fps
            x = int((w - fw) * (0.5 + 0.45 * np.sin(t * 0.7)))
            y = int((h - fh) * (0.5 + 0.4 * np.sin(t * 1.1)))
            if int(t) % 20 < 15:  # the face leaves now and then: tracks end and start again
                img[y : y + fh, x : x + fw] = face
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
            while audio_pts < (i + 1) * samples_per_frame:
                tone = (0.1 * np.sin(np.arange(1024) * 0.03 + audio_pts)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                af.sample_rate, af.pts = 22050, audio_pts
                for p in aus.encode(af):
                    out.mux(p)
                audio_pts += 1024
        for stream in (vs, aus):
            for p in stream.encode():
                out.mux(p)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="1,10", help="clip lengths, comma-separated")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--stride", type=int, default=5, help="video.detect_stride")
    ap.add_argument("--verify-every", type=int, default=5, help="video.verify_every")
    ap.add_argument("--targets", default="face", help="profile targets, comma-separated")
    ap.add_argument("--keep", action="store_true", help="keep the generated clips in .bench/")
    ap.add_argument("--no-append", action="store_true", help="print only, do not append to docs")
    args = ap.parse_args()

    settings = c.settings()
    load_before = c.load()
    minutes = [float(m) for m in args.minutes.split(",")]
    size = tuple(int(v) for v in args.size.lower().split("x"))
    work = c.WORK / "video_memory"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ,
               ANOND_VIDEO__DETECT_STRIDE=str(args.stride),
               ANOND_VIDEO__VERIFY_EVERY=str(args.verify_every),
               ANOND_PROFILE__TARGETS='["' + '","'.join(args.targets.split(",")) + '"]')
    rows, peaks = [], []
    for m in minutes:
        src = work / f"clip_{m:g}min.mp4"
        dst = work / f"out_{m:g}min.mp4"
        report = work / f"report_{m:g}min.json"
        t0 = time.perf_counter()
        frames = make_clip(src, m, args.fps, size)
        made_s = time.perf_counter() - t0
        for p in (dst, report):
            p.unlink(missing_ok=True)
        run = c.run_measured([sys.executable, "-m", "anond.cli", "process", str(src), str(dst),
                              "--report", str(report)], env=env, cwd=c.ROOT)
        if run.rc != 0:
            print(run.stderr_tail, file=sys.stderr)
            raise SystemExit(f"anond process failed on the {m:g}-minute clip (rc {run.rc})")
        out_frames = c.video_facts(dst)["frames"]
        peaks.append(run.max_rss_mib)
        rows.append([f"{m:g} min", f"{size[0]}x{size[1]}", frames, out_frames,
                     f"{src.stat().st_size / 2**20:.1f}", f"{run.seconds:.0f}",
                     f"{frames / run.seconds:.1f}", f"{run.max_rss_mib:.0f}", f"{run.peak_rss_mib:.0f}",
                     f"{made_s:.0f}"])
        print(f"{m:g} min: {frames} frames in, {out_frames} out, {run.seconds:.0f} s, "
              f"max RSS {run.max_rss_mib:.0f} MiB", flush=True)
        if not args.keep:
            src.unlink(missing_ok=True)
            dst.unlink(missing_ok=True)
    ratio = peaks[-1] / peaks[0]
    verdict = "PASS" if ratio <= LIMIT else "FAIL"
    headers = ["clip", "size", "frames in", "frames out", "MiB in", "seconds", "fps",
               "max RSS MiB", "tree peak MiB (sampled)", "generation s"]
    text = c.table(headers, rows)
    summary = (f"Peak memory longest / shortest: **{ratio:.3f}** (limit {LIMIT}) — {verdict}. "
               f"Settings: video.detect_stride {args.stride}, video.verify_every {args.verify_every}, "
               f"targets {args.targets}, {args.fps} fps, lookahead {settings.video.lookahead_s} s.")
    print(text)
    print(summary)
    if not args.no_append:
        c.append(c.header("Video memory (bench/video_memory.py)", c.command_line(), settings,
                          load_before=load_before) + "\n" + text + "\n\n" + summary + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
