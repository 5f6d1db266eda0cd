"""Per-job report: counts, sizes, durations, versions and parameters: nothing personal.

A report never holds a file name, a path, a coordinate, a crop or a pixel. The one path a
caller needs (where the output landed) lives in `JobReport.output_path`, which is excluded
from `to_dict()` and `write_json()`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import __version__

STAGES = ("decode", "detect", "track", "mask", "verify", "encode", "total")


_DURATIONS_LOCK = threading.Lock()


@dataclass
class MediaFacts:
    """What the input was: sizes and formats, no names."""

    width: int | None = None
    height: int | None = None
    frames: int | None = None  # 1 for a photo
    duration_s: float | None = None
    fps: float | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    format: str | None = None  # container or image format: "jpeg", "png", "mp4"...
    codec: str | None = None  # video codec of the input ("h264")
    bit_depth: int | None = None
    has_alpha: bool | None = None
    audio: str | None = None  # video: "copied", "none", "dropped"...


@dataclass
class ManualRegionsFacts:
    """Operator-supplied regions (sidecar): counts and status only."""

    sidecar: str = "none"  # none | applied | rejected: <reason> (anond.regions.resolve)
    applied: int = 0
    excluded: int = 0


@dataclass
class ModelFacts:
    name: str
    sha256: str
    provider: str


@dataclass
class JobReport:
    """Everything worth knowing about one job, and nothing about who or what was in it."""

    job_id: str
    kind: str  # image | video
    status: str = "ok"  # ok | failed
    error: str | None = None  # error code (AnondError.code) when failed
    anond_version: str = __version__
    media: MediaFacts = field(default_factory=MediaFacts)
    # Counting rule, photos and videos alike (a photo is one frame), summed over frames:
    # detections = objects the detection pass found at the profile's threshold, after the
    # operator's exclude regions (`manual_regions.excluded` counts those dropped, once: not
    # verification's re-detections); masked = boxes masked (video: tracked and gap-filled ones
    # too) plus verification's fixes, per class, and "manual" = manual regions applied.
    detections: dict[str, int] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)
    tracks: dict[str, int] = field(default_factory=dict)  # video: tracks per class
    verify_fixes: int = 0  # objects still found by verification and masked then
    verify_on_mask: int = 0  # detections of the mask itself on already-masked pixels (left alone), every round
    # Precision rules, what each kept and what it turned down (counts only), e.g. video's
    # {"second_look": {"supported": 12, "demoted": 3}} (anond/detect/support.py) and
    # {"plate_track_look": {"accepted": 2, "refused": 9}} (anond/track.py), a photo's first pass
    # {"plate_second_look": {"kept": 1, "dropped": 4}} (anond/detect/rescale.py).
    rules: dict[str, dict[str, int]] = field(default_factory=dict)
    manual_regions: ManualRegionsFacts = field(default_factory=ManualRegionsFacts)
    models: list[ModelFacts] = field(default_factory=list)
    provider: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # the profile used
    durations: dict[str, float] = field(default_factory=dict)  # seconds per stage
    decoder: str | None = None  # video
    encoder: str | None = None  # video
    skipped_packets: int = 0  # video: undecodable packets skipped
    # Where the output landed: for the caller only, never serialised (see module docstring).
    output_path: Path | None = field(default=None, repr=False, compare=False,
                                     metadata={"private": True})

    @classmethod
    def start(cls, job_id: str, kind: str, *, engine=None, profile=None) -> "JobReport":
        """A report for a job that is starting: models, provider and parameters filled in."""
        report = cls(job_id=job_id, kind=kind)
        if engine is not None:
            report.use_engine(engine)
        if profile is not None:
            report.parameters = profile.model_dump(mode="json")
        return report

    def use_engine(self, engine) -> None:
        """Record the provider and the models of the engine that runs this job."""
        self.provider = getattr(engine, "provider", None)
        self.models = [ModelFacts(m.name, m.sha256, getattr(m, "provider", self.provider))
                       for m in getattr(engine, "models", [])]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall time of the `with` block to `durations[name]`."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_duration(name, time.perf_counter() - t0)

    def add_duration(self, name: str, seconds: float) -> None:
        with _DURATIONS_LOCK:  # a video job's stages run in three threads
            self.durations[name] = round(self.durations.get(name, 0.0) + seconds, 6)

    @staticmethod
    def add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
        for label, n in counts.items():
            into[label] = into.get(label, 0) + int(n)

    def failed(self, error_code: str) -> None:
        self.status, self.error = "failed", error_code

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, private fields left out."""
        out = {}
        for f in fields(self):
            if f.metadata.get("private"):
                continue
            value = getattr(self, f.name)
            if hasattr(value, "__dataclass_fields__"):
                value = asdict(value)
            elif isinstance(value, list):
                value = [asdict(v) if hasattr(v, "__dataclass_fields__") else v for v in value]
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def write_json(self, path: str | Path) -> None:
        """Write the report atomically."""
        from .fsutil import write_bytes_atomic

        write_bytes_atomic(path, (self.to_json() + "\n").encode(), job_id=self.job_id)


def totals(reports: list[JobReport]) -> dict[str, Any]:
    """Sums over many jobs (for `anond process --report`)."""
    out: dict[str, Any] = {"jobs": len(reports), "ok": 0, "failed": 0, "detections": {}, "masked": {},
                           "verify_fixes": 0, "bytes_in": 0, "bytes_out": 0, "seconds": 0.0}
    for r in reports:
        out["ok" if r.status == "ok" else "failed"] += 1
        JobReport.add_counts(out["detections"], r.detections)
        JobReport.add_counts(out["masked"], r.masked)
        out["verify_fixes"] += r.verify_fixes
        out["bytes_in"] += r.media.bytes_in or 0
        out["bytes_out"] += r.media.bytes_out or 0
        out["seconds"] = round(out["seconds"] + r.durations.get("total", 0.0), 6)
    return out
