"""The service's inboxes: each configured inbox opened (folders, watcher, claim area), finished
files claimed as jobs, claims of dead owners taken over, intake paused while space runs low, and
the set of inboxes reconciled on reload.

    watcher.poll() ──▶ ready (finished files) ──take()──▶ ClaimBox.claim ──▶ job table (pending)

The daemon (`anond.service.Service`) calls these from its loop; they read its settings, job
table, metrics and log at each call (a reload replaces them).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .config import absolute
from .jobrunner import clean_job_temps, errno_name, seen_before


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


def _folders(cfg, settings) -> tuple[Path, Path, Path | None]:
    """Outbox, failed and archive folders of `cfg` (config.Inbox), created if missing."""
    outbox = absolute(cfg.outbox)
    failed = absolute(cfg.failed or settings.service.failed_dir)
    archive = absolute(cfg.archive) if cfg.archive else None
    for d in (outbox, failed, archive):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    return outbox, failed, archive


class Intake:
    """Inboxes and claims for one service."""

    def __init__(self, service) -> None:
        self.svc = service
        self.paused = False  # low disk space: nothing is claimed

    # -- inboxes

    def open(self, cfg, settings) -> InboxRuntime:
        from .jobs import ClaimBox
        from .watch import InboxWatcher

        root = absolute(cfg.path)
        root.mkdir(parents=True, exist_ok=True)
        folders = _folders(cfg, settings)
        box = ClaimBox(root, self.svc.store.instance, self.svc.session)
        box.open()
        watcher = InboxWatcher(root, recursive=cfg.recursive,
                               stable_after_s=settings.service.stable_after_s,
                               use_events=settings.service.inotify, ignore=cfg.ignore)
        if settings.cluster.runs_intake:
            watcher.start()  # a cluster worker runs jobs others claimed: it watches nothing
        return InboxRuntime(cfg, root, *folders, watcher, box)

    def close(self, inbox: InboxRuntime) -> None:
        inbox.watcher.stop()
        self.release_pending(inbox)

    def reconcile(self, new) -> dict[str, InboxRuntime]:
        """The inboxes of the new settings: unchanged ones kept (their folders re-resolved),
        changed ones reopened, removed ones closed (their unstarted jobs released)."""
        svc = self.svc
        old_inboxes = svc.inboxes
        fresh: dict[str, InboxRuntime] = {}
        for cfg in new.inboxes:
            prev = old_inboxes.get(cfg.name)
            if (prev is not None and prev.root == absolute(cfg.path) and prev.cfg.recursive == cfg.recursive
                    and new.service.stable_after_s == svc.settings.service.stable_after_s
                    and new.service.inotify == svc.settings.service.inotify):
                prev.cfg = cfg
                prev.outbox, prev.failed, prev.archive = _folders(cfg, new)
                fresh[cfg.name] = prev
            else:
                if prev is not None:
                    self.close(prev)
                fresh[cfg.name] = self.open(cfg, new)
        for name, prev in old_inboxes.items():
            if name not in fresh:
                self.close(prev)
                if svc.metrics:
                    svc.metrics.remove_inbox(name)
        if svc.metrics:
            for name in fresh.keys() - old_inboxes.keys():
                svc.metrics.add_inbox(name)
        return fresh

    def release_pending(self, inbox: InboxRuntime) -> None:
        """Unstarted jobs go back into the inbox folder (for us later, or another instance)."""
        svc = self.svc
        with svc.running_lock:
            busy = set(svc.running)
        for claim in inbox.box.own_claims():
            state = svc.store.get(claim.job_id)
            if claim.job_id in busy or state is None or state != ("pending", 0):
                continue
            found = claim.source()
            if found is not None and not claim.committed:
                clean_job_temps(inbox.outbox / found[0], claim.job_id)  # a staged output
            if inbox.box.release(claim):
                svc.store.forget(claim.job_id)
                svc.log.info("job.released", job=claim.job_id)

    # -- claims of others

    def recover(self) -> None:
        """Jobs left by an earlier run of this instance (or by dead instances) are queued again."""
        unfinished = self.svc.store.unfinished()
        recovered: set[str] = set()
        for inbox in self.svc.inboxes.values():
            recovered |= self.take_over(inbox, unfinished)
        for job_id in set(unfinished) - recovered:
            self.svc.store.forget(job_id)  # another instance took it over meanwhile

    def take_over(self, inbox: InboxRuntime, unfinished: dict | None = None) -> set[str]:
        svc = self.svc
        taken = set()
        for owner in inbox.box.dead_owners(svc.settings.service.lease_s):
            for claim in inbox.box.take_over(owner):
                attempts = (unfinished or {}).get(claim.job_id, (None, 0))[1]
                known = svc.store.get(claim.job_id)
                if known is not None and known[0] == "review":
                    continue  # its result waits for an operator: the claim is ours again
                if known is not None and known[0] in ("pending", "running"):
                    attempts = max(attempts, known[1])
                svc.store.add(claim.job_id, inbox.name, attempts)
                taken.add(claim.job_id)
                svc.taken_over.add(claim.job_id)
                svc.log.info("job.recovered", job=claim.job_id,
                             own=owner.split(".", 1)[0] == svc.store.instance)
        return taken

    # -- finished files

    def poll(self, inbox: InboxRuntime) -> None:
        inbox.ready = inbox.watcher.poll()[::-1]  # taken from the end, in the watcher's order

    def take(self, inbox: InboxRuntime) -> None:
        """Claim finished files of one inbox, keeping a short queue per worker (the rest
        waits in the inbox, where other instances may take it)."""
        svc = self.svc
        if self.paused:
            return
        pending = svc.counts.get("pending", 0)
        # Alone: a short queue per worker. Cluster: the stream is the queue; claim ahead up to
        # the intake window (what waits unpublished while the server is away).
        room = (svc.settings.cluster.intake_window if svc.cluster is not None
                else 2 * len(svc.workers)) - pending
        while inbox.ready and room > 0 and not svc.stop_event.is_set():
            cand = inbox.ready.pop()
            try:
                st = os.stat(inbox.root / cand.rel, follow_symlinks=False)
            except OSError:
                continue  # claimed by another instance, or gone
            if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                continue  # written to since the poll: the watcher tracks it again
            try:
                queued = self._claim(inbox, cand)
            except OSError as exc:
                # Something about this one file (a name too long for a derived name, a
                # permission): it is left alone until it changes, and the others go on.
                inbox.watcher.settle(cand.rel, cand.size, cand.mtime_ns)
                svc.log.warning("job.unclaimable", error=errno_name(exc))
                continue
            room -= int(queued)

    def _claim(self, inbox: InboxRuntime, cand) -> bool:
        """Claim one finished file (and its sidecar) as a job; False when it is not (yet) one."""
        from .jobs import new_job_id, quick_fingerprint
        from .regions import find_sidecar
        from .watch import SIDECAR_SUFFIX

        svc = self.svc
        cfg = inbox.cfg
        if cfg.originals == "keep":
            quick = quick_fingerprint(inbox.box.salt, cand.rel, cand.size, cand.mtime_ns)
            if seen_before(svc.store, inbox, quick):
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
        svc.store.add(job_id, inbox.name)
        svc.counts["pending"] = svc.counts.get("pending", 0) + 1
        svc.log.info("job.queued", job=job_id, bytes=cand.size,
                     sidecar=has_sidecar)
        return True

    # -- space

    def check_space(self) -> None:
        """Pause intake while an outbox or the state directory runs low on space."""
        svc = self.svc
        limit = svc.settings.service.min_free_mb * 1024 * 1024
        low = None
        places = [("state", absolute(svc.settings.service.state_dir))]
        places += [(f"outbox:{i.name}", i.outbox) for i in svc.inboxes.values()]
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
                svc.log.warning("intake.paused", reason="low_disk_space", where=low,
                                min_free_mb=svc.settings.service.min_free_mb)
            else:
                svc.log.info("intake.resumed")
            if svc.metrics:
                svc.metrics.paused.set(1 if self.paused else 0)
            svc.refresh_status(force=True)
