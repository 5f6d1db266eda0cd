"""`anond eval` end to end: real models on real photos, hand-labelled and from ../shared/data."""

from __future__ import annotations

import json

import cv2
import pytest

from anond.cli import main as cli_main
from anond.eval import evaluate_dataset, format_report

# The astronaut's face, labelled by hand (hairline to chin, cheek to cheek).
ASTRONAUT_FACE = (178, 68, 272, 185)


def _voc(root, name, image, boxes):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "images" / name), image)
    objects = "".join(
        f"<object><name>face</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in boxes)
    (root / "annotations" / (name.rsplit(".", 1)[0] + ".xml")).write_text(
        f"<annotation><filename>{name}</filename>{objects}</annotation>")


@pytest.fixture
def astronaut_set(tmp_path, astronaut):
    """The astronaut and its mirror image, each with its hand-labelled face."""
    x0, y0, x1, y1 = ASTRONAUT_FACE
    w = astronaut.shape[1]
    _voc(tmp_path, "a.png", astronaut, [ASTRONAUT_FACE])
    _voc(tmp_path, "b.png", astronaut[:, ::-1].copy(), [(w - x1, y0, w - x0, y1)])
    return tmp_path


def test_a_clearly_visible_face_is_found_and_masked(astronaut_set, settings, engine):
    r = evaluate_dataset(astronaut_set, "voc", "face", settings, engine=engine, show_progress=False)
    assert (r["images"], r["objects"]) == (2, 2)
    assert r["recall"] == 1.0 and r["masked_recall"] == 1.0
    assert r["fp"] == 0 and r["precision"] == 1.0
    assert r["ap50"] == pytest.approx(1.0)
    assert r["recall_by_size"][">=96"] == {"objects": 2, "recall": 1.0, "masked_recall": 1.0}
    assert r["model"]["name"] == settings.models.face and len(r["model"]["sha256"]) == 64
    assert "masked recall" in format_report(r)


def test_a_mask_that_misses_the_face_is_not_counted_as_masked(astronaut_set, settings, engine):
    # Label a region beside the face: the detector finds nothing there and the mask is elsewhere.
    _voc(astronaut_set, "a.png", cv2.imread(str(astronaut_set / "images" / "a.png")),
         [(300, 150, 360, 210)])
    r = evaluate_dataset(astronaut_set, "voc", "face", settings, engine=engine, show_progress=False)
    assert r["objects"] == 2 and r["recall"] == 0.5 and r["masked_recall"] == 0.5
    assert r["fp"] == 1  # the real face of the first image is unlabelled there


def test_cli_json_carries_numbers_and_no_path(astronaut_set, settings, capsys, monkeypatch):
    monkeypatch.setenv("ANOND_MODELS__DIR", str(settings.models.dir))
    rc = cli_main(["eval", "--dataset", str(astronaut_set), "--format", "voc", "--target", "face",
                   "--json", "--progress", "off"])
    captured = capsys.readouterr()
    assert rc == 0
    report = json.loads(captured.out)  # stdout is the JSON alone: `anond eval --json | jq` works
    assert "runtime.provider_fallback" not in captured.out
    assert report["recall"] == 1.0 and report["ap50_95"] > 0.3
    assert str(astronaut_set) not in captured.out and "a.png" not in captured.out


def test_cli_without_ap_reports_no_ap(astronaut_set, settings, capsys, monkeypatch):
    monkeypatch.setenv("ANOND_MODELS__DIR", str(settings.models.dir))
    assert cli_main(["eval", "--dataset", str(astronaut_set), "--format", "voc", "--target", "face",
                     "--no-ap", "--progress", "off"]) == 0
    out = capsys.readouterr().out
    assert "AP@0.5" in out and "n/a" in out and "100.0%" in out


def test_cli_needs_format_and_target(tmp_path, capsys):
    assert cli_main(["eval", "--dataset", str(tmp_path)]) == 2
    assert "--format" in capsys.readouterr().err


@pytest.mark.data
def test_face_mask_sample_gives_plausible_numbers(data_dir, settings, engine):
    r = evaluate_dataset(data_dir / "faces" / "face_mask", "voc", "face", settings, engine=engine,
                         limit=8, show_progress=False)
    assert r["images"] == 8 and r["objects"] > 20
    assert 0.5 < r["recall"] <= 1 and 0.3 < r["precision"] <= 1
    assert r["masked_recall"] >= 0.5 and 0 < r["ap50"] <= 1 and r["ap50_95"] < r["ap50"]


def test_results_on_stdout_logs_on_stderr_without_onnxruntime_noise(astronaut_set, settings):
    """A fresh process, as `anond --log-level info eval --json | jq` runs it: global options before
    the sub-command, stdout is exactly the JSON report, events are JSON lines on stderr, and ONNX
    Runtime's own multi-line provider-load error (CUDA missing here) is not printed."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ANOND_MODELS__DIR": str(settings.models.dir)}
    env.pop("JOURNAL_STREAM", None)
    done = subprocess.run([sys.executable, "-m", "anond.cli", "--log-level", "info", "eval",
                           "--dataset", str(astronaut_set), "--format", "voc", "--target", "face",
                           "--json", "--progress", "off"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["recall"] == 1.0
    events = [json.loads(line) for line in done.stderr.splitlines()]  # every stderr line is an event
    assert events and all("event" in e and "level" in e for e in events)
    assert "onnxruntime" not in done.stderr.lower().replace("onnxruntime-gpu", "")


def test_log_level_is_validated_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["--log-level", "bogus", "check"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("anond: error: argument --log-level: invalid choice: 'bogus'")
    assert "Traceback" not in "\n".join(err)
