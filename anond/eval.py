"""`anond eval`: measure detection and masking quality on a labelled set or a video clip.

    anond eval --dataset DIR --format voc|coco|yolo|wider|openalpr --target face|plate [--json]
    anond eval --video FILE [--json]

The images go through the detection path the pipeline uses (tiling, detail pass, per-target
threshold, masking geometry, verification). Reported per target: precision, recall and F1 at
the configured threshold; AP@0.5 and AP@[.5:.95] (faster-coco-eval, COCO protocol); recall by
object size; false positives per image; masked recall. Definitions: `anond.evaluation.metrics`.
The output holds numbers only: no file name, path, box or text from the data set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .evaluation.datasets import FORMATS

    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="DIR", help="labelled image set")
    src.add_argument("--video", metavar="FILE", help="video clip: temporal metrics (no labels needed)")
    parser.add_argument("--format", choices=FORMATS, help="annotation format of --dataset")
    parser.add_argument("--target", choices=("face", "plate"), help="what the labels are")
    parser.add_argument("--labels", metavar="A,B", help="only these annotation classes (default: all)")
    parser.add_argument("--profile", default="default", help="profile whose settings are measured")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a match (default 0.5)")
    parser.add_argument("--mask-cover", type=float, default=0.8, metavar="F",
                        help="share of an object's box the mask must cover to count as masked (0.8)")
    parser.add_argument("--ap-threshold", type=float, default=None, metavar="S",
                        help="lowest score kept for AP (default 0.05)")
    parser.add_argument("--no-ap", action="store_true",
                        help="skip AP (saves the second, low-threshold detection run per image)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (frames with --video)")
    parser.add_argument("--negative", action="store_true",
                        help="--video: the clip is known to hold no face or plate: every detection "
                             "is a false positive (reports false positives per hour)")
    parser.add_argument("--attack", action="store_true",
                        help="--dataset: re-identification (faces) / reading (plates) of masked "
                             "objects, before and after a deblurring attack (the `attack` extra)")
    parser.add_argument("--attack-masks", metavar="LIST", default=None,
                        help="masks to attack, e.g. blur,blur:6,pixelate:8,gaussian:2,solid (blur or "
                             "pixelate alone: the profile's strength, size rule included; default: "
                             "the profile's blur and pixelation, weaker ones, a sigma 2 Gaussian, solid)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                        help="progress bar on stderr (auto: when it is a terminal)")


def main(args: argparse.Namespace) -> int:
    from .config import load_settings

    settings = load_settings(args.config)
    if args.profile not in settings.profiles:
        raise ConfigError(f"no profile named {args.profile!r}")
    if not 0 < args.mask_cover <= 1 or not 0 < args.iou < 1:
        raise ConfigError("--mask-cover must be in (0, 1] and --iou in (0, 1)")
    if args.ap_threshold is not None and not 0 < args.ap_threshold <= 1:
        raise ConfigError("--ap-threshold must be in (0, 1]")
    show = {"auto": None, "on": True, "off": False}[args.progress]
    if args.video:
        from .evaluation.video import evaluate_video, format_video

        result = evaluate_video(args.video, settings, args.profile, negative=args.negative,
                                mask_cover=args.mask_cover, max_frames=args.limit,
                                show_progress=show)
        print(json.dumps(result, indent=2) if args.json else format_video(result))
        return 0
    if not args.format or not args.target:
        raise ConfigError("--dataset needs --format and --target")
    if args.attack:
        result = attack_dataset(args, settings)
        print(json.dumps(result, indent=2) if args.json else result["table"])
        return 0
    report = evaluate_dataset(
        args.dataset, args.format, args.target, settings, profile=args.profile,
        labels=args.labels.split(",") if args.labels else None, iou=args.iou,
        mask_cover=args.mask_cover, ap_threshold=args.ap_threshold, limit=args.limit,
        show_progress=show, ap=not args.no_ap)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def attack_masks(spec: str | None, profile) -> list:
    """The masks `--attack` measures (anond.evaluation.attack.Mask)."""
    from .evaluation.attack import Mask

    m = profile.mask
    if spec is None:  # the profile's own blur and pixelation, twice as fine, and the references
        spec = (f"blur,blur:{2 * m.blur_cells:g},pixelate,pixelate:{2 * m.pixel_blocks:g},"
                "gaussian:2,solid")
    masks = []
    for item in spec.split(","):
        mode, _, value = item.strip().partition(":")
        if mode not in ("blur", "pixelate", "gaussian", "solid"):
            raise ConfigError(f"--attack-masks: unknown mode {mode!r}")
        if not value and mode in ("blur", "pixelate"):  # the profile's strength (size rule too)
            masks.append(Mask.default(mode, m))
            continue
        try:
            masks.append(Mask(mode, float(value) if value else 0.0))
        except ValueError:
            raise ConfigError(f"--attack-masks: {item!r} is not MODE[:NUMBER]") from None
    return masks


def attack_dataset(args, settings) -> dict:
    """`anond eval --dataset ... --attack`: rates only (see anond.evaluation.attack)."""
    from .evaluation import attack
    from .evaluation.datasets import read_dataset, read_openalpr_texts

    profile = settings.profiles[args.profile]
    samples = read_dataset(args.dataset, args.format, args.labels.split(",") if args.labels else None)
    samples = samples[:args.limit]
    masks = attack_masks(args.attack_masks, profile)
    margin = profile.mask.margin(args.target)
    try:
        if args.target == "face":
            result = attack.run_faces(samples, masks, margin)
        else:
            if args.format != "openalpr":
                raise ConfigError("--attack on plates needs plate texts: --format openalpr")
            from .models import verified_model

            reader = attack.PlateReader(verified_model("ppocr-v4-rec", settings.models.dir,
                                                       settings.models.manifest).path)
            result = attack.run_plates(samples, read_openalpr_texts(samples), masks, margin, reader)
    except attack.AttackToolsMissing as exc:
        raise ConfigError(str(exc)) from None
    result["table"] = attack.format_rows(result, args.target)
    return result


def evaluate_dataset(dataset, fmt: str, target: str, settings, *, profile: str = "default",
                     labels=None, iou: float = 0.5, mask_cover: float = 0.8,
                     ap_threshold: float | None = None, limit: int | None = None,
                     show_progress: bool | None = None, engine=None, ap: bool = True) -> dict:
    """Everything `anond eval --dataset` reports, as a JSON-ready dict."""
    from .evaluation.datasets import read_dataset

    samples = read_dataset(dataset, fmt, labels)[:limit]
    report = evaluate_samples(samples, target, settings, profile=profile, iou=iou,
                              mask_cover=mask_cover, ap_threshold=ap_threshold,
                              show_progress=show_progress, engine=engine, ap=ap)
    return {"format": fmt, **report}


def evaluate_samples(samples, target: str, settings, *, profile: str = "default", iou: float = 0.5,
                     mask_cover: float = 0.8, ap_threshold: float | None = None,
                     show_progress: bool | None = None, engine=None,
                     results_out: list | None = None, ap: bool = True) -> dict:
    """`evaluate_dataset` on samples already read; `results_out` receives the per-image
    results (so several sets can be pooled with `metrics.summarize`)."""
    from .detect.engine import Engine
    from .evaluation import runner
    from .evaluation.metrics import summarize

    prof = settings.profiles[profile]
    engine = engine or Engine.load(settings, targets=[target])
    ap_threshold = runner.DEFAULT_AP_THRESHOLD if ap_threshold is None else ap_threshold
    started = time.monotonic()
    results = runner.evaluate(samples, engine, prof, target, ap_threshold=ap_threshold,
                              image_settings=settings.image, show_progress=show_progress, ap=ap)
    seconds = time.monotonic() - started
    if results_out is not None:
        results_out.extend(results)
    summary = summarize(results, prof.detect.threshold(target), iou=iou, mask_cover=mask_cover,
                        ap=ap)
    report = {"target": target, **summary.as_dict()}
    report["settings"].update({
        "profile": profile, "ap_threshold": min(ap_threshold, prof.detect.threshold(target)),
        "verify": prof.verify, "tiling": prof.detect.tiling,
        "mask_margin": prof.mask.margin(target),
        "mask_shape": prof.mask.shape(target),
    })
    from . import __version__

    report["anond_version"] = __version__
    model = next(m for m in engine.models if m.task == target)
    report["model"] = {"name": model.name, "sha256": model.sha256, "provider": model.provider}
    report["seconds"] = round(seconds, 2)
    # What the photo pipeline spent (decode, detect, mask, verify), without the scoring runs.
    report["pipeline_seconds"] = round(sum(r.seconds or 0.0 for r in results), 2)
    report["images_per_s"] = round(len(results) / seconds, 2) if seconds > 0 else None
    return report


def _pct(v) -> str:
    return "  n/a" if v is None else f"{100 * v:5.1f}%"


def format_report(r: dict) -> str:
    """The human-readable table."""
    s = r["settings"]
    lines = [
        f"anond eval: {r['target']} ({r['format']}), model {r['model']['name']} "
        f"[{r['model']['provider']}], threshold {s['threshold']}, IoU {s['iou']}",
        f"  images {r['images']}  objects {r['objects']}  ignored {r['ignored_objects']}  "
        f"detections {r['detections']}  ({r['images_per_s']} images/s)",
        "",
        f"  precision      {_pct(r['precision'])}   (TP {r['tp']}, FP {r['fp']})",
        f"  recall         {_pct(r['recall'])}   (FN {r['fn']})",
        f"  F1             {_pct(r['f1'])}",
        f"  AP@0.5         {_pct(r['ap50'])}",
        f"  AP@[.5:.95]    {_pct(r['ap50_95'])}",
        f"  FP per image   {r['fp_per_image']:6.3f}",
        f"  masked recall  {_pct(r['masked_recall'])}   (mask covers >= {100 * s['mask_cover']:.0f}% "
        f"of the object's box{', after verification' if s.get('verify') else ''})",
        f"  over-mask      {_pct(r.get('over_mask'))}   (share of the image masked farther than "
        f"one box size from every labelled object)",
        "",
        "  size (sqrt area)  objects  recall  masked",
    ]
    for name, b in r["recall_by_size"].items():
        lines.append(f"  {name + ' px':<17} {b['objects']:>7}  {_pct(b['recall'])}  {_pct(b['masked_recall'])}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from .cli import main as cli_main

    sys.exit(cli_main(["eval", *sys.argv[1:]]))
