"""Two instances on one inbox: every file processed exactly once, also when one of them dies."""

from __future__ import annotations

import time
from collections import Counter

from service_harness import Anond, files_under, hidden_files_under, noise_jpeg, wait_for, write_config

N = 36


def _config(tmp_path, models_dir, name: str):
    """Instance `name`: its own state directory; inbox, outbox and failed folder shared."""
    return write_config(tmp_path / f"{name}.toml", models_dir=models_dir,
                        service={"state_dir": str(tmp_path / f"state-{name}"),
                                 "failed_dir": str(tmp_path / "failed"), "stable_after_s": 0.3,
                                 "rescan_interval_s": 0.5, "lease_s": 2.0},
                        inboxes=[{"path": str(tmp_path / "inbox"), "outbox": str(tmp_path / "outbox")}])


def test_two_instances_share_one_inbox_and_survive_one_dying(tmp_path, models_dir):
    inbox, outbox, failed = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "failed"
    for i in range(N):
        path = inbox / f"d{i % 4}" / f"p{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        # 512 px: a job takes long enough (~0.1 s) that A still holds claims when it is
        # killed; 96 px jobs (~10 ms) could all be done before the test looked.
        path.write_bytes(noise_jpeg(100 + i, size=512))

    a = Anond(tmp_path, _config(tmp_path, models_dir, "a"), log_level="info").start()
    b = Anond(tmp_path, _config(tmp_path, models_dir, "b"), log_level="info").start()
    try:
        a.wait_ready()
        b.wait_ready()
        a.wait_event("job.completed", 60, count=3)
        b.wait_event("job.completed", 60, count=1)
        # Kill A while it holds claims (a job running or queued): B must take them over once
        # A's lease (2 s) has expired.
        claims = inbox / ".anond" / "claims"
        owner_a = wait_for(lambda: next((d for d in claims.iterdir() if any(d.iterdir())
                                         and (tmp_path / "state-a" / "instance").read_text() in d.name),
                                        None), 30, "A holding a claim", a)
        a.kill()
        held = [d.name for d in owner_a.iterdir()] if owner_a.exists() else []
        wait_for(lambda: len(files_under(outbox)) == N and not files_under(inbox), 120,
                 "all files processed", b)
        time.sleep(1.0)
        assert b.stop() == 0
    finally:
        a.kill()
        b.kill()

    names = [f"d{i % 4}/p{i:02d}.jpg" for i in range(N)]
    assert files_under(outbox) == sorted(names)  # each exactly once: no "p07 (1).jpg"
    assert hidden_files_under(outbox) == [] and files_under(failed) == []
    done_a = Counter(e["job"] for e in a.events("job.completed"))
    done_b = Counter(e["job"] for e in b.events("job.completed"))
    assert not set(done_a) & set(done_b), "a job was finished by both instances"
    assert len(done_a) + len(done_b) <= N and len(done_a) >= 3 and len(done_b) >= 1
    recovered = {e["job"] for e in b.events("job.recovered") if e.get("own") is False}
    assert set(held) <= recovered, "B did not take over the dead instance's claims"
    assert held, "A held no claim when it was killed"
    assert list((inbox / ".anond" / "claims").iterdir()) == []


def test_an_instance_frozen_past_its_lease_never_collides_with_the_one_that_took_over(tmp_path, models_dir):
    """A (SIGSTOP) stalls in the middle of a job longer than its lease, as on an NFS hang; B
    takes the job over and starts it; A wakes up (SIGCONT) while B is still working. Each
    writes its own temporary and staged files, A finds its claim gone and drops its result:
    exactly one output, no retry, nothing failed, nothing left behind."""
    import signal

    import av

    import hostile

    inbox, outbox, failed = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "failed"
    (inbox / "cam").mkdir(parents=True)

    a = Anond(tmp_path, _config(tmp_path, models_dir, "a"), log_level="info").start()
    b = Anond(tmp_path, _config(tmp_path, models_dir, "b"), log_level="info")
    try:
        a.wait_ready()
        # A video: its output is written while it is processed, for several seconds.
        (tmp_path / "clip.mp4").write_bytes(hostile.clip_bytes("mp4", 1, frames=240, size=(640, 480)))
        (tmp_path / "clip.mp4").rename(inbox / "cam" / "clip.mp4")
        (started,) = a.wait_event("job.started", 60)
        time.sleep(0.5)
        a.signal(signal.SIGSTOP)
        b.start()
        b.wait_event("job.started", 90)
        (recovered,) = b.events("job.recovered")  # taken over from A, whose lease ran out
        assert recovered["own"] is False and recovered["job"] == started["job"]
        (taken,) = b.events("job.started")
        assert taken["job"] == started["job"]
        a.signal(signal.SIGCONT)  # both now work on the same job
        a.wait_event("job.lost_claim", 90)
        b.wait_event("job.completed", 90)
        time.sleep(1.0)
        assert a.stop() == 0 and b.stop() == 0
    finally:
        for svc in (a, b):
            try:
                svc.signal(signal.SIGCONT)
            except Exception:  # noqa: BLE001 - not started or already gone
                pass
            svc.kill()
    assert files_under(outbox) == ["cam/clip.mp4"]  # exactly one output, complete
    with av.open(str(outbox / "cam" / "clip.mp4")) as out:
        assert sum(1 for _ in out.decode(video=0)) == 240
    assert hidden_files_under(outbox) == [] and files_under(failed) == []
    assert not a.events("job.completed") and not a.events("job.retry") and not b.events("job.retry")
    assert files_under(inbox) == []

