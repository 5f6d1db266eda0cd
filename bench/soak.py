#!/usr/bin/env python3
"""Soak: the service killed with SIGKILL again and again while a mixed stream of photos and
videos arrives, then a burst of thousands of small files. Nothing may be lost, duplicated or
partial (issue 16). Not a test: it takes a quarter of an hour on 2 cores.

    python bench/soak.py [--kills 100] [--burst 10000] [--dir /tmp/soak] [--no-append]

Kills: `anond run` (faces only, so the run measures the service and not the detectors) is
started; once it reports ready it is killed with SIGKILL after a random 0.1-2.5 s (while it
claims, detects, encodes or commits), and started again, `--kills` times, while a producer
drops a photo every 50 ms and a 2-second video every 20th file (whole files, renamed in as
copy tools do). Then one last start drains the inbox. Burst: `--burst` small photos in 20
folders are renamed into the inbox at once under a running service; drain time is from the
first file placed to the last output.

Counted per phase: files produced, outputs, lost (neither an output nor in failed/), duplicated
(`name (1).ext` beside `name.ext`), partial (an output that does not decode whole: a photo that
does not load, a video with another frame count than its source), failed (valid inputs: should
be 0), leftovers (hidden temporary or staged files in the outbox), peak RSS of the service
(sampled), and how long the queue took to drain.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common as c  # noqa: E402  (sets sys.path for anond)

READY = b'"event": "service.ready"'


def _photo_bytes(seed: int, size=(320, 240)) -> bytes:
    import cv2
    import numpy as np
    from skimage import data

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(30, 220, (size[1], size[0], 3)).astype(np.uint8), (0, 0), 4)
    face = cv2.cvtColor(data.astronaut()[0:220, 140:340], cv2.COLOR_RGB2BGR)
    face = cv2.resize(face, (size[0] // 3, size[0] // 3))
    x, y = int(rng.integers(0, size[0] - face.shape[1])), int(rng.integers(0, size[1] - face.shape[0]))
    img[y:y + face.shape[0], x:x + face.shape[1]] = face
    return cv2.imencode(".jpg", img)[1].tobytes()


def _video_bytes(seed: int, frames: int = 48) -> bytes:
    import io

    import av
    import cv2
    import numpy as np

    still = cv2.imdecode(np.frombuffer(_photo_bytes(seed, (192, 144)), np.uint8), cv2.IMREAD_COLOR)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 192, 144, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(still, 2 * i, axis=1), format="bgr24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def _config(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    path = base / "anond.toml"
    path.write_text(f"""
