"""Who may use the review UI: one secret (a password whose scrypt hash is configured, or a
token in a file the service user reads), sessions held in memory, a CSRF token per session.

    GET /login            sets a short-lived login CSRF cookie (double submit)
    POST /api/login       {"secret": ...} with X-CSRF-Token = that cookie -> session cookie
    every other POST      X-CSRF-Token = the session's token (in the page's <meta name=csrf>)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import absolute
from ..errors import ConfigError

SESSION_COOKIE = "anond_session"
LOGIN_CSRF_COOKIE = "anond_login_csrf"
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` (base64) for [web] password_hash."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt)}${b64(digest)}"


def _check_hash(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=len(want),
                             n=int(n), r=int(r), p=int(p), maxmem=128 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@dataclass
class Session:
    csrf: str
    expires: float


class Gate:
    """Checks the secret, issues and looks up sessions."""

    def __init__(self, web, state_dir) -> None:
        self.password_hash = web.password_hash
        self.token: str | None = None
        self.token_path: Path | None = None
        if not self.password_hash:
            self.token_path = absolute(web.token_file) if web.token_file else _generated_token(state_dir)
            try:
                self.token = self.token_path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"web.token_file cannot be read ({exc.strerror})") from None
            if len(self.token) < 16:
                raise ConfigError("web.token_file holds fewer than 16 characters")
        self.lifetime = web.session_hours * 3600
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def check_secret(self, secret: str) -> bool:
        if self.password_hash:
            return _check_hash(secret, self.password_hash)
        return hmac.compare_digest(secret.encode(), (self.token or "").encode())

    def open_session(self) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), time.time() + self.lifetime)
        with self._lock:
            now = time.time()
            self._sessions = {k: v for k, v in self._sessions.items() if v.expires > now}
            self._sessions[sid] = session
        return sid, session

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            found = self._sessions.get(sid)
            if found is not None and found.expires <= time.time():
                del self._sessions[sid]
                found = None
        return found

    def close_session(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)


def csrf_ok(sent: str | None, expected: str | None) -> bool:
    return bool(sent) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def _generated_token(state_dir) -> Path:
    """state_dir/web.token, created once (0600): the login for a loopback-only UI."""
    path = absolute(state_dir) / "web.token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # the service and `anond web` started together
            return path
        try:
            os.write(fd, (secrets.token_urlsafe(24) + "\n").encode())
        finally:
            os.close(fd)
    return path
