"""SIGTERM: STOPPING, the running job finishes within stop_timeout_s or is requeued and redone
after the restart (exactly one output either way)."""

from __future__ import annotations

import os
import subprocess

import cv2
import pytest

from service_harness import (
    Anond,
    encode_jpeg,
    files_under,
    hidden_files_under,
    noise_jpeg,
    wait_for,
    write_config,
)


def _slow_photo(size: int = 1600) -> bytes:
    from skimage import data

    return encode_jpeg(cv2.resize(data.astronaut()[:, :, ::-1], (size, size)))


def test_running_job_is_requeued_after_stop_timeout_then_finished_on_restart(tmp_path, models_dir):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    (inbox / "big.jpg").write_bytes(_slow_photo())

    def config(stop_timeout_s: float):
        return write_config(tmp_path / "anond.toml", models_dir=models_dir,
                            detect={"max_input_side": 1600},  # a job of a few seconds on CPU
                            service={"state_dir": str(tmp_path / "state"),
                                     "failed_dir": str(tmp_path / "failed"),
                                     "stable_after_s": 0.2, "stop_timeout_s": stop_timeout_s},
                            inboxes=[{"path": str(inbox), "outbox": str(outbox)}])

    svc = Anond(tmp_path, config(0)).start()
    try:
        (started,) = svc.wait_event("job.started", 60)
        assert svc.stop() == 0
    finally:
        svc.kill()
    job = started["job"]
    assert [e["job"] for e in svc.events("job.requeued")] == [job]
    assert not svc.events("job.completed") and files_under(outbox) == []
    assert files_under(inbox) == []  # still claimed, not lost and not released half-done

    svc = Anond(tmp_path, config(60)).start()
    try:
        (again,) = svc.wait_event("job.started", 60)
        assert again["job"] == job  # the same job, redone
        assert svc.stop() == 0  # SIGTERM while it runs: it may finish
    finally:
        svc.kill()
    names = [e["event"] for e in svc.events()]
    assert names.index("service.stopping") < names.index("job.completed") < names.index("service.stopped")
    assert files_under(outbox) == ["big.jpg"] and hidden_files_under(outbox) == []
    assert list((inbox / ".anond" / "claims").iterdir()) == []


@pytest.fixture
def tiny_outbox(tmp_path):
    """A real 256 KiB tmpfs as the outbox, so writing it fails with ENOSPC (needs root)."""
    path = tmp_path / "outbox"
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_disk_full_is_retried_with_backoff_until_it_succeeds(tmp_path, models_dir, tiny_outbox):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    filler = tiny_outbox / ".filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:  # fill the outbox to the last block
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    (inbox / "photo.jpg").write_bytes(noise_jpeg(31, 128))
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_dir": str(tmp_path / "failed"),
                                   "stable_after_s": 0.2, "min_free_mb": 0, "retries": 10,
                                   "retry_backoff_s": 0.3, "retry_backoff_max_s": 1.0},
                          inboxes=[{"path": str(inbox), "outbox": str(tiny_outbox)}])
    svc = Anond(tmp_path, config).start()
    try:
        retries = svc.wait_event("job.retry", 60, count=2)
        assert {r["error"] for r in retries} == {"transient_io"}
        assert [r["attempt"] for r in retries[:2]] == [1, 2] and retries[1]["delay_s"] >= retries[0]["delay_s"]
        assert files_under(tiny_outbox) == [] and hidden_files_under(tiny_outbox) == [".filler"]
        filler.unlink()  # space again: the next retry succeeds
        wait_for(lambda: (tiny_outbox / "photo.jpg").exists(), 30, "output after the retry", svc)
        assert svc.stop() == 0
    finally:
        svc.kill()
    assert files_under(tiny_outbox) == ["photo.jpg"] and hidden_files_under(tiny_outbox) == []
    assert not (tmp_path / "failed").exists() or files_under(tmp_path / "failed") == []
