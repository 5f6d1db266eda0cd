"""The review area: masked results of `review = true` inboxes waiting for an operator.

    job (claimed input stays in its claim) ──process──▶ state_dir/review/<job id>/
        output.<ext>   the masked result (what "Approve" puts in the outbox)
        meta.json      kind, size, frame count, the file's name for the operator's eyes
        boxes.json     automatic detections per frame (upright pixels) for the editor
        report.json    the job report (counts only)
        regions.json   the editor's regions (the sidecar schema of docs/REGIONS.md)
        decision.json  the operator's last word (apply | approve | reject), until the service
                       acts on it: apply re-runs the job with regions.json as its sidecar,
                       approve commits output.<ext> to the outbox, reject quarantines the input

The web UI (`anond.web`) only reads this folder and writes `regions.json` and
`decision.json`; the service (`act_on_decisions`, from its loop) owns the job table and the
claims. So the UI runs inside the service or as a process of its own (`anond web`) alike.

Everything here is personal data as the original is (it is shown to the operator): the
folder is the service user's alone (0700/0600), nothing of it is logged, and retention
applies to it as to the failed folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import absolute
from .fsutil import unlink_if_exists, write_bytes_atomic
from .types import Detections

REVIEW = "review"  # the job-table state of a job waiting here
ACTIONS = ("apply", "approve", "reject")
MAX_BOX_FRAMES = 200_000  # boxes.json holds at most this many frames (a 2 h video at 25 fps)


@dataclass
class Waiting:
    """One job in the review area, as the UI lists it."""

    job: str
    meta: dict
    ready: bool  # a result is there and no decision waits for the service


class ReviewArea:
    def __init__(self, state_dir) -> None:
        self.root = absolute(state_dir) / "review"

    def dir(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise ValueError("not a job id")
        return self.root / job_id

    # -- written by the service

    def stage(self, job_id: str, produced: Path, meta: dict, report: dict, boxes: dict) -> Path:
        """Put a fresh result in place (replacing an earlier one) with its meta, report and
        boxes; returns where the output is."""
        d = self.dir(job_id)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        for old in d.glob("output.*"):
            if old.name != "output" + produced.suffix:
                unlink_if_exists(old)
        out = d / ("output" + produced.suffix)
        os.replace(produced, out)
        os.chmod(out, 0o600)
        previous = self.meta(job_id) or {}
        meta = {**meta, "revision": int(previous.get("revision", 0)) + 1,
                "created": previous.get("created", time.time()), "updated": time.time()}
        for name, value in (("boxes.json", boxes), ("report.json", report), ("meta.json", meta)):
            self._write(job_id, name, value)
        return out

    def mark(self, job_id: str, what: str) -> None:
        (self.dir(job_id) / what).touch(mode=0o600)

    def marked(self, job_id: str, what: str) -> bool:
        return (self.dir(job_id) / what).exists()

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.dir(job_id), ignore_errors=True)

    def drop_output(self, job_id: str) -> None:
        for old in self.dir(job_id).glob("output.*"):
            unlink_if_exists(old)

    # -- read by both

    def output(self, job_id: str) -> Path | None:
        found = sorted(self.dir(job_id).glob("output.*"))
        return found[0] if found else None

    def meta(self, job_id: str) -> dict | None:
        return _read_json(self.dir(job_id) / "meta.json")

    def report(self, job_id: str) -> dict | None:
        return _read_json(self.dir(job_id) / "report.json")

    def boxes(self, job_id: str) -> dict:
        return _read_json(self.dir(job_id) / "boxes.json") or {}

    def regions(self, job_id: str) -> dict | None:
        return _read_json(self.dir(job_id) / "regions.json")

    def decision(self, job_id: str) -> str | None:
        found = _read_json(self.dir(job_id) / "decision.json")
        action = (found or {}).get("action")
        return action if action in ACTIONS else None

    def _jobs(self) -> list[str]:
        try:
            return os.listdir(self.root)
        except FileNotFoundError:
            return []

    def _write(self, job_id: str, name: str, value: dict) -> None:
        """One of the job's JSON files, atomically, the service user's alone."""
        write_bytes_atomic(self.dir(job_id) / name, json.dumps(value).encode(), job_id, mode=0o600)

    def waiting(self) -> list[Waiting]:
        """Jobs with a result or a pending decision, newest first."""
        out = []
        for name in self._jobs():
            meta = self.meta(name)
            if meta is None:
                continue
            ready = self.output(name) is not None and self.decision(name) is None
            out.append(Waiting(name, meta, ready))
        out.sort(key=lambda w: w.meta.get("created", 0), reverse=True)
        return out

    # -- written by the UI

    def decide(self, job_id: str, action: str, regions: dict | None = None) -> None:
        """The operator's decision; `regions` (a validated sidecar) goes with apply."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        d = self.dir(job_id)
        if not (d / "meta.json").exists():
            raise FileNotFoundError(job_id)
        if regions is not None:
            self._write(job_id, "regions.json", regions)
        self._write(job_id, "decision.json", {"action": action})

    def decisions(self) -> list[tuple[str, str]]:
        out = []
        for name in self._jobs():
            action = self.decision(name)
            if action is not None:
                out.append((name, action))
        return out

    def clear_decision(self, job_id: str) -> None:
        unlink_if_exists(self.dir(job_id) / "decision.json")