[runtime]
providers = ["CPUExecutionProvider"]
[profile]
targets = ["face"]
[service]
state_dir = "{base / 'state'}"
failed_dir = "{base / 'failed'}"
stable_after_s = 0.3
rescan_interval_s = 1.0
metrics = false
min_free_mb = 64
lease_s = 5.0
[[inboxes]]
path = "{base / 'inbox'}"
outbox = "{base / 'outbox'}"
""")
    return path


class Service:
    """`anond run` as a child process; its log goes to a file; peak RSS sampled."""

    def __init__(self, base: Path, config: Path) -> None:
        self.base, self.config = base, config
        self.proc: subprocess.Popen | None = None
        self.peak_mib = 0.0
        self.starts = 0

    def start(self) -> None:
        self.log = open(self.base / f"anond-{self.starts}.log", "wb")
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANOND_", "NOTIFY_SOCKET"))}
        self.proc = subprocess.Popen([sys.executable, "-m", "anond.cli", "run", "--config", str(self.config),
                                      "--log-level", "info"], stdout=subprocess.DEVNULL, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env=env, cwd=self.base)
        threading.Thread(target=self._sample, args=(self.proc,), daemon=True).start()

    def _sample(self, proc) -> None:
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_mib = max(self.peak_mib, int(line.split()[1]) / 1024)
            except OSError:
                return
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 120) -> None:
        path = Path(self.log.name)
        deadline = time.monotonic() + timeout
        while READY not in path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"anond did not become ready (rc {self.proc.poll()}); see {path}")
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(120)
        self.log.close()
        return rc


def _place(inbox: Path, rel: str, data: bytes) -> None:
    """A whole file appears at once, as `rsync`/`cp --backup` temp-then-rename copies do."""
    path = inbox / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.rename(tmp, path)


def _audit(base: Path, produced: dict[str, int]) -> dict:
    """Lost, duplicated, partial, failed and leftovers for the produced files (rel -> frames,
    0 for photos)."""
    import av
    import cv2

    outbox, failed = base / "outbox", base / "failed"
    outputs = {p.relative_to(outbox).as_posix() for p in outbox.rglob("*") if p.is_file() and not p.name.startswith(".")}
    leftovers = [p for p in outbox.rglob(".*") if p.is_file()]
    failed_files = {p.name for p in failed.rglob("*") if p.is_file() and not p.name.endswith(".reason.json")}
    dup_re = re.compile(r"^(.*) \((\d+)\)(\.[^.]+)$")
    duplicated = [o for o in outputs if dup_re.match(Path(o).name)]
    lost, partial = [], []
    for rel, frames in produced.items():
        if rel not in outputs:
            if Path(rel).name not in failed_files:
                lost.append(rel)
            continue
        path = outbox / rel
        if frames:
            try:
                with av.open(str(path)) as cont:
                    n = sum(1 for _ in cont.decode(video=0))
            except Exception:  # noqa: BLE001 - any decode failure is a partial output
                n = -1
            if n != frames:
                partial.append(rel)
        elif cv2.imread(str(path)) is None:
            partial.append(rel)
    return {"produced": len(produced), "outputs": len(outputs), "lost": len(lost),
            "duplicated": len(duplicated), "partial": len(partial),
            "failed": len(list(failed.glob("*.reason.json"))) if failed.is_dir() else 0,
            "leftovers": len(leftovers)}


def _drain(base: Path, produced: dict[str, int], timeout: float) -> float:
    """Seconds until every produced file has an output or a failed entry (or timeout)."""
    t0 = time.monotonic()
    outbox, failed = base / "outbox", base / "failed"
    waiting = set(produced)
    while time.monotonic() - t0 < timeout:
        waiting = {rel for rel in waiting if not (outbox / rel).exists()}  # only what is left
        failed_n = len(list(failed.glob("*.reason.json"))) if failed.is_dir() else 0
        if len(waiting) <= failed_n:
            break
        time.sleep(2.0)
    return time.monotonic() - t0


def kills_phase(base: Path, kills: int, seed: int) -> dict:
    rng = random.Random(seed)
    photos = [_photo_bytes(i) for i in range(8)]
    videos = [(_video_bytes(i), 48) for i in range(2)]
    config = _config(base)
    (base / "inbox").mkdir(parents=True)
    produced: dict[str, int] = {}
    stop = threading.Event()

    def producer() -> None:
        i = 0
        while not stop.is_set():
            if i % 20 == 19:
                data, frames = videos[i % len(videos)]
                rel = f"cam{i % 5}/v{i:05d}.mp4"
            else:
                data, frames = photos[i % len(photos)], 0
                rel = f"cam{i % 5}/p{i:05d}.jpg"
            _place(base / "inbox", rel, data)
            produced[rel] = frames
            i += 1
            time.sleep(0.05)

    svc = Service(base, config)
    thread = threading.Thread(target=producer, daemon=True)
    t0 = time.monotonic()
    thread.start()
    for k in range(kills):
        svc.start()
        svc.wait_ready()
        time.sleep(rng.uniform(0.1, 2.5))
        svc.kill()
        if (k + 1) % 10 == 0:
            print(f"kills: {k + 1}/{kills}, {len(produced)} files produced", flush=True)
    stop.set()
    thread.join()
    svc.start()
    svc.wait_ready()
    drain = _drain(base, produced, 1800)
    rc = svc.stop()
    return {"phase": f"{kills} x SIGKILL during a photo/video stream", **_audit(base, produced),
            "peak RSS MiB": round(svc.peak_mib), "drain s": round(drain, 1),
            "wall s": round(time.monotonic() - t0), "stop rc": rc}


def burst_phase(base: Path, count: int) -> dict:
    import cv2
    import numpy as np

    blobs = [cv2.imencode(".jpg", np.random.default_rng(i).integers(0, 256, (48, 64, 3), np.uint8))[1].tobytes()
             for i in range(8)]
    config = _config(base)
    (base / "inbox").mkdir(parents=True)
    staging = base / "staging"
    produced = {}
    for i in range(count):  # written beside the inbox first, then renamed in at once
        rel = f"burst{i % 20:02d}/b{i:05d}.jpg"
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(blobs[i % len(blobs)])
        produced[rel] = 0
    svc = Service(base, config)
    svc.start()
    svc.wait_ready()
    t0 = time.monotonic()
    for folder in sorted(staging.iterdir()):
        os.rename(folder, base / "inbox" / folder.name)
    drain = _drain(base, produced, 3600)
    rc = svc.stop()
    return {"phase": f"burst of {count} photos into a running service", **_audit(base, produced),
            "peak RSS MiB": round(svc.peak_mib), "drain s": round(drain, 1),
            "wall s": round(time.monotonic() - t0), "stop rc": rc}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/anond-soak"))
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    settings = c.settings()
    load_before = c.load()
    shutil.rmtree(args.dir, ignore_errors=True)
    rows = []
    if args.kills:
        rows.append(kills_phase(args.dir / "kills", args.kills, args.seed))
        print(rows[-1], flush=True)
    if args.burst:
        rows.append(burst_phase(args.dir / "burst", args.burst))
        print(rows[-1], flush=True)
    headers = list(rows[0])
    section = c.header("Soak: SIGKILL during a stream, and a burst (bench/soak.py)", c.command_line(),
                       settings, {"service": "`anond run`, faces only (centerface), 1 worker, stable_after_s "
                                             "0.3, lease_s 5; photos 320x240 with a face, videos 2 s "
                                             "192x144 H.264; burst photos 64x48",
                                  "pass": "0 lost, 0 duplicated, 0 partial (issue 16)"},
                       load_before=load_before)
    section += "\n" + c.table(headers, [[r[h] for h in headers] for r in rows]) + "\n"
    print(section)
    if not args.no_append:
        c.append(section)
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 and r["partial"] == 0 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
