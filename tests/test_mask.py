"""Masking: geometry shared with coverage_mask, modes, borders, and masks that stay masked."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from anond import mask
from anond.config import DetectSettings, MaskSettings
from anond.types import Detections, Target

FACE, PLATE, MANUAL = int(Target.FACE), int(Target.PLATE), int(Target.MANUAL)


def noise_image(h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def dets(boxes, classes):
    return Detections(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32), classes)


@pytest.mark.parametrize("mode", ["blur", "pixelate", "solid"])
@pytest.mark.parametrize("shape", ["ellipse", "box"])
def test_apply_changes_exactly_what_coverage_mask_says(mode, shape):
    image = noise_image()
    settings = MaskSettings(mode=mode, face_shape=shape, plate_shape=shape, solid_color=(1, 2, 3))
    found = dets([[20, 30, 60, 80], [100, 10, 150, 40], [-20, 90, 30, 150]], [FACE, PLATE, FACE])
    covered = mask.coverage_mask(image.shape[:2], found, settings)
    out = mask.apply(image.copy(), found, settings)
    changed = (out != image).any(-1)
    assert not (changed & ~covered).any(), "pixels outside the coverage mask changed"
    # On random noise every covered pixel is changed by any mode (a few may match by chance).
    assert changed[covered].mean() > 0.97


def test_apply_works_in_place():
    image = noise_image()
    out = mask.apply(image, dets([[10, 10, 50, 50]], [FACE]), MaskSettings(mode="solid"))
    assert out is image and (image[30, 30] == 0).all()


def test_margin_grows_the_box_by_a_fraction_of_its_size_on_every_side():
    settings = MaskSettings(face_shape="box", plate_shape="box", face_margin=0.25, plate_margin=0.1)
    face = mask.coverage_mask((200, 200), dets([[80, 80, 120, 120]], [FACE]), settings)
    ys, xs = np.nonzero(face)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (70, 130, 70, 130)
    plate = mask.coverage_mask((200, 200), dets([[50, 100, 150, 120]], [PLATE]), settings)
    ys, xs = np.nonzero(plate)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (40, 160, 98, 122)


def test_manual_regions_get_no_margin_and_their_own_shape():
    settings = MaskSettings(face_margin=1.0, plate_margin=1.0, manual_shape="box")
    covered = mask.coverage_mask((100, 100), dets([[10, 20, 30, 50]], [MANUAL]), settings)
    assert covered.sum() == 20 * 30
    assert covered[20:50, 10:30].all()


def test_ellipse_is_inscribed_in_the_margined_box():
    settings = MaskSettings(face_shape="ellipse", face_margin=0.0)
    covered = mask.coverage_mask((200, 200), dets([[50, 60, 150, 120]], [FACE]), settings)
    area = math.pi * 50 * 30
    assert abs(covered.sum() - area) / area < 0.05
    assert covered[90, 100] and covered[90, 51] and covered[61, 100]  # centre and edge midpoints
    assert not covered[61, 51] and not covered[119, 149]  # box corners stay untouched
    ys, xs = np.nonzero(covered)
    assert xs.min() >= 50 and xs.max() < 150 and ys.min() >= 60 and ys.max() < 120


def test_boxes_partly_outside_are_clipped_and_boxes_outside_ignored():
    image = noise_image(60, 80)
    settings = MaskSettings(mode="solid", face_shape="box", face_margin=0.0)
    found = dets([[-30, -30, 20, 10], [70, 50, 200, 300], [500, 500, 600, 600], [-50, 0, -10, 10]],
                 [FACE, FACE, FACE, FACE])
    covered = mask.coverage_mask(image.shape[:2], found, settings)
    assert covered.sum() == 20 * 10 + 10 * 10
    out = mask.apply(image.copy(), found, settings)
    assert out.shape == image.shape
    assert (out[:10, :20] == 0).all() and (out[50:, 70:] == 0).all()
    for mode in ("blur", "pixelate"):  # the other modes too, on the image's edge
        mask.apply(image.copy(), found, settings.model_copy(update={"mode": mode}))


def test_degenerate_boxes_mask_nothing():
    covered = mask.coverage_mask((50, 50), dets([[10, 10, 10, 30], [20, 20, 5, 5]], [FACE, PLATE]),
                                 MaskSettings())
    assert not covered.any()


def test_solid_uses_the_configured_colour():
    image = noise_image()
    mask.apply(image, dets([[10, 10, 50, 50]], [PLATE]), MaskSettings(mode="solid", solid_color=(7, 8, 9)))
    assert tuple(image[30, 30]) == (7, 8, 9)


def test_pixelate_blocks_scale_with_the_object():
    for size in (40, 160):
        image = noise_image(400, 400)
        settings = MaskSettings(mode="pixelate", plate_shape="box", plate_margin=0.0)
        mask.apply(image, dets([[100, 100, 100 + size, 100 + size]], [PLATE]), settings)
        row = image[100 + size // 2, 100:100 + size, 0]
        runs = 1 + int((np.diff(row.astype(int)) != 0).sum())
        assert runs <= mask.PIXEL_BLOCKS + 1, f"{runs} blocks across a {size}px object"


def test_blur_leaves_no_fine_detail_at_any_size():
    for size in (30, 240):
        image = noise_image(400, 400, seed=size)
        settings = MaskSettings(mode="blur", face_shape="box", face_margin=0.0)
        mask.apply(image, dets([[80, 80, 80 + size, 80 + size]], [FACE]), settings)
        patch = image[80:80 + size, 80:80 + size].astype(np.float32)
        # The noise image has a pixel-to-pixel std of ~104; what is left is the added noise.
        detail = np.abs(np.diff(patch, axis=1)).mean()
        assert detail < 3 * mask.BLUR_NOISE_SIGMA, detail


def test_blur_is_deterministic_for_the_same_input():
    image = noise_image()
    found = dets([[20, 20, 80, 90]], [FACE])
    assert (mask.apply(image.copy(), found, MaskSettings()) == mask.apply(image.copy(), found, MaskSettings())).all()


def test_polygons_mask_their_inside_only_and_are_clipped():
    image = noise_image(100, 100)
    triangle = np.array([[10, 10], [90, 10], [10, 90]], np.float32)
    offside = np.array([[80, 80], [150, 80], [150, 150], [80, 150]], np.float32)
    covered = mask.polygons_mask(image.shape[:2], [triangle, offside])
    out = mask.apply_polygons(image.copy(), [triangle, offside], "solid", solid_color=(0, 0, 255))
    changed = (out != image).any(-1)
    assert not (changed & ~covered).any()
    assert covered[20, 20] and not covered[80, 30] and covered[95, 95]
    assert abs(covered[:80, :80].sum() - 80 * 80 / 2) < 200
    assert tuple(out[20, 20]) == (0, 0, 255)
    for mode in ("blur", "pixelate"):
        mask.apply_polygons(image.copy(), [triangle, offside], mode)


# --- masks that stay masked (real face detector) -----------------------------------------------

def unsharp(image, sigma, amount):
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return cv2.addWeighted(image, 1 + amount, blurred, -amount, 0)


def faces_near(engine, image, region, detect):
    """Face detections overlapping `region` (x0, y0, x1, y1), with the profile's threshold."""
    found = engine.detect([image], detect, ["face"])[0]
    x0, y0, x1, y1 = region
    hits = [(b, s) for b, s in zip(found.xyxy, found.score)
            if b[0] < x1 and b[2] > x0 and b[1] < y1 and b[3] > y0]
    return hits


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_masked_face_is_not_detected_even_after_sharpening(engine, astronaut, mode):
    detect = DetectSettings()  # the default profile's detector settings and threshold
    faces = engine.detect([astronaut], detect, ["face"])[0]
    assert len(faces) >= 1, "the face detector must find the astronaut before masking"
    region = tuple(faces.xyxy[0])
    masked = mask.apply(astronaut.copy(), faces, MaskSettings(mode=mode))
    assert not faces_near(engine, masked, region, detect)
    for sigma, amount in ((2, 1.5), (8, 4.0)):  # mild and aggressive sharpening
        assert not faces_near(engine, unsharp(masked, sigma, amount), region, detect), (sigma, amount)
