"""The durable queue: job states survive the process, claims are exclusive, dead owners'
claims are taken over, and nothing personal stays behind."""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath

import pytest

from anond.errors import ConfigError
from anond.jobs import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    ClaimBox,
    JobStore,
    content_digest,
    content_fingerprint,
    new_job_id,
    quick_fingerprint,
)

NAME = "Jane_Doe_ABC123"


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "state")
    yield s
    s.close()


def test_job_ids_are_unique_and_sortable():
    ids = [new_job_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(len(i) == 24 for i in ids)


def test_states_move_pending_running_done(store):
    store.add("j1", "inbox1")
    store.add("j2", "inbox1")
    (a,) = store.take_due(1, {"inbox1"})
    assert a.id == "j1" and store.get("j1") == (RUNNING, 0)
    assert store.counts()[PENDING] == 1 and store.counts()[RUNNING] == 1
    store.finish("j1", DONE, seconds=0.5)
    assert store.get("j1") == (DONE, 0)
    assert [j.id for j in store.take_due(5, {"inbox1"})] == ["j2"]
    assert store.take_due(5, {"inbox1"}) == []


def test_retry_waits_for_its_backoff(store):
    store.add("j1", "a")
    store.take_due(1, {"a"})
    store.retry_later("j1", 1, delay_s=0.3, error="transient_io")
    assert store.take_due(1, {"a"}) == []
    time.sleep(0.35)
    (job,) = store.take_due(1, {"a"})
    assert job.attempts == 1


def test_jobs_of_other_inboxes_are_not_taken(store):
    store.add("j1", "a")
    assert store.take_due(5, {"b"}) == []


def test_unfinished_jobs_survive_a_crash(tmp_path):
    s = JobStore(tmp_path / "state")
    s.add("j1", "a")
    s.add("j2", "a")
    s.take_due(1, {"a"})
    # No close(): the process "dies"; a new process opens the same state directory.
    s.db.close()
    os.close(s._lock_fd)
    again = JobStore(tmp_path / "state")
    try:
        assert again.unfinished() == {"j1": ("a", 0), "j2": ("a", 0)}
        assert again.instance == s.instance  # claims of the earlier run are recognised as ours
    finally:
        again.close()


def test_one_process_per_state_dir(store, tmp_path):
    with pytest.raises(ConfigError, match="state_dir"):
        JobStore(tmp_path / "state")


def test_state_files_are_private(store):
    assert (store.dir.stat().st_mode & 0o077) == 0
    for name in ("jobs.sqlite3", "instance"):
        assert (store.dir / name).stat().st_mode & 0o077 == 0


def test_fingerprints_are_salted_per_inbox_and_hold_no_name(store, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    f = tmp_path / f"{NAME}.jpg"
    f.write_bytes(b"content")
    rel = PurePosixPath(f"Jane_Doe/{NAME}.jpg")
    a, b = _box(inbox, "aaaa"), _box(inbox, "bbbb")
    assert len(a.salt) == 32 and a.salt == b.salt  # instances sharing the inbox agree
    fp = content_fingerprint(a.salt, rel, content_digest(f))
    quick = quick_fingerprint(a.salt, rel, 7, 123)
    assert NAME not in fp and "Jane" not in quick
    store.finish("j1", DONE, fingerprints=(fp, quick))
    a.mark_kept((fp, quick))
    assert store.seen(fp) and store.seen(quick) and b.is_kept(fp) and b.is_kept(quick)
    # Same content under another name is another input; same name with other content too.
    assert content_fingerprint(a.salt, PurePosixPath("other.jpg"), content_digest(f)) != fp
    f.write_bytes(b"changed")
    assert content_fingerprint(a.salt, rel, content_digest(f)) != fp
    # Another inbox has another salt: the same file gives other fingerprints.
    (tmp_path / "inbox2").mkdir()
    assert quick_fingerprint(_box(tmp_path / "inbox2", "aaaa").salt, rel, 7, 123) != quick
    store.checkpoint()
    raw = b"".join(p.read_bytes() for p in store.dir.iterdir() if p.is_file())
    raw += b"".join(p.name.encode() for p in (inbox / ".anond").rglob("*"))
    assert b"Jane" not in raw and b"ABC123" not in raw


def test_prune_forgets_old_jobs_but_keeps_fingerprints(store):
    store.finish("old", DONE, fingerprints=("c:abc",))
    store.add("old", "a")
    store.finish("old", FAILED, error="corrupt_media")
    time.sleep(0.05)
    assert store.prune(0.01) == 1
    assert store.get("old") is None and store.seen("c:abc")


# ------------------------------------------------------------------------------ claims


def _box(inbox: Path, instance: str, session: str = "s1") -> ClaimBox:
    box = ClaimBox(inbox, instance, session)
    box.open()
    return box


def test_claim_moves_the_file_into_the_claim_area(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "Jane_Doe").mkdir(parents=True)
    (inbox / "Jane_Doe" / f"{NAME}.jpg").write_bytes(b"photo")
    (inbox / "Jane_Doe" / f"{NAME}.jpg.regions.json").write_bytes(b"{}")
    box = _box(inbox, "aaaa")
    claim = box.claim(PurePosixPath(f"Jane_Doe/{NAME}.jpg"), "job1", sidecar=True)
    assert claim is not None
    rel, path = claim.source()
    assert rel == PurePosixPath(f"Jane_Doe/{NAME}.jpg") and path.read_bytes() == b"photo"
    assert claim.sidecar is not None and claim.sidecar.read_bytes() == b"{}"
    assert not (inbox / "Jane_Doe" / f"{NAME}.jpg").exists()
    assert not claim.committed
    claim.mark_committed()
    assert claim.committed


def test_two_owners_claiming_one_file_one_wins(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    a, b = _box(inbox, "aaaa"), _box(inbox, "bbbb")
    for i in range(20):
        (inbox / f"{i}.jpg").write_bytes(b"x")
        rel = PurePosixPath(f"{i}.jpg")
        got = [a.claim(rel, f"a{i}", sidecar=False), b.claim(rel, f"b{i}", sidecar=False)]
        assert sum(c is not None for c in got) == 1
    assert len(a.own_claims()) == 20 and b.own_claims() == []
    # The loser leaves no empty claim folder behind.
    assert sorted(os.listdir(b.mine)) == []


def test_live_owner_keeps_its_claims(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(b"x")
    a, b = _box(inbox, "aaaa"), _box(inbox, "bbbb")
    a.claim(PurePosixPath("a.jpg"), "job1", sidecar=False)
    assert b.dead_owners(lease_s=30) == []


def test_dead_owner_claims_are_taken_over_after_lease_expiry(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(b"x")
    a, b, c = _box(inbox, "aaaa"), _box(inbox, "bbbb"), _box(inbox, "cccc")
    a.claim(PurePosixPath("a.jpg"), "job1", sidecar=False)
    old = time.time() - 100
    os.utime(a.lease, (old, old))  # a stopped renewing its lease 100 s ago
    assert b.dead_owners(lease_s=30) == [a.owner]
    won_b = b.take_over(a.owner)
    won_c = c.take_over(a.owner)  # too late: b was faster
    assert [x.job_id for x in won_b] == ["job1"] and won_c == []
    assert b.own_claims()[0].source()[1].read_bytes() == b"x"
    assert not (inbox / ".anond" / "claims" / a.owner).exists()


def test_earlier_sessions_of_this_instance_are_taken_over_at_once(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(b"x")
    before = _box(inbox, "aaaa", "s1")
    before.claim(PurePosixPath("a.jpg"), "job1", sidecar=False)
    after = _box(inbox, "aaaa", "s2")  # restarted: lease of s1 is fresh, yet s1 is gone
    other = _box(inbox, "bbbb")
    assert other.dead_owners(lease_s=30) == []
    assert after.dead_owners(lease_s=30) == [before.owner]
    assert [c.job_id for c in after.take_over(before.owner)] == ["job1"]


def test_release_puts_an_unstarted_file_back(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "d").mkdir(parents=True)
    (inbox / "d" / "a.jpg").write_bytes(b"x")
    box = _box(inbox, "aaaa")
    claim = box.claim(PurePosixPath("d/a.jpg"), "job1", sidecar=False)
    assert box.release(claim)
    assert (inbox / "d" / "a.jpg").read_bytes() == b"x"
    assert box.own_claims() == []


def test_move_no_clobber_never_overwrites(tmp_path):
    from anond.fsutil import move_no_clobber

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.jpg").write_bytes(b"existing")
    src = tmp_path / "new.jpg"
    src.write_bytes(b"new")
    landed = move_no_clobber(src, tmp_path / "out" / "a.jpg")
    assert landed.name == "a (1).jpg" and landed.read_bytes() == b"new"
    assert (tmp_path / "out" / "a.jpg").read_bytes() == b"existing" and not src.exists()


def test_the_commit_token_lets_one_committer_through_and_breaks_a_dead_ones(tmp_path):
    """cluster: a stalled worker back after its job was redelivered must not commit again."""
    import os
    import time

    from anond.jobs import Claim

    claim = Claim(tmp_path / "job", "job")
    claim.dir.mkdir()
    assert claim.take_commit("job.worker-a", stale_s=60)
    assert claim.take_commit("job.worker-a", stale_s=60)  # our own, after a crash: still ours
    assert not claim.take_commit("job.worker-b", stale_s=60)  # the other waits
    old = time.time() - 120
    os.utime(claim.dir / "committing.1", (old, old))  # a's committer died before linking
    assert claim.take_commit("job.worker-b", stale_s=60)
    assert claim.commit_holder()[:2] == (2, "job.worker-b")
    assert not claim.take_commit("job.worker-a", stale_s=60)  # a, back: b's is the newest
    claim.mark_committed()
    os.utime(claim.dir / "committing.2", (old, old))
    assert not claim.take_commit("job.worker-a", stale_s=60)  # committed: never broken


def test_two_workers_breaking_one_stale_commit_token_let_one_through(tmp_path):
    """Both read the same dead committer's token as stale, then both break it: only one may
    commit (deleting and re-creating the token let the second delete the first's new one)."""
    import os
    import threading
    import time

    from anond.jobs import Claim

    for trial in range(20):
        claim = Claim(tmp_path / f"job{trial}", "job")
        claim.dir.mkdir()
        assert claim.take_commit("job.dead", stale_s=60)
        old = time.time() - 120
        os.utime(claim.dir / "committing.1", (old, old))
        both_read = threading.Barrier(2)
        real = Claim.commit_holder
        results: dict[str, bool] = {}

        def holder_then_wait(self, real=real, both_read=both_read):
            held = real(self)
            if held is not None and held[1] == "job.dead":
                both_read.wait(timeout=5)  # each has seen the stale token before either acts
            return held

        def worker(tag: str) -> None:
            results[tag] = Claim(claim.dir, "job").take_commit(tag, stale_s=60)

        Claim.commit_holder = holder_then_wait
        try:
            threads = [threading.Thread(target=worker, args=(t,)) for t in ("job.a", "job.b")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            Claim.commit_holder = real
        assert sorted(results.values()) == [False, True], (trial, results)
        winner = next(t for t, ok in results.items() if ok)
        assert claim.commit_holder()[:2] == (2, winner)
