"""sd_notify messages reach a real NOTIFY_SOCKET datagram socket."""

from __future__ import annotations

import os
import socket

import pytest

from anond import notify


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _messages(sock) -> list[str]:
    out = []
    sock.settimeout(0.2)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except (TimeoutError, socket.timeout):
        return out


def test_ready_status_stopping_reach_the_socket(notify_socket):
    n = notify.Notifier()
    n.ready("idle")
    n.status("queue 1")
    n.status("queue 1")  # unchanged status is not sent again
    n.stopping()
    assert _messages(notify_socket) == ["READY=1\nSTATUS=idle", "STATUS=queue 1", "STOPPING=1"]


def test_watchdog_pings_at_half_the_interval(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = notify.Notifier()
    assert n.watchdog_every == 1.0
    n.watchdog(now=100.0)
    n.watchdog(now=100.5)  # too early
    n.watchdog(now=101.0)
    assert _messages(notify_socket) == ["WATCHDOG=1", "WATCHDOG=1"]


def test_watchdog_for_another_pid_is_ignored(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert notify.watchdog_interval() is None


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = notify.Notifier()
    assert not n.enabled
    assert n.send("READY=1") is False


def test_fallback_sender_without_systemd_python(notify_socket):
    assert notify._send_fallback("READY=1")
    assert _messages(notify_socket) == ["READY=1"]


def test_abstract_socket(monkeypatch):
    name = f"anond-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notify.Notifier().ready()
        assert _messages(sock) == ["READY=1"]
        assert notify._send_fallback("STOPPING=1")
        assert _messages(sock) == ["STOPPING=1"]
    finally:
        sock.close()
