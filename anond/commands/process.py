"""`anond process SRC DST`: anonymize one file, or a whole directory tree, without the service."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

HELP = """\
SRC is a photo or video file, or a directory. A file is written to DST (a path with the same
extension, or an existing directory to put it in, under the same name). A directory is
mirrored into DST: every supported file is written under the same relative path and name.

In a tree, files with an unsupported extension are skipped and counted, never fatal;
hidden files and folders and `*.regions.json` sidecars are ignored. Files are processed in
sorted path order; a file that fails (corrupt, content not matching its extension...) is
reported as `#N JOB-ID: reason`, N being its position in that order, and the others go on. Error lines and the report never
contain file names.

A `NAME.regions.json` sidecar beside a file adds manual mask/exclude regions to it
(format: docs/REGIONS.md); the report's manual_regions.sidecar says "none", "applied" or
"rejected: <reason>".

Exit status: 0 when every processed file succeeded, 2 when any failed (its output is not
written) or on a usage/configuration error.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = HELP
    parser.add_argument("src", type=Path, help="input file or directory")
    parser.add_argument("dst", type=Path, help="output file or directory")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="write one JSON report for the run (counts, durations; no names)")
    parser.add_argument("--profile", default="default", help="profile name from the config")
    parser.add_argument("--on-exists", choices=["error", "replace", "suffix"], default="error",
                        help="when an output exists: fail (default), replace it, or write NAME (1).EXT")
    parser.add_argument("--regions", type=Path, metavar="FILE",
                        help="manual regions sidecar for a single SRC file (default: SRC.regions.json)")
    parser.add_argument("--regions-policy", choices=["off", "optional", "required"], default="optional",
                        help="a bad sidecar is reported and skipped (optional, default), fails the "
                             "file (required: a missing one too), or sidecars are ignored (off)")


def main(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..errors import ConfigError

    settings = load_settings(args.config)
    profile = settings.profiles.get(args.profile)
    if profile is None:
        raise ConfigError(f"no profile named {args.profile!r} in the configuration")
    if not args.src.exists():
        raise ConfigError("SRC does not exist")
    single = not args.src.is_dir()
    if single:
        jobs, skipped = [(args.src, _single_destination(args.src, args.dst, settings))], 0
    else:
        if args.regions is not None:
            raise ConfigError("--regions needs a single SRC file")
        jobs, skipped = _plan_tree(args.src, args.dst, settings)

    from tqdm import tqdm

    run_id = uuid.uuid4().hex[:8]
    reports = []
    failed = 0
    engine = _load_engine(settings, profile) if jobs else None
    # On a terminal, progress bars on stderr (files of a tree, frames of a video; no names);
    # never in pipes or logs.
    tty = sys.stderr.isatty()
    bar = tqdm(total=len(jobs), unit="file", file=sys.stderr, disable=single or not tty)
    say = bar.write if not bar.disable else (lambda line, file=None: print(line, file=file))
    for index, (src, dst) in enumerate(jobs, 1):
        job_id = f"{run_id}-{index}"
        with _FrameBar(tty, position=0 if single else 1) as frames:
            report, error = _process_one(args, settings, engine, profile, src, dst, job_id, frames)
        if error is not None:
            failed += 1
            say(f"anond process: error: {job_id if single else f'#{index} {job_id}'}: {error}",
                file=sys.stderr)
        reports.append(report)
        bar.update(1)
    bar.close()

    if args.report is not None:
        _write_run_report(args.report, run_id, reports, skipped)
    if not single:
        print(f"anond process: {len(jobs)} files: {len(jobs) - failed} anonymized, {failed} failed, "
              f"{skipped} skipped")
    return 2 if failed else 0


def _process_one(args, settings, engine, profile, src: Path, dst: Path, job_id: str, frames):
    """(report, None) for a processed file; (failed report, one-line reason) otherwise."""
    from ..errors import AnondError
    from ..fsutil import atomic_output
    from ..pipeline import process_into
    from ..report import JobReport

    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        # Written beside DST, then given its name (suffixed if taken).
        report = process_into(atomic_output(dst, job_id, on_exists=args.on_exists), src,
                              settings=settings, engine=engine, profile=profile, job_id=job_id,
                              regions_path=args.regions, regions_policy=args.regions_policy,
                              progress=frames.update)
        return report, None
    except AnondError as exc:
        report = getattr(exc, "report", None) or JobReport(job_id=job_id, kind="unknown")
        report.failed(exc.code)
        return report, str(exc)
    except OSError as exc:  # creating DST folders
        report = JobReport(job_id=job_id, kind="unknown")
        report.failed("io_error")
        return report, exc.strerror or type(exc).__name__


class _FrameBar:
    """A video's frames as a progress bar on a terminal; made at the first frame (photos show
    none), closed with the file."""

    def __init__(self, enabled: bool, position: int) -> None:
        self.enabled, self.position, self.bar = enabled, position, None

    def update(self, done: int, expected: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=expected or None, unit="frame", file=sys.stderr, leave=False,
                            position=self.position)
        if expected and self.bar.total != expected:
            self.bar.total = expected
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> "_FrameBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _load_engine(settings, profile):
    from ..detect.engine import Engine

    return Engine.load(settings, targets=profile.targets)


def _single_destination(src: Path, dst: Path, settings) -> Path:
    from ..errors import ConfigError

    from ..media.containers import output_name

    drop = settings.video.drop_data_tags
    if dst.is_dir():
        return dst / output_name(src, drop_data_tags=drop)
    wanted = output_name(src, dst.name, drop_data_tags=drop)
    if wanted != dst.name:
        raise ConfigError(f"DST must end in {Path(wanted).suffix}, the format SRC is written in "
                          "(or be an existing directory)")
    return dst


def _plan_tree(src: Path, dst: Path, settings) -> tuple[list[tuple[Path, Path]], int]:
    """(input, output) pairs in sorted order, and how many files were skipped."""
    from ..errors import ConfigError
    from ..media import is_supported_name, recognised
    from ..media.containers import output_name
    from ..regions import is_sidecar

    if dst.exists() and not dst.is_dir():
        raise ConfigError("DST must be a directory when SRC is one")
    src_abs, dst_abs = src.resolve(), dst.resolve()
    if src_abs == dst_abs:
        raise ConfigError("DST must differ from SRC")
    jobs, skipped = [], 0
    for root, dirs, files in os.walk(src_abs):
        root_path = Path(root)
        # Never descend into the output tree (DST inside SRC) or hidden folders.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d) != dst_abs)
        for name in sorted(files):
            path = root_path / name
            if name.startswith(".") or is_sidecar(name) or not path.is_file():
                continue
            if not is_supported_name(name) and not recognised(path):
                skipped += 1
                continue
            rel = path.relative_to(src_abs)
            jobs.append((path, dst_abs / rel.parent / output_name(
                path, drop_data_tags=settings.video.drop_data_tags)))
    jobs.sort(key=lambda job: job[0].relative_to(src_abs).parts)
    return jobs, skipped


def _write_run_report(path: Path, run_id: str, reports, skipped: int) -> None:
    from .. import __version__
    from ..fsutil import write_bytes_atomic
    from ..report import totals

    body = {
        "anond_version": __version__,
        "run_id": run_id,
        "skipped": skipped,
        "totals": totals(reports),
        "jobs": [r.to_dict() for r in reports],
    }
    write_bytes_atomic(path, (json.dumps(body, indent=2) + "\n").encode(), job_id=run_id)
