"""etc/anond.toml documents every setting with its embedded default (checked against Settings).

Every leaf field of `Settings` appears in the file under its own section, as a key or, where
the default is computed or empty (a path, an optional group), as a commented `# key =` line; no
key in the file is unknown; and the file loads to exactly the embedded defaults.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from anond.config import Inbox, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "etc" / "anond.toml"
# `profiles` holds the named profiles; the file's [profile] is profiles["default"].
DERIVED = {"profiles"}
_SECTION = re.compile(r"^\s*\[\[?([A-Za-z0-9_.]+)\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*(#\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def documented_keys(text: str) -> dict[str, set[str]]:
    """{section: keys written or commented out in it} ("" = before any section)."""
    keys: dict[str, set[str]] = {"": set()}
    section = ""
    for line in text.splitlines():
        head = _SECTION.match(line)
        if head:
            section = head.group(1)
            keys.setdefault(section, set())
            continue
        key = _KEY.match(line)
        if key:
            keys[section].add(key.group(2))
    return keys


def leaf_fields(model: type[BaseModel], section: str = "") -> list[tuple[str, str]]:
    """(section, key) of every setting, nested models as sections."""
    out = []
    for name, info in model.model_fields.items():
        if not section and name in DERIVED:
            continue
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out += leaf_fields(kind, f"{section}.{name}" if section else name)
        elif not section and name == "inboxes":
            out += leaf_fields(Inbox, "inboxes")
        else:
            out.append((section, name))
    return out


def test_every_setting_is_in_the_file_under_its_section():
    keys = documented_keys(FILE.read_text())
    missing = [f"{s}.{k}" if s else k for s, k in leaf_fields(Settings) if k not in keys.get(s, set())]
    assert missing == [], f"settings not documented in etc/anond.toml: {missing}"


def test_no_key_in_the_file_is_unknown():
    known: dict[str, set[str]] = {}
    for section, key in leaf_fields(Settings):
        known.setdefault(section, set()).add(key)
    text = FILE.read_text()
    written = {}
    section = ""
    for line in text.splitlines():
        head = _SECTION.match(line)
        if head:
            section = head.group(1)
            continue
        key = _KEY.match(line)
        if key and not key.group(1):  # only keys really set (comments may hold examples)
            written.setdefault(section, set()).add(key.group(2))
    unknown = [f"{s}.{k}" for s, ks in written.items() for k in ks if k not in known.get(s, set())]
    assert unknown == []


def test_the_file_holds_the_embedded_defaults(monkeypatch):
    for name in [n for n in __import__("os").environ if n.startswith("ANOND_")]:
        monkeypatch.delenv(name)
    assert load_settings(FILE).model_dump() == load_settings(None).model_dump()
