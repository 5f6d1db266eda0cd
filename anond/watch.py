"""Finding finished files in an inbox: watchdog events, periodic rescans, and the "finished" gate.

Events only say where to look; whether a file is finished is decided by looking at it: a file
is ready once its size and mtime stayed the same for `stable_after_s`. Network shares deliver
no events at all, so a full rescan runs every `rescan_interval_s` (and once at start-up).
Hidden files, partial downloads and manual-region sidecars never become jobs; neither does
anything matching the inbox's `ignore` patterns (NAS thumbnail and recycle folders, desktop
junk: DEFAULT_IGNORE), whose folders are not even entered. Ignored entries are counted, never
touched.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import log
from .fsutil import reached_without_links

# Names of files still being written by browsers, sync and transfer tools.
PARTIAL_SUFFIXES = (
    ".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", ".download",
    ".opdownload", ".!ut", ".!qb", ".unconfirmed", ".swp", ".lock",
)
JUNK_NAMES = {"thumbs.db", "desktop.ini", "icon\r"}
# Globs (case-insensitive, matched against every folder and file name under the inbox) of what
# NAS systems, sync tools and desktops leave in shared folders: never inputs. Per inbox:
# `[[inbox]] ignore` replaces this list.
DEFAULT_IGNORE = (
    "@eaDir", "#recycle", "#snapshot", "#archive", ".Trash-*", "$RECYCLE.BIN",
    "System Volume Information", ".DS_Store", "._*", "Thumbs.db", "desktop.ini", "~$*", "*~",
    "*.part", "*.partial", "*.crdownload", "*.filepart", "*.download", "*.tmp", "*.temp",
)
SIDECAR_SUFFIX = ".regions.json"  # anond.regions.SIDECAR_SUFFIX (kept here: light import)
# Zero-byte files are often placeholders a copy tool fills later: they wait this much longer.
EMPTY_FILE_FACTOR = 6

_log = log.get("anond.watch")


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Does `name` match one of the lower-cased glob `patterns` (case-insensitive)?"""
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, p) for p in patterns)


def is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIX)


def is_media_candidate(name: str) -> bool:
    """Could this file name be an input? (Not hidden, partial, temporary, junk or a sidecar.)"""
    lower = name.lower()
    return not (
        is_hidden(name)
        or name.startswith("~$")  # office lock files
        or name.endswith("~")
        or lower.endswith(PARTIAL_SUFFIXES)
        or ".anond-tmp" in lower
        or lower in JUNK_NAMES
        or is_sidecar(name)
    )


@dataclass
class Candidate:
    """A finished file in the inbox, by its path relative to the inbox."""

    rel: PurePosixPath
    size: int
    mtime_ns: int


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    ino: int
    since: float  # monotonic time it was first seen with these values


