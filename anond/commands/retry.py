"""`anond retry JOB_ID... | --all-failed`: give failed inputs another try.

A failed job's original waits in `failed/<job id>/` under its path in the inbox (with its
sidecar, if it had one), beside `failed/<job id>.reason.json`. Retrying moves it back to that
path in its inbox (never over a file that is there now: `name (1).ext` then), and removes the
job's entry from the failed folder; the running service takes it as a new job. Output names job
ids and counts only. Run it as the service user.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", nargs="*", metavar="JOB_ID", help="failed jobs to retry")
    parser.add_argument("--all-failed", action="store_true", help="every failed job still in a failed folder")
    parser.add_argument("--inbox", metavar="NAME", help="with --all-failed: only this inbox's")


def main(args: argparse.Namespace) -> int:
    from ..config import absolute, load_settings
    from ..errors import ConfigError
    from .status import failed_jobs

    if bool(args.jobs) == args.all_failed:
        raise ConfigError("name failed JOB_IDs or give --all-failed")
    settings = load_settings(args.config)
    inboxes = {inbox.name: inbox for inbox in settings.inboxes}
    if args.inbox is not None and args.inbox not in inboxes:
        raise ConfigError(f"no inbox named {args.inbox!r}")
    folders = {absolute(inbox.failed or settings.service.failed_dir) for inbox in settings.inboxes}
    found: dict[str, tuple[Path, dict]] = {}
    for folder in sorted(folders):
        for job_id, reason in failed_jobs(folder, args.inbox).items():
            found.setdefault(job_id, (folder, reason))
    wanted = sorted(found) if args.all_failed else args.jobs
    retried = problems = 0
    for job_id in wanted:
        if job_id not in found:
            print(f"anond retry: error: {job_id}: no such failed job", file=sys.stderr)
            problems += 1
            continue
        folder, reason = found[job_id]
        inbox = inboxes.get(reason.get("inbox"))
        if inbox is None:
            print(f"anond retry: error: {job_id}: its inbox is no longer configured", file=sys.stderr)
            problems += 1
            continue
        try:
            moved = _move_back(folder, job_id, absolute(inbox.path))
        except OSError as exc:
            print(f"anond retry: error: {job_id}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
            problems += 1
            continue
        print(f"{job_id}: {moved} file(s) back in inbox {inbox.name}")
        retried += 1
    print(f"anond retry: {retried} job(s) retried, {problems} problem(s)")
    return 2 if problems else 0


def _move_back(folder: Path, job_id: str, inbox: Path) -> int:
    """Every file of failed/<job id>/ to the same relative path in `inbox` (sidecars after their
    media file, so a `regions = "required"` inbox sees them arrive in the usual order); then the
    job's entry is removed. Links are not followed (there are none unless planted)."""
    from ..fsutil import move_no_clobber
    from ..regions import is_sidecar

    job_dir = folder / job_id
    files = []
    for here, _dirs, names in os.walk(job_dir, followlinks=False):
        for name in names:
            path = Path(here) / name
            if path.is_file() and not path.is_symlink():
                files.append(path)
    files.sort(key=lambda p: (is_sidecar(p.name), p.as_posix()))
    for path in files:
        move_no_clobber(path, inbox / path.relative_to(job_dir))
    shutil.rmtree(job_dir, ignore_errors=True)
    (folder / f"{job_id}.reason.json").unlink(missing_ok=True)
    return len(files)


