"""Plates: the default profile masks real plates in photos and video; the project's own plate
model ships with anond (MIT) and masks them too; platedet's licence is recorded as its file says.

Runs on a fresh machine (no ../shared): the plate is a real one, a crop of a CC0 photo shipped in
tests/data (SOURCE.txt there), composed into larger scenes at several sizes. The crop's photo is
in the validation split of the training of anond-plate-mnet025 and anond-plate-db (the same
split), so neither model trained on it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from anond import models  # noqa: E402
from anond.config import load_settings  # noqa: E402
from anond.report import JobReport  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CROP = ROOT / "tests" / "data" / "plate-cc0.jpg"
PLATE_IN_CROP = (70, 50, 149, 70)  # x0, y0, x1, y1 (tests/data/SOURCE.txt)


def scene(scale: float, at: tuple[int, int], size=(960, 540), seed=3) -> tuple[np.ndarray, tuple]:
    """A textured 'street' with the car crop pasted at `at`, resized by `scale`; the plate box."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = cv2.GaussianBlur(rng.integers(30, 220, (h, w, 3)).astype(np.uint8), (0, 0), 5)
    crop = cv2.imread(str(CROP))
    crop = cv2.resize(crop, None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x, y = at
    img[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    px0, py0, px1, py1 = (np.asarray(PLATE_IN_CROP) * scale).round().astype(int)
    return img, (x + px0, y + py0, x + px1, y + py1)


def change(a: np.ndarray, b: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    return float(np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1].astype(np.int16)).mean())


OWN = "anond-plate-mnet025"  # the project's own plate models (each at its manifest threshold)
DB = "anond-plate-db"


@pytest.mark.parametrize("name", [OWN, "anond-plate-check", DB, "anond-plate-db-look"])
def test_the_project_plate_models_are_shipped_and_match_their_manifest(models_dir, name):
    """The project's own weights (the detector and its check model): in models/, packaged
    beside the manifest, sha256 as stated, MIT, installed by default."""
    spec = models.load_manifest()[name]
    assert spec.task == "plate" and spec.shipped and spec.package is None and not spec.optional
    assert spec.licence.startswith("MIT")
    data = (ROOT / "models" / spec.file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == spec.expected_source_sha256
    assert spec.path.read_bytes() == data  # anond/<file> (the packaged copy) is the same file
    assert len(data) <= 10 * 1024 * 1024
    assert models.verified_model(name, models_dir).sha256 == spec.expected_source_sha256


def test_platedet_licence_in_the_manifest_is_what_its_onnx_file_says(models_dir):
    """The opt-in platedet model's licence is read from the file itself, not guessed."""
    import onnx

    path = models_dir / "platedet-yolov8s-seg.onnx"
    if not path.is_file():
        pytest.skip("platedet-yolov8s-seg not installed (opt-in; `make test` installs it)")
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["author"] == "Ultralytics" and meta["license"].startswith("AGPL-3.0")
    assert "AGPL-3.0" in models.load_manifest()["platedet-yolov8s-seg"].licence


def test_every_default_model_is_permissively_licensed_and_platedet_is_an_opt_in():
    """What `make run` installs and the embedded defaults use (detectors, their checks and
    second looks) carries no AGPL weights; platedet is installed only when named."""
    chosen = load_settings(None).models
    manifest = models.load_manifest()
    defaults = models.in_use(chosen, manifest)
    assert {chosen.plate, chosen.video_plate} == {DB, OWN}
    assert {"anond-plate-db-look", "anond-plate-check"} <= defaults  # their second stages too
    for name in defaults:
        spec = manifest[name]
        assert not spec.optional and spec.licence.startswith(("MIT", "Apache-2.0")), name
    platedet = manifest["platedet-yolov8s-seg"]
    assert platedet.optional and "AGPL-3.0" in platedet.licence


def test_install_copies_the_shipped_model_without_a_download(tmp_path):
    default = OWN
    env = dict(os.environ, PIP_INDEX_URL="http://127.0.0.1:9/none", PIP_NO_INDEX="1")
    proc = subprocess.run([sys.executable, "-m", "anond.cli", "models", "install", "--dir",
                           str(tmp_path), default], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    record = models.read_installed(tmp_path)[default]
    assert record["source"] == "shipped with anond" and record["licence"].startswith("MIT")


@pytest.fixture(scope="module")
def plate_settings(models_dir):
    return load_settings(None, models={"dir": models_dir})


@pytest.fixture(scope="module")
def own_models(models_dir):
    """(settings, engine) per project plate model, loaded once: `own_models(name)`."""
    from anond.detect.engine import Engine

    loaded = {}

    def get(name):
        if name not in loaded:
            settings = load_settings(None, models={"dir": models_dir, "plate": name})
            loaded[name] = settings, Engine.load(settings)
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def own_settings(own_models):
    return own_models(OWN)[0]


@pytest.fixture(scope="module")
def own_engine(own_models):
    return own_models(OWN)[1]


@pytest.mark.parametrize("model,scale,at", [
    ("default", 0.5, (300, 300)),
    ("default", 1.0, (120, 80)), ("default", 2.2, (400, 120)),
    (OWN, 0.5, (300, 300)), (OWN, 1.0, (120, 80)), (OWN, 2.2, (400, 120)),
    (DB, 0.5, (300, 300)), (DB, 1.0, (120, 80)), (DB, 2.2, (400, 120))])
def test_a_real_plate_is_masked(tmp_path, plate_settings, engine, own_models, model, scale, at):
    """The default profile (faces and plates), and the same with each of the project's own
    plate models (at the threshold its manifest entry states), mask the plate at ~40, ~80 and
    ~175 px wide; a faces-only run leaves it as it was (the plate model is what masks it)."""
    from anond.pipeline.image import process_image

    if model != "default":
        plate_settings, engine = own_models(model)
    img, box = scene(scale, at)
    src = tmp_path / "car.png"
    cv2.imwrite(str(src), img)
    results = {}
    for name, targets in (("default", ["face", "plate"]), ("faces", ["face"])):
        profile = plate_settings.profile.model_copy(update={"targets": targets})
        out = tmp_path / f"{name}.png"
        report = JobReport.start("t", "image", engine=engine, profile=profile)
        process_image(src, out, settings=plate_settings, engine=engine, profile=profile, report=report)
        results[name] = (cv2.imread(str(out)), report)
    masked, report = results["default"]
    assert report.masked.get("plate", 0) >= 1
    # The plate model's second stage says what it kept and dropped (counts only).
    rule = {OWN: "plate_check"}.get(model, "plate_second_look")
    assert report.rules[rule]["kept"] >= 1 and set(report.rules[rule]) == {"kept", "dropped"}
    assert "plate_second_look" not in results["faces"][1].rules
    assert change(img, masked, box) > 15, "plate left readable"
    assert change(img, masked, (0, 0, 100, 60)) == 0  # far from the car: untouched (PNG, lossless)
    assert change(img, results["faces"][0], box) < 1


def test_process_command_masks_the_plate_with_embedded_defaults(tmp_path, models_dir):
    """What a new user runs: `anond process` with no config, on a JPEG."""
    img, box = scene(1.0, (200, 150))
    src, dst = tmp_path / "car.jpg", tmp_path / "out.jpg"
    cv2.imwrite(str(src), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    env = dict(os.environ, ANOND_MODELS__DIR=str(models_dir))
    env.pop("ANOND_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "anond.cli", "process", str(src), str(dst)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert change(cv2.imread(str(src)), cv2.imread(str(dst)), box) > 15


# -- video: plates on their own detection stride -------------------------------------------


def make_plate_clip(path: Path, n: int = 30, size=(640, 360)) -> list[tuple]:
    """The car crop drives across a textured background; the plate box per frame."""
    av = pytest.importorskip("av")
    w, h = size
    rng = np.random.default_rng(5)
    background = cv2.GaussianBlur(rng.integers(30, 220, (h, w, 3)).astype(np.uint8), (0, 0), 5)
    crop = cv2.imread(str(CROP))
    boxes = []
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=25)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.codec_context.options = {"crf": "12"}
    for i in range(n):
        img = background.copy()
        x = 20 + int((w - crop.shape[1] - 40) * i / (n - 1))
        y = 140 + int(10 * np.sin(i / 5))
        img[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
        px0, py0, px1, py1 = PLATE_IN_CROP
        boxes.append((x + px0, y + py0, x + px1, y + py1))
        for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    out.close()
    return boxes


class PlateCalls:
    """The real Engine; counts the frames the detection pass gives the plate model (that pass
    runs at the lower, track-extending threshold; verification crops run at the profile's)."""

    def __init__(self, engine, frame_hw, low_threshold):
        self.engine, self.frame_hw, self.low = engine, frame_hw, low_threshold
        self.plate_frames = 0

    def for_video(self):
        self.engine = self.engine.for_video()
        return self

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def detect(self, images, detect, targets, memos=None, rules=None):
        if "plate" in targets and detect.plate_threshold == pytest.approx(self.low):
            self.plate_frames += sum(img.shape[:2] == self.frame_hw for img in images)
        return self.engine.detect(images, detect, targets, memos, rules)


@pytest.mark.parametrize("stride", [1, 3])
def test_plates_on_their_own_stride_are_filled_by_the_tracker(tmp_path, own_settings, own_engine, stride):
    av = pytest.importorskip("av")
    from anond.pipeline.video import process_video

    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    n = 30
    boxes = make_plate_clip(src, n)
    settings = own_settings.model_copy(update={"video": own_settings.video.model_copy(
        update={"plate_detect_stride": stride})})
    low = settings.profile.detect.plate_threshold * settings.video.track.low_score_ratio
    counting = PlateCalls(own_engine, (360, 640), low)
    report = JobReport.start("t", "video", engine=own_engine, profile=settings.profile)
    process_video(src, dst, settings=settings, engine=counting, profile=settings.profile, report=report)
    assert n // stride <= counting.plate_frames <= -(-n // stride) + 1  # every stride-th (+ last)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        pairs = [(fa.to_ndarray(format="bgr24"), fb.to_ndarray(format="bgr24"))
                 for fa, fb in zip(a.decode(video=0), b.decode(video=0))]
    assert len(pairs) == n
    unmasked = [i for i, ((a, b), box) in enumerate(zip(pairs, boxes)) if change(a, b, box) < 15]
    assert not unmasked, f"plate readable on frames {unmasked}"
    assert report.parameters["video"]["plate_detect_stride"] == stride


# -- the check model: a second look at the plate detector's candidates ------------------------


def test_check_crops_are_centred_with_context_at_a_fixed_aspect():
    """Crops are cut the same way for training and in anond: the region holds the box with
    context, at the network's aspect, edges replicated past the image border."""
    from anond.detect.check import ASPECT, CONTEXT, CROP_H, CROP_W, crops, regions

    boxes = np.array([[100, 100, 200, 125],   # a wide plate
                      [50, 50, 60, 80],       # a tall box (not a plate shape)
                      [-5, -3, 30, 10]], np.float32)  # past the image's corner
    r = regions(boxes)
    rw, rh = r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
    np.testing.assert_allclose(rw / rh, ASPECT, rtol=1e-5)
    assert np.all(r[:, 0] <= boxes[:, 0]) and np.all(r[:, 2] >= boxes[:, 2])
    assert np.all(r[:, 1] <= boxes[:, 1]) and np.all(r[:, 3] >= boxes[:, 3])
    np.testing.assert_allclose((r[:, :2] + r[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)
    assert rw[0] == pytest.approx(CONTEXT * 100)
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, :, 2] = np.arange(400, dtype=np.uint8)[None, :].clip(0, 255)
    out = crops(image, boxes)
    assert out.shape == (3, CROP_H, CROP_W, 3) and out.dtype == np.uint8
    assert out[2, :, 0, 2].max() <= 1  # left of the image: its first column, replicated
    assert crops(image, np.zeros((0, 4), np.float32)).shape == (0, CROP_H, CROP_W, 3)


def facade(seed: int, size=(960, 540)) -> np.ndarray:
    """A building front: rows of framed windows, the repeated texture the plate detector alone
    takes for plates (on real photos it puts boxes of 0.8-0.9 on facades)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = np.clip(rng.integers(150, 210) + rng.integers(-10, 10, 3), 0, 255)
    for y in range(30, h - 40, 60):
        for x in range(20, w - 20, 45):
            cv2.rectangle(img, (x, y), (x + 25, y + 38), (40, 50, 60), -1)
            cv2.rectangle(img, (x, y), (x + 25, y + 38), (230, 230, 230), 2)
            cv2.line(img, (x + 12, y), (x + 12, y + 38), (230, 230, 230), 1)
    return cv2.GaussianBlur(img, (0, 0), 0.8)


def test_the_check_drops_most_of_what_the_detector_alone_takes_for_plates(own_settings, own_engine):
    """The same Engine with and without the check model: on window facades the detector alone
    keeps several boxes at its threshold, the check drops most of them; the real plate in a
    scene is kept either way."""
    from anond.detect.engine import Engine

    assert own_engine.checks["plate"].spec.name == models.load_manifest()[OWN].check
    unchecked = Engine(own_engine.detectors)
    detect = own_settings.profile.detect
    alone = checked = 0
    for seed in range(3):
        img = facade(seed)
        alone += len(unchecked.detect([img], detect, ["plate"])[0])
        checked += len(own_engine.detect([img], detect, ["plate"])[0])
    assert alone >= 6 and checked <= alone / 2, (alone, checked)
    img, (x0, y0, x1, y1) = scene(1.0, (120, 80))
    found = own_engine.detect([img], detect, ["plate"])[0]
    inside = ((found.xyxy[:, 0] <= x0 + 5) & (found.xyxy[:, 2] >= x1 - 5)
              & (found.xyxy[:, 1] <= y0 + 5) & (found.xyxy[:, 3] >= y1 - 5))
    assert inside.any()


def test_boxes_narrower_than_min_width_are_kept_unchecked(own_engine):
    """Small boxes pass the check unexamined (min_width): too few pixels to reject a plate on."""
    check = own_engine.checks["plate"]
    assert check.min_width == models.load_manifest()[OWN].check_min_width > 0
    img = facade(0)
    boxes = np.array([[100, 100, 100 + check.min_width - 1, 120],
                      [100, 100, 100 + check.min_width, 120]], np.float32)
    probs = check.probabilities(img, boxes)
    keep = check.accept(img, boxes)
    assert keep[0]
    assert keep[1] == (probs[1] >= check.threshold)


# -- a plate model of its own for videos (models.video_plate) ----------------------------------

def test_video_plate_threshold_comes_from_the_video_plate_model(models_dir):
    """Each plate model at its own calibration: photos at the photo model's threshold, videos at
    the video model's; a model without one gets the field's default, not the photo model's."""
    both = load_settings(None, models={"dir": models_dir, "plate": DB, "video_plate": OWN})
    detect = both.profile.detect
    spec = models.load_manifest()
    assert (detect.plate_threshold, detect.video_plate_threshold) == (spec[DB].threshold, spec[OWN].threshold)
    assert spec[DB].threshold != spec[OWN].threshold == 0.3
    assert detect.for_video().plate_threshold == 0.3 and detect.for_video().face_threshold == detect.face_threshold
    same = load_settings(None, models={"dir": models_dir, "plate": DB, "video_plate": ""})
    assert same.profile.detect.video_plate_threshold is None
    assert same.profile.detect.for_video() is same.profile.detect
    platedet = load_settings(None, models={"dir": models_dir, "plate": DB, "video_plate": "platedet-yolov8s-seg"})
    assert platedet.profile.detect.video_plate_threshold == 0.1
    mine = load_settings(None, models={"dir": models_dir, "plate": DB, "video_plate": OWN},
                         profile={"detect": {"video_plate_threshold": 0.4}})
    assert mine.profile.detect.video_plate_threshold == 0.4


def test_videos_mask_plates_with_their_own_model_and_its_check(tmp_path, models_dir):
    """plate = anond-plate-db (photos), video_plate = anond-plate-mnet025 (videos): the video
    job runs mnet025 with its check model at mnet025's threshold, has its plate track looked
    at by anond-plate-db-look (its track look), masks the plate on every frame, the frames
    before the look included, and names those models in its report, not the photo model."""
    av = pytest.importorskip("av")
    from anond.detect.engine import Engine
    from anond.pipeline.plan import VideoPlan
    from anond.pipeline.video import process_video
    from anond.types import Target

    settings = load_settings(None, models={"dir": models_dir, "plate": DB, "video_plate": OWN},
                             profile={"targets": ["plate"]})
    engine = Engine.load(settings, ["plate"])
    video = engine.for_video()
    assert engine.detectors["plate"].spec.name == DB
    assert engine.checks["plate"].spec.name == "anond-plate-db-look"  # photos: its second look
    assert video.detectors["plate"].spec.name == OWN and video.checks["plate"].spec.name == "anond-plate-check"
    assert video.track_looks["plate"].spec.name == "anond-plate-db-look"
    assert video.track_looks["plate"].look.detector is engine.checks["plate"].detector  # one session
    plan = VideoPlan.build(settings.video, settings.profile, 25.0, video)
    assert plan.track.high_score[int(Target.PLATE)] == 0.3
    assert plan.track.looked == {int(Target.PLATE)}

    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    boxes = make_plate_clip(src, 20)
    report = JobReport.start("t", "video", engine=engine, profile=settings.profile)
    process_video(src, dst, settings=settings, engine=engine, profile=settings.profile, report=report)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        pairs = [(fa.to_ndarray(format="bgr24"), fb.to_ndarray(format="bgr24"))
                 for fa, fb in zip(a.decode(video=0), b.decode(video=0))]
    assert len(pairs) == 20
    unmasked = [i for i, ((a, b), box) in enumerate(zip(pairs, boxes)) if change(a, b, box) < 15]
    assert not unmasked, f"plate readable on frames {unmasked}"
    names = [m.name for m in report.models]
    assert OWN in names and "anond-plate-check" in names and DB not in names
    assert "anond-plate-db-look" in names
    looks = report.rules["plate_track_look"]
    assert looks["accepted"] >= 1 and report.tracks["plate"] == looks["accepted"]


def test_false_plates_the_video_model_is_sure_of_are_refused_by_the_track_look(tmp_path, models_dir, astronaut):
    """The astronaut photo (scikit-image) has no licence plate, yet the default video plate
    model (anond-plate-mnet025 with its check) finds several in it, the surest at 0.6 (the
    patch on the suit). As a video, those detections are counted and their tracks looked at by
    anond-plate-db-look; the patch's is refused and never masked (without the look it would
    be, on every frame)."""
    av = pytest.importorskip("av")
    from anond.detect.engine import Engine
    from anond.pipeline.video import process_video

    settings = load_settings(None, models={"dir": models_dir}, profile={"targets": ["plate"]})
    engine = Engine.load(settings, ["plate"])
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    out = av.open(str(src), "w")
    vs = out.add_stream("libx264", rate=25)
    vs.width, vs.height, vs.pix_fmt = astronaut.shape[1], astronaut.shape[0], "yuv444p"
    vs.codec_context.options = {"crf": "10"}
    for _ in range(12):
        for p in vs.encode(av.VideoFrame.from_ndarray(astronaut, format="bgr24")):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    out.close()

    report = JobReport.start("t", "video", engine=engine, profile=settings.profile)
    process_video(src, dst, settings=settings, engine=engine, profile=settings.profile, report=report)
    assert report.detections.get("plate", 0) >= 12, "the video model is sure of a false plate"
    looks = report.rules["plate_track_look"]
    assert looks["refused"] >= 2 and looks["refused"] > looks["accepted"]
    patch = (276, 340, 324, 375)  # where the video model is surest of a plate
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        changes = [change(fa.to_ndarray(format="bgr24"), fb.to_ndarray(format="bgr24"), patch)
                   for fa, fb in zip(a.decode(video=0), b.decode(video=0))]
    assert len(changes) == 12 and max(changes) < 8, changes  # encoding alone: ~4 levels


def test_the_db_export_rewrites_decomposed_operators_into_the_same_function():
    """training/plates/graph.py (run by the DB models' export): Paddle's chains of elementwise
    operators become one HardSwish, and scalar affines fold into the convolutions beside them;
    the rewritten graph computes the same maps, and the shipped DB models are rewritten."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    sys.path.insert(0, str(ROOT / "training" / "plates"))
    try:
        from graph import inference_graph
    finally:
        sys.path.remove(str(ROOT / "training" / "plates"))

    rng = np.random.default_rng(0)
    consts = {"w1": rng.normal(size=(8, 3, 3, 3)), "b1": rng.normal(size=8), "w2": rng.normal(size=(4, 8, 1, 1)),
              "s": 1.7, "t": -0.4, "three": 3.0, "zero": 0.0, "six": 6.0, "s2": 0.6, "t2": 0.25}
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "s"], ["cs"]), helper.make_node("Add", ["cs", "t"], ["a"]),  # affine
        helper.make_node("Add", ["a", "three"], ["a3"]), helper.make_node("Clip", ["a3", "zero", "six"], ["cl"]),
        helper.make_node("Mul", ["a", "cl"], ["m"]), helper.make_node("Div", ["m", "six"], ["h"]),  # hardswish
        helper.make_node("Mul", ["h", "s2"], ["hs"]), helper.make_node("Add", ["hs", "t2"], ["ha"]),
        helper.make_node("Conv", ["ha", "w2"], ["y"]),  # a 1x1 convolution after an affine
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7)
    x = rng.normal(size=(1, 3, 16, 24)).astype(np.float32) * 3

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = run(model)
    rewritten, done = inference_graph(model)
    assert done == {"hardswish": 1, "affine_after_conv": 1, "affine_into_1x1": 1}
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "HardSwish", "Conv"]
    np.testing.assert_allclose(run(rewritten), before, rtol=1e-5, atol=1e-5)
    assert inference_graph(rewritten)[1] == dict.fromkeys(done, 0)  # nothing left to rewrite

    for name in (DB, "anond-plate-db-look"):
        shipped = onnx.load(str(ROOT / "models" / models.load_manifest()[name].file))
        ops = {n.op_type for n in shipped.graph.node}
        assert "HardSwish" in ops and "Clip" not in ops and "Div" not in ops, name