class BoxRecorder:
    """Collects a job's automatic detections per frame (upright pixels) for the editor:
    a `VideoObserver` for videos, called once for a photo."""

    def __init__(self) -> None:
        self.frames: dict[int, list] = {}

    def frame_boxes(self, frame: int, xyxy: np.ndarray, dets: Detections) -> None:
        if len(dets) and len(self.frames) < MAX_BOX_FRAMES:
            self.frames[frame] = [
                [round(float(v), 1) for v in box] + [int(c), int(t)]
                for box, c, t in zip(xyxy, dets.cls, dets.track_id)
            ]

    def tracker_input(self, frame: int, dets: Detections) -> None:
        pass

    def frame_masked(self, frame: int, coverage) -> None:
        pass

    def to_dict(self) -> dict:
        return {"frames": {str(k): v for k, v in sorted(self.frames.items())}}


def act_on_decisions(svc) -> None:
    """The service's side of the decisions the UI wrote (its loop calls this): the job goes
    back to the queue, its claim carrying the editor's regions (apply), or marked approved
    or rejected for the worker that finishes it."""
    from .fsutil import write_bytes_atomic as write
    from .jobs import SIDECAR

    area = ReviewArea(svc.settings.service.state_dir)
    for job_id, action in area.decisions():
        known = svc.store.get(job_id)
        if known is not None and known[0] in ("pending", "running"):
            continue  # acted on already; the worker has it
        inbox = next((i for i in svc.inboxes.values() if (i.box.mine / job_id).is_dir()), None)
        if known is None or known[0] != REVIEW or inbox is None:
            area.remove(job_id)  # the job ended meanwhile (or is not ours): nothing to decide
            svc.log.warning("review.stale_decision", job=job_id, action=action)
            continue
        if action == "apply":
            regions = area.dir(job_id) / "regions.json"
            if regions.exists():
                write(inbox.box.mine / job_id / SIDECAR, regions.read_bytes(), job_id)
            area.drop_output(job_id)
        else:
            area.mark(job_id, "approved" if action == "approve" else "rejected")
        svc.store.add(job_id, inbox.name, known[1])
        area.clear_decision(job_id)
        svc.log.info("review.decided", job=job_id, action=action)
        svc.wake.set()


def expire(svc, max_age_s: float, now: float) -> int:
    """Retention (as for the failed folder): a result left unreviewed longer than `max_age_s`
    is deleted with its unmasked original; the job ends failed (review_expired). Returns how
    many."""
    area = ReviewArea(svc.settings.service.state_dir)
    expired = 0
    for waiting in area.waiting():
        if now - float(waiting.meta.get("created", now)) <= max_age_s:
            continue
        known = svc.store.get(waiting.job)
        if known is not None and known[0] != REVIEW:
            continue  # queued again by a decision: the worker ends it
        for inbox in svc.inboxes.values():
            claim = inbox.box.mine / waiting.job
            if claim.is_dir():
                shutil.rmtree(claim, ignore_errors=True)
        area.remove(waiting.job)
        if known is not None:
            svc.store.finish(waiting.job, "failed", error="review_expired")
        expired += 1
    return expired


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return value if isinstance(value, dict) else None
