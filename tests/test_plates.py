"""Plates: the default profile masks real plates in photos and video; the project's own plate
model ships with anond (MIT) and masks them too; platedet's licence is recorded as its file says.

Runs on a fresh machine (no ../shared): the plate is a real one, a crop of a CC0 photo shipped in
tests/data (SOURCE.txt there), composed into larger scenes at several sizes. The crop's photo is
in the validation split of anond-plate-mnet025's training, so that model never trained on it.
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


OWN = "anond-plate-mnet025"  # the project's own plate model
OWN_THRESHOLD = 0.3  # its operating point, from its validation sweep (models/README.md)


def test_the_project_plate_model_is_shipped_and_matches_its_manifest(models_dir):
    """The project's own weights: in models/, packaged beside the manifest, sha256 as stated,
    MIT, installed by default."""
    spec = models.load_manifest()[OWN]
    assert spec.task == "plate" and spec.shipped and spec.package is None and not spec.optional
    assert spec.licence.startswith("MIT")
    data = (ROOT / "models" / spec.file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == spec.expected_source_sha256
    assert spec.path.read_bytes() == data  # anond/<file> (the packaged copy) is the same file
    assert len(data) <= 10 * 1024 * 1024
    assert models.verified_model(OWN, models_dir).sha256 == spec.expected_source_sha256


def test_platedet_licence_in_the_manifest_is_what_its_onnx_file_says(models_dir):
    """The opt-in platedet model's licence is read from the file itself, not guessed."""
    import onnx

    path = models_dir / "platedet-yolov8s-seg.onnx"
    if not path.is_file():
        pytest.skip("platedet-yolov8s-seg not installed (opt-in; `make test` installs it)")
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["author"] == "Ultralytics" and meta["license"].startswith("AGPL-3.0")
    assert "AGPL-3.0" in models.load_manifest()["platedet-yolov8s-seg"].licence


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
def own_settings(models_dir):
    return load_settings(None, models={"dir": models_dir, "plate": OWN},
                         profile={"detect": {"plate_threshold": OWN_THRESHOLD}})


@pytest.fixture(scope="module")
def own_engine(own_settings):
    from anond.detect.engine import Engine

    return Engine.load(own_settings)


SMALL_MISSED_BY_PLATEDET = pytest.mark.xfail(
    strict=True, reason="platedet (the default until anond-plate-mnet025 replaces it) misses this "
                        "40 px plate in a 960x540 scene; anond-plate-mnet025 masks it")


@pytest.mark.parametrize("model,scale,at", [
    pytest.param("default", 0.5, (300, 300), marks=SMALL_MISSED_BY_PLATEDET),
    ("default", 1.0, (120, 80)), ("default", 2.2, (400, 120)),
    (OWN, 0.5, (300, 300)), (OWN, 1.0, (120, 80)), (OWN, 2.2, (400, 120))])
def test_a_real_plate_is_masked(tmp_path, plate_settings, engine, own_settings, own_engine,
                                model, scale, at):
    """The default profile (faces and plates), and the same with the project's own plate
    model, mask the plate at ~40, ~80 and ~175 px wide; a faces-only run leaves it as it was
    (the plate model is what masks it)."""
    from anond.pipeline.image import process_image

    if model == OWN:
        plate_settings, engine = own_settings, own_engine
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

    def detect(self, images, detect, targets):
        if "plate" in targets and detect.plate_threshold == pytest.approx(self.low):
            self.plate_frames += sum(img.shape[:2] == self.frame_hw for img in images)
        return self.engine.detect(images, detect, targets)


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
