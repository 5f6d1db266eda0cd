"""`anond check`: is this installation ready to run? Config, model files (sha256), the execution
provider really active, inbox/outbox/failed/state folders (writable, really tried), free space.

Every problem is printed (not only the first); the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-inference", action="store_true",
                        help="check model files only; do not load them or run a test inference")


class Report:
    def __init__(self) -> None:
        self.problems = 0

    def ok(self, what: str, detail: str = "") -> None:
        print(f"ok    {what}" + (f": {detail}" if detail else ""))

    def note(self, what: str, detail: str) -> None:
        print(f"note  {what}: {detail}")

    def fail(self, what: str, detail: str) -> None:
        self.problems += 1
        print(f"FAIL  {what}: {detail}")


def main(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .errors import ConfigError

    report = Report()
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        report.fail("config", str(exc))
        return _summary(report)
    report.ok("config", args.config or os.environ.get("ANOND_CONFIG") or "embedded defaults")
    targets = settings.inbox_targets()
    _check_models(report, settings, targets)
    if not args.no_inference:
        _check_provider(report, settings, targets)
    _check_folders(report, settings)
    _check_retention(report, settings)
    _check_metrics_port(report, settings)
    return _summary(report)


def _summary(report: Report) -> int:
    if report.problems:
        print(f"{report.problems} problem(s) found")
        return 1
    print("all checks passed")
    return 0


def _check_models(report: Report, settings, targets: list[str]) -> None:
    from .errors import AnondError
    from .models import verified_model

    for target in targets:
        name = getattr(settings.models, target)
        try:
            model = verified_model(name, settings.models.dir, settings.models.manifest)
        except AnondError as exc:
            report.fail(f"model {target}", str(exc))
            continue
        report.ok(f"model {target}", f"{name} sha256 {model.sha256[:16]}… matches installed.json")


def _check_provider(report: Report, settings, targets: list[str]) -> None:
    """Load the detectors as a worker does and run the warm-up inference."""
    from .errors import AnondError

    if not targets:
        return
    try:
        from .detect.engine import Engine

        engine = Engine.load(settings, targets=targets)
        engine.warmup()
    except AnondError as exc:
        report.fail("inference", str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - any failure here is a finding to report
        report.fail("inference", f"{type(exc).__name__}: {exc}")
        return
    wanted = settings.runtime.providers[0] if settings.runtime.providers else "?"
    report.ok("inference", f"models loaded and warm-up ran on {engine.provider}")
    if engine.provider != wanted:
        report.note("provider", f"{wanted} is configured first but {engine.provider} is active "
                    "(set runtime.require_gpu = true to refuse running without the GPU)")


def _check_folders(report: Report, settings) -> None:
    from .config import absolute

    svc = settings.service
    limit = svc.min_free_mb * 1024 * 1024
    places: list[tuple[str, Path, bool]] = [("state_dir", Path(svc.state_dir), True)]
    for inbox in settings.inboxes:
        label = f"inbox {inbox.name}"
        places += [
            (f"{label} path", Path(inbox.path), False),
            (f"{label} outbox", Path(inbox.outbox), True),
            (f"{label} failed", Path(inbox.failed or svc.failed_dir), False),
        ]
        if inbox.archive is not None:
            places.append((f"{label} archive", Path(inbox.archive), False))
        if inbox.output_group is not None:
            import grp

            gid = grp.getgrnam(inbox.output_group).gr_gid
            if os.geteuid() != 0 and gid not in os.getgroups() and gid != os.getegid():
                report.fail(f"{label} output_group",
                            f"this user is not a member of {inbox.output_group!r}: cannot give outputs that group")
    seen: set[Path] = set()
    for what, path, space in places:
        path = absolute(path)
        if path in seen:
            continue
        seen.add(path)
        problem = _writable(path)
        if problem:
            report.fail(what, f"{path}: {problem}")
            continue
        if what == "state_dir":
            from .fsutil import network_filesystem

            fstype = network_filesystem(path)
            if fstype is not None:
                report.fail(what, f"{path}: on a network file system ({fstype}); the job table "
                            "(SQLite, WAL) needs a local disk")
                continue
        existing = _existing_parent(path)
        free = shutil.disk_usage(existing).free
        if space and free < limit:
            report.fail(what, f"{path}: {free // 2**20} MiB free, below service.min_free_mb "
                        f"({svc.min_free_mb}): intake would pause")
            continue
        state = "writable" if path.is_dir() else "will be created"
        report.ok(what, f"{path}: {state}, {free // 2**20} MiB free")


def _check_retention(report: Report, settings) -> None:
    """Unmasked originals kept with no end are personal data kept with no end: say so."""
    svc = settings.service
    rows = [("failed", svc.failed_retention_days)]
    if any(inbox.originals == "archive" for inbox in settings.inboxes):
        rows.append(("archive", svc.archive_retention_days))
    for what, days in rows:
        if days == 0:
            report.note(f"retention {what}", f"service.{what}_retention_days = 0: unmasked originals "
                        "are kept for ever (personal data with no retention limit)")
        else:
            report.ok(f"retention {what}", f"unmasked originals deleted after {days:g} days")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(path: Path) -> str | None:
    """None when files can be created (and renamed) in `path`, else the reason."""
    if path.exists() and not path.is_dir():
        return "exists but is not a folder"
    target = path if path.is_dir() else _existing_parent(path)
    probe = target / f".anond-check-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        os.rename(probe, probe.with_name(probe.name + "-renamed"))
        os.unlink(probe.with_name(probe.name + "-renamed"))
    except OSError as exc:
        for p in (probe, probe.with_name(probe.name + "-renamed")):
            try:
                p.unlink()
            except OSError:
                pass
        return f"not writable ({exc.strerror or type(exc).__name__})"
    return None


def _check_metrics_port(report: Report, settings) -> None:
    svc = settings.service
    if not svc.metrics or svc.metrics_port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", svc.metrics_port))
        except OSError:
            report.note("metrics", f"127.0.0.1:{svc.metrics_port} is in use (a running anond?)")
            return
    report.ok("metrics", f"127.0.0.1:{svc.metrics_port} is free")
