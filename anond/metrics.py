"""Prometheus metrics on 127.0.0.1: counts, durations, queue depth, the active provider.

Labels are fixed, small vocabularies (result, class, provider, error code): never a file
name, a path or anything else taken from an input.
"""

from __future__ import annotations

from typing import Any

from . import __version__, log

_log = log.get("anond.metrics")

JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
MASK_CLASSES = ("face", "plate", "manual")


class Metrics:
    """The service's metrics in their own registry; `serve()` starts the HTTP endpoint."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.build = Gauge("anond_build_info", "anond's version (value 1)", ["version"], registry=r)
        self.build.labels(version=_label(__version__)).set(1)
        # `inbox` is the inbox's configured name ([[inboxes]] name: letters, digits, _.-), never a path.
        self.jobs = Counter("anond_jobs", "Finished jobs by result", ["result", "inbox"], registry=r)
        self.retries = Counter("anond_job_retries", "Transient failures retried later", ["inbox"], registry=r)
        self.errors = Counter("anond_job_errors", "Failures by error code", ["code", "inbox"], registry=r)
        self.queue = Gauge("anond_queue_depth", "Jobs waiting for a worker", registry=r)
        self.running = Gauge("anond_jobs_running", "Jobs being processed now", registry=r)
        self.tracked = Gauge("anond_inbox_files_tracked", "Inbox files waiting to be finished",
                             ["inbox"], registry=r)
        self.ignored = Gauge("anond_inbox_entries_ignored",
                             "Inbox folders and files matching the ignore patterns (never touched)",
                             ["inbox"], registry=r)
        self.skipped = Gauge("anond_inbox_files_skipped",
                             "Inbox files that are never inputs: hidden, partial downloads, "
                             "temporary files, links, FIFOs (never touched)", ["inbox"], registry=r)
        self.paused = Gauge("anond_intake_paused", "1 while intake is paused (low free space)", registry=r)
        self.job_seconds = Histogram("anond_job_duration_seconds", "Wall time per job",
                                     buckets=JOB_BUCKETS, registry=r)
        self.inference_seconds = Histogram("anond_inference_duration_seconds",
                                           "Time per detector call (one batch of frames or views)",
                                           ["target"], buckets=INFERENCE_BUCKETS, registry=r)
        self.frames = Counter("anond_frames", "Frames (and photos) processed", registry=r)
        self.bytes_in = Counter("anond_input_bytes", "Input bytes processed", registry=r)
        self.masked = Counter("anond_objects_masked", "Objects masked, by class", ["cls"], registry=r)
        self.provider = Gauge("anond_provider_info", "Execution provider of the detectors",
                              ["provider"], registry=r)
        self.ready = Gauge("anond_ready", "1 once models are loaded and warmed up", registry=r)
        # [cluster]: the stream's view, the same on every instance (anond.cluster.Stats).
        self.cluster = Gauge("anond_cluster_jobs", "Cluster jobs: queued in the stream, in flight "
                             "(delivered, unacknowledged), redelivered so far", ["state"], registry=r)
        self.cluster_connected = Gauge("anond_cluster_connected", "1 while NATS answers", registry=r)
        self.cluster_workers = Gauge("anond_cluster_workers", "Workers heard from in the last minute",
                                     registry=r)
        self.retention_deleted = Counter(
            "anond_retention_deleted", "Unmasked originals deleted by retention: failed jobs "
            "(what=failed), archived files (what=archive), results never reviewed (what=review)",
            ["what"], registry=r)
        for what in ("failed", "archive", "review"):
            self.retention_deleted.labels(what=what)
        for cls in MASK_CLASSES:
            self.masked.labels(cls=cls)
        self.server = None
        self.port: int | None = None

    def add_inbox(self, inbox: str) -> None:
        """Every series of an inbox exists from the start (at 0), not from its first job."""
        for result in ("done", "failed"):
            self.jobs.labels(result=result, inbox=inbox)
        self.retries.labels(inbox=inbox)

    def remove_inbox(self, inbox: str) -> None:
        """An inbox gone after a reload: its gauges stop being reported (counters stay)."""
        for gauge in (self.tracked, self.ignored, self.skipped):
            try:
                gauge.remove(inbox)
            except KeyError:
                pass

    def inference(self, target: str, seconds: float) -> None:
        self.inference_seconds.labels(target=_label(target)).observe(seconds)

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Listen on address:port (0 = any free port); returns the port."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self.server = server
        self.port = int(server.server_port)
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def set_cluster(self, stats) -> None:
        self.cluster_connected.set(1 if stats.connected else 0)
        for state in ("queued", "in_flight", "redelivered"):
            self.cluster.labels(state=state).set(getattr(stats, state))
        self.cluster_workers.set(len(stats.workers))

    def set_queue(self, counts: dict, inboxes: dict) -> None:
        """The job table's queue and running counts, and each inbox watcher's file counts."""
        self.queue.set(counts.get("pending", 0))
        self.running.set(counts.get("running", 0))
        for name, inbox in inboxes.items():
            self.tracked.labels(inbox=name).set(inbox.watcher.tracked)
            self.ignored.labels(inbox=name).set(inbox.watcher.ignored)
            self.skipped.labels(inbox=name).set(inbox.watcher.skipped)

    def set_provider(self, provider: str) -> None:
        self.provider.clear()
        self.provider.labels(provider=_label(provider)).set(1)

    def job_done(self, inbox: str, report: dict[str, Any] | None, seconds: float) -> None:
        """Count a finished job from its report (only numbers and known class names are read)."""
        self.jobs.labels(result="done", inbox=inbox).inc()
        self.job_seconds.observe(seconds)
        if not report:
            return
        media = report.get("media") or {}
        frames = media.get("frames")
        if isinstance(frames, int) and frames > 0:
            self.frames.inc(frames)
        if isinstance(media.get("bytes_in"), int):
            self.bytes_in.inc(media["bytes_in"])
        for cls, n in (report.get("masked") or {}).items():
            if cls in MASK_CLASSES and isinstance(n, int) and n > 0:
                self.masked.labels(cls=cls).inc(n)

    def job_failed(self, inbox: str, code: str, seconds: float) -> None:
        self.jobs.labels(result="failed", inbox=inbox).inc()
        self.errors.labels(code=_label(code), inbox=inbox).inc()
        self.job_seconds.observe(seconds)


def _label(value: str) -> str:
    """Label values are identifiers from our own code; anything else is replaced."""
    value = str(value)
    if len(value) <= 64 and value.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return value
    return "other"


def start_metrics(svc, inboxes, log) -> "Metrics | None":
    """The service's /metrics endpoint per `[service]` (svc), one label set per inbox; None when
    metrics are off. A port that cannot be bound is a ConfigError (exit status 2)."""
    if not svc.metrics:
        return None
    metrics = Metrics()
    for name in inboxes:
        metrics.add_inbox(name)
    address = str(svc.metrics_address)
    try:
        port = metrics.serve(svc.metrics_port, address)
    except OSError as exc:
        from .errors import ConfigError

        raise ConfigError(f"service.metrics_port: cannot listen on {address}:{svc.metrics_port} "
                          f"({exc.strerror or type(exc).__name__})") from None
    log.info("metrics.listening", address=address, port=port)
    if not svc.metrics_address.is_loopback:
        # Counts only, but visible to the network: the admin should know it is.
        log.warning("metrics.not_loopback", address=address, port=port)
    return metrics
