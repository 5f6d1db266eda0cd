"""A real NATS server with JetStream for the cluster tests and bench/cluster.py: Debian's
`nats-server` on a free loopback port with its own store directory, stopped and restarted at will
(same port, same store: what a server restart looks like to the clients)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

NATS_SERVER = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir)
        self.store = self.dir / "jetstream"
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "nats-server.log"

    def start(self) -> "NatsServer":
        self.store.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-js", "-sd", str(self.store), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None


def cluster_section(server: NatsServer, role: str, **extra) -> dict:
    return {"enabled": True, "servers": [server.url], "role": role, **extra}


def tiny_video(path: Path, seed: int, frames: int = 8, size: int = 64) -> None:
    """A short H.264 MP4 of noise (nothing to find), unique per seed; written beside `path`
    and renamed into place (an inbox must not see it half written)."""
    import os

    import av

    rng = np.random.default_rng(seed)
    tmp = path.parent.parent / f".{path.name}.writing"
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)
