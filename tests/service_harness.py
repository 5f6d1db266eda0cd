"""Helpers for the service tests: small real images, a config writer, and a real `anond run`
subprocess with its JSON-lines log. Processes are always stopped when a test ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORRUPT_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"this is not image data " * 40


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def face_jpeg(size: int = 192) -> bytes:
    """The scikit-image astronaut (one real face), small."""
    import cv2
    from skimage import data

    image = data.astronaut()[:, :, ::-1]
    return encode_jpeg(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))


def noise_jpeg(seed: int, size: int = 96) -> bytes:
    """Random noise: unique content per seed, nothing to find."""
    rng = np.random.default_rng(seed)
    return encode_jpeg(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def decode(path: Path) -> np.ndarray | None:
    import cv2

    return cv2.imdecode(np.frombuffer(Path(path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, *, models_dir: Path, service: dict, inboxes: list[dict],
                 detect: dict | None = None, sections: dict[str, dict] | None = None) -> Path:
    """A config for fast tests: face detector only, on CPU, small images, short timings."""
    lines = [
        "[models]", f"dir = {_toml_value(models_dir)}", "",
        "[runtime]", 'providers = ["CPUExecutionProvider"]', "intra_op_threads = 1", "",
        "[profile]", 'targets = ["face"]', "verify = false", "",
        "[profile.detect]",
        *(f"{k} = {_toml_value(v)}" for k, v in {"tiling": False, "upscale": 1.0, **(detect or {})}.items()),
        "",
        "[service]",
    ]
    base = {"stable_after_s": 0.5, "rescan_interval_s": 1.0, "retry_backoff_s": 0.2,
            "stop_timeout_s": 20, "metrics": False, "min_free_mb": 1}
    base.update(service)
    lines += [f"{k} = {_toml_value(v)}" for k, v in base.items()]
    for name, values in (sections or {}).items():  # e.g. {"web": {...}}
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    for inbox in inboxes:
        lines += ["", "[[inboxes]]"] + [f"{k} = {_toml_value(v)}" for k, v in inbox.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANOND_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM"))}
    env["PYTHONUNBUFFERED"] = "1"  # kill -9 must not lose log lines still in a buffer
    env.update(extra)
    return env


class Anond:
    """One `anond run` process; logs go to files in `logdir`."""

    _count = 0

    def __init__(self, cwd: Path, config: Path | None = None, env: dict | None = None,
                 log_level: str | None = "debug", logdir: Path | None = None) -> None:
        Anond._count += 1
        self.cwd = Path(cwd)
        self.config = config
        self.env = env if env is not None else clean_env()
        self.log_level = log_level
        self.logdir = Path(logdir or cwd)
        self.tag = f"anond{Anond._count}"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.stdout_path = self.logdir / f"{self.tag}.out"
        self.stderr_path = self.logdir / f"{self.tag}.err"

    def start(self) -> "Anond":
        cmd = [sys.executable, "-m", "anond.cli", "run"]
        if self.log_level is not None:  # None: the service's own ([service] log_level)
            cmd += ["--log-level", self.log_level]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=self._out,
                                     stderr=self._err, stdin=subprocess.DEVNULL)
        self.started = time.monotonic()
        return self

    # -- logs

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict]:
        """Log events (JSON lines on stderr: stdout carries results only)."""
        out = []
        for line in self.stderr().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def wait_event(self, name: str, timeout: float = 60, count: int = 1) -> list[dict]:
        return wait_for(lambda: len(self.events(name)) >= count and self.events(name), timeout,
                        f"{count}x {name}", self)

    def wait_ready(self, timeout: float = 90) -> None:
        self.wait_event("service.ready", timeout)

    # -- lifecycle

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._close()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def _close(self) -> None:
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()


def wait_for(predicate, timeout: float, what: str, service: Anond | None = None, every: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail with the service's log tail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if service is not None and service.proc is not None and service.proc.poll() is not None:
            raise AssertionError(f"anond exited ({service.proc.returncode}) while waiting for {what}\n"
                                 f"{service.stderr()[-3000:]}\n{service.stdout()[-3000:]}")
        if time.monotonic() > deadline:
            tail = f"\n{service.stderr()[-2000:]}\n{service.stdout()[-3000:]}" if service else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
        time.sleep(every)


def files_under(root: Path, *, hidden: bool = False) -> list[str]:
    """Relative paths of the files under root (hidden ones and folders left out unless asked)."""
    out = []
    for base, dirs, files in os.walk(root):
        if not hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if hidden or not name.startswith("."):
                out.append(str((Path(base) / name).relative_to(root)))
    return sorted(out)


def hidden_files_under(root: Path) -> list[str]:
    return [p for p in files_under(root, hidden=True) if any(part.startswith(".") for part in Path(p).parts)]
