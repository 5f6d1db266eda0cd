"""Verify: run the detectors again on the masked result and mask whatever they still find.

A mask that leaves a face detectable (a tilted face only half inside its ellipse, a plate
found at a second scale after the first pass) is caught here. Same targets, same thresholds
as the first pass; at most `max_rounds` rounds, each on the result of the previous one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import log, mask
from .config import Profile
from .types import Detections

MAX_ROUNDS = 2


def verify(
    image: np.ndarray,
    engine,
    profile: Profile,
    *,
    max_rounds: int = MAX_ROUNDS,
    keep: Callable[[Detections], Detections] | None = None,
    found: list[Detections] | None = None,
) -> int:
    """Re-detect on `image` (masked in place); mask residuals; return how many were fixed.

    `keep` filters residuals before masking (e.g. the operator's exclude regions); `found`,
    when given, receives the residual detections masked in each round.
    """
    fixes = 0
    for round_no in range(1, max_rounds + 1):
        residual = engine.detect([image], profile.detect, profile.targets)[0]
        if keep is not None and len(residual):
            residual = keep(residual)
        if not len(residual):
            break
        mask.apply(image, residual, profile.mask)
        fixes += len(residual)
        if found is not None:
            found.append(residual)
        log.get().debug("verify.residual", round=round_no, **residual.counts())
    return fixes
