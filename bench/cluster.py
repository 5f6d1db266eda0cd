"""Scale-out on NATS JetStream: one intake and 1 or 3 worker processes on this machine, a burst
of 30 photos and 6 short videos dropped at once; throughput relative to one worker, per-file
latency (drop to output), and every message the intake published checked for names and paths.

    python bench/cluster.py [--photos 30] [--videos 6] [--workers 1,3] [--no-append]

Needs Debian's nats-server (packaging/setup-system.sh). Each worker is a real `anond run`
(role worker, one job at a time, one ONNX Runtime thread), as one per GPU would be.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, append, command_line, header, table

sys.path.insert(0, str(ROOT / "tests"))
from cluster_harness import NatsServer, cluster_section, tiny_video  # noqa: E402
from service_harness import Anond, face_jpeg, wait_for, write_config  # noqa: E402


class Tap:
    """A plain NATS subscriber on the jobs subject: sees every message the intake publishes."""

    def __init__(self, url: str, subject: str) -> None:
        self.url, self.subject, self.messages = url, subject, []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        import nats

        async def main():
            async def quiet(_exc):
                pass
            nc = await nats.connect(self.url, error_cb=quiet)

            async def got(msg):
                self.messages.append(msg.data)
            await nc.subscribe(self.subject, cb=got)
            self.ready.set()
            while True:
                await asyncio.sleep(0.2)
        self.loop.run_until_complete(main())


def burst(tmp: Path, photos: int, videos: int) -> dict[str, bytes | None]:
    """The files, prepared outside the inbox: name -> bytes (videos are written by path)."""
    out: dict[str, bytes | None] = {}
    for i in range(photos):
        out[f"Person_Name_{i:02d}.jpg"] = face_jpeg(256 + 16 * (i % 8))
    staging = tmp / "staging"
    staging.mkdir()
    for i in range(videos):
        tiny_video(staging / f"Person_Clip_{i}.mp4", seed=i, frames=50, size=256)
    return out


def run(workers: int, photos: int, videos: int, models_dir: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="anond-cluster-"))
    server = NatsServer(tmp / "nats").start()
    procs: list[Anond] = []
    inbox, outbox, failed = tmp / "inbox", tmp / "outbox", tmp / "failed"
    inbox.mkdir()
    try:
        def start(role: str, name: str) -> Anond:
            config = write_config(
                tmp / f"{name}.toml", models_dir=models_dir,
                service={"state_dir": str(tmp / f"state-{name}"), "failed_dir": str(failed),
                         "stable_after_s": 0.3},
                inboxes=[{"name": "shared", "path": str(inbox), "outbox": str(outbox)}],
                sections={"cluster": cluster_section(server, role)})
            svc = Anond(tmp, config, log_level="info").start()
            procs.append(svc)
            return svc
        intake = start("intake", "intake")
        for i in range(workers):
            start("worker", f"w{i}")
        for svc in procs:
            svc.wait_ready(120)
            svc.wait_event("cluster.connected", 30)
        tap = Tap(server.url, "anond.jobs")
        files = burst(tmp, photos, videos)
        dropped = time.time()
        for name, data in files.items():
            (inbox / name).write_bytes(data)
        for path in (tmp / "staging").iterdir():
            os.replace(path, inbox / path.name)
        total = photos + videos
        wait_for(lambda: len(list(outbox.glob("*"))) >= total, 1800, "all outputs", intake, every=0.05)
        finished = time.time()
        latencies = sorted(p.stat().st_mtime - dropped for p in outbox.glob("*"))
        time.sleep(1.0)
        needles = [b"Person_", str(tmp).encode(), b".jpg", b".mp4", b"/"]  # names, paths
        leaks = [m for m in tap.messages if any(n in m for n in needles)]
        return {"workers": workers, "files": total, "seconds": finished - dropped,
                "latency_median": statistics.median(latencies), "latency_p95": latencies[int(0.95 * (len(latencies) - 1))],
                "messages": len(tap.messages), "leaks": len(leaks), "outputs": len(list(outbox.glob("*"))),
                "sample": tap.messages[0].decode() if tap.messages else ""}
    finally:
        for svc in procs:
            svc.kill()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--workers", default="1,3")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    from anond.config import DEFAULT_MODELS_DIR

    rows, base, sample = [], None, ""
    for n in [int(v) for v in args.workers.split(",")]:
        r = run(n, args.photos, args.videos, Path(DEFAULT_MODELS_DIR))
        base = base or r["files"] / r["seconds"]
        rate = r["files"] / r["seconds"]
        sample = r["sample"]
        rows.append([n, r["files"], r["outputs"], f"{r['seconds']:.1f}", f"{rate:.2f}",
                     f"{rate / base:.2f}x", f"{r['latency_median']:.1f}", f"{r['latency_p95']:.1f}",
                     r["messages"], r["leaks"]])
        print(rows[-1], flush=True)
    text = table(["workers", "files", "outputs", "burst s", "files/s", "vs 1 worker",
                  "latency median s", "latency p95 s", "messages", "with a name/path"], rows)
    section = header("Cluster: workers on NATS JetStream (issue 18)", command_line(), extra={
        "setup": "nats-server 2.9 (Debian) with JetStream on loopback; one intake (role intake) and "
                 "N worker processes (role worker, service.workers 1, one ONNX Runtime thread, "
                 "faces only) sharing one inbox; each has its own state_dir",
        "burst": f"{args.photos} photos (the astronaut, 256-368 px) and {args.videos} videos "
                 "(50 frames 256x256 H.264) dropped at once; latency = output mtime - drop time",
        "a message": f"`{sample}`",
    }) + "\n" + text + "\n"
    print(text)
    if not args.no_append:
        append(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
