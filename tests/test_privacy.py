"""Nothing personal outlives a job: with files and folders named after a person, not one of
those strings appears in the logs, the metrics page, the state directory (database, WAL,
reports) or the reason files."""

from __future__ import annotations

import re
import time
import urllib.request

from anond import __version__
from service_harness import CORRUPT_JPEG, Anond, face_jpeg, noise_jpeg, wait_for, write_config

SECRETS = ["Jane_Doe", "Jane", "Doe", "ABC123", "XYZ789", "Holiday_Oslo"]


def _leaks(data: bytes) -> list[str]:
    found = []
    for s in SECRETS:
        for variant in {s, s.lower(), s.upper()}:
            for encoding in ("utf-8", "utf-16-le"):
                if variant.encode(encoding) in data:
                    found.append(f"{variant} ({encoding})")
    return found


def test_no_name_survives_in_logs_metrics_state_or_reports(tmp_path, models_dir):
    inbox, outbox, failed, state = (tmp_path / n for n in ("inbox", "outbox", "failed", "state"))
    person = inbox / "Jane_Doe" / "Holiday_Oslo"
    person.mkdir(parents=True)
    (person / "Jane_Doe_ABC123.jpg").write_bytes(face_jpeg())
    (person / "Jane_Doe_XYZ789.jpg").write_bytes(noise_jpeg(5))
    (inbox / "Jane_Doe" / "Jane_Doe_ABC123_broken.jpg").write_bytes(CORRUPT_JPEG)  # -> failed
    (inbox / "Jane_Doe" / "Jane_Doe_ABC123.txt").write_bytes(b"Jane Doe's notes")  # unsupported
    (inbox / "Jane_Doe" / "Jane_Doe_ABC123.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64)
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(state), "failed_dir": str(failed),
                                   "stable_after_s": 0.3, "metrics": True, "metrics_port": 0},
                          inboxes=[{"path": str(inbox), "outbox": str(outbox), "name": "Ward_Seven"}])
    svc = Anond(tmp_path, config, log_level="debug").start()
    try:
        (listening,) = svc.wait_event("metrics.listening", 60)
        svc.wait_ready()
        wait_for(lambda: len(list(failed.glob("*.reason.json"))) == 3
                 and (outbox / "Jane_Doe" / "Holiday_Oslo" / "Jane_Doe_XYZ789.jpg").exists()
                 and (outbox / "Jane_Doe" / "Holiday_Oslo" / "Jane_Doe_ABC123.jpg").exists(),
                 60, "all jobs finished", svc)
        time.sleep(1.0)  # idle: the service folds its WAL
        url = f"http://127.0.0.1:{listening['port']}/metrics"
        metrics = urllib.request.urlopen(url, timeout=10).read()
        state_while_running = _state_bytes(state)
        assert svc.stop() == 0
    finally:
        svc.kill()

    assert b'anond_jobs_total{inbox="Ward_Seven",result="done"} 2.0' in metrics
    assert b'anond_jobs_total{inbox="Ward_Seven",result="failed"} 3.0' in metrics
    assert f'anond_build_info{{version="{__version__}"}} 1.0'.encode() in metrics
    # One observation per detector call (photos: one call per target and image), not per job.
    calls = re.search(rb'anond_inference_duration_seconds_count\{target="face"\} (\d+)', metrics)
    assert calls and int(calls.group(1)) >= 2, metrics.decode()[-3000:]
    assert b'anond_objects_masked_total{cls="face"}' in metrics
    assert b"anond_provider_info" in metrics
    checks = {
        "stdout": svc.stdout().encode(),
        "stderr": svc.stderr().encode(),
        "metrics": metrics,
        "state while running": state_while_running,
        "state after stop": _state_bytes(state),
        "reason files": b"".join(p.read_bytes() for p in failed.glob("*.reason.json")),
    }
    assert b"job.completed" in checks["stderr"] and len(list((state / "reports").glob("*.json"))) == 2
    assert (state / "jobs.sqlite3").stat().st_size > 0
    leaks = {where: _leaks(data) for where, data in checks.items() if _leaks(data)}
    assert leaks == {}
    # Logs name jobs by id only: not even the inbox's configured label (metrics count by it).
    assert b"Ward_Seven" not in checks["stdout"] + checks["stderr"]
    # The failed inputs kept their names inside failed/<job id>/ (they are the user's files).
    assert sorted(p.name for p in failed.glob("*/**/*") if p.is_file()) == [
        "Jane_Doe_ABC123.mp4", "Jane_Doe_ABC123.txt", "Jane_Doe_ABC123_broken.jpg"]


def _state_bytes(state) -> bytes:
    """Every file in the state directory, raw (SQLite database, -wal, -shm, reports, salt)."""
    return b"".join(p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file())
