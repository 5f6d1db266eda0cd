"""281 hostile inputs dropped into a running service (tests/hostile.py makes them): broken,
truncated and bit-flipped photos and videos, decompression bombs, empty files, garbage packets,
misnamed files, odd names, hostile sidecars, links and a FIFO.

The promises: every input ends in exactly one place (a complete output, or failed/<job id>/
with a reason code), links and FIFOs are left alone and never followed, bombs are refused before
decoding (memory stays bounded), the service stays up throughout, nothing outside its folders is
opened, and no name reaches a log line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import av
import cv2
from watchdog.events import FileOpenedEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

import hostile
from service_harness import Anond, files_under, hidden_files_under, wait_for, write_config

RSS_LIMIT_MIB = 1536  # models loaded (~300 MiB) plus one small job; a decoded bomb would be GiBs


class _Opened(FileSystemEventHandler):
    def __init__(self) -> None:
        self.paths: list[str] = []

    def on_opened(self, event) -> None:
        if isinstance(event, FileOpenedEvent):
            self.paths.append(event.src_path)


def _rss_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _failed_jobs(failed: Path) -> dict[str, tuple[str, list[str]]]:
    """{job id: (reason code, files under failed/<job id>/ relative to it)}."""
    out = {}
    for reason_path in failed.glob("*.reason.json"):
        job = reason_path.name.removesuffix(".reason.json")
        reason = json.loads(reason_path.read_text())
        out[job] = (reason["code"], files_under(failed / job) if (failed / job).is_dir() else [])
    return out


def _decodes(path: Path) -> bool:
    from anond.media import IMAGE_FORMATS, kind_of

    if kind_of(path).format not in IMAGE_FORMATS:
        with av.open(str(path)) as c:
            return sum(1 for _ in c.decode(video=0)) > 0
    from PIL import Image

    with Image.open(path) as img:
        img.load()
    return True


def test_hostile_inputs_are_quarantined_or_refused_and_the_service_stays_up(tmp_path, models_dir):
    inbox, outbox, failed, outside = (tmp_path / n for n in ("inbox", "outbox", "failed", "outside"))
    for d in (inbox, outside):
        d.mkdir()
    (outside / "secret.jpg").write_bytes(hostile._image("JPEG", 77))
    cases = hostile.cases()
    assert len(cases) >= 200
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_dir": str(failed),
                                   "stable_after_s": 0.3, "rescan_interval_s": 0.5, "retries": 0,
                                   "metrics": True, "metrics_port": 0},
                          inboxes=[{"path": str(inbox), "outbox": str(outbox)}])
    opened = _Opened()
    observer = InotifyObserver()
    observer.schedule(opened, str(outside), recursive=True)
    observer.start()
    svc = Anond(tmp_path, config, log_level="info").start()
    peak = {"rss": 0.0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set() and svc.alive:
            try:
                peak["rss"] = max(peak["rss"], _rss_mib(svc.proc.pid, "VmRSS"))
            except OSError:
                return
            time.sleep(0.1)

    try:
        svc.wait_ready()
        threading.Thread(target=sample, daemon=True).start()
        links = {c.rel: hostile.make(inbox, outside, c) for c in cases}
        before = {rel: os.lstat(path) for rel, path in links.items()
                  if next(c for c in cases if c.rel == rel).expect == "untouched"}
        expected = [c for c in cases if c.expect != "untouched"]

        def missing() -> list[str]:
            outputs = set(files_under(outbox))
            kept = {rel for _, files in _failed_jobs(failed).values() for rel in files}
            return [c.rel for c in expected if c.output not in outputs and c.rel not in kept]

        try:
            wait_for(lambda: not missing(), 300, f"all {len(expected)} inputs processed or quarantined")
        except AssertionError:
            raise AssertionError(f"not accounted for: {missing()}\n{svc.stderr()[-3000:]}") from None
        time.sleep(1.5)  # a few more rescans: links and the FIFO must still be left alone
        assert svc.alive, "the service died"
        high_water = _rss_mib(svc.proc.pid, "VmHWM")
        assert svc.stop() == 0
    finally:
        sampling.set()
        svc.kill()
        observer.stop()
        observer.join(10)

    outputs = set(files_under(outbox))
    jobs = _failed_jobs(failed)
    kept = {rel: code for code, files in jobs.values() for rel in files}
    problems = []
    for case in cases:
        out, code = case.output in outputs, kept.get(case.rel)
        if case.expect == "untouched":
            if out or code:
                problems.append(f"{case.rel!r}: a link or FIFO was taken")
            continue
        if out and code:
            problems.append(f"{case.rel!r}: both an output and a failed job")
        elif case.expect == "fail" and (out or code not in case.codes):
            problems.append(f"{case.rel!r}: expected a failure in {sorted(case.codes)}, got "
                            f"{'an output' if out else code}")
        elif case.expect == "ok" and not out:
            problems.append(f"{case.rel!r}: expected an output, got {code}")
        elif code is not None and code not in hostile.KNOWN_CODES:
            problems.append(f"{case.rel!r}: unexpected reason code {code}")
        elif out and not _decodes(outbox / case.output):
            problems.append(f"{case.rel!r}: its output does not decode")
    assert problems == [], "\n".join(problems)
    # Every failed job holds exactly the one input it was about (plus its sidecar, if any).
    assert all(len([f for f in files if not f.endswith(".regions.json")]) == 1 for _, files in jobs.values())
    assert hidden_files_under(outbox) == [] and not any(p.endswith(".regions.json") for p in outputs)
    # Links and the FIFO: still there, unchanged, never followed; nothing outside was opened.
    for rel, st in before.items():
        now = os.lstat(inbox / rel)
        assert (now.st_ino, now.st_mtime_ns, now.st_mode) == (st.st_ino, st.st_mtime_ns, st.st_mode), rel
    assert opened.paths == [], opened.paths
    assert (outside / "secret.jpg").exists() and [p.name for p in outside.iterdir()] == ["secret.jpg"]
    # Bombs were refused from their headers: memory stayed that of small jobs.
    assert max(peak["rss"], high_water) < RSS_LIMIT_MIB, (peak, high_water)
    print(f"hostile: {len(outputs)} outputs, {len(jobs)} quarantined "
          f"({sorted({c for c, _ in jobs.values()})}), peak RSS {max(peak['rss'], high_water):.0f} MiB")
    # No name reached the logs.
    logs = svc.stderr() + svc.stdout()
    for secret in ("Jane", "Døe", "secret", "truncated/", "flipped", "bombs", "misnamed"):
        assert secret not in logs, secret
    assert cv2.imread(str(outbox / "names" / "Jane\nDoe.jpg")) is not None
