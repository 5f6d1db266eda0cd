"""Run the pipeline's detection path over a labelled set and collect per-image results.

Per image, for one target:
1. decode upright with the pipeline's reader (`anond.media.image`);
2. `Engine.detect` with the profile's `DetectSettings` (tiling, detail pass, merging of the
   views' boxes): the detections the pipeline masks, scored for precision/recall/F1;
   for AP a second run with that target's threshold lowered to `ap_threshold`, so AP sees the
   whole score range (a separate run: the engine merges suppressed boxes into the kept ones,
   so extra low-score boxes may change the boxes above the threshold);
3. the final mask is what the pipeline draws for that target: the detections at the configured
   threshold plus, when the profile verifies, the residuals found by re-detecting on the
   masked image (`anond.verify.verify`, as `anond.pipeline.image` calls it, updating the
   covered pixels), with the mask geometry of `anond.mask.coverage_mask`. Only the evaluated
   target's model runs: a plate mask that happens to cover a face is not credited to faces;
4. coverage of each ground-truth box by that mask.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

import numpy as np

from ..config import ImageSettings, Profile
from ..detect.engine import ViewMemo
from ..types import Detections
from .datasets import Sample
from .metrics import ImageResult, coverage_fractions, over_mask_fraction

DEFAULT_AP_THRESHOLD = 0.05


def progress(items: Iterable, total: int, enabled: bool | None = None, desc: str = "images"):
    """A tqdm bar on stderr when it is a terminal (or `enabled`), the plain iterable otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="img", file=sys.stderr, leave=False)


def final_coverage(image: np.ndarray, found: Detections, engine, profile: Profile,
                   target: str, memo=None) -> np.ndarray:
    """Bool (H, W): the pixels the photo pipeline masks for `target`: `found` plus what
    `anond.verify.verify` still finds on the masked result (called as `anond.pipeline.image`
    calls it: detections lying on an existing mask are not masked again)."""
    from .. import mask

    covered = mask.coverage_mask(image.shape[:2], found, profile.mask)
    if profile.verify and len(found):  # nothing masked: nothing new to find (as the pipeline)
        from ..verify import verify

        masked = mask.apply(image.copy(), found, profile.mask)
        verify(masked, engine, profile.model_copy(update={"targets": [target]}), covered=covered,
               memo=memo)
    return covered


def evaluate(samples: list[Sample], engine, profile: Profile, target: str, *,
             ap_threshold: float = DEFAULT_AP_THRESHOLD, image_settings: ImageSettings | None = None,
             show_progress: bool | None = None, ap: bool = True,
             on_image: Callable[[int], None] | None = None) -> list[ImageResult]:
    """Per-image ground truth, detections, mask coverage (and a low-score run when `ap`)."""
    from ..media import image as image_io

    image_settings = image_settings or ImageSettings()
    threshold = profile.detect.threshold(target)
    low = profile.detect.model_copy(update={f"{target}_threshold": min(ap_threshold, threshold)})
    results = []
    for i, sample in enumerate(progress(samples, len(samples), show_progress)):
        began = time.perf_counter()
        bgr = image_io.read(sample.image, image_settings).bgr
        memo = ViewMemo()  # as the photo pipeline: verification reruns only changed views
        found = engine.detect([bgr], profile.detect, [target], memos=[memo])[0]
        covered_by = final_coverage(bgr, found, engine, profile, target, memo)
        seconds = time.perf_counter() - began
        ap_run = engine.detect([bgr], low, [target])[0] if ap else found
        results.append(ImageResult(
            gt=sample.boxes, gt_ignore=sample.ignore, det=found.xyxy, score=found.score,
            covered=coverage_fractions(sample.boxes, covered_by),
            ap_det=ap_run.xyxy, ap_score=ap_run.score,
            over_mask=over_mask_fraction(sample.boxes, covered_by), seconds=seconds))
        if on_image is not None:
            on_image(i)
    return results
