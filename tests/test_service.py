"""`anond run` as users meet it: a real subprocess on temporary folders with the real models.

The promises: a file still being copied is not taken; `.part` files are never touched; files
already there at start-up are processed; a corrupt file goes to `failed/` with its reason and the
service goes on; systemd hears READY/STATUS/WATCHDOG/STOPPING; kept originals are processed once.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from service_harness import (
    CORRUPT_JPEG,
    Anond,
    clean_env,
    decode,
    face_jpeg,
    files_under,
    hidden_files_under,
    noise_jpeg,
    wait_for,
    write_config,
)


@pytest.fixture(scope="module")
def basic(models_dir, tmp_path_factory):
    """One service run: files present at start-up, a `.part` file, a corrupt file, and a file
    copied slowly in chunks while the service watches."""
    base = tmp_path_factory.mktemp("basic")
    inbox, outbox, failed = base / "inbox", base / "outbox", base / "failed"
    (inbox / "early").mkdir(parents=True)
    (inbox / "early" / "Early.jpg").write_bytes(face_jpeg())
    (inbox / "dl.jpg.part").write_bytes(noise_jpeg(1)[:500])
    (inbox / "bad.jpg").write_bytes(CORRUPT_JPEG)
    part_before = (inbox / "dl.jpg.part").stat()
    config = write_config(base / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(base / "state"), "failed_dir": str(failed),
                                   "stable_after_s": 1.0, "rescan_interval_s": 0.5},
                          inboxes=[{"path": str(inbox), "outbox": str(outbox)}])
    svc = Anond(base, config).start()
    result = {"base": base, "inbox": inbox, "outbox": outbox, "failed": failed, "svc": svc,
              "part_before": part_before, "taken_early": []}
    try:
        svc.wait_ready()
        data = face_jpeg(256)
        chunks = [data[i:i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]
        slow_src = inbox / "slow" / "photo.jpg"
        slow_dst = outbox / "slow" / "photo.jpg"
        slow_src.parent.mkdir()
        with open(slow_src, "wb") as f:
            for chunk in chunks:  # ~0.5 s between chunks, less than stable_after_s
                f.write(chunk)
                f.flush()
                result["last_write"] = time.monotonic()
                time.sleep(0.5)
                if slow_dst.exists() or not slow_src.exists():
                    result["taken_early"].append(f.tell())
        wait_for(lambda: slow_dst.exists(), 30, "the slowly copied file's output", svc)
        result["slow_out_at"] = time.monotonic()
        wait_for(lambda: (outbox / "early" / "Early.jpg").exists(), 30, "start-up file", svc)
        wait_for(lambda: list(failed.glob("*.reason.json")), 30, "reason file", svc)
        time.sleep(1.5)  # a few more rescans: the .part file must still be left alone
        result["rc"] = svc.stop()
        yield result
    finally:
        svc.kill()


def test_partial_copy_is_not_picked_up(basic):
    assert basic["taken_early"] == [], "the file was taken while it was still being copied"
    out = decode(basic["outbox"] / "slow" / "photo.jpg")
    assert out is not None and out.shape == (256, 256, 3)
    # It waited stable_after_s (1 s) after the last write.
    assert basic["slow_out_at"] - basic["last_write"] >= 0.95
    assert not (basic["inbox"] / "slow" / "photo.jpg").exists()  # originals = delete


def test_part_file_is_never_touched(basic):
    part = basic["inbox"] / "dl.jpg.part"
    st = part.stat()
    before = basic["part_before"]
    assert (st.st_size, st.st_mtime_ns, st.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert not any("dl.jpg" in p for p in files_under(basic["outbox"]) + files_under(basic["failed"]))


def test_files_present_at_start_up_are_processed(basic):
    out = decode(basic["outbox"] / "early" / "Early.jpg")
    assert out is not None and out.shape == (192, 192, 3)
    reports = [json.loads(p.read_text()) for p in (basic["base"] / "state" / "reports").glob("*.json")]
    assert any(r.get("masked", {}).get("face", 0) >= 1 for r in reports), "the astronaut's face was masked"


def test_corrupt_file_goes_to_failed_with_reason_and_service_goes_on(basic):
    failed = basic["failed"]
    (reason_path,) = failed.glob("*.reason.json")
    reason = json.loads(reason_path.read_text())
    job = reason_path.name.removesuffix(".reason.json")
    assert reason["job"] == job and reason["code"] == "corrupt_media" and reason["permanent"] is True
    assert (failed / job / "bad.jpg").read_bytes() == CORRUPT_JPEG  # the user's file, unchanged
    # An unmasked original: the service user's alone.
    assert (failed / job).stat().st_mode & 0o777 == 0o700
    assert (failed / job / "bad.jpg").stat().st_mode & 0o777 == 0o600
    assert reason_path.stat().st_mode & 0o777 == 0o600
    assert "bad" not in reason_path.read_text()
    # It went on: the slow file, which arrived later, was processed; and it stopped cleanly.
    assert (basic["outbox"] / "slow" / "photo.jpg").exists()
    assert basic["rc"] == 0


def test_outputs_appear_atomically_with_their_mode(basic):
    outbox = basic["outbox"]
    assert files_under(outbox) == ["early/Early.jpg", "slow/photo.jpg"]
    assert hidden_files_under(outbox) == []  # no temporary or staged file left
    for rel in files_under(outbox):
        assert (outbox / rel).stat().st_mode & 0o777 == 0o640
    # Nothing left in flight in the claim area, and the inbox holds only the .part file.
    assert files_under(basic["inbox"]) == ["dl.jpg.part"]
    assert list((basic["inbox"] / ".anond" / "claims").iterdir()) == []  # clean stop: lease given back


def test_bad_setting_fails_at_start_naming_key_and_reason(tmp_path, models_dir):
    config = tmp_path / "bad.toml"
    config.write_text("[service]\nworkers = 0\n")
    svc = Anond(tmp_path, config).start()
    assert svc.proc.wait(60) == 2
    assert "service.workers" in svc.stderr() and "greater than or equal to 1" in svc.stderr()
    config.write_text(f'[[inboxes]]\npath = "{tmp_path}/in"\noutbox = "{tmp_path}/in/out"\n')
    svc = Anond(tmp_path, config).start()
    assert svc.proc.wait(60) == 2
    assert "inboxes.0" in svc.stderr() and "outbox must not be" in svc.stderr()


class NotifyListener:
    """A real NOTIFY_SOCKET: an AF_UNIX datagram socket, read on a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self, prefix: str) -> list[str]:
        return [line for _, m in self.messages for line in m.splitlines() if line.startswith(prefix)]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def test_notify_socket_hears_ready_status_watchdog_stopping_on_embedded_defaults(tmp_path, models_dir):
    """No config file at all: ./var/inbox -> ./var/outbox, as `make run` does."""
    (tmp_path / "var" / "inbox").mkdir(parents=True)
    (tmp_path / "var" / "inbox" / "first.jpg").write_bytes(face_jpeg())
    listener = NotifyListener(tmp_path / "notify.sock")
    env = clean_env(
        NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="400000",
        ANOND_MODELS__DIR=str(models_dir), ANOND_RUNTIME__PROVIDERS='["CPUExecutionProvider"]',
        ANOND_PROFILE__TARGETS='["face"]', ANOND_SERVICE__STABLE_AFTER_S="0.3",
        ANOND_SERVICE__METRICS="false", ANOND_SERVICE__MIN_FREE_MB="1",
    )
    svc = Anond(tmp_path, env=env, log_level=None).start()  # no --log-level: as the unit runs it
    try:
        wait_for(lambda: listener.fields("READY=1"), 90, "READY=1", svc)
        # READY=1 only after the models were loaded and warmed up.
        assert svc.events("models.loaded"), "READY=1 came before the models were loaded"
        wait_for(lambda: (tmp_path / "var" / "outbox" / "first.jpg").exists(), 30, "output", svc)
        wait_for(lambda: any("done 1" in s for s in listener.fields("STATUS=")), 10, "STATUS done 1", svc)
        wait_for(lambda: len(listener.fields("WATCHDOG=1")) >= 3, 10, "WATCHDOG=1 pings", svc)
        assert svc.stop() == 0
        wait_for(lambda: listener.fields("STOPPING=1"), 5, "STOPPING=1")
    finally:
        svc.kill()
        listener.close()
    status = listener.fields("STATUS=")
    assert any(s.startswith("STATUS=queue ") and "running" in s and "failed 0" in s for s in status)
    # Watchdog pings come at about half of WATCHDOG_USEC (0.2 s), not in bursts.
    pings = [t for t, m in listener.messages if "WATCHDOG=1" in m]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 1.0 and min(gaps) > 0.1
    assert (tmp_path / "var" / "state" / "jobs.sqlite3").exists()
    assert (tmp_path / "var" / "failed").is_dir()
    assert not (tmp_path / "var" / "inbox" / "first.jpg").exists()
    # [service] log_level's default (info) puts the service's life in the journal.
    for name in ("service.ready", "job.queued", "job.completed"):
        assert svc.events(name), name
    assert all(e["level"] != "debug" for e in svc.events())


