"""`anond check`: every problem printed, non-zero exit when there is any."""

from __future__ import annotations

import shutil
import subprocess
import sys

from service_harness import clean_env, write_config


def _check(config, *extra, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anond.cli", "check", "--config", str(config), *extra],
                          cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120)


def test_healthy_installation_passes(tmp_path, models_dir):
    config = write_config(tmp_path / "ok.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state")},
                          inboxes=[{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}])
    done = _check(config, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    model face: centerface sha256" in done.stdout
    assert "warm-up ran on CPUExecutionProvider" in done.stdout
    assert "will be created" in done.stdout and "all checks passed" in done.stdout
    assert "ok    retention failed: unmasked originals deleted after 7 days" in done.stdout


def test_retention_off_is_pointed_out(tmp_path, models_dir):
    config = write_config(tmp_path / "keep.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_retention_days": 0,
                                   "archive_retention_days": 0},
                          inboxes=[{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out"),
                                    "originals": "archive", "archive": str(tmp_path / "archive")}])
    done = _check(config, "--no-inference", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr  # a choice, not an error: a note
    notes = [l for l in done.stdout.splitlines() if l.startswith("note  retention")]
    assert len(notes) == 2 and all("kept for ever" in l for l in notes), done.stdout


def test_every_problem_is_reported(tmp_path, models_dir):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(models_dir / "installed.json", models)
    data = bytearray((models_dir / "centerface.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (models / "centerface.onnx").write_bytes(bytes(data))
    (tmp_path / "a-file").write_text("not a folder")
    config = write_config(tmp_path / "bad.toml", models_dir=models,
                          service={"state_dir": str(tmp_path / "state"), "min_free_mb": 10**9},
                          inboxes=[{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "a-file" / "out")}])
    done = _check(config, cwd=tmp_path)
    assert done.returncode == 1
    fails = [l for l in done.stdout.splitlines() if l.startswith("FAIL")]
    assert any("model face" in l and "sha256" in l for l in fails), done.stdout
    assert any("inference" in l for l in fails)
    assert any("outbox" in l and "not writable" in l for l in fails)
    assert any("state_dir" in l and "min_free_mb" in l for l in fails)
    assert f"{len(fails)} problem(s) found" in done.stdout


def test_invalid_config_is_a_problem(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[service]\nstable_after_s = -1\n")
    done = _check(config, cwd=tmp_path)
    assert done.returncode == 1
    assert "FAIL  config: invalid setting service.stable_after_s" in done.stdout
