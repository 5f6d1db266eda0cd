"""The durable queue: claims in the inbox, job states in SQLite, recovery after a crash.

Two records, each the truth for one thing:

* **Claims** (`<inbox>/.anond/claims/<owner>/<job id>/in/<name>`, its folder in `where`): where an input
  file is while a job owns it. A file is claimed by one atomic rename inside the inbox's file
  system, which holds on NFS and SMB too (no flock), so several instances, on one host or on
  several hosts sharing the inbox, never take the same file. `<owner>` is `<instance>.<session>`;
  each owner renews `<inbox>/.anond/leases/<owner>`. Claims of an owner whose lease expired are
  taken over by renaming its job folders into one's own (again atomic: one instance wins).
  Leases are compared with file times set by the same file server, so clocks need not agree.
* **The job table** (`<state_dir>/jobs.sqlite3`, WAL): pending → running → done | failed, with
  attempts and the next try. It holds job ids, inbox labels, states, error codes, durations
  and salted fingerprints: never a file name or path (those exist only in the claim while the
  job is in flight, inside the user's own inbox).

Fingerprints (only for inboxes with `originals = "keep"`, to not process a kept original again)
are HMAC-SHA256 over the relative path plus the SHA-256 of the content. Content, not inode or
mtime, is what identifies a file reliably on network shares (inode numbers change across SMB
remounts, copies and restores reset mtime); the relative path is included so the same photo
dropped under two names gives two outputs, and a kept file whose content changes is processed
again. A cheap second fingerprint over path, size and mtime lets rescans skip kept files
without reading them. The salt is random, kept in `<inbox>/.anond/salt`: every instance sharing
the inbox must compute the same fingerprints, so besides the job table they are also left as
empty marker files in `<inbox>/.anond/kept/`. Without the salt a fingerprint says nothing; with
it, testing a guess needs the file's content, which whoever can read the salt already has.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import os
import stat
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import ConfigError
from .fsutil import file_sha256, fsync_dir, link_once, move_exact, reached_without_links

CONTROL_DIR = ".anond"
INPUT_DIR = "in"  # the claimed input, under its own name
WHERE = "where"  # its folder relative to the inbox (only while in flight)
SIDECAR = "regions.json"
COMMITTED = "committed"
COMMIT_TOKEN = "committing"  # cluster: `committing.<n>`, who may commit (Claim.take_commit)

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
PUBLISHED = "published"  # an intake's job handed to the cluster's stream (anond.cluster)
SKIPPED = "skipped"  # a kept original seen before: nothing to do


def new_job_id() -> str:
    """Sortable and unique across instances: UTC time plus 32 random bits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


# ---------------------------------------------------------------------------------------------
# The job table


@dataclass
class Job:
    id: str
    inbox: str
    attempts: int