def test_low_disk_space_pauses_intake_and_sighup_reloads(tmp_path, models_dir):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    (inbox / "waiting.jpg").write_bytes(noise_jpeg(7))
    common = dict(models_dir=models_dir, inboxes=[{"path": str(inbox), "outbox": str(outbox)}])
    state = {"state_dir": str(tmp_path / "state"), "failed_dir": str(tmp_path / "failed"),
             "stable_after_s": 0.3}
    config = write_config(tmp_path / "anond.toml", service={**state, "min_free_mb": 10**9}, **common)
    listener = NotifyListener(tmp_path / "notify.sock")
    svc = Anond(tmp_path, config, env=clean_env(NOTIFY_SOCKET=str(listener.path))).start()
    try:
        svc.wait_ready()
        svc.wait_event("intake.paused", 10)
        time.sleep(1.5)
        assert (inbox / "waiting.jpg").exists() and not outbox.joinpath("waiting.jpg").exists()
        assert any("intake paused" in s for s in listener.fields("STATUS="))
        write_config(config, service={**state, "min_free_mb": 1}, **common)
        svc.signal(signal.SIGHUP)
        svc.wait_event("config.reloaded", 10)
        wait_for(lambda: (outbox / "waiting.jpg").exists(), 30, "output after resume", svc)
        assert svc.events("intake.resumed")
        assert listener.fields("RELOADING=1") and len(listener.fields("READY=1")) >= 2
        # A reload that would need a restart is refused; the service keeps its settings.
        write_config(config, service={**state, "min_free_mb": 1, "workers": 2}, **common)
        svc.signal(signal.SIGHUP)
        (rejected,) = svc.wait_event("config.reload_rejected", 10)
        assert "service.workers" in rejected["reason"]
        assert svc.stop() == 0
    finally:
        svc.kill()
        listener.close()


