"""SIGTERM: STOPPING, the running job finishes within stop_timeout_s or is requeued and redone
after the restart (exactly one output either way)."""

from __future__ import annotations

import cv2

from service_harness import Anond, encode_jpeg, files_under, hidden_files_under, write_config


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
