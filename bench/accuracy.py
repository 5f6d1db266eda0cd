#!/usr/bin/env python3
"""Accuracy of anond on every labelled set in ../shared/data (and deface's on the face set).

Sets: faces/face_mask (VOC, all classes = face), plates/openalpr_eu, plates/openalpr_br and
the two plate sets pooled. Everything goes through `anond eval`'s code path (the pipeline's
detection with tiling, masking geometry and verification). Acceptance bars (issue 2):
masked recall >= 93 % on faces, >= 98 % on plates.

deface 1.5.0 (from its own virtual environment, .bench/deface-venv) is measured on the face
set with its defaults: CenterFace at native resolution, threshold 0.2, masks = ellipse in the
box grown by 30 % of its size on each side (`--mask-scale 1.3`; geometry from deface.py).

Plate sets are measured with every model of --plate-models (default: the configured plate
model, then platedet and anond-plate-mnet025 when installed), each in its own row of the same run: the
`s` column compares their cost on the same machine at the same time.

    python bench/accuracy.py [--limit N] [--sets face_mask,openalpr_eu,...] [--plate-models a,b]
                             [--no-deface] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import _common as c  # noqa: E402  (sets sys.path for anond)

SETS = {
    "face_mask": ("faces/face_mask", "voc", "face"),
    "openalpr_eu": ("plates/openalpr_eu", "openalpr", "plate"),
    "openalpr_br": ("plates/openalpr_br", "openalpr", "plate"),
}
POOLS = {"openalpr_eu+br": ["openalpr_eu", "openalpr_br"]}
BARS = {"face": 0.93, "plate": 0.98}
DEFACE_VENV = c.WORK / "deface-venv"
DEFACE_THRESHOLD = 0.2  # deface's default --thresh
DEFACE_MASK_SCALE = 1.3  # deface's default --mask-scale: box grows by (scale - 1) x size per side


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def row(name: str, who: str, r: dict, seconds: float | None, pipeline: float | None = None) -> list:
    bar = BARS[r["target"]]
    verdict = "" if not who.startswith("anond") else ("pass" if (r["masked_recall"] or 0) >= bar else "FAIL")
    return [name, who, r["target"], r["images"], r["objects"], pct(r["precision"]), pct(r["recall"]),
            pct(r["f1"]), pct(r["ap50"]), pct(r["ap50_95"]), f"{r['fp_per_image']:.3f}",
            pct(r["masked_recall"]), f"≥ {100 * bar:.0f} % {verdict}".strip(),
            "n/a" if r.get("over_mask") is None else f"{100 * r['over_mask']:.2f} %",
            "" if seconds is None else f"{seconds:.0f}", "" if pipeline is None else f"{pipeline:.1f}",
            "" if not pipeline else f"{r['images'] / pipeline:.2f}"]


REFERENCES = ("deface 1.5.0", "anond (platedet-yolov8s-seg)")  # the speed baselines of a set


def with_speed_ratios(rows: list[list]) -> list[list]:
    """Each row with its photos a second as a multiple of its set's reference row (deface for
    faces, platedet for plates: `REFERENCES`), when the set has one."""
    ref = {r[0]: float(r[-1]) for r in rows if r[1] in REFERENCES and r[-1]}
    return [r + ([f"{float(r[-1]) / ref[r[0]]:.2f}x"] if r[0] in ref and r[-1] else [""]) for r in rows]


def face_variants(spec: str, base) -> list[tuple[str, object]]:
    """(label, settings) per `--face-variants` entry: LABEL:KEY=VALUE,... applied to `base`."""
    out = []
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        label, sep, overrides = entry.partition(":")
        if not sep or not label:
            raise SystemExit(f"--face-variants: {entry!r} is not LABEL:KEY=VALUE,...")
        out.append((label, c.with_overrides(base, overrides)))
    return out


def deface_results(samples, limit_note: list) -> list | None:
    """Per-image results of deface's CenterFace (its defaults) on `samples`, or None."""
    import numpy as np
    from PIL import Image

    from anond.config import MaskSettings
    from anond.evaluation.metrics import ImageResult, coverage_fractions
    from anond.mask import coverage_mask
    from anond.types import Detections

    python = DEFACE_VENV / "bin" / "python"
    if not python.is_file():
        limit_note.append("deface not measured: .bench/deface-venv missing "
                          "(python3 -m venv .bench/deface-venv && .bench/deface-venv/bin/pip "
                          "install deface==1.5.0 onnxruntime)")
        return None
    job = json.dumps({"images": [str(s.image) for s in samples], "threshold": 0.05})
    out = subprocess.run([str(python), str(c.ROOT / "bench" / "_deface_detect.py")], input=job,
                         capture_output=True, text=True)
    if out.returncode != 0:
        limit_note.append(f"deface run failed: {out.stderr.strip().splitlines()[-1:]}")
        return None
    lines = out.stdout.strip().splitlines()
    # deface's mask: ellipse inscribed in the box grown by (mask_scale - 1) of its size per side.
    geometry = MaskSettings(face_margin=DEFACE_MASK_SCALE - 1, face_shape="ellipse")
    results = []
    for sample, line in zip(samples, lines, strict=True):
        dets = np.asarray(json.loads(line), np.float64).reshape(-1, 5)
        with Image.open(sample.image) as im:
            w, h = im.size
        shown = dets[dets[:, 4] >= DEFACE_THRESHOLD]
        masked = coverage_mask((h, w), Detections(shown[:, :4], shown[:, 4], np.zeros(len(shown))),
                               geometry)
        results.append(ImageResult(gt=sample.boxes, gt_ignore=sample.ignore, det=dets[:, :4],
                                   score=dets[:, 4], covered=coverage_fractions(sample.boxes, masked)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set (trial runs)")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated set names")
    parser.add_argument("--no-deface", action="store_true", help="skip the deface comparison")
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--face-variants", default="",
                        help="more face rows, ';'-separated LABEL:KEY=VALUE,... settings "
                             "(detect.X, mask.X, verify, models.X), each beside the default, "
                             "e.g. 'support:detect.face_view_support=0.1;1.5x:detect.upscale=1.5'")
    parser.add_argument("--plate-models", help="plate models to measure, comma-separated "
                                               "(default: the configured one, platedet, anond-plate-mnet025)")
    args = parser.parse_args()

    from anond.detect.engine import Engine
    from anond.eval import evaluate_samples
    from anond.evaluation.datasets import read_dataset
    from anond.evaluation.metrics import summarize

    settings = c.settings()
    load_before = c.load()
    show = {"auto": None, "on": True, "off": False}[args.progress]
    wanted = [s for s in args.sets.split(",") if s]
    from anond.models import read_installed

    plate_models = (args.plate_models.split(",") if args.plate_models else list(dict.fromkeys(
        [settings.models.plate] + [m for m in ("platedet-yolov8s-seg", "anond-plate-mnet025")
                                   if m in read_installed(settings.models.dir)])))
    engines, model_settings = {}, {}
    for model in plate_models:
        model_settings[model] = c.with_plate_model(settings, model)
        engines[model] = Engine.load(model_settings[model])
    rows, sizes, notes, pooled, reports = [], [], [], {}, {}
    for name in wanted:
        rel, fmt, target = SETS[name]
        if not (c.DATA / rel).is_dir():
            notes.append(f"{name}: not found under ../shared/data, skipped")
            continue
        samples = read_dataset(c.DATA / rel, fmt)[: args.limit]
        if target == "plate":
            runs = [(f"anond ({m})", model_settings[m], engines[m]) for m in plate_models]
        else:
            first = plate_models[0]
            runs = [("anond", model_settings[first], engines[first])] + [
                (f"anond ({label})", vs, engines[first] if vs.models == model_settings[first].models
                 else Engine.load(vs))
                for label, vs in face_variants(args.face_variants, model_settings[first])]
        for who, run_settings, engine in runs:
            results: list = []
            print(f"{name}: {len(samples)} images, {who} ...", flush=True)
            r = evaluate_samples(samples, target, run_settings, engine=engine,
                                 show_progress=show, results_out=results)
            pooled[(name, who)], reports[(name, who)] = results, r
            rows.append(row(name, who, r, r["seconds"], r["pipeline_seconds"]))
            sizes.append([name, who] + [f"{b['objects']}: {pct(b['recall'])} / {pct(b['masked_recall'])}"
                                        for b in r["recall_by_size"].values()])
            print(c.table(HEADERS, rows[-1:]), flush=True)
        if name == "face_mask" and not args.no_deface:
            started = time.monotonic()
            dr = deface_results(samples, notes)
            if dr is not None:
                s = summarize(dr, DEFACE_THRESHOLD, mask_cover=r["settings"]["mask_cover"]).as_dict()
                s["target"] = "face"
                took = time.monotonic() - started
                rows.append(row(name, "deface 1.5.0", s, took, took))
                sizes.append([name, "deface 1.5.0"] + [
                    f"{b['objects']}: {pct(b['recall'])} / {pct(b['masked_recall'])}"
                    for b in s["recall_by_size"].values()])
                print(c.table(HEADERS, rows[-1:]), flush=True)
    for pool, parts in POOLS.items():
        for who in dict.fromkeys(w for (_, w) in pooled):
            keys = [(p, who) for p in parts]
            if not all(k in pooled for k in keys):
                continue
            first = reports[keys[0]]
            s = summarize([x for k in keys for x in pooled[k]], first["settings"]["threshold"],
                          mask_cover=first["settings"]["mask_cover"]).as_dict()
            s["target"] = first["target"]
            rows.append(row(pool, who, s, sum(reports[k]["seconds"] for k in keys),
                            sum(reports[k]["pipeline_seconds"] for k in keys)))
            sizes.append([pool, who] + [f"{b['objects']}: {pct(b['recall'])} / {pct(b['masked_recall'])}"
                                        for b in s["recall_by_size"].values()])
    main_table = c.table(HEADERS + ["photos/s vs reference"], with_speed_ratios(rows))
    size_table = c.table(["set", "who", "< 16 px", "16–32 px", "32–96 px", "≥ 96 px"], sizes)
    print("\n" + main_table + "\n\nobjects: recall / masked recall, by size (sqrt of box area)\n" + size_table)
    for n in notes:
        print("note:", n)
    if not args.no_append and rows:
        any_report = next(iter(reports.values()))
        st = any_report["settings"]
        p = settings.profiles["default"]
        extra = {
            "profile": f"default: face threshold {p.detect.face_threshold}, plate threshold "
                       f"{p.detect.plate_threshold}, tiling {p.detect.tiling} (tile {p.detect.tile_size}, "
                       f"upscale ≤ {p.detect.upscale} to {p.detect.upscale_to}), verify {p.verify}, "
                       f"face mask {p.mask.face_shape} +{p.mask.face_margin}, plate mask "
                       f"{p.mask.plate_shape} +{p.mask.plate_margin}",
            "matching": f"IoU ≥ {st['iou']}, greedy by score; masked = final mask covers ≥ "
                        f"{100 * st['mask_cover']:.0f} % of the labelled box; AP: {st['ap']}, "
                        f"scores down to {st['ap_threshold']}",
            "images per set": "all" if args.limit is None else f"first {args.limit} (trial run)",
            "plate thresholds": ", ".join(f"{m} {model_settings[m].profile.detect.plate_threshold}"
                                          for m in plate_models) + " (each model's calibrated one)",
            "s, pipeline s": "s: the whole evaluation (with the second, low-threshold run AP needs); "
                             "pipeline s: what the photo pipeline spends, decode + detect + mask + "
                             "verify per image (deface: its run, decode + detect); photos/s: "
                             "images / pipeline s, and as a multiple of the set's reference "
                             "(deface for faces, platedet for plates) in the same run",
            "over-mask": "mean share of the image masked farther than one box size from every "
                         "labelled object (false masks; unlabelled real objects count too)",
        }
        if args.face_variants:
            extra["face variants"] = "; ".join(
                f"anond ({e.split(':', 1)[0].strip()}): the default with {e.split(':', 1)[1].strip()}"
                for e in args.face_variants.split(";") if e.strip())
        if not args.no_deface:
            extra["deface"] = (f"1.5.0, CenterFace at native resolution, threshold {DEFACE_THRESHOLD}, "
                               f"mask = ellipse in the box grown by {DEFACE_MASK_SCALE - 1:.0%} per side")
        body = (c.header("Accuracy on the labelled sets", c.command_line(), settings, extra,
                         load_before=load_before)
                + "\n" + main_table + "\n\nObjects: recall / masked recall, by size (sqrt of box area):\n\n"
                + size_table + "\n" + "".join(f"\n- note: {n}" for n in notes) + "\n")
        c.append(body)
    return 0


HEADERS = ["set", "who", "target", "images", "objects", "precision", "recall", "F1", "AP@0.5",
           "AP@[.5:.95]", "FP/image", "masked recall", "bar", "over-mask", "s", "pipeline s",
           "photos/s"]

if __name__ == "__main__":
    raise SystemExit(main())