def test_kept_originals_are_processed_once_until_they_change(tmp_path, models_dir):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    original = inbox / "keep.jpg"
    original.write_bytes(noise_jpeg(11))
    before = original.stat()

    def config(name: str):
        return write_config(tmp_path / f"{name}.toml", models_dir=models_dir,
                            service={"state_dir": str(tmp_path / f"state-{name}"),
                                     "failed_dir": str(tmp_path / "failed"),
                                     "stable_after_s": 0.3, "rescan_interval_s": 0.3},
                            inboxes=[{"path": str(inbox), "outbox": str(outbox), "originals": "keep"}])

    svc = Anond(tmp_path, config("a")).start()
    try:
        wait_for(lambda: (outbox / "keep.jpg").exists(), 60, "first output", svc)
        wait_for(lambda: original.exists(), 10, "the original back in place", svc)
        time.sleep(2)  # many rescans: the kept original is not taken again
        assert svc.stop() == 0
        # Nor by another instance on the same inbox (its own, empty state directory).
        svc = Anond(tmp_path, config("b")).start()
        svc.wait_ready()
        time.sleep(2)
        assert files_under(outbox) == ["keep.jpg"]
        st = original.stat()
        assert (st.st_size, st.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        original.write_bytes(noise_jpeg(12))  # changed content: a new input
        wait_for(lambda: (outbox / "keep (1).jpg").exists(), 30, "output of the changed file", svc)
        assert svc.stop() == 0
    finally:
        svc.kill()
    assert files_under(outbox) == ["keep (1).jpg", "keep.jpg"]
    assert files_under(inbox) == ["keep.jpg"]


def test_required_sidecar_is_waited_for_and_travels_with_its_file(tmp_path, models_dir):
    inbox, outbox, failed = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "failed"
    inbox.mkdir()
    (inbox / "photo.jpg").write_bytes(noise_jpeg(21, 128))
    (inbox / "wrong.jpg").write_bytes(noise_jpeg(22, 128))
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_dir": str(failed),
                                   "stable_after_s": 0.3, "rescan_interval_s": 0.3},
                          inboxes=[{"path": str(inbox), "outbox": str(outbox), "regions": "required"}])
    svc = Anond(tmp_path, config).start()
    try:
        svc.wait_ready()
        time.sleep(1.5)  # stable for 5x stable_after_s, but no sidecar yet: it waits
        assert files_under(inbox) == ["photo.jpg", "wrong.jpg"] and files_under(outbox) == []
        solid = {"version": 1, "regions": [{"rect": {"x": 10, "y": 20, "w": 50, "h": 40}, "mode": "solid"}]}
        (inbox / "photo.jpg.regions.json").write_text(json.dumps(solid))
        outside = {"version": 1, "regions": [{"rect": {"x": 100, "y": 100, "w": 500, "h": 50}}]}
        (inbox / "wrong.jpg.regions.json").write_text(json.dumps(outside))
        wait_for(lambda: (outbox / "photo.jpg").exists() and list(failed.glob("*.reason.json")),
                 30, "both jobs", svc)
        assert svc.stop() == 0
    finally:
        svc.kill()
    out = decode(outbox / "photo.jpg")
    assert out[22:58, 12:58].max() <= 12  # the manual region is solid black (JPEG noise aside)
    assert out.std() > 40  # the rest is still noise
    assert files_under(outbox) == ["photo.jpg"] and files_under(inbox) == []  # sidecar consumed
    (reason_path,) = failed.glob("*.reason.json")
    reason = json.loads(reason_path.read_text())
    assert reason["code"] == "regions_invalid" and "regions[0]" in reason["message"]
    job = reason_path.name.removesuffix(".reason.json")
    assert files_under(failed / job) == ["wrong.jpg", "wrong.jpg.regions.json"]


