"""anond.retention: only anond's own entries, only past their age, links never followed."""

from __future__ import annotations

import os
import time

from anond.retention import DAY_S, prune_archive, prune_failed

JOB = "20261205T010203-0a1b2c3d"


def test_failed_jobs_go_after_their_age_and_nothing_else(tmp_path):
    failed, outside = tmp_path / "failed", tmp_path / "outside.jpg"
    outside.write_bytes(b"not anond's")
    (failed / JOB).mkdir(parents=True)
    (failed / JOB / "IMG_0001.jpg").write_bytes(b"unmasked")
    os.symlink(outside, failed / JOB / "link.jpg")  # planted: removed as a link, not followed
    (failed / f"{JOB}.reason.json").write_text("{}")
    (failed / "notes.txt").write_text("not a job")
    (failed / "20261205T010203-zzzz").mkdir()  # not a job id either
    now = time.time()
    assert prune_failed(failed, 7 * DAY_S, now + 6 * DAY_S) == 0
    assert (failed / JOB / "IMG_0001.jpg").exists()
    assert prune_failed(failed, 7 * DAY_S, now + 8 * DAY_S) == 1
    assert sorted(p.name for p in failed.iterdir()) == ["20261205T010203-zzzz", "notes.txt"]
    assert outside.read_bytes() == b"not anond's"


def test_archive_files_go_after_their_age_and_empty_folders_with_them(tmp_path):
    archive, outside = tmp_path / "archive", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.jpg").write_bytes(b"x")
    (archive / "cam1" / "2026").mkdir(parents=True)
    (archive / "cam1" / "2026" / "a.mp4").write_bytes(b"unmasked")
    os.symlink(outside, archive / "cam1" / "elsewhere")  # a link to a folder: not entered
    now = time.time()
    assert prune_archive(archive, DAY_S, now + 0.5 * DAY_S) == 0
    assert prune_archive(archive, DAY_S, now + 2 * DAY_S) == 2  # the file and the link
    assert archive.is_dir() and list(archive.iterdir()) == []
    assert (outside / "keep.jpg").exists()
