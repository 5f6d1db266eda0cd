"""The inbox watcher: a file becomes a job only once it is finished, never while half copied."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path, PurePosixPath

import pytest

from anond.watch import InboxWatcher, is_media_candidate

STABLE = 0.3


def _ready(watcher: InboxWatcher, timeout: float = 3.0, want: int = 1) -> list[str]:
    deadline = time.monotonic() + timeout
    found: list[str] = []
    while time.monotonic() < deadline:
        found = [str(c.rel) for c in watcher.poll()]
        if len(found) >= want:
            return found
        time.sleep(0.05)
    return found


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    return root


@pytest.fixture
def watcher(inbox: Path):
    w = InboxWatcher(inbox, recursive=True, stable_after_s=STABLE)
    w.start()
    yield w
    w.stop()


@pytest.mark.parametrize("name", [
    "photo.jpg.part", "photo.jpg.crdownload", "photo.jpg.filepart", "x.tmp", "photo.jpg.partial",
    "photo.jpg~", "~$report.docx", ".hidden.jpg", ".photo.jpg.anond-tmp.jpg", "photo.jpg.regions.json",
    "Thumbs.db", "clip.MP4.PART",
])
def test_partial_hidden_and_sidecar_names_are_never_jobs(name):
    assert not is_media_candidate(name)


@pytest.mark.parametrize("name", ["photo.jpg", "Jane Doe (2).JPEG", "clip.mp4", "scan.tiff", "a.b.c.png"])
def test_ordinary_names_are_candidates(name):
    assert is_media_candidate(name)


def test_file_is_ready_only_after_staying_unchanged(inbox, watcher):
    path = inbox / "slow.jpg"
    with open(path, "wb") as f:
        for _ in range(6):  # keeps growing for ~2x stable_after_s
            f.write(os.urandom(1000))
            f.flush()
            time.sleep(STABLE / 3)
            assert watcher.poll() == [], "taken while still being written"
    t_done = time.monotonic()
    assert _ready(watcher) == ["slow.jpg"]
    assert time.monotonic() - t_done >= STABLE * 0.9


def test_ignored_names_are_not_returned(inbox, watcher):
    for name in ("a.jpg.part", ".hidden.jpg", "b.jpg.regions.json", "c.jpg.crdownload"):
        (inbox / name).write_bytes(b"x" * 100)
    (inbox / "real.jpg").write_bytes(b"x" * 100)
    time.sleep(STABLE * 2)
    assert _ready(watcher) == ["real.jpg"]


def test_claim_area_and_hidden_folders_are_not_scanned(inbox, watcher):
    (inbox / ".anond" / "claims" / "x").mkdir(parents=True)
    (inbox / ".anond" / "claims" / "x" / "in-flight.jpg").write_bytes(b"x")
    (inbox / ".sync").mkdir()
    (inbox / ".sync" / "y.jpg").write_bytes(b"y")
    watcher.rescan()
    time.sleep(STABLE * 2)
    assert watcher.poll() == []


def test_directory_moved_in_is_found(tmp_path, inbox, watcher):
    outside = tmp_path / "Holiday"
    (outside / "day1").mkdir(parents=True)
    (outside / "day1" / "a.jpg").write_bytes(b"a" * 10)
    (outside / "b.jpg").write_bytes(b"b" * 10)
    os.rename(outside, inbox / "Holiday")  # one rename: only a directory event, no file events
    assert sorted(_ready(watcher, want=2)) == ["Holiday/b.jpg", "Holiday/day1/a.jpg"]


def test_rescan_finds_files_without_events(inbox):
    """Network shares send no inotify events: the periodic rescan still finds files."""
    w = InboxWatcher(inbox, recursive=True, stable_after_s=STABLE, use_events=False)
    w.start()
    try:
        (inbox / "sub").mkdir()
        (inbox / "sub" / "late.jpg").write_bytes(b"z" * 10)
        time.sleep(STABLE * 2)
        assert w.poll() == []  # no events and no rescan yet
        w.rescan()
        assert _ready(w) == ["sub/late.jpg"]
    finally:
        w.stop()


def test_files_present_at_start_are_found(inbox):
    (inbox / "early.jpg").write_bytes(b"e" * 10)
    w = InboxWatcher(inbox, recursive=True, stable_after_s=STABLE, use_events=False)
    w.start()
    try:
        assert _ready(w) == ["early.jpg"]
    finally:
        w.stop()


def test_non_recursive_inbox_ignores_sub_folders(inbox):
    (inbox / "sub").mkdir()
    (inbox / "sub" / "deep.jpg").write_bytes(b"d")
    (inbox / "top.jpg").write_bytes(b"t")
    w = InboxWatcher(inbox, recursive=False, stable_after_s=STABLE, use_events=False)
    w.start()
    try:
        time.sleep(STABLE * 2)
        assert _ready(w) == ["top.jpg"]
    finally:
        w.stop()


def test_settled_file_is_ignored_until_it_changes(inbox, watcher):
    path = inbox / "kept.jpg"
    path.write_bytes(b"k" * 10)
    (cand,) = [c for c in _ready_candidates(watcher)]
    watcher.settle(cand.rel, cand.size, cand.mtime_ns)
    watcher.rescan()
    time.sleep(STABLE * 2)
    assert watcher.poll() == []
    path.write_bytes(b"changed" * 10)
    assert _ready(watcher) == ["kept.jpg"]


def test_sidecar_stability_is_tracked(inbox, watcher):
    (inbox / "a.jpg.regions.json").write_bytes(b"{}")
    watcher.rescan()
    rel = PurePosixPath("a.jpg.regions.json")
    assert not watcher.is_stable(rel)
    time.sleep(STABLE * 1.5)
    watcher.poll()
    assert watcher.is_stable(rel)


def test_deleted_file_is_forgotten(inbox, watcher):
    path = inbox / "gone.jpg"
    path.write_bytes(b"g")
    watcher.rescan()
    assert watcher.tracked == 1
    path.unlink()
    watcher.poll()
    assert watcher.tracked == 0


def _ready_candidates(watcher, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = watcher.poll()
        if found:
            return found
        time.sleep(0.05)
    return []


def test_copy_tree_with_shutil_is_found_complete(tmp_path, inbox, watcher):
    src = tmp_path / "src"
    (src / "x" / "y").mkdir(parents=True)
    for i in range(5):
        (src / "x" / "y" / f"{i}.jpg").write_bytes(os.urandom(2000))
    shutil.copytree(src, inbox / "copied")
    assert len(_ready(watcher, want=5)) == 5


def test_nas_and_desktop_junk_is_ignored_and_counted_not_entered(inbox):
    """Synology thumbnails (@eaDir), recycle bins, macOS and Windows leftovers never become jobs;
    ignored folders are not even entered; each ignored entry is counted once; nothing is touched."""
    junk = [inbox / "@eaDir" / "photo.jpg" / "SYNOPHOTO_THUMB_XL.jpg",
            inbox / "trip" / "#recycle" / "old.jpg", inbox / "trip" / "._photo.jpg",
            inbox / ".DS_Store", inbox / "trip" / "thumbs.DB"]
    for path in junk:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    (inbox / "trip" / "real.jpg").write_bytes(b"x" * 100)
    before = {p: p.stat().st_mtime_ns for p in junk}
    w = InboxWatcher(inbox, recursive=True, stable_after_s=STABLE, use_events=False)
    w.start()
    try:
        time.sleep(STABLE * 2)
        assert _ready(w) == ["trip/real.jpg"]
        assert w.ignored == 5  # @eaDir (its contents not walked), #recycle and three files
        assert {p: p.stat().st_mtime_ns for p in junk} == before
    finally:
        w.stop()


def test_files_that_are_never_inputs_are_counted_as_skipped_not_touched(inbox, tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x" * 100)
    (inbox / "a").mkdir()
    skipped = [inbox / ".hidden.jpg", inbox / "a" / "b.jpg.part", inbox / "a" / "c.tmp"]
    for path in skipped:
        path.write_bytes(b"x" * 100)
    os.symlink(outside, inbox / "a" / "link.jpg")
    os.mkfifo(inbox / "a" / "pipe.jpg")
    (inbox / "a" / "real.jpg").write_bytes(b"x" * 100)
    w = InboxWatcher(inbox, recursive=True, stable_after_s=STABLE, use_events=False)
    w.start()
    try:
        time.sleep(STABLE * 2)
        assert _ready(w) == ["a/real.jpg"]
        # Partial downloads match the default ignore globs (counted there); the hidden file,
        # the link and the FIFO are skipped.
        assert w.skipped == 3 and w.ignored == 2
        assert outside.read_bytes() == b"x" * 100
    finally:
        w.stop()


def test_an_inbox_ignore_list_replaces_the_default(inbox):
    (inbox / "@eaDir").mkdir()
    (inbox / "@eaDir" / "a.jpg").write_bytes(b"x" * 100)
    (inbox / "draft-1.jpg").write_bytes(b"x" * 100)
    w = InboxWatcher(inbox, recursive=True, stable_after_s=STABLE, use_events=False,
                     ignore=["DRAFT-*"])
    w.start()
    try:
        time.sleep(STABLE * 2)
        assert _ready(w) == ["@eaDir/a.jpg"]
        assert w.ignored == 1
    finally:
        w.stop()


def test_the_default_ignore_list_is_the_inbox_default():
    from anond.config import Inbox
    from anond.watch import DEFAULT_IGNORE

    assert Inbox(path="i", outbox="o").ignore == list(DEFAULT_IGNORE)


def test_a_link_to_a_folder_is_never_entered_even_when_an_event_names_it(inbox, watcher, tmp_path):
    """A symbolic link to a folder outside (or inside) the inbox, made while inotify watches: no
    file reached through it is ever a candidate, and a claim through it is refused."""
    from anond.jobs import ClaimBox

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x" * 100)
    (inbox / "real").mkdir()
    (inbox / "real" / "a.jpg").write_bytes(b"x" * 100)
    os.symlink(outside, inbox / "to-outside")
    os.symlink(inbox / "real", inbox / "to-inside.jpg")
    assert _ready(watcher, want=2, timeout=2.0) == ["real/a.jpg"]
    box = ClaimBox(inbox, "i", "s")
    box.open()
    with pytest.raises(OSError):
        box.claim(PurePosixPath("to-outside/secret.jpg"), "20261205T000000-00000000", sidecar=False)
    assert (outside / "secret.jpg").exists()
