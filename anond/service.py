"""`anond run`: the daemon. Watches the inboxes, claims finished files, runs them through the
pipeline on worker threads, lands outputs atomically, and tells systemd how it is doing.

A file's way through the service:

    inbox/a/b.jpg ──watch: finished?──▶ claim (rename into inbox/.anond/claims/…) ──▶ job table
        ──worker: process_file──▶ outbox/a/.<job>.<instance>.anond-stage.jpg ──commit (no overwrite)──▶ outbox/a/b.jpg
        ──originals: delete | archive | keep──▶ job done (only id, counts and a fingerprint remain)

Every step can be interrupted (kill -9, power loss) and is redone or skipped on restart: the
claim says where the input is, the `committed` marker says the output is in place.

This module is the daemon: lifecycle, loop, dispatch, reload, status. The inboxes (watchers,
claims, takeovers, the low-space pause) are `anond.intake.Intake`; one job's transaction, from
the claim to the committed output or the failed folder, is `anond.jobrunner.JobRunner`, run by
the worker threads; the hourly pass is `anond.retention.housekeeping`.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import log
from .config import absolute
from .intake import InboxRuntime, Intake
from .jobrunner import JobRunner
from .metrics import start_metrics
from .retention import housekeeping, housekeeping_every
from .review import act_on_decisions

TICK_S = 0.2
SPACE_CHECK_S = 5.0
HOUSEKEEPING_S = 3600.0
STOP_GRACE_S = 20.0  # beyond stop_timeout_s, for requeueing and closing (see arm_stop_deadline)


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
class Running:
    job: object  # jobs.Job
    inbox: InboxRuntime
    started: float
    # A job pulled from the cluster's stream: its claim (in the publishing intake's folder),
    # whether it was delivered before (other attempts' files may lie beside its output), and
    # the delivery count once past cluster.max_deliver (then it is quarantined, not run).
    claim_dir: Path | None = None
    redelivered: bool = False
    poison: int = 0


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
        self.intake = Intake(self)  # inboxes, claims, low-space pause
        self.provider = "none"
        self.counts: dict[str, int] = {}  # job table counts, refreshed by refresh_status
        self.web = None  # the review UI, when [web] enabled
        self.cluster = None  # the NATS JetStream bridge, when [cluster] enabled

    # -- lifecycle

    def run(self) -> int:
        from .jobs import JobStore, new_session

        svc = self.settings.service
        _require_local_state(absolute(svc.state_dir))
        _keep_diagnostics_private()
        install_signals(self)
        self.notifier.status("starting: loading models")
        self.store = JobStore(absolute(svc.state_dir))
        self.session = new_session()
        try:
            for cfg in self.settings.inboxes:  # one by one: a failure closes those opened
                self.inboxes[cfg.name] = self.intake.open(cfg, self.settings)
            self.metrics = start_metrics(self.settings.service, self.inboxes, self.log)
            if self.settings.web.enabled:
                from .web import WebServer

                self.web = WebServer(self.settings, log.get("anond.web"), self.wake)
                self.web.start()
            if self.settings.cluster.enabled:
                from .cluster import Cluster

                self.cluster = Cluster(self)
            if self.settings.cluster.runs_workers:
                self._start_workers()
            if self.stop_event.is_set():
                return self._shutdown()
            self.intake.recover()
            if self.cluster is not None:
                self.store.forget_remote()  # the stream delivers them again
                self.cluster.start()
            self.refresh_status(force=True)
            self.notifier.ready(status_text(self.counts, self.intake.paused))
            if self.metrics:
                self.metrics.ready.set(1)
            self.log.info("service.ready", workers=len(self.workers), provider=self.provider,
                          inboxes=len(self.inboxes), instance=self.store.instance)
            self._loop()
            return self._shutdown()
        except BaseException:
            self._abort()
            raise

    def _start_workers(self) -> None:
        """Each worker loads the models once and runs a warm-up inference; READY waits for all."""
        targets = self.settings.inbox_targets()
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
            watching = self.settings.cluster.runs_intake
            if now >= next_lease and watching:
                next_lease = now + self._lease_every()
                for inbox in list(self.inboxes.values()):
                    self.guard(self.intake.take_over, inbox)
            if now >= next_space:
                next_space = now + SPACE_CHECK_S
                self.intake.check_space()
            # A rescan walks every inbox and a poll stats every file not yet taken: with tens of
            # thousands waiting they are spaced so that they take at most ~1/10 and ~1/5 of the
            # loop's time (claims are served from the last poll's list in between).
            if now >= next_rescan and watching:
                for inbox in self.inboxes.values():
                    self.guard(inbox.watcher.rescan)
                next_rescan = now + max(svc.rescan_interval_s, 10 * (time.monotonic() - now))
            if now >= next_poll and watching:
                began = time.monotonic()
                for inbox in list(self.inboxes.values()):
                    self.guard(self.intake.poll, inbox)
                next_poll = now + max(min(1.0, svc.stable_after_s / 4), 5 * (time.monotonic() - began))
            if watching:
                for inbox in list(self.inboxes.values()):
                    self.guard(self.intake.take, inbox)
            if any(i.cfg.review for i in self.inboxes.values()):
                self.guard(act_on_decisions, self)
            if self.cluster is not None:
                if watching:
                    self.guard(self.cluster.publish_due)  # workers pull from the stream
            elif not self.intake.paused:
                self._dispatch()
            self.refresh_status()
            idle = not self.running and self.counts.get("pending", 0) == 0
            if idle and not idle_checkpointed:
                # Nothing in flight: fold the WAL, so no page that once held a job is left in it.
                self.guard(self.store.checkpoint)
                idle_checkpointed = True
            elif not idle:
                idle_checkpointed = False
            if now >= next_housekeeping:
                next_housekeeping = now + housekeeping_every(svc, HOUSEKEEPING_S)
                self.guard(housekeeping, self)
            self.wake.wait(max(0.005, min(TICK_S, next_poll - time.monotonic())))
            self.wake.clear()

    def _lease_every(self) -> float:
        return max(0.5, self.settings.service.lease_s / 4)

    def start_cluster_job(self, job, inbox, claim_dir: Path, *, redelivered: bool, poison: int) -> None:
        """A job delivered by the cluster's stream (the cluster thread calls this when a
        worker is free): recorded as a remote job and handed to a worker."""
        self.store.start_remote(job.id, inbox.name, job.attempts)
        with self.running_lock:
            self.running[job.id] = Running(job, inbox, time.monotonic(), claim_dir, redelivered, poison)
        self.work.put(job.id)
        self.log.info("cluster.delivered", job=job.id, attempt=job.attempts + 1)

    def job_ended(self, job_id: str) -> None:
        """A worker is done with a job (whatever the outcome): a cluster job is settled."""
        if self.cluster is not None:
            self.cluster.settle(job_id)

    def guard(self, fn, *args) -> None:
        """Run one step of the loop; an unexpected error is logged, the service goes on."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the loop must keep running (and pinging)
            self.log.error("service.step_failed", step=getattr(fn, "__name__", "step"),
                           error=type(exc).__name__, errno=getattr(exc, "errno", None))

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
            self.refresh_status(force=True)

    # -- status

    def refresh_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - getattr(self, "_status_at", 0.0) < 1.0:
            return
        self._status_at = now
        self.counts = self.store.counts()
        with self.running_lock:
            self.counts["running"] = len(self.running)
        self.counts["waiting"] = sum(i.watcher.tracked for i in self.inboxes.values())
        self.notifier.status(status_text(self.counts, self.intake.paused))
        if self.metrics:
            self.metrics.set_queue(self.counts, self.inboxes)

    # -- reload (SIGHUP)

    def _reload(self) -> None:
        from .config import load_settings
        from .errors import ConfigError

        self.notifier.reloading()
        try:
            new = load_settings(self.config_path)
            problem = reload_problem(self.settings, new)
            if problem:
                self.log.error("config.reload_rejected", reason=problem)
            else:
                self.inboxes = self.intake.reconcile(new)
                self.settings = new
                if self.log_level is None:
                    log.configure(new.service.log_level)
                self.log.info("config.reloaded", inboxes=len(self.inboxes))
        except ConfigError as exc:
            self.log.error("config.reload_failed", error=str(exc))
        self.notifier.ready(status_text(self.counts, self.intake.paused))

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
        if self.cluster is not None:
            self.cluster.release()  # the jobs still running here: to another worker now
        self._close(release=not left)
        self.log.info("service.stopped", requeued=len(left))
        if left:
            # Worker threads are still inside native code; leave without waiting for them.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return 0

    def _abort(self) -> None:
        """Start-up failed: give back what was opened (claims stay for the next start)."""
        self._close(release=False, quiet=True)

    def _close(self, release: bool, quiet: bool = False) -> None:
        """Stop the workers, watchers, metrics, web UI and cluster link; close the inboxes
        (`release`: give back their pending claims first) and the job table. `quiet`: after a
        failed start, where any of them may be half open."""
        for _ in self.workers:
            self.work.put(None)
        for inbox in self.inboxes.values():
            try:
                inbox.watcher.stop()
                if release:
                    self.guard(self.intake.release_pending, inbox)
                if release or quiet:
                    inbox.box.close()
            except Exception:  # noqa: BLE001
                if not quiet:
                    raise
        if self.metrics:
            self.metrics.stop()
        if self.web is not None:
            self.web.stop()
        if self.cluster is not None:
            self.cluster.stop(2.0) if quiet else self.cluster.stop()
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001
                if not quiet:
                    raise


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