class JobStore:
    """Job states in SQLite (WAL) inside the state directory; one process per state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = _lock_exclusive(self.dir / "lock")
        self.instance = _read_or_create(
            self.dir / "instance", lambda: secrets.token_hex(6).encode()
        ).decode().strip()
        self._mutex = threading.RLock()
        self.db = sqlite3.connect(self.dir / "jobs.sqlite3", check_same_thread=False,
                                  isolation_level=None, timeout=30)
        os.chmod(self.dir / "jobs.sqlite3", 0o600)
        with self._mutex:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA secure_delete=ON")  # freed pages are zeroed, not left behind
            self.db.executescript(
                """
                CREATE TABLE IF NOT EXISTS jobs (
                    id TEXT PRIMARY KEY,
                    inbox TEXT NOT NULL,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_try REAL NOT NULL DEFAULT 0,
                    created REAL NOT NULL,
                    finished REAL,
                    error TEXT,
                    seconds REAL
                );
                CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, next_try);
                CREATE TABLE IF NOT EXISTS fingerprints (
                    fp TEXT PRIMARY KEY,
                    job TEXT NOT NULL,
                    at REAL NOT NULL
                );
                """
            )

            columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
            if "remote" not in columns:  # a job pulled from the cluster's stream, not ours to queue
                self.db.execute("ALTER TABLE jobs ADD COLUMN remote INTEGER NOT NULL DEFAULT 0")

    # -- states

    def add(self, job_id: str, inbox: str, attempts: int = 0) -> None:
        """A claimed input waiting for a worker (or waiting again, after a crash)."""
        with self._mutex:
            self.db.execute(
                "INSERT INTO jobs(id, inbox, state, attempts, next_try, created) VALUES (?,?,?,?,0,?) "
                "ON CONFLICT(id) DO UPDATE SET state=excluded.state, inbox=excluded.inbox, next_try=0",
                (job_id, inbox, PENDING, attempts, time.time()),
            )

    def outcome(self, job_id: str) -> tuple[str, float, str | None] | None:
        """(state, next try, error code) of a job as a worker left it, None when unknown."""
        with self._mutex:
            row = self.db.execute("SELECT state, next_try, error FROM jobs WHERE id=?", (job_id,)).fetchone()
        return (row[0], float(row[1]), row[2]) if row else None

    def start_remote(self, job_id: str, inbox: str, attempts: int) -> None:
        """A job delivered by the cluster's stream, running here now (never queued by us: the
        stream redelivers it)."""
        with self._mutex:
            self.db.execute(
                "INSERT INTO jobs(id, inbox, state, attempts, next_try, created, remote) "
                "VALUES (?,?,?,?,0,?,1) ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
                "attempts=excluded.attempts, remote=1",
                (job_id, inbox, RUNNING, attempts, time.time()),
            )

    def get(self, job_id: str) -> tuple[str, int] | None:
        """(state, attempts) of a job, None when unknown."""
        with self._mutex:
            row = self.db.execute("SELECT state, attempts FROM jobs WHERE id=?", (job_id,)).fetchone()
        return (row[0], int(row[1])) if row else None

    def take_due(self, limit: int, inboxes: set[str], now: float | None = None) -> list[Job]:
        """Up to `limit` pending jobs whose next try is due, marked running, oldest first."""
        if limit <= 0 or not inboxes:
            return []
        now = time.time() if now is None else now
        marks = ",".join("?" * len(inboxes))
        with self._mutex:
            rows = self.db.execute(
                f"SELECT id, inbox, attempts FROM jobs WHERE state=? AND next_try<=? AND remote=0 "
                f"AND inbox IN ({marks}) "
                "ORDER BY created, id LIMIT ?",
                (PENDING, now, *sorted(inboxes), limit),
            ).fetchall()
            for job_id, _, _ in rows:
                self.db.execute("UPDATE jobs SET state=? WHERE id=?", (RUNNING, job_id))
        return [Job(r[0], r[1], int(r[2])) for r in rows]

    def retry_later(self, job_id: str, attempts: int, delay_s: float, error: str) -> None:
        with self._mutex:
            self.db.execute(
                "UPDATE jobs SET state=?, attempts=?, next_try=?, error=? WHERE id=?",
                (PENDING, attempts, time.time() + delay_s, error, job_id),
            )

    def requeue(self, job_id: str) -> None:
        """A running job that was interrupted (shutdown): pending again, attempt not counted."""
        with self._mutex:
            self.db.execute("UPDATE jobs SET state=?, next_try=0 WHERE id=? AND state=?",
                            (PENDING, job_id, RUNNING))

    def finish(self, job_id: str, state: str, *, error: str | None = None,
               seconds: float | None = None, fingerprints: tuple[str, ...] = ()) -> None:
        """done or failed; fingerprints (salted) remembered for kept originals."""
        now = time.time()
        with self._mutex:
            self.db.execute("BEGIN")
            try:
                self.db.execute("UPDATE jobs SET state=?, finished=?, error=?, seconds=? WHERE id=?",
                                (state, now, error, seconds, job_id))
                for fp in fingerprints:
                    self.db.execute("INSERT OR IGNORE INTO fingerprints(fp, job, at) VALUES (?,?,?)",
                                    (fp, job_id, now))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def wait_review(self, job_id: str, seconds: float) -> None:
        """The job's result waits for an operator (`anond.review`): out of the queue, not done."""
        with self._mutex:
            self.db.execute("UPDATE jobs SET state=?, seconds=? WHERE id=?", ("review", seconds, job_id))

    def remember(self, fingerprints: tuple[str, ...], job_id: str) -> None:
        with self._mutex:
            for fp in fingerprints:
                self.db.execute("INSERT OR IGNORE INTO fingerprints(fp, job, at) VALUES (?,?,?)",
                                (fp, job_id, time.time()))

    def forget(self, job_id: str) -> None:
        """A job another instance took over: no longer ours."""
        with self._mutex:
            self.db.execute("DELETE FROM jobs WHERE id=? AND state IN (?,?)", (job_id, PENDING, RUNNING))

    def forget_remote(self) -> int:
        """Cluster jobs this instance was running when it stopped: the stream redelivers them."""
        with self._mutex:
            cur = self.db.execute("DELETE FROM jobs WHERE remote=1 AND state IN (?,?)", (PENDING, RUNNING))
        return cur.rowcount

    def unfinished(self) -> dict[str, tuple[str, int]]:
        """{job id: (inbox, attempts)} of pending and running jobs (used at start-up)."""
        with self._mutex:
            rows = self.db.execute("SELECT id, inbox, attempts FROM jobs WHERE state IN (?,?) "
                                   "AND remote=0", (PENDING, RUNNING)).fetchall()
        return {r[0]: (r[1], int(r[2])) for r in rows}

    def seen(self, fp: str) -> bool:
        with self._mutex:
            return self.db.execute("SELECT 1 FROM fingerprints WHERE fp=?", (fp,)).fetchone() is not None

    def counts(self) -> dict[str, int]:
        with self._mutex:
            rows = self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        out = {PENDING: 0, RUNNING: 0, DONE: 0, FAILED: 0, SKIPPED: 0, "review": 0}
        out.update({state: int(n) for state, n in rows})
        return out

    def prune(self, older_than_s: float) -> int:
        """Forget finished jobs older than the history window (fingerprints stay)."""
        with self._mutex:
            cur = self.db.execute("DELETE FROM jobs WHERE state IN (?,?,?,?) AND finished < ?",
                                  (DONE, FAILED, SKIPPED, PUBLISHED, time.time() - older_than_s))
        return cur.rowcount

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it (no stale page images linger)."""
        with self._mutex:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._mutex:
            try:
                self.checkpoint()
            finally:
                self.db.close()
                os.close(self._lock_fd)



def quick_fingerprint(salt: bytes, rel: PurePosixPath, size: int, mtime_ns: int) -> str:
    return "q" + _hmac(salt, f"{rel}\0{size}\0{mtime_ns}".encode())


def content_fingerprint(salt: bytes, rel: PurePosixPath, digest: bytes) -> str:
    """`digest`: the SHA-256 of the content (`content_digest`)."""
    return "c" + _hmac(salt, str(rel).encode() + b"\0" + digest)


def content_digest(path: Path) -> bytes:
    return file_sha256(path).digest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _hmac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _lock_exclusive(path: Path) -> int:
    # flock on the local state directory only (never on a share): one process per state_dir.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError("service.state_dir is in use by another anond process "
                          "(every instance needs its own state_dir)") from None
    return fd


def _read_or_create(path: Path, make) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(make())
        f.flush()
        os.fsync(f.fileno())
    if not link_once(tmp, path):  # first writer wins
        tmp.unlink()
    return path.read_bytes()


# ---------------------------------------------------------------------------------------------
# Claims in the inbox


@dataclass
class Claim:
    """A job's folder in the inbox's claim area: the input (and sidecar) while in flight."""

    dir: Path
    job_id: str

    def source(self) -> tuple[PurePosixPath, Path] | None:
        """(relative path in the inbox, where the file is now) or None once it moved on."""
        try:
            names = os.listdir(self.dir / INPUT_DIR)
            where = (self.dir / WHERE).read_bytes().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return None
        if not names:
            return None
        return PurePosixPath(where) / names[0], self.dir / INPUT_DIR / names[0]

    @property
    def sidecar(self) -> Path | None:
        path = self.dir / SIDECAR
        return path if path.is_file() else None

    @property
    def committed(self) -> bool:
        return (self.dir / COMMITTED).exists()

    def mark_committed(self) -> None:
        fd = os.open(self.dir / COMMITTED, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.dir)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def take_commit(self, tag: str, stale_s: float) -> bool:
        """The right to commit the job's output (cluster: two workers may hold one job when a
        stalled one comes back after its redelivery). Tokens are generations, `committing.<n>`,
        each created exclusively and naming its committer; the newest decides: True when it is
        ours (new, or left by our own earlier attempt), False while another committer's is
        fresher than `stale_s` or the job is committed. An older one is a dead committer's: it
        is superseded by creating the next generation, exclusively, so of two workers breaking
        the same stale token only one gets through (deleting and re-creating one file let both)."""
        for _ in range(8):
            held = self.commit_holder()
            gen = 0
            if held is not None:
                gen, holder, age = held
                if holder == tag:
                    return True
                if age <= stale_s or self.committed:
                    return False
            if self._create_token(gen + 1, tag):
                return True
        return False

    def commit_holder(self) -> tuple[int, str, float] | None:
        """(generation, committer, age in seconds) of the newest commit token, or None."""
        gens = sorted((int(n.rsplit(".", 1)[1]) for n in os.listdir(self.dir)
                       if n.startswith(COMMIT_TOKEN + ".") and n.rsplit(".", 1)[1].isdigit()),
                      reverse=True)
        for gen in gens:
            path = self.dir / f"{COMMIT_TOKEN}.{gen}"
            try:
                return gen, path.read_text(), time.time() - path.stat().st_mtime
            except FileNotFoundError:  # the claim is being removed
                continue
        return None

    def _create_token(self, gen: int, tag: str) -> bool:
        """Create generation `gen` naming `tag`; False if another committer created it first."""
        try:
            fd = os.open(self.dir / f"{COMMIT_TOKEN}.{gen}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, tag.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.dir)
        return True


class ClaimBox:
    """The claim area of one inbox for one owner (this process)."""

    def __init__(self, inbox: Path, instance: str, session: str) -> None:
        self.root = Path(inbox)
        self.control = self.root / CONTROL_DIR
        self.claims = self.control / "claims"
        self.leases = self.control / "leases"
        self.instance = instance
        self.owner = f"{instance}.{session}"
        self.mine = self.claims / self.owner
        self.lease = self.leases / self.owner
        self._salt: bytes | None = None

    @property
    def salt(self) -> bytes:
        """The inbox's fingerprint salt, shared by every instance (first one creates it)."""
        if self._salt is None:
            self._salt = _read_or_create(self.control / "salt", lambda: secrets.token_bytes(32))
        return self._salt

    def mark_kept(self, fingerprints: tuple[str, ...]) -> None:
        """Kept originals: tell every instance (marker files named by the fingerprint)."""
        kept = self.control / "kept"
        kept.mkdir(exist_ok=True)
        for fp in fingerprints:
            os.close(os.open(kept / fp, os.O_WRONLY | os.O_CREAT, 0o644))

    def is_kept(self, fp: str) -> bool:
        return (self.control / "kept" / fp).exists()

    def open(self) -> None:
        """Create the claim area and this owner's lease (lease first: a claims folder without a
        lease is taken for a dead owner's)."""
        for d in (self.control, self.claims, self.leases):
            d.mkdir(exist_ok=True)
        self.renew()
        self.mine.mkdir(exist_ok=True)

    def renew(self) -> float:
        """Touch the lease; returns its new mtime (the file server's notion of now)."""
        try:
            os.utime(self.lease)
        except FileNotFoundError:
            self.lease.write_bytes(b"")
        return self.lease.stat().st_mtime

    def close(self) -> None:
        """Give the lease back (claims left behind are taken over at once by anyone)."""
        try:
            os.rmdir(self.mine)
        except OSError:
            pass
        try:
            self.lease.unlink()
        except FileNotFoundError:
            pass

    def claim(self, rel: PurePosixPath, job_id: str, sidecar: bool) -> Claim | None:
        """Move `rel` (and its sidecar) into a new claim of ours; None when another got it."""
        if not self.lease.exists():  # removed by another instance while we were stalled
            self.renew()
        source = self.root / rel
        # The last gate before a file is moved: a real file in a real folder of the inbox.
        try:
            regular = stat.S_ISREG(os.lstat(source).st_mode)
        except FileNotFoundError:
            return None  # another instance was faster, or it went away
        if not regular or not reached_without_links(self.root, rel.parent):
            raise OSError(errno.ELOOP, "not a regular file in the inbox's own folders")
        claim = Claim(self.mine / job_id, job_id)
        # Flat on purpose: no folder named by the user is created in the claim area (watchers
        # of the inbox would otherwise see, and may print, those folder names).
        (claim.dir / INPUT_DIR).mkdir(parents=True)
        _write_synced(claim.dir / WHERE, str(rel.parent).encode("utf-8", "surrogateescape"))
        target = claim.dir / INPUT_DIR / rel.name
        try:
            os.rename(self.root / rel, target)
        except FileNotFoundError:
            claim.remove()
            return None
        except OSError:
            claim.remove()
            raise
        if not os.path.lexists(target):  # an NFS rename retransmitted after success reports ENOENT
            claim.remove()
            return None
        if not stat.S_ISREG(os.lstat(target).st_mode):  # swapped for a link after the check
            os.rename(target, source)
            claim.remove()
            raise OSError(errno.ELOOP, "not a regular file")
        fsync_dir(claim.dir)
        if sidecar:
            self.claim_sidecar(claim, rel)
        return claim

    def claim_sidecar(self, claim: Claim, rel: PurePosixPath) -> bool:
        from .regions import sidecar_path

        try:
            os.rename(sidecar_path(self.root / rel), claim.dir / SIDECAR)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # a 255-byte name can have no sidecar
                return False
            raise

    def release(self, claim: Claim) -> bool:
        """Put an unstarted claim's input back where it was (clean shutdown); False if the
        name was taken meanwhile (the claim then stays, to be taken over later)."""
        found = claim.source()
        if found is None or claim.committed:
            return False
        rel, path = found
        try:
            move_exact(path, self.root / rel)
        except FileExistsError:
            return False
        sidecar = claim.sidecar
        if sidecar is not None:
            from .regions import sidecar_path

            try:
                move_exact(sidecar, sidecar_path(self.root / rel))
            except FileExistsError:
                pass
        claim.remove()
        return True

    def own_claims(self) -> list[Claim]:
        try:
            names = sorted(os.listdir(self.mine))
        except FileNotFoundError:
            return []
        return [Claim(self.mine / n, n) for n in names if not n.startswith(".")]

    def dead_owners(self, lease_s: float) -> list[str]:
        """Owners whose claims may be taken over: earlier sessions of this instance (the state
        directory lock proves they are gone) and owners whose lease is older than lease_s."""
        now = self.renew()
        dead = []
        try:
            owners = os.listdir(self.claims)
        except FileNotFoundError:
            return []
        for owner in owners:
            if owner == self.owner or owner.startswith("."):
                continue
            if owner.split(".", 1)[0] == self.instance:
                dead.append(owner)
                continue
            try:
                stamp = (self.leases / owner).stat().st_mtime
            except FileNotFoundError:
                dead.append(owner)  # owners write their lease before their claims folder
                continue
            if now - stamp > lease_s:
                dead.append(owner)
        return dead

    def take_over(self, owner: str) -> list[Claim]:
        """Rename the dead owner's job folders into ours; the ones we won."""
        won = []
        src = self.claims / owner
        try:
            names = sorted(os.listdir(src))
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith("."):
                continue
            try:
                os.rename(src / name, self.mine / name)
            except FileNotFoundError:
                continue  # another instance was faster
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            won.append(Claim(self.mine / name, name))
        try:
            os.rmdir(src)
            (self.leases / owner).unlink()
        except OSError:
            pass
        return won


def new_session() -> str:
    """A token for this process: claims are owned by `<instance>.<session>`."""
    return secrets.token_hex(4)
