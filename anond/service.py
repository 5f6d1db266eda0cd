"""`anond run`: the daemon. Watches the inboxes, claims finished files, runs them through the
pipeline on worker threads, lands outputs atomically, and tells systemd how it is doing.

A file's way through the service:

    inbox/a/b.jpg ──watch: finished?──▶ claim (rename into inbox/.anond/claims/…) ──▶ job table
        ──worker: process_file──▶ outbox/a/.<job>.<instance>.anond-stage.jpg ──commit (no overwrite)──▶ outbox/a/b.jpg
        ──originals: delete | archive | keep──▶ job done (only id, counts and a fingerprint remain)

Every step can be interrupted (kill -9, power loss) and is redone or skipped on restart: the
claim says where the input is, the `committed` marker says the output is in place.

This module is the daemon: lifecycle, loop, intake, dispatch, reload, status. One job's
transaction, from the claim to the committed output or the failed folder, is
`anond.jobrunner.JobRunner`, run by the worker threads.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import log
from .config import absolute
from .jobrunner import JobRunner, clean_job_temps, errno_name, seen_before

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
        self.runner = JobRunner(self)  # one job's transaction, run by the workers
        self.store = None
        self.metrics = None
        self.paused = False
        self.provider = "none"
        self._counts: dict[str, int] = {}

    # -- lifecycle

    def run(self) -> int:
        from .jobs import JobStore, new_session

        svc = self.settings.service
        _require_local_state(absolute(svc.state_dir))
        _keep_diagnostics_private()
        self._install_signals()
        self.notifier.status("starting: loading models")
        self.store = JobStore(absolute(svc.state_dir))
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

        root = absolute(cfg.path)
        outbox = absolute(cfg.outbox)
        failed = absolute(cfg.failed or settings.service.failed_dir)
        archive = absolute(cfg.archive) if cfg.archive else None
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
                    self.guard(self._take_over, inbox)
            if now >= next_space:
                next_space = now + SPACE_CHECK_S
                self._check_space()
            # A rescan walks every inbox and a poll stats every file not yet taken: with tens of
            # thousands waiting they are spaced so that they take at most ~1/10 and ~1/5 of the
            # loop's time (claims are served from the last poll's list in between).
            if now >= next_rescan:
                for inbox in self.inboxes.values():
                    self.guard(inbox.watcher.rescan)
                next_rescan = now + max(svc.rescan_interval_s, 10 * (time.monotonic() - now))
            if now >= next_poll:
                began = time.monotonic()
                for inbox in list(self.inboxes.values()):
                    self.guard(self._poll, inbox)
                next_poll = now + max(min(1.0, svc.stable_after_s / 4), 5 * (time.monotonic() - began))
            for inbox in list(self.inboxes.values()):
                self.guard(self._intake, inbox)
            if not self.paused:
                self._dispatch()
            self._refresh_status()
            idle = not self.running and self._counts.get("pending", 0) == 0
            if idle and not idle_checkpointed:
                # Nothing in flight: fold the WAL, so no page that once held a job is left in it.
                self.guard(self.store.checkpoint)
                idle_checkpointed = True
            elif not idle:
                idle_checkpointed = False
            if now >= next_housekeeping:
                next_housekeeping = now + self._housekeeping_every()
                self.guard(self._housekeeping)
            self.wake.wait(max(0.005, min(TICK_S, next_poll - time.monotonic())))
            self.wake.clear()

    def _lease_every(self) -> float:
        return max(0.5, self.settings.service.lease_s / 4)

    def guard(self, fn, *args) -> None:
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
                self.log.warning("job.unclaimable", inbox=inbox.name, error=errno_name(exc))
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
            if seen_before(self.store, inbox, quick):
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
        places = [("state", absolute(self.settings.service.state_dir))]
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
        self.guard(self._retention)
        keep_s = self.settings.service.history_days * 86400
        pruned = self.store.prune(keep_s)
        reports = absolute(self.settings.service.state_dir) / "reports"
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
            if (prev is not None and prev.root == absolute(cfg.path) and prev.cfg.recursive == cfg.recursive
                    and new.service.stable_after_s == self.settings.service.stable_after_s
                    and new.service.inotify == self.settings.service.inotify):
                prev.cfg = cfg
                prev.outbox = absolute(cfg.outbox)
                prev.failed = absolute(cfg.failed or new.service.failed_dir)
                prev.archive = absolute(cfg.archive) if cfg.archive else None
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
                clean_job_temps(inbox.outbox / found[0], claim.job_id)  # a staged output
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
                self.guard(self._release_pending, inbox)
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
                self.service.runner.execute(job_id, self.engine)
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


def _require_local_state(state_dir: Path) -> None:
    """The job table (SQLite, WAL) must not live on a network file system."""
    from .errors import ConfigError
    from .fsutil import network_filesystem

    fstype = network_filesystem(state_dir)
    if fstype is not None:
        raise ConfigError(f"service.state_dir is on a network file system ({fstype}): the job "
                          "table needs a local disk (inboxes, outboxes and failed folders may be shares)")
