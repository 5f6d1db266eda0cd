"""Retention: unmasked inputs anond keeps (failed folders, archives, results waiting for review)
are deleted after an age.

A failed job leaves the **unmasked original** in `failed/<job id>/` beside
`failed/<job id>.reason.json`; an inbox with `originals = "archive"` keeps every original in its
archive. Both are personal data, so both are deleted once older than
`[service] failed_retention_days` / `archive_retention_days` (0 = kept for ever; `anond check`
warns). A result of a review inbox left unreviewed past failed_retention_days is deleted with
its original like a failed job (`anond.review.expire`; the job ends failed, review_expired). The age is the time anond put the entry there (the inode's change time, which a link or
rename sets; the file's own mtime is the camera's and says nothing about that).

Only what anond itself writes is touched: in a failed folder, entries named like a job id;
in an archive, regular files and the folders they leave empty. Links are removed as links,
never followed.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .config import absolute

DAY_S = 86400.0
_JOB_ENTRY = re.compile(r"^(\d{8}T\d{6}-[0-9a-f]{8})(\.reason\.json)?$")


@dataclass(frozen=True)
class Pruned:
    """What one pass deleted: failed jobs (folder + reason file) and archived files."""

    failed_jobs: int = 0
    archived_files: int = 0
    review_jobs: int = 0  # results never reviewed, deleted with their originals

    def __add__(self, other: "Pruned") -> "Pruned":
        return Pruned(self.failed_jobs + other.failed_jobs, self.archived_files + other.archived_files,
                      self.review_jobs + other.review_jobs)


def _changed(path: str) -> float | None:
    try:
        return os.lstat(path).st_ctime
    except OSError:
        return None


def prune_failed(folder: Path, max_age_s: float, now: float) -> int:
    """Delete the failed jobs in `folder` quarantined more than `max_age_s` before `now`;
    returns how many. A job's time is its reason file's (else its folder's)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    jobs: dict[str, list[os.DirEntry]] = {}
    for entry in entries:
        match = _JOB_ENTRY.match(entry.name)
        if match:
            jobs.setdefault(match.group(1), []).append(entry)
    deleted = 0
    for job_id, parts in jobs.items():
        reason = [e for e in parts if e.name.endswith(".reason.json")]
        when = _changed((reason or parts)[0].path)
        if when is None or now - when <= max_age_s:
            continue
        for entry in parts:
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass  # another instance sharing the folder was first
        deleted += 1
    return deleted


def prune_archive(folder: Path, max_age_s: float, now: float) -> int:
    """Delete files archived in `folder` more than `max_age_s` before `now`, then the folders
    that leaves empty (not `folder` itself); returns how many files."""
    deleted = 0
    for here, dirs, files in os.walk(folder, topdown=False, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(here, d))]:
            path = os.path.join(here, name)
            when = _changed(path)
            if when is None or now - when <= max_age_s:
                continue
            try:
                os.unlink(path)
                deleted += 1
            except FileNotFoundError:
                pass
        changed = _changed(here)
        # Only folders that are old themselves: one just made for a file about to be archived
        # stays.
        if (os.path.realpath(here) != os.path.realpath(folder) and changed is not None
                and now - changed > max_age_s):
            try:
                os.rmdir(here)  # only if empty
            except OSError:
                pass
    return deleted


# -- the service's hourly pass

def housekeeping_every(service_settings, hourly_s: float) -> float:
    """Hourly; more often when a retention is shorter than a few hours."""
    ages = [d * DAY_S for d in (service_settings.failed_retention_days,
                                service_settings.archive_retention_days) if d > 0]
    return min([hourly_s, *(age / 4 for age in ages)])


def housekeeping(svc) -> None:
    """Retention of unmasked originals (`_retention`), then the job table's and the reports'
    history beyond `history_days`."""
    svc.guard(_retention, svc)
    keep_s = svc.settings.service.history_days * DAY_S
    pruned = svc.store.prune(keep_s)
    reports = absolute(svc.settings.service.state_dir) / "reports"
    if reports.is_dir():
        cutoff = time.time() - keep_s
        for entry in os.scandir(reports):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass
    if pruned:
        svc.log.info("state.pruned", jobs=pruned)


def _retention(svc) -> None:
    """Unmasked originals past their retention age are deleted (prune_failed, prune_archive)."""
    conf, now, done = svc.settings.service, time.time(), Pruned()
    failed = {inbox.failed for inbox in svc.inboxes.values()}
    archives = {inbox.archive for inbox in svc.inboxes.values() if inbox.archive is not None}
    if conf.failed_retention_days > 0:
        for folder in failed:
            done += Pruned(failed_jobs=prune_failed(folder, conf.failed_retention_days * DAY_S, now))
        if any(inbox.cfg.review for inbox in svc.inboxes.values()):
            from .review import expire

            done += Pruned(review_jobs=expire(svc, conf.failed_retention_days * DAY_S, now))
    if conf.archive_retention_days > 0:
        for folder in archives:
            done += Pruned(archived_files=prune_archive(folder, conf.archive_retention_days * DAY_S, now))
    if svc.metrics:
        svc.metrics.retention_deleted.labels(what="failed").inc(done.failed_jobs)
        svc.metrics.retention_deleted.labels(what="archive").inc(done.archived_files)
        svc.metrics.retention_deleted.labels(what="review").inc(done.review_jobs)
    if done.failed_jobs or done.archived_files or done.review_jobs:
        svc.log.info("retention.deleted", failed_jobs=done.failed_jobs,
                     archived_files=done.archived_files, review_jobs=done.review_jobs)
