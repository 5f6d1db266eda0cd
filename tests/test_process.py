"""`anond process` and the photo pipeline: what goes in anonymized comes out, nothing else."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

from anond import cli, mask
from anond.config import load_settings
from anond.errors import CorruptMedia, UnsupportedMedia
from anond.fsutil import OutputExists, atomic_output, is_temp_name
from anond.pipeline import process_file
from anond.verify import verify

ROOT = Path(__file__).resolve().parents[1]
GPS_IFD, EXIF_IFD = 0x8825, 0x8769


@pytest.fixture(scope="module")
def fast_config(models_dir, tmp_path_factory) -> Path:
    """Default settings without the small-image detail pass: a few times faster on CPU."""
    path = tmp_path_factory.mktemp("config") / "anond.toml"
    path.write_text(f'[models]\ndir = "{models_dir}"\n\n[profile.detect]\nupscale = 1.0\n')
    return path


@pytest.fixture(scope="module")
def fast_settings(fast_config):
    return load_settings(fast_config)


def write_image(path: Path, bgr: np.ndarray, params: tuple[int, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, bgr, list(params))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "anond.cli", "process", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- end to end through the real CLI ------------------------------------------------------------

@pytest.mark.slow  # the default profile (detail pass) twice on CPU, plus a fresh process
def test_astronaut_is_anonymized_end_to_end(tmp_path, engine, settings, astronaut, models_dir):
    src = write_image(tmp_path / "in" / "astronaut.png", astronaut)
    dst = tmp_path / "out" / "astronaut.png"
    dst.parent.mkdir()
    report_path = tmp_path / "run.json"
    done = run_cli(str(src), str(dst), "--report", str(report_path),
                   env_extra={"ANOND_MODELS__DIR": str(models_dir)})
    assert done.returncode == 0, done.stderr
    out = cv2.imread(str(dst), cv2.IMREAD_UNCHANGED)
    assert Image.open(dst).format == "PNG" and out.shape == astronaut.shape

    profile = settings.profiles["default"]
    found = engine.detect([astronaut], profile.detect, profile.targets)[0]
    assert found.counts().get("face", 0) >= 1
    covered = mask.coverage_mask(astronaut.shape[:2], found, profile.mask)
    changed = (out != astronaut).any(-1)
    x0, y0, x1, y1 = found.of(0).xyxy[0].astype(int)
    face_diff = np.abs(out[y0:y1, x0:x1].astype(int) - astronaut[y0:y1, x0:x1]).mean()
    assert face_diff > 15, "the face region must really change"

    run = json.loads(report_path.read_text())
    job = run["jobs"][0]
    assert job["detections"]["face"] >= 1 and run["totals"]["masked"]["face"] >= 1
    assert job["media"]["width"] == 512 and job["media"]["format"] == "png"
    assert set(job["durations"]) >= {"decode", "detect", "mask", "verify", "encode", "total"}
    if job["verify_fixes"] == 0:  # then only the first pass masked, and nothing else changed
        # Boxes come from another process; allow a 2-px rim for float jitter at mask edges.
        near = cv2.dilate(covered.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        outside = changed & ~near
        assert not outside.any(), (int(outside.sum()), np.argwhere(outside)[[0, -1]].tolist(),
                                   found.xyxy.tolist(), job["detections"], job["masked"])
    else:
        assert (changed & ~covered).mean() < 0.01

    still = engine.detect([out], profile.detect, ["face"])[0]
    assert len(still) == 0, "the face detector still finds a face in the output"


def test_broken_files_fail_with_one_line_and_leave_nothing(tmp_path, fast_config, astronaut):
    good = write_image(tmp_path / "astronaut.jpg", astronaut, (cv2.IMWRITE_JPEG_QUALITY, 90))
    cases = {
        "truncated.jpg": (good.read_bytes()[:-4000], "corrupt image (truncated JPEG)"),
        "letter.jpg": (b"Dear Jane, see you at 5.\n", "not a supported image or video"),
        "empty.jpg": (b"", "empty file"),
        # A PNG named .jpg is processed as the PNG it is: the output must be named for it.
        "png_inside.jpg": (cv2.imencode(".png", astronaut)[1].tobytes(), "DST must end in .png"),
    }
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name, (data, message) in cases.items():
        src = tmp_path / name
        src.write_bytes(data)
        if name == "truncated.jpg":  # one through a real subprocess: exit code, no traceback
            done = run_cli(str(src), str(out_dir / name), "--config", str(fast_config))
            rc, err = done.returncode, done.stderr
        else:
            rc, err = _cli_in_process(["process", str(src), str(out_dir / name), "--config", str(fast_config)])
        lines = [line for line in err.splitlines() if line.startswith("anond process:")]
        assert rc != 0, name
        assert len(lines) == 1 and lines[0].startswith("anond process: error: ") and message in lines[0], err
        assert "Traceback" not in err and name not in err and str(tmp_path) not in err
    assert files_in(out_dir) == [], "a failed job left an output or a temporary file"


def _cli_in_process(argv) -> tuple[int, str]:
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(argv)
    return rc, err.getvalue()


def test_tree_is_mirrored_unsupported_skipped_failures_counted(tmp_path, fast_config):
    rng = np.random.default_rng(3)
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_image(src / "a" / "one.png", rng.integers(0, 256, (64, 80, 3), np.uint8))
    write_image(src / "a" / "deep" / "two.bmp", rng.integers(0, 256, (48, 48, 3), np.uint8))
    write_image(src / "three.JPG", rng.integers(0, 256, (40, 40, 3), np.uint8))
    (src / "notes.txt").write_text("not media")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    write_image(src / ".hidden.png", rng.integers(0, 256, (8, 8, 3), np.uint8))
    report_path = tmp_path / "report.json"
    err = io.StringIO()
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = cli.main(["process", str(src), str(dst), "--config", str(fast_config), "--report", str(report_path)])
    assert rc == 2  # one file failed
    assert files_in(dst) == ["a/deep/two.bmp", "a/one.png", "three.JPG"]
    errors = err.getvalue().splitlines()
    assert len(errors) == 1 and errors[0].startswith("anond process: error: #3 ")  # sorted path order
    assert "3 anonymized, 1 failed, 1 skipped" in out.getvalue()
    run = json.loads(report_path.read_text())
    assert run["totals"]["jobs"] == 4 and run["totals"]["failed"] == 1 and run["skipped"] == 1
    assert [j["status"] for j in run["jobs"]] == ["ok", "ok", "failed", "ok"]
    assert run["jobs"][2]["error"] == "corrupt_media"
    # Untouched (no face, no plate in noise) lossless outputs are identical to their inputs.
    assert np.array_equal(cv2.imread(str(dst / "a" / "one.png")), cv2.imread(str(src / "a" / "one.png")))


def test_existing_output_is_never_overwritten_silently(tmp_path, fast_config, astronaut):
    src = write_image(tmp_path / "a.png", astronaut[:128, :128])
    dst = tmp_path / "out" / "a.png"
    dst.parent.mkdir()
    dst.write_bytes(b"keep me")
    rc, err = _cli_in_process(["process", str(src), str(dst), "--config", str(fast_config)])
    assert rc == 2 and "output already exists" in err and dst.read_bytes() == b"keep me"
    rc, _ = _cli_in_process(["process", str(src), str(dst), "--config", str(fast_config), "--on-exists", "suffix"])
    assert rc == 0 and dst.read_bytes() == b"keep me" and (dst.parent / "a (1).png").is_file()
    rc, _ = _cli_in_process(["process", str(src), str(dst), "--config", str(fast_config), "--on-exists", "replace"])
    assert rc == 0 and Image.open(dst).format == "PNG"


def test_report_holds_no_names_or_paths(tmp_path, fast_config, fast_settings, engine, astronaut):
    folder = tmp_path / "Jane_Doe"
    src = write_image(folder / "Jane_Doe_ABC123.jpg", astronaut)
    dst = tmp_path / "out" / "Jane_Doe_ABC123.jpg"
    dst.parent.mkdir()
    report_path = tmp_path / "report.json"
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = cli.main(["process", str(src), str(dst), "--config", str(fast_config),
                       "--report", str(report_path), "--log-level", "debug"])
    assert rc == 0 and dst.is_file()
    report = process_file(src, tmp_path / "out" / "again.jpg", settings=fast_settings, engine=engine,
                          job_id="j-names")
    texts = [report_path.read_text(), report.to_json(), out.getvalue(), err.getvalue()]
    assert json.loads(texts[0])["jobs"][0]["detections"]["face"] >= 1  # a real run, not an empty one
    for text in texts:
        for secret in ("Jane_Doe", "ABC123", str(tmp_path)):
            assert secret not in text
    assert report.output_path == tmp_path / "out" / "again.jpg"  # the caller still knows where
    forbidden = {"xyxy", "box", "boxes", "bbox", "path", "file", "filename", "src", "dst", "output_path"}
    assert not all_keys(report.to_dict()) & forbidden


def all_keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(all_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(all_keys(v) for v in value))
    return set()


# --- the pipeline in process ---------------------------------------------------------------------

def test_jpeg_stays_jpeg_and_far_pixels_stay_within_jpeg_noise(tmp_path, fast_settings, engine, astronaut):
    src = write_image(tmp_path / "a.jpg", astronaut, (cv2.IMWRITE_JPEG_QUALITY, 95))
    report = process_file(src, tmp_path / "b.jpg", settings=fast_settings, engine=engine, job_id="j1")
    before, after = cv2.imread(str(src)), cv2.imread(str(report.output_path))
    assert Image.open(report.output_path).format == "JPEG" and after.shape == before.shape
    profile = fast_settings.profiles["default"]
    found = engine.detect([before], profile.detect, profile.targets)[0]
    covered = mask.coverage_mask(before.shape[:2], found, profile.mask)
    # Verify's masks are masks too: redo it (deterministic) so `covered` holds them as well.
    verify(mask.apply(before.copy(), found, profile.mask), engine, profile, covered=covered)
    far = cv2.dilate(covered.astype(np.uint8), np.ones((33, 33), np.uint8)) == 0
    diff = np.abs(after.astype(int) - before)[far]
    assert diff.mean() < 1.5 and np.percentile(diff, 99.9) < 16
    assert report.masked["face"] >= 1 and report.media.bytes_out > 0


def test_sideways_camera_photo_comes_out_upright_without_metadata(tmp_path, fast_settings, engine, astronaut):
    from test_image import XMP, exif_with_thumbnail

    upright = astronaut[:, 56:456]  # 400 wide, 512 high: orientation visibly matters
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # what the sensor wrote (orientation 6)
    thumb = io.BytesIO()
    Image.fromarray(stored[..., ::-1]).resize((64, 50)).save(thumb, "JPEG")
    src = tmp_path / "phone.jpg"
    Image.fromarray(stored[..., ::-1]).save(src, "JPEG", quality=95, xmp=XMP,
                                            exif=exif_with_thumbnail(thumb.getvalue()))
    for keep in ([], ["datetime"]):
        settings = fast_settings.model_copy(update={"image": fast_settings.image.model_copy(
            update={"keep_metadata": keep})})
        report = process_file(src, tmp_path / "out.jpg", settings=settings, engine=engine,
                              job_id="j2")
        assert report.masked.get("face", 0) >= 1, "the face must be found in the upright image"
        data = report.output_path.read_bytes()
        out = Image.open(io.BytesIO(data))
        assert out.size == (400, 512)
        got = np.asarray(out)[..., ::-1].astype(int)
        # Content upright: the bottom rows (suit, helmet) match the upright original closely.
        assert np.abs(got[400:] - upright[400:]).mean() < 4
        exif = out.getexif()
        assert ExifTags.Base.Orientation not in exif and not exif.get_ifd(GPS_IFD)
        assert not exif.get_ifd(ExifTags.IFD.IFD1) and data.count(b"\xff\xd8\xff") == 1
        assert "xmp" not in out.info and b"creator=Jane" not in data
        if keep:
            assert exif.get_ifd(EXIF_IFD).get(ExifTags.Base.DateTimeOriginal) == "2020:01:02 03:04:05"
        else:
            assert "exif" not in out.info


def test_png_alpha_survives_the_pipeline(tmp_path, fast_settings, engine, astronaut):
    alpha = np.tile(np.linspace(0, 255, 512).astype(np.uint8), (512, 1))
    src = write_image(tmp_path / "a.png", np.dstack([astronaut, alpha]))
    report = process_file(src, tmp_path / "b.png", settings=fast_settings, engine=engine, job_id="j3")
    out = cv2.imread(str(report.output_path), cv2.IMREAD_UNCHANGED)
    assert out.shape == (512, 512, 4) and np.array_equal(out[..., 3], alpha)
    assert report.media.has_alpha and report.masked["face"] >= 1


def test_a_photo_with_nothing_to_mask_is_not_searched_twice(tmp_path, fast_settings, engine, astronaut):
    """Nothing found, nothing masked: the picture is the one the first pass searched, so the
    pipeline skips verification (a whole second pass); searching it again finds nothing."""
    profile = fast_settings.profiles["default"]
    empty = cv2.GaussianBlur(astronaut[300:, 300:], (0, 0), 9)  # shuttle hull, no face, no plate
    assert not len(engine.detect([empty], profile.detect, profile.targets)[0])
    assert verify(empty.copy(), engine, profile).fixes == 0
    src = write_image(tmp_path / "empty.png", empty)
    report = process_file(src, tmp_path / "out.png", settings=fast_settings, engine=engine, job_id="j6")
    assert "verify" not in report.durations and report.verify_fixes == 0
    assert np.array_equal(cv2.imread(str(report.output_path)), empty)
    faces = process_file(write_image(tmp_path / "a.png", astronaut), tmp_path / "b.png",
                         settings=fast_settings, engine=engine, job_id="j7")
    assert faces.masked.get("face") and "verify" in faces.durations


def test_verification_runs_again_only_the_views_masking_changed(settings, engine, astronaut):
    """A large photo is searched whole and in native tiles; after masking, only the views that
    see a masked pixel are run again (`ViewMemo`): the rest are the same pixels and would find
    the same boxes. Verification with the memo masks exactly what it masks without one."""
    from anond.detect.engine import ViewMemo

    profile = settings.profiles["default"].model_copy(update={"targets": ["face"]})
    rng = np.random.default_rng(1)  # > max_input_side: a whole view and 5 x 5 native tiles
    big = cv2.GaussianBlur(rng.integers(0, 255, (2400, 2600, 3), dtype=np.uint8), (0, 0), 3)
    big[1500:2012, 1700:2212] = astronaut
    memo = ViewMemo()
    first = engine.detect([big], profile.detect, ["face"], memos=[memo])[0]
    assert first.counts() == {"face": 1} and len(memo.found) == 26 and memo.reused == 0
    masked = mask.apply(big.copy(), first, profile.mask)
    covered = mask.coverage_mask(big.shape[:2], first, profile.mask)
    plain, remembered = masked.copy(), masked.copy()
    checked = verify(plain, engine, profile, covered=covered.copy())
    checked_memo = verify(remembered, engine, profile, covered=covered.copy(), memo=memo)
    assert np.array_equal(plain, remembered), "the same pixels masked, with or without the memo"
    assert (checked.fixes, checked.rounds) == (checked_memo.fixes, checked_memo.rounds)
    # The face's masks lie in at most 4 of the 25 tiles (they overlap): round one does not
    # run the rest again; a later round of the (local) face model searches only around what
    # the round before masked (`Engine.detect`'s `recent`), no whole tile.
    rounds = checked_memo.rounds
    assert rounds >= 2 and 21 <= memo.reused < 25
    # What a memo gives back is what running every view finds.
    again = engine.detect([remembered], profile.detect, ["face"], memos=[memo])[0]
    fresh = engine.detect([remembered], profile.detect, ["face"])[0]
    assert np.array_equal(again.xyxy, fresh.xyxy) and np.array_equal(again.score, fresh.score)


def test_verification_searches_a_small_photos_enlarged_view_again_only_around_the_masks(
        settings, engine, astronaut):
    """A small photo is searched whole and enlarged 2x; after masking, verification searches
    the whole view again and the enlarged one only in a crop around the masks
    (`tiling.around`): elsewhere its pixels are those the first pass searched."""
    from anond.detect.engine import ViewMemo

    profile = settings.profiles["default"].model_copy(update={"targets": ["face"]})
    rng = np.random.default_rng(2)
    photo = cv2.GaussianBlur(rng.integers(0, 255, (600, 900, 3), dtype=np.uint8), (0, 0), 3)
    photo[20:148, 700:828] = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    memo = ViewMemo()
    first = engine.detect([photo], profile.detect, ["face"], memos=[memo])[0]
    assert first.counts() == {"face": 1}
    assert sorted(key[-1].scale for key in memo.found) == [1.0, 1280 / 900]  # whole, enlarged
    covered = mask.coverage_mask(photo.shape[:2], first, profile.mask)
    masked = mask.apply(photo.copy(), first, profile.mask)
    verify(masked, engine, profile, covered=covered, memo=memo)
    crops = [key[-1] for key in memo.found if key[-1].scale > 1.0 and key[-1].w < 900]
    assert crops, "the enlarged view was searched again in a crop"
    ys, xs = np.nonzero(covered)
    for view in crops:  # around the masks, and much smaller than the photo
        assert view.x0 <= xs.min() and view.x0 + view.w >= xs.max()
        assert view.y0 <= ys.min() and view.y0 + view.h >= ys.max()
        assert view.w * view.h < 0.5 * 900 * 600


def test_verify_masks_what_the_first_pass_missed(fast_settings, engine, astronaut):
    profile = fast_settings.profiles["default"]
    image = astronaut.copy()  # as if the first pass had missed the face entirely
    fixes = verify(image, engine, profile).fixes
    assert fixes >= 1
    assert not engine.detect([image], profile.detect, ["face"])[0].counts().get("face")


def test_sidecar_regions_mask_and_exclude(tmp_path, fast_settings, engine, astronaut):
    src = write_image(tmp_path / "a.png", astronaut)
    logo = {"x": 380, "y": 20, "w": 60, "h": 40}  # part of the shuttle: not a face, not a plate
    sidecar = {"version": 1, "regions": [
        {"type": "mask", "mode": "solid", "rect": logo},
        {"type": "exclude", "rect": {"x": 140, "y": 20, "w": 180, "h": 200}},  # around the face
    ]}
    (tmp_path / "a.png.regions.json").write_text(json.dumps(sidecar))
    report = process_file(src, tmp_path / "b.png", settings=fast_settings, engine=engine, job_id="j5")
    out = cv2.imread(str(report.output_path))
    assert (out[20:60, 380:440] == 0).all(), "the manual region is filled"
    assert np.array_equal(out[20:220, 140:320], astronaut[20:220, 140:320]), "the excluded face stays"
    assert report.manual_regions.sidecar == "applied"
    assert report.manual_regions.applied == 1 and report.manual_regions.excluded >= 1
    assert report.masked.get("manual") == 1 and "face" not in report.masked
    assert "face" not in report.detections  # found, then excluded: counted as excluded only


@pytest.mark.parametrize("data,error", [(b"", CorruptMedia), (b"hello", UnsupportedMedia)])
def test_failed_job_carries_its_report(tmp_path, fast_settings, engine, data, error):
    src = tmp_path / "x.png"
    src.write_bytes(data)
    with pytest.raises(error) as exc:
        process_file(src, tmp_path / "y.png", settings=fast_settings, engine=engine, job_id="j4")
    assert exc.value.report.status == "failed" and exc.value.report.error == error.code
    assert not (tmp_path / "y.png").exists()


# --- atomic output -----------------------------------------------------------------------------

def test_atomic_output_appears_whole_or_not_at_all(tmp_path):
    dst = tmp_path / "photo.jpg"
    out = atomic_output(dst, "job7")
    with out as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".jpg" and is_temp_name(tmp.name)
        tmp.write_bytes(b"abc")
        assert not dst.exists()
    assert out.final == dst and dst.read_bytes() == b"abc" and files_in(tmp_path) == ["photo.jpg"]

    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "other.jpg", "job8") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("encoder died")
    assert files_in(tmp_path) == ["photo.jpg"]


def test_atomic_output_policies(tmp_path):
    dst = tmp_path / "a.png"
    dst.write_bytes(b"old")
    for expected in ("a (1).png", "a (2).png"):
        out = atomic_output(dst, "j", on_exists="suffix")
        with out as tmp:
            tmp.write_bytes(b"new")
        assert out.final.name == expected
    assert dst.read_bytes() == b"old"
    with pytest.raises(OutputExists):
        with atomic_output(dst, "j", on_exists="error") as tmp:
            tmp.write_bytes(b"new")
    out = atomic_output(dst, "j", on_exists="replace", mode=0o640)
    with out as tmp:
        tmp.write_bytes(b"new")
    assert dst.read_bytes() == b"new" and (dst.stat().st_mode & 0o777) == 0o640
    assert not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]


def test_progress_bars_for_a_tree_and_its_videos_on_a_terminal_and_nothing_in_a_pipe(tmp_path, models_dir):
    import os
    import pty
    import subprocess
    import sys

    import hostile

    # The bars, not the detectors, are under test: faces only (the plate model costs ~20 s here).
    faces_only = tmp_path / "anond.toml"
    faces_only.write_text(f'[models]\ndir = "{models_dir}"\n\n[profile]\ntargets = ["face"]\n\n'
                          '[profile.detect]\nupscale = 1.0\n')

    rng = np.random.default_rng(5)
    src = tmp_path / "Jane_Doe"
    for i in range(2):
        write_image(src / f"Jane_Doe_{i}.png", rng.integers(0, 256, (40, 48, 3), np.uint8))
    (src / "Jane_Doe.mp4").write_bytes(hostile.clip_bytes("mp4", 3, frames=48))  # a frames bar too
    cmd = [sys.executable, "-m", "anond.cli", "process", str(src), "--config", str(faces_only)]
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal's size
    done = subprocess.run([*cmd, str(tmp_path / "tty")], stdout=subprocess.PIPE, stderr=slave, timeout=300)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert done.returncode == 0
    assert b"3/3" in shown and b"file" in shown and b"/48" in shown and b"frame" in shown
    assert b"Jane_Doe" not in shown
    piped = subprocess.run([*cmd, str(tmp_path / "pipe")], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and "3/3" not in piped.stderr and "Jane_Doe" not in piped.stderr
