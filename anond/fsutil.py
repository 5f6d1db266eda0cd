"""Atomic output: a result appears whole under its final name, or not at all.

The writer writes a hidden temporary file next to the destination (same directory, so the
final rename never crosses file systems; same extension, so encoders that go by the extension
pick the right format). On success the file and the directory are fsynced and the file is
renamed onto its final name; on any failure the temporary file is removed.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import os
import secrets
import shutil
from pathlib import Path, PurePath
from typing import Literal

from .errors import AnondError, TransientIOError

OnExists = Literal["suffix", "replace", "error"]
TMP_MARKER = ".anond-tmp"
_MAX_SUFFIX = 10_000
# Worth another try later: the disk or the storage behind it, not the input.
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EAGAIN, errno.EBUSY,
                     errno.ETIMEDOUT, errno.ENOMEM, errno.ESTALE}


class OutputExists(AnondError):
    """The destination exists and the policy is `on_exists="error"`."""

    code = "output_exists"


def is_temp_name(name: str) -> bool:
    """True for the hidden temporary files `atomic_output` creates (watchers must skip them)."""
    return name.startswith(".") and TMP_MARKER in name


def temp_path_for(dst: Path, job_id: str) -> Path:
    """The hidden temporary path used while `dst` is being written."""
    return dst.parent / f".{job_id}{TMP_MARKER}{dst.suffix}"


def suffixed(dst: Path, n: int) -> Path:
    """`name (n).ext` next to `dst` (`dst` itself for n = 0)."""
    return dst if n == 0 else dst.with_name(f"{dst.stem} ({n}){dst.suffix}")


def io_error(exc: OSError, what: str = "I/O error") -> AnondError:
    """An OSError as an AnondError whose message holds no path (strerror only)."""
    reason = exc.strerror or type(exc).__name__
    cls = TransientIOError if exc.errno in _TRANSIENT_ERRNOS else _PermanentIOError
    return cls(f"{what}: {reason}")


class _PermanentIOError(AnondError):
    code = "io_error"


class atomic_output:  # noqa: N801 - used like a function: `with atomic_output(dst, job) as tmp:`
    """Context manager: yields a temporary path; on success it becomes `dst` (see `final`).

    on_exists: "suffix" writes `name (1).ext`, `name (2).ext`... next to an existing `dst`;
    "replace" replaces it atomically; "error" raises OutputExists. Never overwrites silently
    unless told to. `mode` (e.g. 0o640) and `group` (name or gid) are applied before the rename.
    """

    def __init__(self, dst: str | os.PathLike, job_id: str, *, on_exists: OnExists = "suffix",
                 mode: int | None = None, group: str | int | None = None) -> None:
        if on_exists not in ("suffix", "replace", "error"):
            raise ValueError(f"on_exists must be suffix, replace or error, not {on_exists!r}")
        self.dst = Path(dst)
        self.tmp = temp_path_for(self.dst, job_id)
        self.on_exists = on_exists
        self.mode = mode
        self.group = group
        self.final: Path | None = None  # where the output landed, once committed

    def __enter__(self) -> Path:
        if self.on_exists == "error" and self.dst.exists():
            raise OutputExists("output already exists")
        unlink_if_exists(self.tmp)  # left over from a crash of the same job
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            unlink_if_exists(self.tmp)
            if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
                raise io_error(exc, "could not write the output") from None
            return None
        try:
            self.final = self._commit()
        except BaseException as err:
            unlink_if_exists(self.tmp)
            if isinstance(err, OSError):
                raise io_error(err, "could not write the output") from None
            raise
        return None

    def _commit(self) -> Path:
        if not self.tmp.is_file():
            raise AnondError("the writer produced no output")
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.mode is not None:
            os.chmod(self.tmp, self.mode)
        if self.group is not None:
            gid = self.group if isinstance(self.group, int) else grp.getgrnam(self.group).gr_gid
            os.chown(self.tmp, -1, gid)
        final = self._place()
        fsync_dir(final.parent, strict=True)
        return final

    def _place(self) -> Path:
        if self.on_exists == "replace":
            os.replace(self.tmp, self.dst)
            return self.dst
        candidates = [self.dst]
        if self.on_exists == "suffix":
            candidates += (suffixed(self.dst, n) for n in range(1, _MAX_SUFFIX))
        for candidate in candidates:
            if link_once(self.tmp, candidate):
                return candidate
        if self.on_exists == "error":
            raise OutputExists("output already exists")
        raise OutputExists("output exists under too many suffixed names")


# ---------------------------------------------------------------------------------------------
# Placing files without ever overwriting one (outputs, claims, failed and archived originals)

_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK)


def link_once(src: Path, dst: Path) -> bool:
    """Give `src` the name `dst` unless `dst` exists (then False, nothing changed).

    Hard link then unlink: atomic, never replaces, no race with other writers. File systems
    without hard links fall back to check-then-rename (a tiny race, documented). Across file
    systems it raises OSError(EXDEV): `move_no_clobber` copies instead."""
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(dst):
            return False
        os.rename(src, dst)
        return True
    os.unlink(src)
    return True


def move_exact(src: Path, dst: Path) -> None:
    """Move `src` to exactly `dst` (FileExistsError when taken); same file system only."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not link_once(src, dst):
        raise FileExistsError(errno.EEXIST, "exists")


