"""Photo stages: decode ▶ detect ▶ mask ▶ verify ▶ encode, each timed in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import mask
from ..config import Profile, Settings
from ..media import image as image_io
from ..regions import resolve as resolve_regions
from ..report import JobReport
from ..types import Detections, Target
from ..verify import verify


def process_image(
    src: Path,
    out: Path,
    *,
    settings: Settings,
    engine,
    profile: Profile,
    report: JobReport,
    regions_path: Path | None = None,
    regions_policy: str = "optional",
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

    with report.stage("detect"):
        found = engine.detect([image], profile.detect, profile.targets)[0]
    report.detections = found.counts()
    found, _ = regions.filter_detections(found)  # the operator's exclude regions

    with report.stage("mask"):
        mask.apply(image, found, profile.mask)
        manual = regions.masks_at()
        for polygon, mode in manual:
            mask.apply_polygons(image, [polygon], mode or profile.mask.mode,
                                solid_color=profile.mask.solid_color)
    report.masked = found.counts()
    if manual:
        report.masked[Target.MANUAL.label] = len(manual)

    residuals: list[Detections] = []
    if profile.verify:
        excluded = regions.excluded
        keep = (lambda d: regions.filter_detections(d)[0]) if regions.has_excludes else None
        with report.stage("verify"):
            report.verify_fixes = verify(image, engine, profile, keep=keep, found=residuals)
        regions.excluded = excluded  # a face excluded once is not counted again by verify
        for residual in residuals:
            JobReport.add_counts(report.masked, residual.counts())
    report.manual_regions.applied = regions.applied_count
    report.manual_regions.excluded = regions.excluded

    with report.stage("encode"):
        changed = None
        if decoded.deep is not None:  # 16-bit: say exactly which pixels were masked
            changed = _masked_pixels(image.shape[:2], Detections.concat([found, *residuals]),
                                     [p for p, _ in manual], profile)
        image_io.write(out, image, decoded, settings.image, changed=changed)


def _masked_pixels(shape_hw, detections: Detections, polygons, profile: Profile) -> np.ndarray:
    return mask.coverage_mask(shape_hw, detections, profile.mask) | mask.polygons_mask(shape_hw, polygons)
