"""Photo stages: decode ▶ detect ▶ mask ▶ verify ▶ encode, each timed in the report."""

from __future__ import annotations

from pathlib import Path

from .. import mask
from ..config import Profile, Settings
from ..detect.engine import ViewMemo
from ..media import image as image_io
from ..regions import resolve as resolve_regions
from ..report import JobReport
from ..types import DetectorEngine, Target
from ..verify import verify


def process_image(
    src: Path,
    out: Path,
    *,
    settings: Settings,
    engine: DetectorEngine,
    profile: Profile,
    report: JobReport,
    regions_path: Path | None = None,
    regions_policy: str = "optional",
    observer=None,
) -> None:
    """Anonymize one photo from `src` into `out` (a temporary path), filling `report`."""
    with report.stage("decode"):
        decoded = image_io.read(src, settings.image)
    image, meta = decoded.bgr, decoded.meta
    facts = report.media
    facts.width, facts.height, facts.frames = meta.width, meta.height, 1
    facts.format, facts.bit_depth, facts.has_alpha = meta.format, meta.bit_depth, meta.has_alpha

    regions, status = resolve_regions(src, regions_path=regions_path, policy=regions_policy,
                                      width=meta.width, height=meta.height, video=False)
    report.manual_regions.sidecar = status

    memo = ViewMemo()  # what each view found, so verification runs only views masking changed
    with report.stage("detect"):
        found = engine.detect([image], profile.detect, profile.targets, memos=[memo],
                              rules=report.rules)[0]
    found, _ = regions.filter_detections(found)  # the operator's exclude regions
    report.detections = found.counts()
    if observer is not None:
        observer.frame_boxes(0, found.xyxy, found)

    with report.stage("mask"):
        manual = regions.masks_at()
        covered = mask.mask_frame(image, found, manual, profile.mask).coverage
    report.masked = found.counts()
    if manual:
        report.masked[Target.MANUAL.label] = len(manual)

    # Nothing masked: the picture is the one the first pass searched, at these thresholds and
    # with these exclusions, so verifying would find the same nothing at the cost of a pass.
    if profile.verify and (len(found) or manual):
        keep = (lambda d: regions.filter_detections(d, count=False)[0]) if regions.has_excludes else None
        with report.stage("verify"):
            checked = verify(image, engine, profile, keep=keep, covered=covered, memo=memo)
        report.verify_fixes, report.verify_on_mask = checked.fixes, checked.on_mask
        JobReport.add_counts(report.masked, checked.masked)
    report.manual_regions.applied = regions.applied_count
    report.manual_regions.excluded = regions.excluded

    with report.stage("encode"):
        # `covered` (every masked pixel) matters for 16-bit output: the rest keeps 16 bits.
        image_io.write(out, image, decoded, settings.image, changed=covered)