def move_no_clobber(src: Path, dst: Path) -> Path:
    """Move `src` to `dst`, or `name (n).ext` when taken; returns the name it got. A move to
    another file system copies to a hidden temporary beside `dst` first (fsynced)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for n in range(_MAX_SUFFIX):
        candidate = suffixed(dst, n)
        try:
            placed = link_once(src, candidate)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return _copy_no_clobber(src, dst)
            raise
        if placed:
            fsync_dir(candidate.parent)
            return candidate
    raise FileExistsError(errno.EEXIST, "too many files with this name")


def _copy_no_clobber(src: Path, dst: Path) -> Path:
    tmp = dst.parent / f".{secrets.token_hex(6)}{TMP_MARKER}{dst.suffix}"
    try:
        shutil.copy2(src, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = move_no_clobber(tmp, dst)
    finally:
        unlink_if_exists(tmp)
    os.unlink(src)
    return final


def fsync_dir(path: Path, *, strict: bool = False) -> None:
    """Make a folder's entries durable. Best effort unless `strict` (then errors raise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def unlink_if_exists(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_bytes_atomic(dst: str | os.PathLike, data: bytes, job_id: str = "write",
                       mode: int | None = None) -> Path:
    """Write `data` to `dst` atomically, replacing it (reports, small state files, installed
    models); `mode` as for `atomic_output`."""
    out = atomic_output(dst, job_id, on_exists="replace", mode=mode)
    with out as tmp:
        tmp.write_bytes(data)
    assert out.final is not None
    return out.final


def write_copy(src: Path, dst: Path, tag: str) -> Path:
    """Copy `src` to `dst` (replacing it) through a fsynced temporary beside `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    out = atomic_output(dst, tag, on_exists="replace")
    with out as tmp:
        shutil.copyfile(src, tmp)
    assert out.final is not None
    return out.final


def reached_without_links(root: Path, rel_dir: PurePath) -> bool:
    """True when the folder `root/rel_dir` is reached from `root` through real folders only: no
    symbolic link on the way (`root` itself may be one, as configured). Moving a file through a
    link would take it from wherever the link points."""
    return os.path.realpath(Path(root) / rel_dir) == os.path.join(os.path.realpath(root), *rel_dir.parts)


def file_sha256(path: Path):
    """SHA-256 of a file's content, read in 1 MiB chunks (a hashlib object: .digest()/.hexdigest())."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest


# ---------------------------------------------------------------------------------------------
# Which file system a path is on

MOUNTS = Path("/proc/self/mounts")
# SQLite's WAL needs shared memory and POSIX locks that these do not give reliably.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "fuse.glusterfs",
    "lustre", "fuse.sshfs", "sshfs", "9p", "fuse.s3fs", "davfs", "fuse.davfs2", "fuse.rclone",
})


def filesystem_type(path: Path) -> str | None:
    """The type of the file system `path` (or its nearest existing parent) is on, from the
    mount table; None when it cannot be told."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        real = os.path.realpath(path)
        lines = MOUNTS.read_text().splitlines()
    except OSError:
        return None
    best, fstype = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].encode().decode("unicode_escape")  # \040 for spaces
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fstype = point, fields[2]
    return fstype


def network_filesystem(path: Path) -> str | None:
    """The network file system type `path` is on, or None when it is local (or unknown)."""
    fstype = filesystem_type(path)
    return fstype if fstype in NETWORK_FS else None
