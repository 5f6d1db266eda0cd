"""Real face and plate photos through the pipeline: only mask regions change, nothing is left."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anond import mask
from anond.config import ImageSettings
from anond.media import image as image_io
from anond.pipeline import process_file
from anond.verify import on_mask, verify

# A fixed, small sample: every file name is taken from the data set's own sorted listing.
SAMPLE = [("faces/face_mask/images", 0), ("faces/face_mask/images", 7), ("faces/face_mask/images", 40),
          ("plates/openalpr_eu", 3), ("plates/openalpr_eu", 20), ("plates/openalpr_br", 5)]


def pick(data_dir: Path, folder: str, index: int) -> Path:
    files = sorted(p for p in (data_dir / folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files[index % len(files)]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("folder,index", SAMPLE, ids=[f"{f.split('/')[1]}-{i}" for f, i in SAMPLE])
def test_only_mask_regions_change_and_nothing_is_left(data_dir, settings, engine, tmp_path, folder, index):
    # Lossless PNG copy of the photo (outside the project), so "unchanged" can mean exactly equal.
    original = image_io.read(pick(data_dir, folder, index), ImageSettings()).bgr
    src = tmp_path / "photo.png"
    assert cv2.imwrite(str(src), original)
    profile = settings.profiles["default"]

    report = process_file(src, tmp_path / "out.png", settings=settings, engine=engine, job_id="data")
    output = cv2.imread(str(report.output_path))
    assert output.shape == original.shape

    first = engine.detect([original], profile.detect, profile.targets)[0]
    assert report.detections == first.counts()
    covered = mask.coverage_mask(original.shape[:2], first, profile.mask)
    if report.verify_fixes:  # redo the (deterministic) verification to know what it masked
        again = mask.apply(original.copy(), first, profile.mask)
        assert verify(again, engine, profile, covered=covered).fixes == report.verify_fixes
        assert np.array_equal(again, output)
    changed = (output != original).any(-1)
    assert not (changed & ~covered).any(), "pixels away from every mask region changed"
    if len(first):
        assert changed[covered].mean() > 0.5, "mask regions must really change"

    # Nothing detectable is left on unmasked pixels; what the detector still sees lies on the
    # masks themselves (blurred heads of ~10 px stay head-shaped blobs, see anond/verify.py).
    left = engine.detect([output], profile.detect, profile.targets)[0]
    outside = left.select(~on_mask(left, covered))
    assert len(outside) == 0, f"still found outside the masks: {outside.counts()}"