def test_required_sidecar_that_never_comes_fails_with_a_reason(tmp_path, models_dir):
    inbox, outbox, failed = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "failed"
    inbox.mkdir()
    (inbox / "orphan.jpg").write_bytes(noise_jpeg(23, 128))
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_dir": str(failed),
                                   "stable_after_s": 0.3, "rescan_interval_s": 0.3},
                          inboxes=[{"path": str(inbox), "outbox": str(outbox), "regions": "required",
                                    "regions_wait_s": 2.0}])
    svc = Anond(tmp_path, config).start()
    try:
        svc.wait_ready()
        time.sleep(1.0)  # finished, but still inside regions_wait_s: it waits
        assert files_under(inbox) == ["orphan.jpg"] and not list(failed.glob("*"))
        wait_for(lambda: list(failed.glob("*.reason.json")), 30, "the quarantine entry", svc)
        assert svc.stop() == 0
    finally:
        svc.kill()
    (reason_path,) = failed.glob("*.reason.json")
    reason = json.loads(reason_path.read_text())
    assert reason["code"] == "regions_missing" and reason["permanent"] is True
    assert "sidecar is required but missing" in reason["message"]
    job = reason_path.name.removesuffix(".reason.json")
    assert files_under(failed / job) == ["orphan.jpg"]  # nothing lost
    assert files_under(inbox) == [] and files_under(outbox) == []


def test_unmasked_originals_are_deleted_after_their_retention(tmp_path, models_dir):
    """failed/<job id>/ (with its reason file) and archived originals are deleted once older than
    their retention (here 2 s), not before; what anond did not write is left alone; counted."""
    inbox, outbox, failed, archive = (tmp_path / n for n in ("inbox", "outbox", "failed", "archive"))
    (inbox / "sub").mkdir(parents=True)
    failed.mkdir()
    (failed / "README.txt").write_text("the admin's note, not a job")
    retention = 2.0
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_dir": str(failed),
                                   "stable_after_s": 0.3, "metrics": True, "metrics_port": 0,
                                   "failed_retention_days": retention / 86400,
                                   "archive_retention_days": retention / 86400},
                          inboxes=[{"path": str(inbox), "outbox": str(outbox), "originals": "archive",
                                    "archive": str(archive)}])
    svc = Anond(tmp_path, config, log_level="info").start()
    try:
        (listening,) = svc.wait_event("metrics.listening", 60)
        svc.wait_ready()
        (inbox / "sub" / "bad.jpg").write_bytes(CORRUPT_JPEG)
        (inbox / "sub" / "ok.jpg").write_bytes(noise_jpeg(2))
        wait_for(lambda: list(failed.glob("*.reason.json")) and (archive / "sub" / "ok.jpg").exists(),
                 60, "a failed job and an archived original", svc)
        kept_at = time.monotonic()
        (reason,) = failed.glob("*.reason.json")
        job = reason.name.removesuffix(".reason.json")
        assert (failed / job / "sub" / "bad.jpg").exists() and (outbox / "sub" / "ok.jpg").exists()
        wait_for(lambda: not reason.exists() and not (failed / job).exists()
                 and not (archive / "sub").exists(), 30, "retention to delete both", svc)
        assert time.monotonic() - kept_at >= retention - 0.5  # not before their time
        assert (failed / "README.txt").exists() and archive.is_dir()
        assert (outbox / "sub" / "ok.jpg").exists()  # the masked output is not the retention's
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{listening['port']}/metrics", timeout=10).read()
        assert b'anond_retention_deleted_total{what="failed"} 1.0' in metrics
        assert b'anond_retention_deleted_total{what="archive"} 1.0' in metrics
        (event,) = [e for e in svc.events("retention.deleted") if e["failed_jobs"]]
        assert set(event) <= {"event", "level", "timestamp", "logger", "failed_jobs", "archived_files",
                              "review_jobs"}
        assert svc.stop() == 0
    finally:
        svc.kill()


