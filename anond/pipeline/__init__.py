"""The pipeline: one input file in, one anonymized file and a job report out.

    with atomic_output(dst, job_id) as tmp:   # the caller lands the result, once
        report = process_file(src, tmp, settings=settings, engine=engine, job_id=job_id)

or, the same three steps with the landed path in the report:
`process_into(atomic_output(dst, job_id), src, settings=..., ...)`.

Read top to bottom: decide the kind (by content), run the photo or the video stages into the
path given. `process_file` writes that path and nothing else: placing the result (a temporary
renamed into the outbox by `anond process`; staged, then committed by the service's job runner)
is its caller's. Its name follows `anond.media.containers.output_name` (the format written
decides the extension). On an error the path may hold a partial file, which the caller's
`atomic_output` removes; the partly filled report travels on the exception as `exc.report` so
callers can still count the failure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .. import log
from ..config import Profile, Settings
from ..errors import AnondError
from ..fsutil import io_error
from ..media import kind_of
from ..media.containers import check_output_name
from ..report import JobReport
from ..types import DetectorEngine


def process_file(
    src: str | Path,
    out: str | Path,
    *,
    settings: Settings,
    engine: DetectorEngine,
    profile: Profile | None = None,
    job_id: str,
    regions_path: str | Path | None = None,
    regions_policy: str = "optional",
    progress: Callable[[int, int], None] | None = None,
    observer=None,
) -> JobReport:
    """Anonymize `src` into the file `out` (same format; written in place, replaced if it
    exists); return the job report (`report.output_path` = `out`, until a caller lands it).

    Raises AnondError subclasses for expected failures (UnsupportedMedia, CorruptMedia,
    RegionsError, TransientIOError...); `out` may then hold a partial file.
    `progress(frames written, frames expected or 0)` is called as a video is encoded (a
    command line's progress bar).
    """
    src, out = Path(src), Path(out)
    profile = profile or settings.profiles["default"]
    started = time.perf_counter()
    report = JobReport.start(job_id, "unknown", engine=engine, profile=profile)
    try:
        kind = kind_of(src)
        report.kind = kind.kind
        report.media.format = kind.format
        check_output_name(out, kind)
        report.media.bytes_in = src.stat().st_size
        _run_stages(kind.kind, kind.format, src, out, settings, engine, profile, report,
                    regions_path, regions_policy, progress, observer)
        if not out.is_file():
            raise AnondError("the writer produced no output")
        report.output_path = out
        report.media.bytes_out = out.stat().st_size
    except AnondError as exc:
        _fail(report, exc, started)
        raise
    except OSError as exc:  # reading the input, or a stage's own I/O: message without the path
        err = io_error(exc)
        _fail(report, err, started)
        raise err from None
    report.add_duration("total", time.perf_counter() - started)
    log.get().info("pipeline.done", job=job_id, kind=report.kind, seconds=report.durations["total"],
                   verify_fixes=report.verify_fixes,
                   **{f"masked_{k}": v for k, v in report.masked.items()})
    return report


def _run_stages(kind: str, fmt: str, src: Path, out: Path, settings: Settings, engine: DetectorEngine,
                profile: Profile, report: JobReport, regions_path, regions_policy: str, progress,
                observer=None) -> None:
    """The photo or the video pipeline, writing `out`."""
    if kind == "image":
        from .image import process_image

        process_image(src, out, settings=settings, engine=engine, profile=profile, report=report,
                      regions_path=regions_path, regions_policy=regions_policy, observer=observer)
    else:
        from .video import process_video

        process_video(src, out, settings=settings, engine=engine, profile=profile, report=report,
                      regions=regions_path, regions_policy=regions_policy, progress=progress, fmt=fmt,
                      observer=observer)


def process_into(output, src: str | Path, **kwargs) -> JobReport:
    """`process_file` into `output`'s temporary (an `anond.fsutil.atomic_output`), landed when
    it succeeds; the report names the path it landed at."""
    with output as tmp:
        report = process_file(src, tmp, **kwargs)
    report.output_path = output.final
    return report


def _fail(report: JobReport, exc: AnondError, started: float) -> None:
    report.failed(exc.code)
    report.add_duration("total", time.perf_counter() - started)
    exc.report = report  # type: ignore[attr-defined]
    log.get().info("pipeline.failed", job=report.job_id, kind=report.kind, error=exc.code)
