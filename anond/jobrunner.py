"""One job's transaction: from its claim to the committed output, or to the failed folder.

    claim (inbox/.anond/claims/<instance>/<job>/<file>)
      ──process_file──▶ outbox/a/.<job>.<instance>.anond-stage.jpg   (staged, hidden)
      ──commit (link, never overwrite; claim marked committed)──▶ outbox/a/b.jpg
      ──finalize──▶ original deleted / archived / restored (kept); report; claim removed
    or ──failure──▶ retry later (transient) / failed/<job>/<path> + <job>.reason.json

A review inbox (`review = true`) stops on the way: process_file writes into the review area
(state_dir/review/<job>/, `anond.review`) and the job waits (state review, claim kept) for the
operator: apply runs it again with the editor's regions, approve stages that result like any
other output and the steps above go on, reject quarantines the input (reason rejected).

The service (`anond.service`) claims files, queues job ids and hands each to a worker thread,
which calls `JobRunner.execute`. Every step is safe to repeat: a process killed anywhere in
it finds the job in its claim on restart and carries on from there.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from pathlib import Path, PurePosixPath

from .config import absolute
from .fsutil import unlink_if_exists

class _LostClaim(Exception):
    """Another instance took the claim over (our lease had expired): drop the job."""


class _CommitBusy(Exception):
    """cluster: another worker holds the job's commit token (a redelivery raced a stalled
    worker): try again later; by then the job is committed, or the token stale."""


class _AfterCommit(Exception):
    """Finishing a job whose output is already in place failed (moving the original, the job
    table): retried later, never a reason to quarantine the input."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause




def seen_before(store, inbox, fp: str) -> bool:
    """A kept original processed before, by this instance or another one on this inbox."""
    return store.seen(fp) or inbox.box.is_kept(fp)


def remember(store, inbox, fingerprints: tuple[str, ...], job_id: str) -> None:
    store.remember(fingerprints, job_id)
    inbox.box.mark_kept(fingerprints)