def test_metrics_beyond_loopback_are_allowed_but_announced(tmp_path, models_dir):
    """[service] metrics_address: Prometheus often scrapes from another host; listening beyond
    127.0.0.1 is the admin's choice, logged as a warning at start. A bad address is a config error."""
    common = dict(models_dir=models_dir, inboxes=[{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}])
    bad = write_config(tmp_path / "bad.toml", service={"state_dir": str(tmp_path / "s0"),
                                                       "metrics_address": "everywhere"}, **common)
    svc = Anond(tmp_path, bad).start()
    assert svc.proc.wait(60) == 2 and "service.metrics_address" in svc.stderr()
    config = write_config(tmp_path / "anond.toml", service={
        "state_dir": str(tmp_path / "state"), "metrics": True, "metrics_address": "0.0.0.0",
        "metrics_port": 0}, **common)
    svc = Anond(tmp_path, config, log_level="info").start()
    try:
        (warning,) = svc.wait_event("metrics.not_loopback", 60)
        assert warning["level"] == "warning" and warning["address"] == "0.0.0.0"
        svc.wait_ready()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{warning['port']}/metrics", timeout=10).read()
        assert b'anond_inbox_files_skipped{inbox="inbox1"}' in metrics
        assert svc.stop() == 0
    finally:
        svc.kill()


def test_status_counts_and_retry_puts_a_failed_input_back_where_it_was(tmp_path, models_dir):
    """`anond status` (counts per inbox, read while the service runs) and `anond retry`: the
    failed original goes back to its path in the inbox and is processed again as a new job."""
    inbox, outbox, failed = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "failed"
    (inbox / "cam" / "2026").mkdir(parents=True)
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_dir": str(failed),
                                   "stable_after_s": 0.3},
                          inboxes=[{"path": str(inbox), "outbox": str(outbox), "name": "cctv"}])

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "anond.cli", *argv, "--config", str(config)],
                              cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)

    svc = Anond(tmp_path, config).start()
    try:
        svc.wait_ready()
        (inbox / "cam" / "2026" / "Jane_Doe.jpg").write_bytes(CORRUPT_JPEG)
        (reason,) = wait_for(lambda: list(failed.glob("*.reason.json")), 60, "a failed job", svc)
        job = reason.name.removesuffix(".reason.json")
        kept = failed / job / "cam" / "2026" / "Jane_Doe.jpg"  # under its path in the inbox
        # The reason is written first, the original linked right after it.
        wait_for(kept.exists, 30, "the failed original kept", svc)
        assert kept.read_bytes() == CORRUPT_JPEG
        (inbox / "waiting.jpg.part").write_bytes(b"partial")  # never an input: not counted
        status = cli("status", "--json")
        assert status.returncode == 0, status.stderr
        (row,) = json.loads(status.stdout)["inboxes"]
        assert row == {"inbox": "cctv", "waiting": 0, "queued": 0, "running": 0, "in_review": 0, "done_24h": 0,
                       "failed_24h": 1, "in_failed": 1}
        assert "Jane_Doe" not in status.stdout + status.stderr
        assert cli("retry", "20260101T000000-00000000").returncode == 2  # unknown: one clear line
        kept.write_bytes(face_jpeg())  # the operator re-exported the file
        done = cli("retry", job)
        assert done.returncode == 0, done.stderr
        assert "Jane_Doe" not in done.stdout + done.stderr and job in done.stdout
        assert not reason.exists() and not (failed / job).exists()
        wait_for(lambda: (outbox / "cam" / "2026" / "Jane_Doe.jpg").exists(), 60, "the retried output", svc)
        table = cli("status").stdout.splitlines()
        assert table[0].split()[:2] == ["INBOX", "WAITING"] and table[1].split()[0] == "cctv"
        assert cli("retry", "--all-failed").stdout.strip().endswith("0 job(s) retried, 0 problem(s)")
        assert svc.stop() == 0
    finally:
        svc.kill()