class InboxWatcher:
    """Tracks the files of one inbox until they are finished; `poll()` returns those that are."""

    def __init__(self, root: Path, *, recursive: bool, stable_after_s: float,
                 use_events: bool = True, ignore: tuple[str, ...] | list[str] = DEFAULT_IGNORE) -> None:
        self.root = Path(root)
        self.ignore = tuple(p.lower() for p in ignore)
        self._ignored: set[PurePosixPath] = set()  # ignored entries seen since the last rescan
        self._skipped = 0  # files that are never inputs, seen in the last rescan
        self.recursive = recursive
        self.stable_after_s = stable_after_s
        self.use_events = use_events
        self._seen: dict[PurePosixPath, _Seen] = {}
        # Files dealt with (kept originals already processed, unclaimable files): not tracked
        # again until they change.
        self._settled: dict[PurePosixPath, tuple[int, int]] = {}
        self._event_files: set[str] = set()
        self._event_dirs: set[str] = set()
        self._events_lock = threading.Lock()
        self._observer = None

    # -- lifecycle

    def start(self) -> None:
        """Start the event observer (if enabled) and scan everything once."""
        if self.use_events:
            self._start_observer()
        self.rescan()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _start_observer(self) -> None:
        import warnings

        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        # watchdog warns about re-added watches, quoting the watched folders (user names).
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"watchdog\.")

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type in ("opened", "closed_no_write", "deleted"):
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                with watcher._events_lock:
                    for p in paths:
                        if p:
                            (watcher._event_dirs if event.is_directory else watcher._event_files).add(
                                os.fsdecode(p))

        try:
            observer = Observer()
            observer.schedule(Handler(), str(self.root), recursive=self.recursive)
            observer.daemon = True
            observer.start()
        except OSError as exc:  # inotify limits: rescans still find everything
            _log.warning("watch.events_unavailable", error=exc.strerror or type(exc).__name__)
            return
        self._observer = observer

    # -- finding files

    def rescan(self) -> int:
        """Walk the whole inbox; returns how many files are being tracked."""
        self._ignored = set()
        self._skipped = 0
        visited = self._walk(self.root)
        self._settled = {rel: key for rel, key in self._settled.items() if rel in visited}
        return len(self._seen)

    def _walk(self, top: Path) -> set[PurePosixPath]:
        visited: set[PurePosixPath] = set()
        if top != self.root and (os.path.islink(top) or not self._real(top)):
            return visited  # a link to a folder is never entered
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for entry in entries:
                if self.ignore and matches(entry.name, self.ignore):
                    # Its parents were entered, so none of them is ignored: it is the outermost.
                    self._ignored.add(PurePosixPath(Path(entry.path).relative_to(self.root).as_posix()))
                    continue  # an ignored folder is not entered
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if self.recursive and not is_hidden(entry.name):  # .anond: the claim area
                            stack.append(Path(entry.path))
                        continue
                    if not entry.is_file(follow_symlinks=False) or is_hidden(entry.name):
                        self._skipped += 1  # links, FIFOs, sockets, hidden files: never inputs
                        continue
                    rel = self._observe(Path(entry.path), entry.stat(follow_symlinks=False))
                except OSError:
                    continue
                if rel is not None:
                    visited.add(rel)
                else:
                    self._skipped += 1  # partial downloads, temporary and junk files
        return visited

    def _rel(self, path: Path) -> PurePosixPath | None:
        try:
            rel = PurePosixPath(path.relative_to(self.root).as_posix())
        except ValueError:
            return None
        if not rel.parts:
            return None
        hit = next((i for i, p in enumerate(rel.parts) if matches(p, self.ignore)), None) \
            if self.ignore else None
        if hit is not None:  # the outermost ignored entry stands for what is inside it
            self._ignored.add(PurePosixPath(*rel.parts[:hit + 1]))
            return None
        if any(is_hidden(p) for p in rel.parts):
            return None
        if not self.recursive and len(rel.parts) > 1:
            return None
        return rel

    @property
    def skipped(self) -> int:
        """Files seen in the last rescan that are never inputs (hidden, partial downloads,
        temporary files, links, FIFOs); left alone."""
        return self._skipped

    @property
    def ignored(self) -> int:
        """Ignored folders and files (each folder counts once) seen since the last rescan."""
        return len(self._ignored)

    def _observe(self, path: Path, st: os.stat_result) -> PurePosixPath | None:
        rel = self._rel(path)
        if rel is None:
            return None
        name = rel.name
        if not (is_media_candidate(name) or is_sidecar(name)):
            return None
        key = (st.st_size, st.st_mtime_ns)
        settled = self._settled.get(rel)
        if settled is not None:
            if settled == key:
                return rel
            del self._settled[rel]
        seen = self._seen.get(rel)
        if seen is None or (seen.size, seen.mtime_ns, seen.ino) != (*key, st.st_ino):
            self._seen[rel] = _Seen(st.st_size, st.st_mtime_ns, st.st_ino, time.monotonic())
        return rel

    def _drain_events(self) -> None:
        with self._events_lock:
            files, dirs = self._event_files, self._event_dirs
            self._event_files, self._event_dirs = set(), set()
        # Event paths are checked as they are on disk now (lstat, no link followed) and must
        # lie inside the inbox through real folders only: a link to a folder (inside or out)
        # is never entered, whatever an event called it.
        for name in dirs | files:
            path = Path(name)
            try:
                st = path.stat(follow_symlinks=False)
            except OSError:
                continue
            if path != self.root and (self._rel(path) is None or not self._real(path)):
                continue
            if stat.S_ISDIR(st.st_mode):
                self._walk(path)
            elif stat.S_ISREG(st.st_mode):
                self._observe(path, st)

    def _real(self, path: Path) -> bool:
        """True when `path`'s folder is where it says it is: no symbolic link on the way from
        the inbox (the inbox itself may be one, as configured)."""
        try:
            rel = path.parent.relative_to(self.root)
        except ValueError:
            return False
        return reached_without_links(self.root, rel)

    # -- the finished gate

    def poll(self, now: float | None = None) -> list[Candidate]:
        """Look at every tracked file again; the media files unchanged for stable_after_s."""
        self._drain_events()
        now = time.monotonic() if now is None else now
        ready = []
        for rel, seen in list(self._seen.items()):
            try:
                st = os.stat(self.root / rel, follow_symlinks=False)
            except OSError:
                del self._seen[rel]  # claimed, moved or deleted
                continue
            if (st.st_size, st.st_mtime_ns, st.st_ino) != (seen.size, seen.mtime_ns, seen.ino):
                self._seen[rel] = _Seen(st.st_size, st.st_mtime_ns, st.st_ino, now)
                continue
            wait = self.stable_after_s * (EMPTY_FILE_FACTOR if seen.size == 0 else 1)
            if now - seen.since >= wait and is_media_candidate(rel.name):
                ready.append(Candidate(rel, seen.size, seen.mtime_ns))
        ready.sort(key=lambda c: (c.mtime_ns, str(c.rel)))
        return ready

    def is_stable(self, rel: PurePosixPath, now: float | None = None) -> bool:
        """Whether a tracked file (a sidecar) has been unchanged for stable_after_s."""
        return self.stable_for(rel, now) >= self.stable_after_s  # untracked: 0, never (gt=0)

    def stable_for(self, rel: PurePosixPath, now: float | None = None) -> float:
        """Seconds a tracked file has been unchanged (0 if not tracked); counted from when this
        process first saw it so: a restart starts the count again."""
        seen = self._seen.get(rel)
        now = time.monotonic() if now is None else now
        return 0.0 if seen is None else now - seen.since

    def forget(self, rel: PurePosixPath) -> None:
        """Stop tracking (the file was claimed)."""
        self._seen.pop(rel, None)

    def settle(self, rel: PurePosixPath, size: int, mtime_ns: int) -> None:
        """Dealt with: ignore this file until its size or mtime changes."""
        self._seen.pop(rel, None)
        self._settled[rel] = (size, mtime_ns)

    @property
    def tracked(self) -> int:
        return len(self._seen)

    def inputs(self) -> list[tuple[PurePosixPath, int, int]]:
        """(relative path, size, mtime_ns) of the tracked files that are inputs (not sidecars)."""
        return [(rel, s.size, s.mtime_ns) for rel, s in self._seen.items() if not is_sidecar(rel.name)]