class JobRunner:
    """Runs jobs for a service (its settings, job table, metrics and log, read at each job:
    a reload replaces them)."""

    def __init__(self, service) -> None:
        self.svc = service

    @property
    def settings(self):
        return self.svc.settings

    @property
    def store(self):
        return self.svc.store

    @property
    def log(self):
        return self.svc.log

    @property
    def metrics(self):
        return self.svc.metrics

    def execute(self, job_id: str, engine) -> None:
        """Run one job to its end: done, failed, retry later, or dropped (claim lost)."""
        from .errors import AnondError, TransientIOError
        from .fsutil import io_error
        from .jobs import Claim

        with self.svc.running_lock:
            entry = self.svc.running.get(job_id)
        if entry is None:
            return
        job, inbox = entry.job, entry.inbox
        # A cluster worker runs the job in the claim of the intake that published it.
        claim = Claim(entry.claim_dir or inbox.box.mine / job.id, job.id)
        started = time.monotonic()
        self.log.info("job.started", job=job.id, attempt=job.attempts + 1)
        try:
            self._run_job(job, claim, inbox, engine, started, entry)
        except _LostClaim:
            self.svc.guard(self.store.forget, job.id)
            self.log.warning("job.lost_claim", job=job.id)
        except _CommitBusy:
            delay = self.settings.service.retry_backoff_s
            self.svc.guard(self.store.retry_later, job.id, job.attempts, delay, "commit_busy")
            self.log.warning("job.commit_busy", job=job.id, retry_in_s=delay)
        except _AfterCommit as exc:
            delay = self.settings.service.retry_backoff_s
            self.svc.guard(self.store.retry_later, job.id, job.attempts, delay, "finalize")
            self.log.error("job.finalize_failed", job=job.id,
                           error=errno_name(exc.cause), retry_in_s=delay)
        except sqlite3.Error as exc:
            # The job table is closed (shutdown passed its deadline) or broken: whatever the
            # job reached is in its claim, and the next start carries on from there.
            self.log.error("job.state_unwritable", job=job.id, error=type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - every failure ends somewhere definite
            if isinstance(exc, AnondError):
                err = exc
            elif isinstance(exc, OSError):
                err = io_error(exc)
            elif isinstance(exc, MemoryError):
                err = TransientIOError("out of memory")
            else:
                err = exc
            self._failure(job, claim, inbox, err, started)
        finally:
            with self.svc.running_lock:
                self.svc.running.pop(job.id, None)
            self.svc.job_ended(job.id)
            self.svc.wake.set()

    def _fingerprints(self, job, claim, inbox, rel, src) -> tuple[str, ...] | None:
        """originals = "keep": the content's fingerprint (recorded when the job ends); None when
        that content was anonymized before: the original goes back, the job is skipped."""
        from .jobs import SKIPPED, content_digest, content_fingerprint

        if inbox.cfg.originals != "keep":
            return ()
        content_fp = content_fingerprint(inbox.box.salt, rel, content_digest(src))
        if seen_before(self.store, inbox, content_fp) and not claim.committed:
            restore_original(self.store, inbox, claim, rel, src, (content_fp,), job.id)
            self.store.finish(job.id, SKIPPED)
            claim.remove()
            self.log.info("job.skipped", job=job.id, reason="seen_before")
            return None
        return (content_fp,)

    def _run_job(self, job, claim, inbox, engine, started: float, entry) -> None:
        from .errors import TooManyDeliveries

        if not claim.dir.is_dir():
            raise _LostClaim()
        found = claim.source()
        if found is None:
            # Only the last steps were missing when the process died: record how it ended.
            state = finish_recovered(self.store, inbox, claim)
            self.log.info("job.recovered_finished", job=job.id, state=state)
            return
        rel, src = found
        if entry.poison and not claim.committed:
            raise TooManyDeliveries(f"delivered {entry.poison} times without an end")
        cfg = inbox.cfg
        fingerprints = self._fingerprints(job, claim, inbox, rel, src)
        if fingerprints is None:
            return  # anonymized before (originals = "keep"): skipped
        report = None
        # This instance's names for the job's temporary and staged outputs: stable across its
        # sessions (a crash between linking and marking the claim is recognised on restart),
        # never another instance's (one stalled past its lease may still be writing its own).
        tag = f"{job.id}.{inbox.box.instance}"
        if claim.committed:
            clean_job_temps(inbox.outbox / rel, job.id)  # the staged name, left by the crash
        else:
            from .media.containers import output_name

            dst = inbox.outbox / rel.parent / output_name(
                src, rel.name, drop_data_tags=self.settings.video.drop_data_tags)
            # A fresh job's id was never anyone else's; a taken-over or redelivered one's was.
            swept = job.id in self.svc.taken_over or entry.redelivered
            if swept:
                clean_job_temps(dst, job.id, keep=tag)  # other attempts: void, we hold the claim
            staged = _staged_path(dst, tag)
            if not staged.exists() and cfg.review:
                report = self._reviewed(job, claim, inbox, engine, rel, src, dst, staged, tag, started)
                if report is None:
                    return  # waits for the operator in the review area
            elif not staged.exists():
                report = self._process(job, claim, inbox, engine, rel, src, staged).to_dict()
            if not claim.dir.is_dir():
                unlink_if_exists(staged)
                raise _LostClaim()
            if self.svc.cluster is not None and not claim.take_commit(
                    tag, 2 * self.settings.cluster.ack_wait_s):
                unlink_if_exists(staged)
                raise _CommitBusy()
            commit_staged(staged, dst, claim, cfg.on_exists)
            if swept:  # the old owner, stalled, may have written again since
                clean_job_temps(dst, job.id)
        try:
            self._finalize(job, claim, inbox, rel, src, fingerprints, report, started)
        except Exception as exc:  # noqa: BLE001 - the output exists: never quarantine now
            raise _AfterCommit(exc) from exc

    def _finalize(self, job, claim, inbox, rel, src, fingerprints, report, started) -> None:
        """The output is in place: what remains is the original and the bookkeeping."""
        from .errors import AnondError

        cfg = inbox.cfg
        if cfg.originals == "keep":
            restore_original(self.store, inbox, claim, rel, src, fingerprints, job.id)
        elif cfg.originals == "archive":
            archive_original(inbox, claim, rel, src)
        else:
            os.unlink(src)
            if claim.sidecar is not None:
                os.unlink(claim.sidecar)
        seconds = round(time.monotonic() - started, 3)
        self.store.finish(job.id, "done", seconds=seconds)
        if cfg.review:
            from .review import ReviewArea

            ReviewArea(self.settings.service.state_dir).remove(job.id)
        report_dict = report
        if report_dict is not None and self.settings.service.reports:
            try:
                write_report(self.settings.service.state_dir, job.id, report_dict)
            except (OSError, AnondError) as exc:
                self.log.warning("report.not_written", job=job.id, error=errno_name(exc))
        claim.remove()
        if self.metrics:
            self.metrics.job_done(inbox.name, report_dict, seconds)
        masked = (report_dict or {}).get("masked") or {}
        self.log.info("job.completed", job=job.id, seconds=seconds,
                      **{f"masked_{k}": v for k, v in masked.items() if isinstance(v, int)})

    def _process(self, job, claim, inbox, engine, rel, src, staged, observer=None):
        """Run the pipeline on the claimed input into `staged` (complete or absent: written to a
        temporary beside it, fsynced, renamed; the owner's tag in the temporary's name keeps two
        instances that both hold a job, one stalled past its lease, apart); the report."""
        from .fsutil import atomic_output
        from .pipeline import process_into

        cfg = inbox.cfg
        staged.parent.mkdir(parents=True, exist_ok=True)
        sidecar = claim.sidecar
        if sidecar is None and cfg.regions != "off":
            # A crash between claiming the file and its sidecar leaves the sidecar behind.
            if inbox.box.claim_sidecar(claim, rel):
                sidecar = claim.sidecar
        # A review inbox always reads the regions its operator drew in the editor.
        policy = "optional" if cfg.review and cfg.regions == "off" else cfg.regions
        output = atomic_output(staged, f"{job.id}.{inbox.box.instance}", on_exists="replace",
                               mode=cfg.output_mode, group=cfg.output_group)
        return process_into(
            output, src, settings=self.settings, engine=engine,
            profile=self.settings.profiles[cfg.profile], job_id=job.id,
            regions_path=sidecar if policy != "off" else None, regions_policy=policy,
            observer=observer,
        )

    def _reviewed(self, job, claim, inbox, engine, rel, src, dst, staged, tag, started):
        """A review inbox's job: its result goes to the review area and waits there (None);
        once approved it is staged for the outbox like any output (its report dict)."""
        from .errors import Rejected
        from .fsutil import write_copy
        from .review import BoxRecorder, ReviewArea

        area = ReviewArea(self.settings.service.state_dir)
        if area.marked(job.id, "rejected"):
            raise Rejected("rejected by the operator")
        output = area.output(job.id)
        if output is not None and area.marked(job.id, "approved"):
            write_copy(output, staged, tag)
            return area.report(job.id) or {}
        boxes = BoxRecorder()
        area.dir(job.id).mkdir(parents=True, exist_ok=True, mode=0o700)
        produced = area.dir(job.id) / f".{tag}.anond-run{dst.suffix}"
        report = self._process(job, claim, inbox, engine, rel, src, produced, observer=boxes)
        facts = report.media
        meta = {"job": job.id, "inbox": inbox.name, "name": rel.as_posix(), "kind": report.kind,
                "width": facts.width, "height": facts.height, "frames": facts.frames,
                "fps": facts.fps, "duration_s": facts.duration_s, "masked": report.masked,
                "verify_fixes": report.verify_fixes,
                "seconds": round(time.monotonic() - started, 3)}
        result = Path(report.output_path or produced)
        if report.kind == "video":  # the editor works in upright pixels; the report has stored
            from .web.media import FrameSource

            meta["height"], meta["width"] = FrameSource().frame(result, 0).shape[:2]
        area.stage(job.id, result, meta, report.to_dict(), boxes.to_dict())
        self.store.wait_review(job.id, meta["seconds"])
        self.log.info("job.review_waiting", job=job.id, seconds=meta["seconds"])
        return None

    def _failure(self, job, claim, inbox, err, started: float) -> None:
        """Transient: retry with backoff (claim kept). Permanent or out of retries: quarantine."""
        from .errors import AnondError

        svc = self.settings.service
        if not claim.dir.is_dir():
            # Taken over while this attempt ran (stalled past the lease): the other instance
            # owns the job now; this attempt's failure (its files were swept) is not the job's.
            self.svc.guard(self.store.forget, job.id)
            self.log.warning("job.lost_claim", job=job.id)
            return
        code = getattr(err, "code", "internal")
        permanent = not isinstance(err, AnondError) or err.permanent
        attempts = job.attempts + 1
        if not permanent and attempts <= svc.retries:
            delay = min(svc.retry_backoff_max_s, svc.retry_backoff_s * 2 ** (attempts - 1))
            self.store.retry_later(job.id, attempts, delay, code)
            if self.metrics:
                self.metrics.retries.labels(inbox=inbox.name).inc()
            self.log.warning("job.retry", job=job.id, error=code,
                             attempt=attempts, delay_s=round(delay, 1))
            return
        try:
            quarantine(job, claim, inbox, err, code, permanent, attempts, self.settings.service.state_dir)
        except OSError as exc:
            # The failed folder is not writable: keep the claim and try again later.
            self.store.retry_later(job.id, job.attempts, svc.retry_backoff_max_s, "quarantine_failed")
            self.log.error("job.quarantine_failed", job=job.id,
                           error=errno_name(exc))
            return
        seconds = round(time.monotonic() - started, 3)
        self.store.finish(job.id, "failed", error=code, seconds=seconds)
        claim.remove()
        if self.metrics:
            self.metrics.job_failed(inbox.name, code, seconds)
        self.log.warning("job.quarantined", job=job.id, error=code,
                         attempts=attempts)


def finish_recovered(store, inbox, claim) -> str:
    """A job whose claim holds no input any more ended before its bookkeeping did (a crash
    between the last steps, or another worker finished it): its state from what it left —
    failed when its reason file is in the failed folder, else done; the claim is removed."""
    from .jobs import FAILED

    state = FAILED if (inbox.failed / f"{claim.job_id}.reason.json").exists() else "done"
    store.finish(claim.job_id, state)
    claim.remove()
    return state


def restore_original(store, inbox, claim, rel, src, fingerprints, job_id: str) -> None:
    """originals = keep: remember the fingerprints, then put the file back where it was."""
    from .fsutil import move_no_clobber
    from .jobs import quick_fingerprint
    from .regions import sidecar_path

    st = os.stat(src)
    quick = quick_fingerprint(inbox.box.salt, rel, st.st_size, st.st_mtime_ns)
    remember(store, inbox, (*fingerprints, quick), job_id)
    landed = move_no_clobber(src, inbox.root / rel)
    new_rel = PurePosixPath(landed.relative_to(inbox.root).as_posix())
    if new_rel != rel:  # the name was taken meanwhile: remember the new one too
        remember(store, inbox, (quick_fingerprint(inbox.box.salt, new_rel, st.st_size, st.st_mtime_ns),),
                 job_id)
    if claim.sidecar is not None:
        move_no_clobber(claim.sidecar, sidecar_path(landed))


def archive_original(inbox, claim, rel, src) -> None:
    """originals = archive: the file (and its sidecar) under the same path in the archive."""
    from .fsutil import move_no_clobber
    from .regions import sidecar_path

    landed = move_no_clobber(src, inbox.archive / rel)
    if claim.sidecar is not None:
        move_no_clobber(claim.sidecar, sidecar_path(landed))


def write_report(state_dir, job_id: str, report: dict) -> None:
    """The job's report (counts, sizes, durations: nothing personal) in state_dir/reports."""
    from .fsutil import write_bytes_atomic

    reports = absolute(state_dir) / "reports"
    reports.mkdir(mode=0o700, exist_ok=True)
    write_bytes_atomic(reports / f"{job_id}.json",
                       (json.dumps(report, indent=2) + "\n").encode(), job_id=job_id)


def _staged_path(dst: Path, tag: str) -> Path:
    """The finished output before it gets its final name: hidden, same folder and extension;
    `tag` is the job id and the instance that owns it (`<job id>.<instance>`)."""
    return dst.parent / f".{tag}.anond-stage{dst.suffix}"


def _already_linked(staged: Path, dst: Path) -> Path | None:
    """After a crash between linking the output and marking the claim: where it landed."""
    from .fsutil import suffixed

    try:
        st = os.stat(staged)
    except FileNotFoundError:
        return None
    if st.st_nlink < 2:
        return None
    misses = 0
    for n in range(10_000):
        candidate = suffixed(dst, n)
        try:
            other = os.stat(candidate)
        except FileNotFoundError:
            misses += 1
            if misses > 50:
                break
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return candidate
    unlink_if_exists(staged.with_name(staged.name + ".link"))  # linked there only: not placed yet
    return None


def clean_job_temps(dst: Path, job_id: str, keep: str | None = None) -> None:
    """Remove what other attempts at this job left beside its output (all but `keep`'s names).
    Called by the claim's holder: the others are void (an instance killed mid-job, or one
    stalled past its lease, which finds its claim gone before it could commit)."""
    try:
        entries = os.listdir(dst.parent)
    except OSError:
        return
    for name in entries:
        if name.startswith(f".{job_id}.") and not (keep and name.startswith(f".{keep}.")):
            unlink_if_exists(dst.parent / name)


def errno_name(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return getattr(exc, "code", None) or type(exc).__name__


def _safe_message(err: BaseException, rel: PurePosixPath | None) -> str:
    """The error's message for the reason file, with anything looking like the input's name
    removed. Messages of our own errors never hold names; others are reduced to their class."""
    from .errors import AnondError

    if not isinstance(err, AnondError):
        return f"unexpected {type(err).__name__}"
    message = str(err)
    if rel is not None:
        for part in sorted({*rel.parts, rel.stem}, key=len, reverse=True):
            if len(part) >= 3:
                message = message.replace(part, "…")
    return message[:500]


def commit_staged(staged: Path, dst: Path, claim, on_exists: str) -> Path:
    """Give the staged output its final name, exactly once, never overwriting (unless
    on_exists = "replace"): link, mark the claim committed, then drop the staged name."""
    from .fsutil import fsync_dir, move_no_clobber

    if on_exists == "replace":
        os.replace(staged, dst)
        fsync_dir(dst.parent)
        claim.mark_committed()
        return dst
    final = _already_linked(staged, dst)
    if final is None:
        tmp = staged.with_name(staged.name + ".link")
        try:
            os.link(staged, tmp)  # keep the staged name until the claim says committed
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # No hard links here (some SMB servers): check-then-rename. A crash between
            # the rename and the marker would redo the job (documented limitation).
            final = move_no_clobber(staged, dst)
            claim.mark_committed()
            return final
        final = move_no_clobber(tmp, dst)
    claim.mark_committed()
    unlink_if_exists(staged)
    unlink_if_exists(staged.with_name(staged.name + ".link"))
    fsync_dir(dst.parent)
    return final


def quarantine(job, claim, inbox, err, code, permanent, attempts, state_dir: Path) -> None:
    """The input goes to failed/<job id>/<its path in the inbox> (it is the user's file);
    failed/<job id>.reason.json says why, without naming it."""
    from . import __version__
    from .fsutil import write_bytes_atomic
    from .fsutil import move_no_clobber

    found = claim.source()
    message = _safe_message(err, found[0] if found else None)
    reason = {
        "job": job.id,
        "inbox": inbox.name,
        "error": type(err).__name__,
        "code": code,
        "message": message,
        "permanent": permanent,
        "attempts": attempts,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "anond_version": __version__,
    }
    inbox.failed.mkdir(parents=True, exist_ok=True)
    # The service user's alone (0600 files, 0700 folder): these are unmasked originals.
    write_bytes_atomic(inbox.failed / f"{job.id}.reason.json",
                       (json.dumps(reason, indent=2) + "\n").encode(), job_id=job.id, mode=0o600)
    if inbox.cfg.review:
        from .review import ReviewArea

        ReviewArea(state_dir).remove(job.id)
    if found is not None:
        rel, src = found
        clean_job_temps(inbox.outbox / rel, job.id)
        (inbox.failed / job.id).mkdir(mode=0o700, exist_ok=True)
        # Under its path in the inbox, so `anond retry` can put it back where it was.
        landed = move_no_clobber(src, inbox.failed / job.id / rel)
        os.chmod(landed, 0o600)
        sidecar = claim.sidecar
        if sidecar is not None:
            from .regions import sidecar_path

            move_no_clobber(sidecar, sidecar_path(landed))
