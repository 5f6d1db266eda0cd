"""packaging/: both units (anond.service and the per-GPU template anond@.service) pass
`systemd-analyze verify`, their security exposure stays <= 2.0, the template is what
packaging/template_unit.py makes of the unit, and the sysusers.d / tmpfiles.d files create the
user and the folders."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anond.cli import EXIT_ERROR

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
UNIT = PACKAGING / "anond.service"
TEMPLATE = PACKAGING / "anond@.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(params=["anond.service", "anond@.service"])
def unit_copy(tmp_path, request) -> Path:
    """Each unit with ExecStart pointing at a binary that exists here (verify checks it); the
    template as its instance anond@0.service."""
    text = (PACKAGING / request.param).read_text()
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.M)
    path = tmp_path / request.param
    path.write_text(text)
    if "@" in request.param:
        instance = tmp_path / "anond@0.service"
        instance.symlink_to(path.name)
        return instance
    return path


def test_unit_has_the_required_hardening():
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["User"] == ["anond"]
    assert d["ProtectSystem"] == ["strict"] and d["ReadWritePaths"]
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert d[key] == ["yes"], key
    assert d["CapabilityBoundingSet"] == [""]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in d["SystemCallFilter"]
    assert d["DevicePolicy"] == ["closed"]
    assert any("nvidia" in v for v in d["DeviceAllow"])
    assert "WatchdogSec" in d and "ExecReload" in d
    # A configuration error (anond's exit status for expected errors) is not restarted forever.
    assert d["RestartPreventExitStatus"] == [str(EXIT_ERROR)]
    assert not any(v.startswith("man:") for v in d["Documentation"])  # no man page ships


def test_template_unit_is_generated_from_the_unit():
    done = subprocess.run([sys.executable, str(PACKAGING / "template_unit.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    d, base = _directives(TEMPLATE.read_text()), _directives(UNIT.read_text())
    assert "CUDA_VISIBLE_DEVICES=%i" in d["Environment"]
    assert "ANOND_SERVICE__STATE_DIR=/var/lib/anond/gpu%i" in d["Environment"]
    assert d["StateDirectory"] == ["anond anond/gpu%i"]
    # Every sandbox line of the unit is in the template too.
    for key in ("ProtectSystem", "CapabilityBoundingSet", "SystemCallFilter", "DeviceAllow", "IPAddressAllow"):
        assert d[key] == base[key], key
    # These two break CUDA and ONNX Runtime.
    assert "PrivateDevices" not in d and "MemoryDenyWriteExecute" not in d


@needs_analyze
def test_unit_passes_systemd_analyze_verify(unit_copy):
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(unit_copy)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    problems = [l for l in done.stderr.splitlines() if "anond" in l and ".service" in l]
    assert problems == [], problems


@needs_analyze
def test_security_exposure_is_at_most_2(unit_copy):
    done = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(unit_copy)],
                          capture_output=True, text=True, timeout=60)
    if "unrecognized option" in done.stderr or "Unknown" in done.stderr[:200]:
        pytest.skip("this systemd-analyze cannot analyse unit files offline")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert match, done.stdout[-2000:] + done.stderr[-2000:]
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= 2.0


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None
                    or os.geteuid() != 0, reason="needs systemd-sysusers, systemd-tmpfiles and root")
def test_sysusers_and_tmpfiles_create_user_and_folders(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).touch()
    subprocess.run(["systemd-sysusers", f"--root={root}", str(PACKAGING / "anond.sysusers.conf")],
                   check=True, capture_output=True, timeout=60)
    passwd = (root / "etc" / "passwd").read_text()
    assert passwd.startswith("anond:") and "/usr/sbin/nologin" in passwd
    uid = int(passwd.split(":")[2])
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                    str(PACKAGING / "anond.tmpfiles.conf")], check=True, capture_output=True, timeout=60)
    for path, mode in (("srv/anond/inbox", 0o2770), ("srv/anond/outbox", 0o2750),
                       ("var/lib/anond/state", 0o700)):
        st = (root / path).stat()
        assert st.st_uid == uid, path
        assert st.st_mode & 0o7777 == mode, path


def test_every_writable_folder_of_tmpfiles_is_writable_under_the_unit():
    """ProtectSystem=strict makes everything read-only except ReadWritePaths= and StateDirectory=."""
    d = _directives(UNIT.read_text())
    writable = [*d["ReadWritePaths"][0].split(), *(f"/var/lib/{s}" for s in d["StateDirectory"])]
    for line in (PACKAGING / "anond.tmpfiles.conf").read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or fields[3] != "anond":
            continue
        assert any(fields[1] == w or fields[1].startswith(w + "/") for w in writable), fields[1]
