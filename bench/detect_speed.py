#!/usr/bin/env python3
"""Detection-only throughput per model: images (views) per second, batch size stated.

Each model runs `Detector.detect` (preprocessing + inference + decoding + per-view NMS) on
real photos from ../shared/data cut to the input size the pipeline feeds it:
- dynamic-size models (CenterFace, RetinaFace, anond's plate model): 640x360 and 1280x720
  whole frames (video frames at their own aspect, as the pipeline feeds them) and 640x640
  tiles (`detect.tile_size`, the photo detail pass);
- fixed-size models (YOLOv8 plates): their 640x640 letterbox, whatever the source size.
A model with a second stage (manifest `check`, anond.detect.check, or `second_look`,
anond.detect.rescale) is timed with it, as the Engine runs it: candidates found at the stage's
first threshold, then reviewed. A second table gives each plate
model's time per frame relative to platedet's (batch 1) at the same frame size: what replacing
platedet costs (issue 23: at most 25 %).
Batch 1 and the video batch size (`video.batch_size`) are measured; the first call is a warm-up.

    python bench/detect_speed.py [--seconds 10] [--models a,b] [--no-append]
"""

from __future__ import annotations

import argparse
import time

import _common as c  # noqa: E402  (sets sys.path for anond)


def _views(paths, size_hw, count):
    """`count` real photos, each resized (cover + centre crop) to `size_hw`."""
    import cv2

    h, w = size_hw
    out = []
    for p in paths:
        img = cv2.imread(str(p))
        if img is None:
            continue
        s = max(h / img.shape[0], w / img.shape[1])
        img = cv2.resize(img, (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s))))
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        out.append(img[y0:y0 + h, x0:x0 + w].copy())
        if len(out) == count:
            break
    return out


def measure(detector, views, batch: int, threshold: float, seconds: float) -> tuple[float, int]:
    """Images per second over at least `seconds` (whole batches), and images processed."""
    detector.detect(views[:batch], threshold)  # warm-up
    n, i = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or n == 0:
        chunk = [views[(i + k) % len(views)] for k in range(batch)]
        detector.detect(chunk, threshold)
        n += batch
        i += batch
    return n / (time.perf_counter() - started), n


class Checked:
    """A detector followed by its second stage on each view's candidates (what the Engine runs)."""

    def __init__(self, detector, stage) -> None:
        self.detector, self.stage = detector, stage

    def detect(self, views, threshold):
        found = self.detector.detect(views, self.stage.first_threshold(threshold))
        return [self.stage.review(view, xyxy, score, threshold) for view, (xyxy, score) in zip(views, found)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (default 10)")
    parser.add_argument("--models", help="comma-separated model names (default: face and plate "
                                         "models of the config, plus retinaface-mnet025)")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()

    from anond.detect.engine import build_detector, load_check
    from anond.models import read_installed, verified_model

    settings = c.settings()
    load_before = c.load()
    names = args.models.split(",") if args.models else list(dict.fromkeys(
        [settings.models.face, "retinaface-mnet025", settings.models.plate, "platedet-yolov8s-seg",
         "anond-plate-mnet025"]))
    installed = read_installed(settings.models.dir)
    names = [n for n in names if n in installed]
    photos = sorted((c.DATA / "plates" / "openalpr_br").glob("*.jpg"))[:16]
    batch_video = settings.video.batch_size
    rows = []
    plate_ms: dict[str, dict[tuple[int, int], float]] = {}  # batch-1 ms per frame size
    for name in names:
        model = verified_model(name, settings.models.dir, settings.models.manifest)
        det = timed = build_detector(model, settings.runtime)
        check = load_check(settings, det)
        label = name
        if check is not None:
            timed = Checked(det, check)
            label += f" + {model.spec.check or model.spec.second_look}"
        threshold = (settings.profile.detect.face_threshold if model.spec.task == "face"
                     else c.plate_threshold(settings, name))
        sizes = [(360, 640), (720, 1280)] + ([] if det.fixed_size else [(640, 640)])
        for size in sizes:
            views = _views(photos, size, 16)
            for batch in sorted({1, batch_video}):
                ips, n = measure(timed, views, batch, threshold, args.seconds)
                shown = (f"{det.fixed_size[1]}x{det.fixed_size[0]} letterbox" if det.fixed_size
                         else f"{size[1]}x{size[0]}")
                if det.fixed_size:
                    shown += f" (from {size[1]}x{size[0]})"
                rows.append([label, det.provider.replace("ExecutionProvider", ""), shown, batch,
                             f"{ips:.1f}", f"{1000 / ips:.1f}", n])
                if model.spec.task == "plate" and batch == 1:
                    plate_ms.setdefault(name, {})[size] = 1000 / ips
                print(" | ".join(map(str, rows[-1])), flush=True)
    headers = ["model", "provider", "input", "batch", "images/s", "ms/image", "images timed"]
    out = c.table(headers, rows)
    ref = plate_ms.get("platedet-yolov8s-seg")
    if ref:
        ratio_rows = [[name, f"{size[1]}x{size[0]}", f"{ms:.1f}", f"{ref[size]:.1f}",
                       f"{100 * ms / ref[size]:.0f} %", "pass" if ms <= 0.25 * ref[size] else "FAIL"]
                      for name, per in plate_ms.items() if name != "platedet-yolov8s-seg"
                      for size, ms in per.items() if size in ref]
        if ratio_rows:
            out += "\n\nPlate models against platedet, per frame at the size the pipeline gets " \
                   "(batch 1):\n\n" + c.table(["model", "frame", "ms", "platedet ms", "share",
                                                "≤ 25 %"], ratio_rows)
    print(out)
    if not args.no_append:
        c.append(c.header("Detection-only throughput", c.command_line(), settings,
                          {"threads": f"intra_op {settings.runtime.intra_op_threads} (0 = all cores), "
                                      f"inter_op {settings.runtime.inter_op_threads}",
                           "what is timed": "Detector.detect: resize/letterbox + inference + decode "
                                            "+ per-view NMS, on real photos; warm-up excluded"},
                          load_before=load_before) + "\n" + out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
