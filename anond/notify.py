"""sd_notify: tell systemd when the service is ready, alive, busy with what, and stopping.

Uses systemd-python's `systemd.daemon.notify` when it is installed, else a few lines that send
the same datagram to $NOTIFY_SOCKET. Without $NOTIFY_SOCKET (not under systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket
import time


def _send_fallback(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def _backend():
    try:
        from systemd import daemon  # type: ignore[import-not-found]
    except ImportError:
        return _send_fallback
    return lambda state: bool(daemon.notify(state))


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    """One per service process: READY/STATUS/WATCHDOG/RELOADING/STOPPING, rate-limited status."""

    def __init__(self) -> None:
        self._send = _backend()
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_every = watchdog_interval()
        self._last_ping = 0.0
        self._last_status = ""

    def send(self, *fields: str) -> bool:
        return self.enabled and self._send("\n".join(fields))

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        monotonic_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_us}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more time (start-up model loading, shutdown waiting for a running job)."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self, now: float | None = None) -> None:
        """Ping if half the watchdog interval has passed since the last ping."""
        if self.watchdog_every is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last_ping >= self.watchdog_every:
            self._last_ping = now
            self.send("WATCHDOG=1")
