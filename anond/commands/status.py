"""`anond status`: what the service has to do and did, per inbox: counts only, no names.

Reads the service's job table read-only (safe while it runs; run it as the service user, e.g.
`sudo -u anond anond status --config /etc/anond/anond.toml`) and walks each inbox once with the
service's own rules (ignore globs, partial downloads) to count the files still waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from pathlib import Path

DAY_S = 86400.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")


def main(args: argparse.Namespace) -> int:
    from ..config import absolute, load_settings

    settings = load_settings(args.config)
    jobs = _job_counts(Path(settings.service.state_dir) / "jobs.sqlite3")
    reasons: dict[Path, dict[str, dict]] = {}  # per failed folder, read once (inboxes share one)
    rows = []
    for inbox in settings.inboxes:
        counts = jobs.get(inbox.name, {})
        failed_dir = absolute(inbox.failed or settings.service.failed_dir)
        if failed_dir not in reasons:
            reasons[failed_dir] = failed_jobs(failed_dir)
        rows.append({
            "inbox": inbox.name,
            "waiting": _waiting(inbox),
            "queued": counts.get("pending", 0),
            "running": counts.get("running", 0),
            "in_review": counts.get("review", 0),
            "done_24h": counts.get("done_24h", 0),
            "failed_24h": counts.get("failed_24h", 0),
            "in_failed": sum(1 for r in reasons[failed_dir].values() if r.get("inbox") == inbox.name),
        })
    cluster = _cluster(settings)
    if args.json:
        print(json.dumps({"inboxes": rows, **({"cluster": cluster} if cluster else {})}, indent=2))
        return 0
    headers = ["INBOX", "WAITING", "QUEUED", "RUNNING", "IN REVIEW", "DONE 24H", "FAILED 24H",
               "IN FAILED/"]
    table = [headers] + [[str(v) for v in row.values()] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if cluster:
        if "error" in cluster:
            print(f"\ncluster: unreachable ({cluster['error']})")
        else:
            print(f"\ncluster: {cluster['queued']} queued, {cluster['in_flight']} in flight, "
                  f"{cluster['redelivered']} redelivered")
            for name, w in sorted(cluster["workers"].items()):
                print(f"  worker {name} ({w.get('role')}): {w.get('in_flight', 0)} of "
                      f"{w.get('slots', 0)} slots busy, {w.get('max_deliveries', 0)} inputs "
                      "failed after max_deliver")
    return 0


def _cluster(settings) -> dict | None:
    """The stream's queue and the workers' heartbeats, with [cluster] enabled."""
    if not settings.cluster.enabled:
        return None
    from ..cluster import status

    try:
        return status(settings)
    except Exception as exc:  # noqa: BLE001 - the local part of the status still helps
        return {"error": type(exc).__name__}


def _job_counts(db: Path) -> dict[str, dict[str, int]]:
    """{inbox: {pending, running, review, done_24h, failed_24h}} from the job table, opened
    read-only."""
    if not db.exists():
        return {}
    from ..errors import ConfigError

    since = time.time() - DAY_S
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute(
                "SELECT inbox, state, COUNT(*) FROM jobs WHERE state IN ('pending', 'running', 'review') "
                "OR finished >= ? GROUP BY inbox, state", (since,)).fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the job table in service.state_dir ({exc}): run as the "
                          "service user") from None
    out: dict[str, dict[str, int]] = {}
    for inbox, state, n in rows:
        key = state if state in ("pending", "running", "review") else f"{state}_24h"
        out.setdefault(inbox, {})[key] = int(n)
    return out


def _waiting(inbox) -> int:
    """Files in the inbox that will become jobs (the watcher's rules), not yet claimed; in an
    inbox that keeps its originals, not those already processed (the service's markers)."""
    from ..config import absolute
    from ..jobs import ClaimBox, quick_fingerprint
    from ..watch import InboxWatcher

    root = absolute(inbox.path)
    if not root.is_dir():
        return 0
    watcher = InboxWatcher(root, recursive=inbox.recursive, stable_after_s=1.0, use_events=False,
                           ignore=inbox.ignore)
    watcher.rescan()
    files = watcher.inputs()
    box = ClaimBox(root, instance="", session="")  # read only: no lease, no claim folder
    if inbox.originals == "keep" and (box.control / "salt").is_file():  # else .salt would make one
        files = [f for f in files if not box.is_kept(quick_fingerprint(box.salt, *f))]
    return len(files)


def failed_jobs(folder: Path, inbox: str | None = None) -> dict[str, dict]:
    """{job id: reason} of the failed jobs in `folder` (of one inbox, if given)."""
    out = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return out
    for entry in entries:
        if not entry.name.endswith(".reason.json") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            reason = json.loads(Path(entry.path).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(reason, dict) and (inbox is None or reason.get("inbox") == inbox):
            out[entry.name.removesuffix(".reason.json")] = reason
    return out
