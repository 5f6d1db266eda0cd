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


def test_a_state_dir_on_a_network_file_system_is_refused(tmp_path, models_dir, monkeypatch, capsys):
    """SQLite's WAL must not live on NFS/SMB: `anond check` fails it and `anond run` refuses to
    start (exit 2, one line). The mount table says what the file system is (a copy of this
    machine's, plus the state folder mounted over NFS)."""
    from anond import cli, fsutil

    state = tmp_path / "state"
    state.mkdir()  # a mount point
    (tmp_path / "in").mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(fsutil.MOUNTS.read_text()
                      + f"nas:/export/anond {state} nfs4 rw,relatime 0 0\n"
                      + f"//nas/share\\040x {tmp_path / 'in'} cifs rw 0 0\n")
    monkeypatch.setattr(fsutil, "MOUNTS", mounts)
    assert fsutil.network_filesystem(state / "not" / "yet" / "made") == "nfs4"
    assert fsutil.network_filesystem(tmp_path / "in") == "cifs"
    assert fsutil.network_filesystem(tmp_path / "elsewhere") is None
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(state)},
                          inboxes=[{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}])
    assert cli.main(["check", "--no-inference", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  state_dir" in out and "network file system (nfs4)" in out
    assert "FAIL  inbox" not in out  # inboxes on shares are what anond is for
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("anond run: error: service.state_dir is on a network file system (nfs4)")
    assert list(state.iterdir()) == []  # refused before anything was created there