def install_signals(service: "Service") -> None:
    """SIGTERM/SIGINT: stop (with a deadline, `arm_stop_deadline`); SIGHUP: reload."""
    def stop(_signum, _frame):
        if not service.stop_event.is_set():
            arm_stop_deadline(service.settings.service.stop_timeout_s + STOP_GRACE_S, service.log)
        service.stop_event.set()
        service.wake.set()

    def hup(_signum, _frame):
        service.reload_requested = True
        service.wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)


def arm_stop_deadline(limit: float, logger) -> None:
    """A stop must end: if shutting down takes `limit` seconds (stop_timeout_s + STOP_GRACE_S: a
    step blocked in a library, a file system that stopped answering), the process leaves as
    after a crash — the job table and the claims are crash-safe, unfinished jobs are recovered
    on the next start — before systemd's TimeoutStopSec kills it mid-write."""
    def overdue() -> None:
        logger.error("service.stop_overdue", seconds=round(limit, 1))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(limit, overdue)
    timer.daemon = True
    timer.start()


def status_text(counts: dict, paused: bool) -> str:
    """The one line systemctl status shows (STATUS=)."""
    c = counts
    text = (f"queue {c.get('pending', 0)}, running {c.get('running', 0)}, "
            f"done {c.get('done', 0)}, failed {c.get('failed', 0)}, "
            f"waiting in inboxes {c.get('waiting', 0)}")
    return text + (" (intake paused: low disk space)" if paused else "")


def reload_problem(old, new) -> str | None:
    """Why a reload (SIGHUP) cannot take the new settings, or None."""
    if new.models != old.models or new.runtime != old.runtime:
        return "models and runtime settings need a restart"
    if new.cluster != old.cluster:
        return "cluster settings need a restart"
    if new.inbox_targets() != old.inbox_targets():
        return "the profiles now need other detectors: restart"
    for key in ("state_dir", "workers", "metrics", "metrics_port", "metrics_address"):
        if getattr(new.service, key) != getattr(old.service, key):
            return f"service.{key} needs a restart"
    return None
