"""`anond run`: the daemon. Watches the inboxes, claims finished files, runs them through the
pipeline on worker threads, lands outputs atomically, and tells systemd how it is doing.

A file's way through the service:

    inbox/a/b.jpg ──watch: finished?──▶ claim (rename into inbox/.anond/claims/…) ──▶ job table
        ──worker: process_file──▶ outbox/a/.<job>.<instance>.anond-stage.jpg ──commit (no overwrite)──▶ outbox/a/b.jpg
        ──originals: delete | archive | keep──▶ job done (only id, counts and a fingerprint remain)

Every step can be interrupted (kill -9, power loss) and is redone or skipped on restart: the
claim says where the input is, the `committed` marker says the output is in place.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import queue
import shutil
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import log
from .fsutil import unlink_if_exists

TICK_S = 0.2
SPACE_CHECK_S = 5.0
HOUSEKEEPING_S = 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Runs in the foreground until SIGTERM/SIGINT; SIGHUP reloads the configuration. "
                     "Without --config (or $ANOND_CONFIG) the embedded defaults watch ./var/inbox "
                     "and write ./var/outbox.")


def main(args: argparse.Namespace) -> int:
    from .config import load_settings

    settings = load_settings(args.config)
    if args.log_level is None:  # else the command line's level holds, across reloads too
        log.configure(settings.service.log_level)
    return Service(settings, config_path=args.config, log_level=args.log_level).run()


# ---------------------------------------------------------------------------------------------


@dataclass
class InboxRuntime:
    """One configured inbox with its folders resolved, its watcher and its claim area."""

    cfg: object  # config.Inbox
    root: Path
    outbox: Path
    failed: Path
    archive: Path | None
    watcher: object  # watch.InboxWatcher
    box: object  # jobs.ClaimBox
    # Files the last poll found finished, not claimed yet (last = next): taken as workers free
    # up, between polls too (a poll looks at every tracked file; claiming is one rename each).
    ready: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.cfg.name


@dataclass
class Running:
    job: object  # jobs.Job
    inbox: InboxRuntime
    started: float


class _LostClaim(Exception):
    """Another instance took the claim over (our lease had expired): drop the job."""


class _AfterCommit(Exception):
    """Finishing a job whose output is already in place failed (moving the original, the job
    table): retried later, never a reason to quarantine the input."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class Service:
    """The daemon. `run()` returns the exit status."""

    def __init__(self, settings, config_path: str | None = None, log_level: str | None = None) -> None:
        from .notify import Notifier

        self.settings = settings
        self.config_path = config_path
        self.log_level = log_level  # given on the command line: [service] log_level is not used
        self.log = log.get("anond.service")
        self.notifier = Notifier()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.reload_requested = False
        self.inboxes: dict[str, InboxRuntime] = {}
        self.running: dict[str, Running] = {}
        self.running_lock = threading.Lock()
        # Jobs taken over from a dead (or earlier) owner in this run: only these can have
        # another attempt's temporary or staged files beside their output (kept for the run,
        # retries included; takeovers are few).
        self.taken_over: set[str] = set()
        self.work: queue.Queue = queue.Queue()
        self.workers: list[Worker] = []
        self.store = None
        self.metrics = None
        self.paused = False
        self.provider = "none"
        self._counts: dict[str, int] = {}

    # -- lifecycle

    def run(self) -> int:
        from .jobs import JobStore, new_session

        svc = self.settings.service
        _require_local_state(_abs(svc.state_dir))
        _keep_diagnostics_private()
        self._install_signals()
        self.notifier.status("starting: loading models")
        self.store = JobStore(_abs(svc.state_dir))
        self.session = new_session()
        try:
            self._open_inboxes(self.settings)
            self._start_metrics()
            self._start_workers()
            if self.stop_event.is_set():
                return self._shutdown()
            self._recover()
            self._refresh_status(force=True)
            self.notifier.ready(self._status_text())
            if self.metrics:
                self.metrics.ready.set(1)
            self.log.info("service.ready", workers=len(self.workers), provider=self.provider,
                          inboxes=len(self.inboxes), instance=self.store.instance)
            self._loop()
            return self._shutdown()
        except BaseException:
            self._abort()
            raise

    def _install_signals(self) -> None:
        def stop(signum, _frame):
            self.stop_event.set()
            self.wake.set()

        def hup(_signum, _frame):
            self.reload_requested = True
            self.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _open_inboxes(self, settings) -> None:
        for cfg in settings.inboxes:
            self.inboxes[cfg.name] = self._open_inbox(cfg, settings)

    def _open_inbox(self, cfg, settings) -> InboxRuntime:
        from .jobs import ClaimBox
        from .watch import InboxWatcher

        root = _abs(cfg.path)
        outbox = _abs(cfg.outbox)
        failed = _abs(cfg.failed or settings.service.failed_dir)
        archive = _abs(cfg.archive) if cfg.archive else None
        for d in (root, outbox, failed, archive):
            if d is not None:
                d.mkdir(parents=True, exist_ok=True)
        box = ClaimBox(root, self.store.instance, self.session)
        box.open()
        watcher = InboxWatcher(root, recursive=cfg.recursive,
                               stable_after_s=settings.service.stable_after_s,
                               use_events=settings.service.inotify, ignore=cfg.ignore)
        watcher.start()
        return InboxRuntime(cfg, root, outbox, failed, archive, watcher, box)

    def _start_metrics(self) -> None:
        svc = self.settings.service
        if not svc.metrics:
            return
        from .metrics import Metrics

        self.metrics = Metrics()
        for name in self.inboxes:
            self.metrics.add_inbox(name)
        address = str(svc.metrics_address)
        try:
            port = self.metrics.serve(svc.metrics_port, address)
        except OSError as exc:
            from .errors import ConfigError

            raise ConfigError(f"service.metrics_port: cannot listen on {address}:{svc.metrics_port} "
                              f"({exc.strerror or type(exc).__name__})") from None
        self.log.info("metrics.listening", address=address, port=port)
        if not svc.metrics_address.is_loopback:
            # Counts only, but visible to the network: the admin should know it is.
            self.log.warning("metrics.not_loopback", address=address, port=port)

    def _targets(self, settings) -> list[str]:
        wanted: set[str] = set()
        for cfg in settings.inboxes:
            wanted.update(settings.profiles[cfg.profile].targets)
        return sorted(wanted)

    def _start_workers(self) -> None:
        """Each worker loads the models once and runs a warm-up inference; READY waits for all."""
        targets = self._targets(self.settings)
        self.targets = targets
        for index in range(self.settings.service.workers):
            worker = Worker(self, index, targets)
            worker.start()
            self.workers.append(worker)
            # One at a time: loading in parallel only competes for the same disk and cores.
            while not worker.loaded.wait(TICK_S):
                self.notifier.watchdog()
                if self.stop_event.is_set():
                    return
            if worker.error is not None:
                raise worker.error
        self.provider = self.workers[0].engine.provider if self.workers else "none"
        if self.metrics:
            self.metrics.set_provider(self.provider)
        self.log.info("models.loaded", targets=",".join(targets), provider=self.provider,
                      workers=len(self.workers))

    def _recover(self) -> None:
        """Jobs left by an earlier run of this instance (or by dead instances) are queued again."""
        unfinished = self.store.unfinished()
        recovered: set[str] = set()
        for inbox in self.inboxes.values():
            recovered |= self._take_over(inbox, unfinished)
        for job_id in set(unfinished) - recovered:
            self.store.forget(job_id)  # another instance took it over meanwhile

    def _take_over(self, inbox: InboxRuntime, unfinished: dict | None = None) -> set[str]:
        taken = set()
        for owner in inbox.box.dead_owners(self.settings.service.lease_s):
            for claim in inbox.box.take_over(owner):
                attempts = (unfinished or {}).get(claim.job_id, (None, 0))[1]
                known = self.store.get(claim.job_id)
                if known is not None and known[0] in ("pending", "running"):
                    attempts = max(attempts, known[1])
                self.store.add(claim.job_id, inbox.name, attempts)
                taken.add(claim.job_id)
                self.taken_over.add(claim.job_id)
                self.log.info("job.recovered", job=claim.job_id, inbox=inbox.name,
                              own=owner.split(".", 1)[0] == self.store.instance)
        return taken

    # -- the main loop

    def _loop(self) -> None:
        svc = self.settings.service
        now = time.monotonic()
        next_rescan = now + svc.rescan_interval_s
        next_poll = now
        next_lease = now + self._lease_every()
        next_space = now
        next_housekeeping = now
        idle_checkpointed = False
        while not self.stop_event.is_set():
            now = time.monotonic()
            self.notifier.watchdog(now)
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
                svc = self.settings.service
            if now >= next_lease:
                next_lease = now + self._lease_every()
                for inbox in list(self.inboxes.values()):
                    self._guard(self._take_over, inbox)
            if now >= next_space:
                next_space = now + SPACE_CHECK_S
                self._check_space()
            # A rescan walks every inbox and a poll stats every file not yet taken: with tens of
            # thousands waiting they are spaced so that they take at most ~1/10 and ~1/5 of the
            # loop's time (claims are served from the last poll's list in between).
            if now >= next_rescan:
                for inbox in self.inboxes.values():
                    self._guard(inbox.watcher.rescan)
                next_rescan = now + max(svc.rescan_interval_s, 10 * (time.monotonic() - now))
            if now >= next_poll:
                began = time.monotonic()
                for inbox in list(self.inboxes.values()):
                    self._guard(self._poll, inbox)
                next_poll = now + max(min(1.0, svc.stable_after_s / 4), 5 * (time.monotonic() - began))
            for inbox in list(self.inboxes.values()):
                self._guard(self._intake, inbox)
            if not self.paused:
                self._dispatch()
            self._refresh_status()
            idle = not self.running and self._counts.get("pending", 0) == 0
            if idle and not idle_checkpointed:
                # Nothing in flight: fold the WAL, so no page that once held a job is left in it.
                self._guard(self.store.checkpoint)
                idle_checkpointed = True
            elif not idle:
                idle_checkpointed = False
            if now >= next_housekeeping:
                next_housekeeping = now + self._housekeeping_every()
                self._guard(self._housekeeping)
            self.wake.wait(max(0.005, min(TICK_S, next_poll - time.monotonic())))
            self.wake.clear()

    def _lease_every(self) -> float:
        return max(0.5, self.settings.service.lease_s / 4)

    def _guard(self, fn, *args) -> None:
        """Run one step of the loop; an unexpected error is logged, the service goes on."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the loop must keep running (and pinging)
            self.log.error("service.step_failed", step=getattr(fn, "__name__", "step"),
                           error=type(exc).__name__, errno=getattr(exc, "errno", None))

    def _poll(self, inbox: InboxRuntime) -> None:
        inbox.ready = inbox.watcher.poll()[::-1]  # taken from the end, in the watcher's order

    def _intake(self, inbox: InboxRuntime) -> None:
        """Claim finished files of one inbox, keeping a short queue per worker (the rest
        waits in the inbox, where other instances may take it)."""
        if self.paused:
            return
        room = 2 * len(self.workers) - self._counts.get("pending", 0)
        while inbox.ready and room > 0 and not self.stop_event.is_set():
            cand = inbox.ready.pop()
            try:
                st = os.stat(inbox.root / cand.rel, follow_symlinks=False)
            except OSError:
                continue  # claimed by another instance, or gone
            if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                continue  # written to since the poll: the watcher tracks it again
            try:
                queued = self._intake_one(inbox, cand)
            except OSError as exc:
                # Something about this one file (a name too long for a derived name, a
                # permission): it is left alone until it changes, and the others go on.
                inbox.watcher.settle(cand.rel, cand.size, cand.mtime_ns)
                self.log.warning("job.unclaimable", inbox=inbox.name, error=_errno_name(exc))
                continue
            room -= int(queued)

    def _intake_one(self, inbox: InboxRuntime, cand) -> bool:
        """Claim one finished file (and its sidecar) as a job; False when it is not (yet) one."""
        from .jobs import new_job_id, quick_fingerprint
        from .regions import find_sidecar
        from .watch import SIDECAR_SUFFIX

        cfg = inbox.cfg
        if cfg.originals == "keep":
            quick = quick_fingerprint(inbox.box.salt, cand.rel, cand.size, cand.mtime_ns)
            if self._seen(inbox, quick):
                inbox.watcher.settle(cand.rel, cand.size, cand.mtime_ns)
                return False
        sidecar_rel = cand.rel.with_name(cand.rel.name + SIDECAR_SUFFIX)
        has_sidecar = False
        if cfg.regions != "off":
            if find_sidecar(inbox.root / cand.rel) is not None:
                if not inbox.watcher.is_stable(sidecar_rel):
                    return False  # the sidecar is still being written
                has_sidecar = True
            elif cfg.regions == "required" and (
                    inbox.watcher.stable_for(cand.rel) < cfg.regions_wait_s):
                return False  # waits for its sidecar; after regions_wait_s it fails (regions_missing)
        job_id = new_job_id()
        claim = inbox.box.claim(cand.rel, job_id, sidecar=has_sidecar)  # OSError: not movable
        inbox.watcher.forget(cand.rel)
        inbox.watcher.forget(sidecar_rel)
        if claim is None:
            return False  # another instance was faster, or the file went away
        self.store.add(job_id, inbox.name)
        self._counts["pending"] = self._counts.get("pending", 0) + 1
        self.log.info("job.queued", job=job_id, inbox=inbox.name, bytes=cand.size,
                      sidecar=has_sidecar)
        return True

    def _dispatch(self) -> None:
        with self.running_lock:
            free = len(self.workers) - len(self.running)
        if free <= 0 or self.stop_event.is_set():
            return
        jobs = self.store.take_due(free, set(self.inboxes))
        for job in jobs:
            inbox = self.inboxes[job.inbox]
            with self.running_lock:
                self.running[job.id] = Running(job, inbox, time.monotonic())
            self.work.put(job.id)
        if jobs:
            self._refresh_status(force=True)

    def _check_space(self) -> None:
        """Pause intake while an outbox or the state directory runs low on space."""
        limit = self.settings.service.min_free_mb * 1024 * 1024
        low = None
        places = [("state", _abs(self.settings.service.state_dir))]
        places += [(f"outbox:{i.name}", i.outbox) for i in self.inboxes.values()]
        for where, path in places:
            try:
                if shutil.disk_usage(path).free < limit:
                    low = where
                    break
            except OSError:
                continue
        if (low is not None) != self.paused:
            self.paused = low is not None
            if self.paused:
                self.log.warning("intake.paused", reason="low_disk_space", where=low,
                                 min_free_mb=self.settings.service.min_free_mb)
            else:
                self.log.info("intake.resumed")
            if self.metrics:
                self.metrics.paused.set(1 if self.paused else 0)
            self._refresh_status(force=True)

    def _housekeeping_every(self) -> float:
        """Hourly; more often when a retention is shorter than a few hours."""
        svc = self.settings.service
        ages = [d * 86400 for d in (svc.failed_retention_days, svc.archive_retention_days) if d > 0]
        return min([HOUSEKEEPING_S, *(age / 4 for age in ages)])

    def _retention(self) -> None:
        """Unmasked originals past their retention age are deleted (anond.retention)."""
        from .retention import DAY_S, Pruned, prune_archive, prune_failed

        svc, now, done = self.settings.service, time.time(), Pruned()
        failed = {inbox.failed for inbox in self.inboxes.values()}
        archives = {inbox.archive for inbox in self.inboxes.values() if inbox.archive is not None}
        if svc.failed_retention_days > 0:
            for folder in failed:
                done += Pruned(failed_jobs=prune_failed(folder, svc.failed_retention_days * DAY_S, now))
        if svc.archive_retention_days > 0:
            for folder in archives:
                done += Pruned(archived_files=prune_archive(folder, svc.archive_retention_days * DAY_S, now))
        if self.metrics:
            self.metrics.retention_deleted.labels(what="failed").inc(done.failed_jobs)
            self.metrics.retention_deleted.labels(what="archive").inc(done.archived_files)
        if done.failed_jobs or done.archived_files:
            self.log.info("retention.deleted", failed_jobs=done.failed_jobs,
                          archived_files=done.archived_files)

    def _housekeeping(self) -> None:
        self._guard(self._retention)
        keep_s = self.settings.service.history_days * 86400
        pruned = self.store.prune(keep_s)
        reports = _abs(self.settings.service.state_dir) / "reports"
        if reports.is_dir():
            cutoff = time.time() - keep_s
            for entry in os.scandir(reports):
                try:
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                except OSError:
                    pass
        if pruned:
            self.log.info("state.pruned", jobs=pruned)

    # -- status

    def _refresh_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - getattr(self, "_status_at", 0.0) < 1.0:
            return
        self._status_at = now
        self._counts = self.store.counts()
        with self.running_lock:
            self._counts["running"] = len(self.running)
        self._counts["waiting"] = sum(i.watcher.tracked for i in self.inboxes.values())
        self.notifier.status(self._status_text())
        if self.metrics:
            self.metrics.queue.set(self._counts.get("pending", 0))
            self.metrics.running.set(self._counts["running"])
            for name, inbox in self.inboxes.items():
                self.metrics.tracked.labels(inbox=name).set(inbox.watcher.tracked)
                self.metrics.ignored.labels(inbox=name).set(inbox.watcher.ignored)
                self.metrics.skipped.labels(inbox=name).set(inbox.watcher.skipped)

    def _status_text(self) -> str:
        c = self._counts
        text = (f"queue {c.get('pending', 0)}, running {c.get('running', 0)}, "
                f"done {c.get('done', 0)}, failed {c.get('failed', 0)}, "
                f"waiting in inboxes {c.get('waiting', 0)}")
        return text + (" (intake paused: low disk space)" if self.paused else "")

    # -- reload (SIGHUP)

    def _reload(self) -> None:
        from .config import load_settings
        from .errors import ConfigError

        self.notifier.reloading()
        try:
            new = load_settings(self.config_path)
            problem = self._reload_problem(new)
            if problem:
                self.log.error("config.reload_rejected", reason=problem)
            else:
                self._apply(new)
                if self.log_level is None:
                    log.configure(new.service.log_level)
                self.log.info("config.reloaded", inboxes=len(self.inboxes))
        except ConfigError as exc:
            self.log.error("config.reload_failed", error=str(exc))
        self.notifier.ready(self._status_text())

    def _reload_problem(self, new) -> str | None:
        old = self.settings
        if new.models != old.models or new.runtime != old.runtime:
            return "models and runtime settings need a restart"
        if self._targets(new) != self.targets:
            return "the profiles now need other detectors: restart"
        for key in ("state_dir", "workers", "metrics", "metrics_port", "metrics_address"):
            if getattr(new.service, key) != getattr(old.service, key):
                return f"service.{key} needs a restart"
        return None

    def _apply(self, new) -> None:
        old_inboxes = self.inboxes
        fresh: dict[str, InboxRuntime] = {}
        for cfg in new.inboxes:
            prev = old_inboxes.get(cfg.name)
            if (prev is not None and prev.root == _abs(cfg.path) and prev.cfg.recursive == cfg.recursive
                    and new.service.stable_after_s == self.settings.service.stable_after_s
                    and new.service.inotify == self.settings.service.inotify):
                prev.cfg = cfg
                prev.outbox = _abs(cfg.outbox)
                prev.failed = _abs(cfg.failed or new.service.failed_dir)
                prev.archive = _abs(cfg.archive) if cfg.archive else None
                for d in (prev.outbox, prev.failed, prev.archive):
                    if d is not None:
                        d.mkdir(parents=True, exist_ok=True)
                fresh[cfg.name] = prev
            else:
                if prev is not None:
                    self._close_inbox(prev)
                fresh[cfg.name] = self._open_inbox(cfg, new)
        for name, prev in old_inboxes.items():
            if name not in fresh:
                self._close_inbox(prev)
                if self.metrics:
                    self.metrics.remove_inbox(name)
        if self.metrics:
            for name in fresh.keys() - old_inboxes.keys():
                self.metrics.add_inbox(name)
        self.settings = new
        self.inboxes = fresh

    def _close_inbox(self, inbox: InboxRuntime) -> None:
        inbox.watcher.stop()
        self._release_pending(inbox)

    def _release_pending(self, inbox: InboxRuntime) -> None:
        """Unstarted jobs go back into the inbox folder (for us later, or another instance)."""
        with self.running_lock:
            busy = set(self.running)
        for claim in inbox.box.own_claims():
            state = self.store.get(claim.job_id)
            if claim.job_id in busy or state is None or state != ("pending", 0):
                continue
            found = claim.source()
            if found is not None and not claim.committed:
                _clean_job_temps(inbox.outbox / found[0], claim.job_id)  # a staged output
            if inbox.box.release(claim):
                self.store.forget(claim.job_id)
                self.log.info("job.released", job=claim.job_id, inbox=inbox.name)

    # -- shutdown

    def _shutdown(self) -> int:
        """SIGTERM: STOPPING=1, no new jobs; running ones get stop_timeout_s, then are requeued."""
        self.notifier.stopping()
        with self.running_lock:
            in_flight = len(self.running)
        self.log.info("service.stopping", running=in_flight)
        deadline = time.monotonic() + self.settings.service.stop_timeout_s
        while time.monotonic() < deadline:
            with self.running_lock:
                if not self.running:
                    break
            self.notifier.watchdog()
            time.sleep(0.05)
        with self.running_lock:
            left = list(self.running)
        for job_id in left:
            self.store.requeue(job_id)
            self.log.warning("job.requeued", job=job_id)
        for _ in self.workers:
            self.work.put(None)
        for inbox in self.inboxes.values():
            inbox.watcher.stop()
            if not left:
                self._guard(self._release_pending, inbox)
                inbox.box.close()
        if self.metrics:
            self.metrics.stop()
        self.store.close()
        self.log.info("service.stopped", requeued=len(left))
        if left:
            # Worker threads are still inside native code; leave without waiting for them.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return 0

    def _abort(self) -> None:
        """Start-up failed: give back what was opened (claims stay for the next start)."""
        for _ in self.workers:
            self.work.put(None)
        for inbox in self.inboxes.values():
            try:
                inbox.watcher.stop()
                inbox.box.close()
            except Exception:  # noqa: BLE001
                pass
        if self.metrics:
            self.metrics.stop()
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001
                pass

    # -- one job (worker threads)

    def execute(self, job_id: str, engine) -> None:
        """Run one job to its end: done, failed, retry later, or dropped (claim lost)."""
        from .errors import AnondError, TransientIOError
        from .fsutil import io_error
        from .jobs import Claim

        with self.running_lock:
            entry = self.running.get(job_id)
        if entry is None:
            return
        job, inbox = entry.job, entry.inbox
        claim = Claim(inbox.box.mine / job.id, job.id)
        started = time.monotonic()
        self.log.info("job.started", job=job.id, inbox=inbox.name, attempt=job.attempts + 1)
        try:
            self._run_job(job, claim, inbox, engine, started)
        except _LostClaim:
            self._guard(self.store.forget, job.id)
            self.log.warning("job.lost_claim", job=job.id, inbox=inbox.name)
        except _AfterCommit as exc:
            delay = self.settings.service.retry_backoff_s
            self._guard(self.store.retry_later, job.id, job.attempts, delay, "finalize")
            self.log.error("job.finalize_failed", job=job.id, inbox=inbox.name,
                           error=_errno_name(exc.cause), retry_in_s=delay)
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
            with self.running_lock:
                self.running.pop(job.id, None)
            self.wake.set()

    def _run_job(self, job, claim, inbox: InboxRuntime, engine, started: float) -> None:
        from .jobs import FAILED, SKIPPED, content_digest, content_fingerprint

        if not claim.dir.is_dir():
            raise _LostClaim()
        found = claim.source()
        if found is None:
            # Only the last steps were missing when the process died: record how it ended.
            state = FAILED if (inbox.failed / f"{job.id}.reason.json").exists() else "done"
            self.store.finish(job.id, state)
            claim.remove()
            self.log.info("job.recovered_finished", job=job.id, state=state)
            return
        rel, src = found
        cfg = inbox.cfg
        fingerprints: tuple[str, ...] = ()
        if cfg.originals == "keep":
            content_fp = content_fingerprint(inbox.box.salt, rel, content_digest(src))
            if self._seen(inbox, content_fp) and not claim.committed:
                self._restore(inbox, claim, rel, src, (content_fp,), job.id)
                self.store.finish(job.id, SKIPPED)
                claim.remove()
                self.log.info("job.skipped", job=job.id, inbox=inbox.name, reason="seen_before")
                return
            fingerprints = (content_fp,)
        report = None
        # This instance's names for the job's temporary and staged outputs: stable across its
        # sessions (a crash between linking and marking the claim is recognised on restart),
        # never another instance's (one stalled past its lease may still be writing its own).
        tag = f"{job.id}.{inbox.box.instance}"
        if claim.committed:
            _clean_job_temps(inbox.outbox / rel, job.id)  # the staged name, left by the crash
        else:
            from .media.containers import output_name

            dst = inbox.outbox / rel.parent / output_name(
                src, rel.name, drop_data_tags=self.settings.video.drop_data_tags)
            swept = job.id in self.taken_over  # a fresh job's id was never anyone else's
            if swept:
                _clean_job_temps(dst, job.id, keep=tag)  # other attempts: void, we hold the claim
            staged = _staged_path(dst, tag)
            if not staged.exists():
                report = self._process(job, claim, inbox, engine, rel, src, dst, staged, tag)
            if not claim.dir.is_dir():
                unlink_if_exists(staged)
                raise _LostClaim()
            self._commit(staged, dst, claim, cfg.on_exists)
            if swept:  # the old owner, stalled, may have written again since
                _clean_job_temps(dst, job.id)
        try:
            self._finalize(job, claim, inbox, rel, src, fingerprints, report, started)
        except Exception as exc:  # noqa: BLE001 - the output exists: never quarantine now
            raise _AfterCommit(exc) from exc

    def _finalize(self, job, claim, inbox, rel, src, fingerprints, report, started) -> None:
        """The output is in place: what remains is the original and the bookkeeping."""
        from .errors import AnondError

        cfg = inbox.cfg
        if cfg.originals == "keep":
            self._restore(inbox, claim, rel, src, fingerprints, job.id)
        elif cfg.originals == "archive":
            self._archive(inbox, claim, rel, src)
        else:
            os.unlink(src)
            if claim.sidecar is not None:
                os.unlink(claim.sidecar)
        seconds = round(time.monotonic() - started, 3)
        self.store.finish(job.id, "done", seconds=seconds)
        report_dict = report.to_dict() if report is not None else None
        if report_dict is not None and self.settings.service.reports:
            try:
                self._write_report(job.id, report_dict)
            except (OSError, AnondError) as exc:
                self.log.warning("report.not_written", job=job.id, error=_errno_name(exc))
        claim.remove()
        if self.metrics:
            self.metrics.job_done(inbox.name, report_dict, seconds)
        masked = (report_dict or {}).get("masked") or {}
        self.log.info("job.completed", job=job.id, inbox=inbox.name, seconds=seconds,
                      **{f"masked_{k}": v for k, v in masked.items() if isinstance(v, int)})

    def _process(self, job, claim, inbox, engine, rel, src, dst, staged, tag):
        from .pipeline import process_file

        cfg = inbox.cfg
        dst.parent.mkdir(parents=True, exist_ok=True)
        sidecar = claim.sidecar
        if sidecar is None and cfg.regions != "off":
            # A crash between claiming the file and its sidecar leaves the sidecar behind.
            if inbox.box.claim_sidecar(claim, rel):
                sidecar = claim.sidecar
        report = process_file(
            src, staged, settings=self.settings, engine=engine,
            profile=self.settings.profiles[cfg.profile], job_id=job.id,
            regions_path=sidecar if cfg.regions != "off" else None, regions_policy=cfg.regions,
            on_exists="replace", file_mode=cfg.output_mode, group=cfg.output_group, temp_tag=tag,
        )
        landed = getattr(report, "output_path", None)
        if landed is not None and Path(landed) != staged:
            os.replace(landed, staged)
        return report

    def _commit(self, staged: Path, dst: Path, claim, on_exists: str) -> Path:
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

    def _restore(self, inbox, claim, rel, src, fingerprints, job_id) -> None:
        """originals = keep: remember the fingerprints, then put the file back where it was."""
        from .fsutil import move_no_clobber
        from .jobs import quick_fingerprint

        st = os.stat(src)
        quick = quick_fingerprint(inbox.box.salt, rel, st.st_size, st.st_mtime_ns)
        self._remember(inbox, (*fingerprints, quick), job_id)
        landed = move_no_clobber(src, inbox.root / rel)
        new_rel = PurePosixPath(landed.relative_to(inbox.root).as_posix())
        if new_rel != rel:  # the name was taken meanwhile: remember the new one too
            self._remember(inbox, (quick_fingerprint(inbox.box.salt, new_rel, st.st_size, st.st_mtime_ns),),
                           job_id)
        sidecar = claim.sidecar
        if sidecar is not None:
            from .regions import sidecar_path

            move_no_clobber(sidecar, sidecar_path(landed))

    def _seen(self, inbox: InboxRuntime, fp: str) -> bool:
        """A kept original processed before, by this instance or another one on this inbox."""
        return self.store.seen(fp) or inbox.box.is_kept(fp)

    def _remember(self, inbox: InboxRuntime, fingerprints: tuple[str, ...], job_id: str) -> None:
        self.store.remember(fingerprints, job_id)
        inbox.box.mark_kept(fingerprints)

    def _archive(self, inbox, claim, rel, src) -> None:
        from .fsutil import move_no_clobber
        from .regions import sidecar_path

        landed = move_no_clobber(src, inbox.archive / rel)
        sidecar = claim.sidecar
        if sidecar is not None:
            move_no_clobber(sidecar, sidecar_path(landed))

    def _failure(self, job, claim, inbox, err, started: float) -> None:
        """Transient: retry with backoff (claim kept). Permanent or out of retries: quarantine."""
        from .errors import AnondError

        svc = self.settings.service
        if not claim.dir.is_dir():
            # Taken over while this attempt ran (stalled past the lease): the other instance
            # owns the job now; this attempt's failure (its files were swept) is not the job's.
            self._guard(self.store.forget, job.id)
            self.log.warning("job.lost_claim", job=job.id, inbox=inbox.name)
            return
        code = getattr(err, "code", "internal")
        permanent = not isinstance(err, AnondError) or err.permanent
        attempts = job.attempts + 1
        if not permanent and attempts <= svc.retries:
            delay = min(svc.retry_backoff_max_s, svc.retry_backoff_s * 2 ** (attempts - 1))
            self.store.retry_later(job.id, attempts, delay, code)
            if self.metrics:
                self.metrics.retries.labels(inbox=inbox.name).inc()
            self.log.warning("job.retry", job=job.id, inbox=inbox.name, error=code,
                             attempt=attempts, delay_s=round(delay, 1))
            return
        try:
            self._quarantine(job, claim, inbox, err, code, permanent, attempts)
        except OSError as exc:
            # The failed folder is not writable: keep the claim and try again later.
            self.store.retry_later(job.id, job.attempts, svc.retry_backoff_max_s, "quarantine_failed")
            self.log.error("job.quarantine_failed", job=job.id, inbox=inbox.name,
                           error=_errno_name(exc))
            return
        seconds = round(time.monotonic() - started, 3)
        self.store.finish(job.id, "failed", error=code, seconds=seconds)
        claim.remove()
        if self.metrics:
            self.metrics.job_failed(inbox.name, code, seconds)
        self.log.warning("job.quarantined", job=job.id, inbox=inbox.name, error=code,
                         attempts=attempts)

    def _quarantine(self, job, claim, inbox, err, code, permanent, attempts) -> None:
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
        reason_path = write_bytes_atomic(inbox.failed / f"{job.id}.reason.json",
                                         (json.dumps(reason, indent=2) + "\n").encode(), job_id=job.id)
        os.chmod(reason_path, 0o600)
        if found is not None:
            rel, src = found
            _clean_job_temps(inbox.outbox / rel, job.id)
            (inbox.failed / job.id).mkdir(mode=0o700, exist_ok=True)
            # Under its path in the inbox, so `anond retry` can put it back where it was.
            landed = move_no_clobber(src, inbox.failed / job.id / rel)
            os.chmod(landed, 0o600)
            sidecar = claim.sidecar
            if sidecar is not None:
                from .regions import sidecar_path

                move_no_clobber(sidecar, sidecar_path(landed))

    def _write_report(self, job_id: str, report: dict) -> None:
        from .fsutil import write_bytes_atomic

        reports = _abs(self.settings.service.state_dir) / "reports"
        reports.mkdir(mode=0o700, exist_ok=True)
        write_bytes_atomic(reports / f"{job_id}.json",
                           (json.dumps(report, indent=2) + "\n").encode(), job_id=job_id)


class Worker(threading.Thread):
    """Loads the detectors once (plus a warm-up inference), then runs jobs from the queue."""

    def __init__(self, service: Service, index: int, targets: list[str]) -> None:
        super().__init__(name=f"anond-worker-{index}", daemon=True)
        self.service = service
        self.index = index
        self.targets = targets
        self.loaded = threading.Event()
        self.error: BaseException | None = None
        self.engine = None

    def run(self) -> None:
        try:
            from .detect.engine import Engine

            engine = Engine.load(self.service.settings, targets=self.targets)
            engine.warmup()
            if self.service.metrics:  # after the warm-up: only real calls are timed
                engine.set_observer(self.service.metrics.inference)
            self.engine = engine
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
            return
        finally:
            self.loaded.set()
        while True:
            job_id = self.service.work.get()
            if job_id is None:
                return
            try:
                self.service.execute(job_id, self.engine)
            except Exception as exc:  # noqa: BLE001 - bookkeeping failed; recovery redoes the job
                self.service.log.error("job.bookkeeping_failed", job=job_id, error=type(exc).__name__)


# ---------------------------------------------------------------------------------------------


def _keep_diagnostics_private() -> None:
    """Libraries print warnings, log records and thread tracebacks whose messages may hold a
    path (watchdog's warnings list watched folders). Route them through our log as events that
    keep only the kind of problem and the code location, never the message."""
    import logging
    import traceback
    import warnings

    lib_log = log.get("anond.lib")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        lib_log.warning("python.warning", category=category.__name__,
                        origin=f"{os.path.basename(filename)}:{lineno}")

    warnings.showwarning = showwarning

    class _Events(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lib_log.log(record.levelno, "library.log", logger=record.name,
                        origin=f"{os.path.basename(record.pathname)}:{record.lineno}")

    root = logging.getLogger()
    root.handlers[:] = [_Events(logging.WARNING)]

    def thread_hook(args) -> None:
        frames = traceback.extract_tb(args.exc_traceback)
        lib_log.error("thread.crashed", thread=getattr(args.thread, "name", "?"),
                      error=args.exc_type.__name__,
                      origin=" < ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in frames[-4:]))

    threading.excepthook = thread_hook

    def main_hook(exc_type, exc, tb) -> None:
        # The traceback's frames (code locations), and the error's class without its message.
        sys.stderr.write("".join(traceback.format_list(traceback.extract_tb(tb))))
        sys.stderr.write(f"{exc_type.__name__} (message withheld: it may contain a file name)\n")

    sys.excepthook = main_hook


def _abs(path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _require_local_state(state_dir: Path) -> None:
    """The job table (SQLite, WAL) must not live on a network file system."""
    from .errors import ConfigError
    from .fsutil import network_filesystem

    fstype = network_filesystem(state_dir)
    if fstype is not None:
        raise ConfigError(f"service.state_dir is on a network file system ({fstype}): the job "
                          "table needs a local disk (inboxes, outboxes and failed folders may be shares)")


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


def _clean_job_temps(dst: Path, job_id: str, keep: str | None = None) -> None:
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


def _errno_name(exc: BaseException) -> str:
    import errno as _errno

    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in _errno.errorcode:
        return _errno.errorcode[code]
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
