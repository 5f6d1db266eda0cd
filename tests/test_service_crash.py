"""kill -9 at random moments, then restart: every input ends up exactly once in the outbox or in
failed/ with a reason, and no temporary or partial file is left visible."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

from service_harness import (
    CORRUPT_JPEG,
    Anond,
    decode,
    face_jpeg,
    files_under,
    hidden_files_under,
    noise_jpeg,
    wait_for,
    write_config,
)

N_GOOD = 28
KILLS = 6
TARGETED_TRIES = 5


def claimed(claims: Path) -> list[Path]:
    """Job folders in the claim area, whoever owns them."""
    if not claims.is_dir():
        return []
    return [job for owner in claims.iterdir() if owner.is_dir() and not owner.name.startswith(".")
            for job in owner.iterdir() if not job.name.startswith(".")]


def test_kill_9_during_many_jobs_loses_and_duplicates_nothing(tmp_path, models_dir):
    seed = int(os.environ.get("ANOND_TEST_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"seed {seed}")
    inbox, outbox, failed = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "failed"
    good: dict[str, tuple[int, int]] = {}
    for i in range(N_GOOD):
        rel = f"set{i % 3}/sub{i % 2}/img{i:02d}.jpg"
        path = inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 192 if i % 7 == 0 else 96
        path.write_bytes(face_jpeg(size) if i % 7 == 0 else noise_jpeg(i, size))
        good[rel] = (size, size)
    corrupt = ["broken1.jpg", "set1/broken2.jpg"]
    for rel in corrupt:
        (inbox / rel).write_bytes(CORRUPT_JPEG)
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_dir": str(failed),
                                   "stable_after_s": 0.2, "rescan_interval_s": 0.5},
                          inboxes=[{"path": str(inbox), "outbox": str(outbox)}])

    claims = inbox / ".anond" / "claims"
    runs = []
    # First a kill aimed at a job in flight: as soon as a job has started, so its claim is
    # still in the claim area. A job may finish in the instant between its log line and the
    # kill, so aim again (a few times at most) until a claim is left behind, as seen on disk.
    hit = 0
    for _ in range(TARGETED_TRIES):
        svc = Anond(tmp_path, config, log_level="info").start()
        runs.append(svc)
        try:
            wait_for(lambda: svc.events("job.started"), 90, "a job to start", svc, every=0.01)
        finally:
            svc.kill()
        hit = len(claimed(claims))
        if hit:
            break
    print(f"aimed kills {len(runs)}, claims left {hit}")
    assert hit, f"{TARGETED_TRIES} kills right after job.started all came after the job ended"
    # Then kills at random moments, start-up and recovery included.
    for k in range(KILLS):
        svc = Anond(tmp_path, config, log_level="info").start()
        runs.append(svc)
        try:
            if k % 2:
                svc.wait_ready()  # the other half die at any moment, start-up included
            time.sleep(rng.uniform(0.2, 2.0))
        finally:
            svc.kill()
    svc = Anond(tmp_path, config, log_level="info").start()
    runs.append(svc)
    try:
        svc.wait_ready()  # recovery runs before READY

        def settled():
            return len(files_under(outbox)) + len(list(failed.glob("*.reason.json"))) >= N_GOOD + len(corrupt) \
                and not files_under(inbox)
        wait_for(settled, 120, "every input to be settled", svc)
        time.sleep(1.0)  # a few more rescans: nothing may be redone
        assert svc.stop() == 0
    finally:
        svc.kill()

    # Every good input exactly once in the outbox, under its own name (no "name (1).jpg").
    assert files_under(outbox) == sorted(good)
    for rel, (w, h) in good.items():
        image = decode(outbox / rel)
        assert image is not None and image.shape == (h, w, 3), rel
    # Every corrupt input exactly once in failed/, next to its reason.
    reasons = sorted(failed.glob("*.reason.json"))
    assert len(reasons) == len(corrupt)
    names = []
    for reason_path in reasons:
        reason = json.loads(reason_path.read_text())
        assert reason["code"] == "corrupt_media"
        job = reason_path.name.removesuffix(".reason.json")
        names += files_under(failed / job)
    assert sorted(names) == sorted(corrupt)  # under their paths in the inbox
    # Nothing half-written or staged anywhere; nothing left in the claim area or the inbox.
    assert hidden_files_under(outbox) == [] and hidden_files_under(failed) == []
    assert files_under(inbox) == []
    assert list((inbox / ".anond" / "claims").iterdir()) == []
    # No job finished twice (a job interrupted before its end is redone under the same id).
    completed = Counter(e["job"] for r in runs for e in r.events("job.completed"))
    assert completed and max(completed.values()) == 1
    # The claims the aimed kill left behind were taken over and redone, not lost.
    assert sum(len(r.events("job.recovered")) for r in runs) >= hit
