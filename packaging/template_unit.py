#!/usr/bin/env python3
"""Writes packaging/anond@.service, the unit for one anond instance per GPU, from anond.service.

    python3 packaging/template_unit.py            # (re)write anond@.service
    python3 packaging/template_unit.py --check    # exit 1 if anond@.service is out of date

Both units share every line of the sandbox; the template only adds what makes an instance its
own: the GPU it sees (CUDA_VISIBLE_DEVICES=%i, so runtime.cuda_device_id stays 0), its state
folder (/var/lib/anond/gpu%i: instances never share a state_dir) and its metrics port (948%i;
GPUs 10 and above need their own in /etc/anond/anond@%i.env). tests/test_packaging.py checks
that the committed file is what this script writes, and analyses both units.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = HERE / "anond.service"
TEMPLATE = HERE / "anond@.service"

HEADER = """\
# GENERATED from anond.service by packaging/template_unit.py: edit that file, then run the script.
# anond@N.service: one anond instance on GPU N (N = the index nvidia-smi shows), e.g.
#   systemctl enable --now anond@0 anond@1
# Each instance reads /etc/anond/anond.toml, then /etc/anond/anond@N.env (optional; ANOND_*
# overrides, e.g. ANOND_SERVICE__METRICS_PORT=9500 or ANOND_SERVICE__WORKERS=2).
# Instances may share inboxes (claims keep them apart) but never a state folder.
"""

INSTANCE = """\
Environment=CUDA_VISIBLE_DEVICES=%i
Environment=ANOND_SERVICE__STATE_DIR=/var/lib/anond/gpu%i
Environment=ANOND_SERVICE__METRICS_PORT=948%i
EnvironmentFile=-/etc/anond/anond@%i.env
"""


def render(base: str) -> str:
    out = []
    for line in base.splitlines(keepends=True):
        if line.startswith("Description="):
            line = line.rstrip("\n") + " (GPU %i)\n"
        elif line.startswith("StateDirectory="):
            line = "StateDirectory=anond anond/gpu%i\n"
        out.append(line)
        if line.startswith("Environment=PYTHONUNBUFFERED"):
            out.append(INSTANCE)
    text = HEADER + "".join(out)
    for needed in ("(GPU %i)", "StateDirectory=anond anond/gpu%i", "CUDA_VISIBLE_DEVICES=%i"):
        if needed not in text:
            raise SystemExit(f"anond.service changed shape: could not place {needed!r}")
    return text


def main(argv: list[str]) -> int:
    text = render(BASE.read_text())
    if "--check" in argv:
        if not TEMPLATE.exists() or TEMPLATE.read_text() != text:
            print(f"{TEMPLATE} is out of date: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TEMPLATE.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
