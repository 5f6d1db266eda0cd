"""Detectors and Engine on real models and real photos (no evaluation data needed).

No Python package ships a photo of a car, so plate detection on real photos is checked by the
data-marked tests (here and in test_accuracy_data.py) on the OpenALPR sets.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anond.config import DetectSettings, load_settings
from anond.detect.engine import Engine
from anond.detect.tiling import plan, starts
from anond.errors import ProviderUnavailable
from anond.types import Target

ASTRONAUT_FACE = np.array([176, 55, 274, 180], np.float32)  # measured by hand on the 512x512 photo
FACE_MODELS = ["centerface", "retinaface-mnet025", "centerface-int8"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def engine_of(settings, face_model: str) -> Engine:
    """An engine for faces alone, with `face_model` as the photo face model."""
    s = settings.model_copy(update={"models": settings.models.model_copy(update={"face": face_model})})
    return Engine.load(s, ["face"])


@pytest.fixture(scope="module", params=FACE_MODELS)
def face_engine(request, settings):
    return engine_of(settings, request.param)


def test_each_face_model_finds_the_astronauts_face(face_engine, astronaut):
    found = face_engine.detect([astronaut], DetectSettings(), ["face"])[0]
    assert len(found) == 1, found.xyxy
    assert iou(found.xyxy[0], ASTRONAUT_FACE) > 0.6
    assert found.cls[0] == Target.FACE and 0 < found.score[0] <= 1


def test_the_int8_centerface_is_shipped_and_finds_what_the_float_one_finds(settings, astronaut):
    """centerface-int8 (training/faces/quantize.py): the project's file, packaged beside the
    manifest, sha256 as stated, MIT; on real faces at three sizes (the astronaut whole, shrunk
    to a 256 px photo, her head 20 px wide on a large canvas, searched in tiles) it finds the
    float model's boxes at about the float model's scores."""
    import hashlib

    from anond import models

    spec = models.load_manifest()["centerface-int8"]
    assert spec.family == "centerface" and spec.shipped and not spec.optional
    assert spec.licence.startswith("MIT")
    data = (Path(__file__).resolve().parents[1] / "models" / spec.file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == spec.expected_source_sha256
    assert spec.path.read_bytes() == data and len(data) <= 10 * 1024 * 1024

    float_engine, int8_engine = engine_of(settings, "centerface"), engine_of(settings, "centerface-int8")
    scenes = [astronaut, cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA),
              _tiny_face_scene(astronaut, 20)[0]]
    for scene in scenes:
        ref = float_engine.detect([scene], DetectSettings(), ["face"])[0]
        got = int8_engine.detect([scene], DetectSettings(), ["face"])[0]
        assert len(ref) == 1 and len(got) == 1, (ref.xyxy, got.xyxy)
        assert iou(ref.xyxy[0], got.xyxy[0]) > 0.8
        assert abs(float(ref.score[0]) - float(got.score[0])) < 0.1


def test_boxes_are_in_input_pixels_for_any_size(face_engine, astronaut):
    """A non-/32, non-square, enlarged copy gives the same face, scaled."""
    big = cv2.resize(astronaut, (1000, 777))
    found = face_engine.detect([big], DetectSettings(tiling=False), ["face"])[0]
    expected = ASTRONAUT_FACE * np.array([1000 / 512, 777 / 512] * 2, np.float32)
    best = found.xyxy[np.argmax(found.score)]
    assert iou(best, expected) > 0.6


def test_batch_gives_the_same_boxes_as_one_by_one(face_engine, astronaut):
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    detect = DetectSettings()
    together = face_engine.detect([astronaut, flipped], detect, ["face"])
    alone = [face_engine.detect([img], detect, ["face"])[0] for img in (astronaut, flipped)]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.5)
    assert iou(together[1].xyxy[0], np.array([512 - 274, 55, 512 - 176, 180], np.float32)) > 0.6


def _tiny_face_scene(astronaut: np.ndarray, face_px: int, size=(1080, 1920)) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's head shrunk so the face is `face_px` wide, on a large grey canvas."""
    x0, y0, x1, y1 = 146, 20, 304, 215  # head with some context around ASTRONAUT_FACE
    f = face_px / (ASTRONAUT_FACE[2] - ASTRONAUT_FACE[0])
    head = cv2.resize(astronaut[y0:y1, x0:x1], None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    canvas = rng.normal(128, 6, (*size, 3)).clip(0, 255).astype(np.uint8)
    px, py = 1300, 700
    canvas[py : py + head.shape[0], px : px + head.shape[1]] = head
    face = (ASTRONAUT_FACE - [x0, y0, x0, y0]) * f + [px, py, px, py]
    return canvas, face.astype(np.float32)


def test_tiny_face_in_a_large_frame_needs_tiling(engine, astronaut):
    """A 16 px face in a frame twice `max_input_side`: lost when the frame is scaled down
    (8 px), found in the native-resolution tiles."""
    canvas, face = _tiny_face_scene(astronaut, 16)

    def hits(detect):
        found = engine.detect([canvas], detect, ["face"])[0]
        return [b for b in found.xyxy if iou(b, face) > 0.3]

    assert hits(DetectSettings(tiling=False, max_input_side=960)) == []
    assert len(hits(DetectSettings(tiling=True, max_input_side=960))) == 1


def test_tiles_cover_the_whole_image_with_overlap():
    detect = DetectSettings(tile_size=640, tile_overlap=0.2, max_input_side=1920)
    views = plan(1440, 2560, detect, None)
    full, tiles = views[0], views[1:]
    assert (full.w, full.h, full.scale) == (2560, 1440, 0.75)
    covered = np.zeros((1440, 2560), bool)
    for v in tiles:
        assert v.scale == 1.0 and v.w == 640 and v.h == 640
        covered[v.y0 : v.y0 + v.h, v.x0 : v.x0 + v.w] = True
    assert covered.all()
    assert starts(2560, 640, 0.2) == [0, 480, 960, 1440, 1920]
    assert starts(640, 640, 0.2) == [0] and starts(700, 640, 0.2) == [0, 60]
    assert plan(1440, 2560, DetectSettings(tiling=False), None) == [full]


def test_small_images_get_an_enlarged_detail_pass():
    detect = DetectSettings(upscale=2.0, upscale_to=1280)
    dynamic = plan(300, 400, detect, None)  # taken whole, enlarged
    assert [(v.w, v.h, v.scale) for v in dynamic] == [(400, 300, 1.0), (400, 300, 2.0)]
    fixed = plan(300, 400, detect, (640, 640))  # 800x600 enlarged: 640 px tiles
    assert fixed[0].scale == 1.0 and len(fixed) == 1 + 2 and {v.scale for v in fixed[1:]} == {2.0}
    assert plan(300, 400, DetectSettings(upscale=1.0), None) == dynamic[:1]


def test_provider_reported_is_the_active_one(engine):
    import onnxruntime as ort

    assert engine.provider in ort.get_available_providers()
    for info, detector in zip(engine.models, engine.detectors.values()):
        assert info.provider == detector.session.get_providers()[0]
        assert len(info.sha256) == 64 and info.licence
    assert engine.provider == engine.models[0].provider


def test_require_gpu_refuses_to_run_without_cuda(models_dir, engine):
    if engine.provider == "CUDAExecutionProvider":
        pytest.skip("CUDA is really active on this machine")
    s = load_settings(None, models={"dir": models_dir}, runtime={"require_gpu": True})
    with pytest.raises(ProviderUnavailable, match="CUDA"):
        Engine.load(s, ["face"])


def test_warmup_runs_every_model(engine):
    engine.warmup()


def test_grey_and_bgra_inputs_are_accepted(face_engine, astronaut):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    for image in (grey, bgra):
        found = face_engine.detect([image], DetectSettings(), ["face"])[0]
        assert iou(found.xyxy[np.argmax(found.score)], ASTRONAUT_FACE) > 0.6


def test_unloaded_target_is_an_error(face_engine, astronaut):
    from anond.errors import ModelMissing

    with pytest.raises(ModelMissing):
        face_engine.detect([astronaut], DetectSettings(), ["plate"])


@pytest.mark.data
def test_plate_found_on_real_photos(settings, engine, data_dir):
    """The default plate model, at its own threshold, finds the labelled plate of real photos
    and its mask covers it (the masked-recall rule: >= 80 % of the plate's box). Not IoU with
    the box: anond-plate-db's regions follow the characters, not the plate's outline."""
    from anond.evaluation.datasets import read_openalpr
    from anond.evaluation.metrics import coverage_fractions
    from anond.mask import coverage_mask

    detect = settings.profile.detect.model_copy(update={"tiling": False})
    for region in ("openalpr_eu", "openalpr_br"):
        samples = read_openalpr(data_dir / "plates" / region)[:3]
        for sample in samples:
            image = cv2.imread(str(sample.image))
            found = engine.detect([image], detect, ["plate"])[0]
            assert (found.cls == Target.PLATE).all()
            assert max((iou(b, sample.boxes[0]) for b in found.xyxy), default=0.0) > 0.1
            cover = coverage_mask(image.shape[:2], found, settings.profile.mask)
            assert coverage_fractions(sample.boxes[:1], cover)[0] >= 0.8


def test_the_video_face_model_runs_one_thread_per_call(settings, engine):
    """Video jobs run several detector calls at once: the session of the video-only face model
    takes video.intra_op_threads (1) threads per call; the photo models keep the runtime's."""
    photo = engine.detectors["face"].session.get_session_options()
    video = engine.for_video().detectors["face"].session.get_session_options()
    assert engine.for_video() is not engine  # models.video_face is a model of its own
    assert video.intra_op_num_threads == settings.video.intra_op_threads == 1
    assert photo.intra_op_num_threads == settings.runtime.intra_op_threads


def test_segmentation_regions_become_boxes_scored_by_their_mean_probability():
    """The DB-family decoder (anond-plate-db): each connected region above the binarisation
    level is one box (pixel edges), scored by the mean probability over it; the threshold
    applies to that score, regions in the padding past the view are cut, specks are dropped."""
    from anond.detect.dbnet import BINARY, regions

    prob = np.zeros((64, 96), np.float32)
    prob[10:20, 5:45] = 0.9            # a confident plate: 40 x 10
    prob[12, 30] = BINARY              # on the binarisation level: a hole, not part of the region
    prob[30:34, 60:80] = 0.4           # a doubtful one
    prob[50, 50] = 0.99                # one pixel: noise
    prob[40:48, 90:96] = 0.95          # in the padding right of an 88-pixel-wide view
    xyxy, score = regions(prob, 0.3, height=64, width=88)
    order = np.argsort(xyxy[:, 0])
    assert xyxy[order].tolist() == [[5, 10, 45, 20], [60, 30, 80, 34]]
    assert np.allclose(score[order], [0.9, 0.4])
    confident, s = regions(prob, 0.5, height=64, width=88)
    assert confident.tolist() == [[5, 10, 45, 20]] and np.allclose(s, [0.9])
    empty, _ = regions(np.zeros((32, 32), np.float32), 0.1)
    assert empty.shape == (0, 4)


def test_the_second_face_model_supports_the_face_and_not_the_background(engine, astronaut):
    """anond/detect/support.py: the photo face model looks again, in a crop around each box, at what
    the video face model found weakly: it sees the astronaut's face, not a patch of the
    flag or the shuttle behind her (as it would a tree or a lamp a video model took for one)."""
    from anond.detect.support import Support

    second = engine.for_video().second["face"]
    assert second is engine.detectors["face"]  # the photo model (CenterFace)
    boxes = np.array([ASTRONAUT_FACE, [20, 20, 110, 130], [380, 30, 470, 150]], np.float32)
    assert Support(second, 0.1).supported([astronaut], [boxes])[0].tolist() == [True, False, False]
    assert Support(second, 0.1).supported([astronaut], [np.zeros((0, 4), np.float32)])[0].tolist() == []


def test_a_second_look_canvas_shows_the_region_at_its_canonical_size_in_the_middle():
    """rescale.canvases: each region centred on a CANVAS_H x CANVAS_W view, scaled so that the
    square root of its area is `size` px; its place there is returned; past the image's edges
    the view repeats the edge pixels (no black frame a network could read as a border)."""
    from anond.detect.rescale import CANVAS_H, CANVAS_W, canvases, mean_inside

    image = np.full((300, 400, 3), 50, np.uint8)
    image[100:140, 100:260] = 250  # a 160 x 40 bright rectangle: sqrt(area) 80 px
    views, inside = canvases(image, np.array([[100, 100, 260, 140], [0, 0, 40, 10]], np.float32), 40)
    assert views.shape == (2, CANVAS_H, CANVAS_W, 3)
    x0, y0, x1, y1 = inside[0]
    assert np.sqrt((x1 - x0) * (y1 - y0)) == pytest.approx(40, abs=1)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((CANVAS_W / 2, CANVAS_H / 2), abs=1)
    bright = views[0, :, :, 0] > 150
    assert mean_inside(bright.astype(np.float32), inside[0] + np.float32([2, 2, -2, -2])) == 1.0
    assert not bright[:, : int(x0) - 2].any() and not bright[:, int(x1) + 2:].any()
    assert views[1].min() == 50 and views[1].max() <= 250  # the corner region: edges repeated
    assert mean_inside(np.ones((4, 4), np.float32), np.float32([10, 10, 20, 20])) == 0.0


def test_a_second_look_scores_the_mean_of_both_looks_and_keeps_by_the_threshold():
    """rescale.SecondLook with a stand-in network that calls every pixel 0.2: a region first
    scored 0.9 ends at 0.55; candidates need min(threshold, floor) from the first look."""
    from anond.detect.rescale import SecondLook

    class Flat:
        spec, sha256, provider = None, "", "CPUExecutionProvider"

        def probability_maps(self, views):
            return np.full((len(views), *views[0].shape[:2]), 0.2, np.float32)

    look = SecondLook(Flat(), 48, floor=0.4)
    image = np.zeros((100, 200, 3), np.uint8)
    xyxy = np.array([[10, 10, 60, 30], [100, 40, 150, 60]], np.float32)
    keep, score = look.review(image, xyxy, np.array([0.9, 0.5], np.float32), threshold=0.5)
    assert score == pytest.approx([0.55, 0.35]) and keep.tolist() == [True, False]
    assert look.first_threshold(0.625) == 0.4 and look.first_threshold(0.3) == 0.3


def test_a_weak_box_only_the_whole_image_view_finds_needs_a_detail_view_to_see_it():
    """`_supported`: detail-view boxes count from the threshold; a whole-view box from
    `confident`, or from the threshold when a detail-view box (down to the support score)
    overlaps it; boxes under the threshold only support."""
    from anond.detect.engine import _supported

    xyxy = np.array([
        [10, 10, 30, 30],     # whole view, confident
        [100, 100, 120, 120],  # whole view, weak, a detail box at 0.12 overlaps it
        [200, 200, 220, 220],  # whole view, weak, nothing in the detail views
        [101, 101, 121, 121],  # detail view, 0.12: support only
        [300, 300, 320, 320],  # detail view, 0.25: a detection
    ], np.float32)
    score = np.array([0.8, 0.3, 0.3, 0.12, 0.25], np.float32)
    whole = np.array([True, True, True, False, False])
    keep = _supported(xyxy, score, whole, 0.2, 0.5, 0.1)
    assert keep.tolist() == [True, True, False, False, True]
    # Without any detail box at the support score, weak whole-view boxes go.
    assert _supported(xyxy[:3], score[:3], whole[:3], 0.2, 0.5, 0.1).tolist() == [True, False, False]


def test_the_view_support_rule_keeps_a_real_face_and_counts_what_it_judged(face_engine, astronaut):
    """A small photo is searched whole and enlarged; the astronaut's face, seen in both, is
    kept with the rule on, as with it off; the job's rules count the weak whole-view boxes
    kept and dropped (counts only)."""
    on = DetectSettings(face_view_support=0.1)
    off = DetectSettings()
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    assert len(plan(256, 256, on, None)) == 2
    rules: dict = {}
    with_rule = face_engine.detect([small], on, ["face"], rules=rules)[0]
    without = face_engine.detect([small], off, ["face"])[0]
    assert with_rule.counts() == {"face": 1}
    assert len(without) >= len(with_rule)
    assert set(rules) <= {"face_view_support"}
    if rules:
        assert set(rules["face_view_support"]) == {"kept", "dropped"}
    assert DetectSettings().view_support("plate") is None and off.view_support("face") is None


def test_a_local_model_searches_again_only_around_what_changed(face_engine, astronaut):
    """`recent`: (a function giving) what changed since the last search. A local face model (convolutions only)
    searches only around it, whole view and detail views alike: nothing changed, nothing run;
    a change around the face, the face found there, as by a whole search."""
    detect = DetectSettings()
    assert face_engine.detectors["face"].local
    whole = face_engine.detect([astronaut], detect, ["face"])[0]
    assert whole.counts() == {"face": 1}
    nothing = face_engine.detect([astronaut], detect, ["face"], recent=[lambda: np.zeros((0, 4), np.float32)])[0]
    assert len(nothing) == 0
    x0, y0, x1, y1 = whole.xyxy[0]
    near = face_engine.detect([astronaut], detect, ["face"],
                              recent=[lambda: np.array([[x0, y0, x1, y1]], np.float32)])[0]
    assert near.counts() == {"face": 1}
    assert float(np.abs(near.xyxy[0] - whole.xyxy[0]).max()) < 0.1 * (x1 - x0)
