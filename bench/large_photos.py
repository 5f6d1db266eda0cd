#!/usr/bin/env python3
"""Large photos: the photo pipeline's seconds by size, with verification's view memo on and off.

Phone and camera photos are 12-24 MP. Past `detect.max_input_side` (1920 px) a photo is
searched as a scaled-down whole view plus native-resolution tiles (a 12 MP photo: 48 tiles per
model), and verification searches the masked photo again the same way. With the view memo
(`anond.detect.engine.ViewMemo`, the default) verification runs again only the views that see a
masked pixel; off, it runs every view (the baseline, same process, same photos, alternated).

The photos are composed here from material the project may use (no ../shared needed): a car
with its plate (tests/data/plate-cc0.jpg, CC0) and the astronaut (scikit-image), pasted into a
smooth textured background at several places, saved as JPEG. Both runs must write the same
bytes (checked).

    python bench/large_photos.py [--sizes 1920x1080,4000x3000,6000x4000] [--rounds 2] [--no-append]
"""

from __future__ import annotations

import argparse
import time

import _common as c  # noqa: E402  (sets sys.path for anond)


def compose(width: int, height: int, path) -> None:
    import cv2
    import numpy as np
    from skimage import data

    rng = np.random.default_rng(width * height)
    small = rng.integers(40, 220, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    img = cv2.resize(cv2.GaussianBlur(small, (0, 0), 1.5), (width, height), interpolation=cv2.INTER_CUBIC)
    car = cv2.imread(str(c.ROOT / "tests" / "data" / "plate-cc0.jpg"))
    face = data.astronaut()[:, :, ::-1]
    scale = width / 1000  # objects grow with the photo, as a closer or sharper camera sees them
    for k, (fx, fy) in enumerate([(0.1, 0.55), (0.55, 0.6), (0.75, 0.2)]):
        thing = car if k != 2 else face
        s = scale * (1.2 if k != 2 else 0.35)
        thing = cv2.resize(thing, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
        x, y = int(fx * width), int(fy * height)
        h, w = min(thing.shape[0], height - y), min(thing.shape[1], width - x)
        img[y:y + h, x:x + w] = thing[:h, :w]
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1920x1080,4000x3000,6000x4000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    load_before = c.load()
    settings = c.settings()

    from anond.detect import engine as engine_mod
    from anond.detect.engine import Engine
    from anond.pipeline import process_file

    engine = Engine.load(settings)
    engine.warmup()
    recall = engine_mod.ViewMemo.recall
    work = c.WORK / "large_photos"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        src = work / f"photo-{width}x{height}.jpg"
        compose(width, height, src)
        best = {True: float("inf"), False: float("inf")}
        outputs, report = {}, None
        try:
            for _ in range(args.rounds):
                for memo in (True, False):
                    engine_mod.ViewMemo.recall = recall if memo else (lambda self, *a: None)
                    out = work / f"out-{width}x{height}-{'memo' if memo else 'plain'}.jpg"
                    began = time.perf_counter()
                    r = process_file(src, out, settings=settings, engine=engine, job_id="bench")
                    best[memo] = min(best[memo], time.perf_counter() - began)
                    outputs[memo] = r.output_path.read_bytes()
                    if memo:
                        report = r
        finally:
            engine_mod.ViewMemo.recall = recall
        same = outputs[True] == outputs[False]
        rows.append([f"{width}x{height}", f"{width * height / 1e6:.0f}", dict(report.masked),
                     f"{report.durations.get('verify', 0):.1f}", f"{best[False]:.1f}", f"{best[True]:.1f}",
                     f"{best[False] / best[True]:.2f}", "yes" if same else "NO"])
        print(" | ".join(str(v) for v in rows[-1]), flush=True)
    headers = ["photo", "MP", "masked (boxes)", "verify s (memo)", "s, memo off (baseline)",
               "s, memo on (default)", "speed-up", "same output bytes"]
    body = c.table(headers, rows)
    print(body)
    if not args.no_append:
        c.append(c.header("Large photos: verification's view memo", c.command_line(), settings,
                          {"photos": "composed here (car with plate, CC0; astronaut, scikit-image) on a "
                                     "smooth texture, JPEG q95",
                           "timing": f"process_file, default profile, engine loaded once; best of "
                                     f"{args.rounds}, memo on and off alternated"},
                          load_before=load_before) + "\n" + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
