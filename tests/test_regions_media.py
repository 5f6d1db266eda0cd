"""Manual regions through the real pipeline: real detectors, real PNG/MP4 files, real sidecars.

Outputs are lossless (PNG; x264 at crf 0) so "unchanged elsewhere" is checked pixel for pixel,
except for a thin band around each region (edge pixels are masked too; 4:2:0 chroma is shared
by 2x2 pixels and interpolated when converted back to BGR).
"""

from __future__ import annotations

import io
import time
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

from anond import cli
from anond import regions as R
from anond.errors import RegionsError
from anond.pipeline import process_file

MAGENTA = (255, 0, 255)  # BGR; never in the test pictures, so a solid mask is unmistakable
W, H, FPS, N = 160, 120, 10, 20  # the test video: 2 s

# Photo (astronaut, 512x512): the face box is about (175, 54)-(275, 180).
FACE = (175, 54, 275, 180)
PHOTO_RECT = {"x": 300, "y": 380, "w": 80, "h": 60}
PHOTO_POLYGON = [[20, 300], [140, 280], [120, 420], [30, 400]]
PHOTO_EXCLUDE = {"x": 150, "y": 30, "w": 150, "h": 180}

# Video (astronaut scaled to 160x120): the face box is about (58, 20)-(84, 54).
VIDEO_FACE = (58, 20, 84, 54)
VIDEO_RECT = {"x": 100, "y": 70, "w": 40, "h": 30}  # frames 5..14
TRI_START = np.array([[5, 85], [35, 85], [20, 115]], np.float64)  # t = 0.5 s (frame 5)
TRI_END = np.array([[60, 85], [90, 85], [75, 115]], np.float64)  # t = 1.5 s (frame 15)
VIDEO_EXCLUDE = {"x": 45, "y": 5, "w": 55, "h": 65}


@pytest.fixture(scope="module")
def lossless(models_dir):
    from anond.config import load_settings

    # Faces only, no tiling: the pictures hold one large face and no plate (and tests stay fast).
    return load_settings(None, models={"dir": models_dir}, video={"crf": 0},
                         profile={"targets": ["face"], "detect": {"tiling": False},
                                  "mask": {"solid_color": list(MAGENTA)}})


def write_sidecar(media: Path, regions: list[dict]) -> Path:
    path = R.sidecar_path(media)
    path.write_text(json.dumps({"version": 1, "regions": regions}))
    return path


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def poly_mask(shape_hw, polygon) -> np.ndarray:
    out = np.zeros(shape_hw, np.uint8)
    cv2.fillPoly(out, [np.round(np.asarray(polygon)).astype(np.int32)], 1)
    return out.astype(bool)


def rect_mask(shape_hw, r: dict) -> np.ndarray:
    out = np.zeros(shape_hw, bool)
    out[r["y"]: r["y"] + r["h"], r["x"]: r["x"] + r["w"]] = True
    return out


def box_mask(shape_hw, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.zeros(shape_hw, bool)
    out[y0:y1, x0:x1] = True
    return out


def grow(m: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(m.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def shrink(m: np.ndarray, px: int) -> np.ndarray:
    return cv2.erode(m.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def is_solid(img: np.ndarray, where: np.ndarray, tol: int = 0) -> bool:
    return bool(where.any()) and bool((np.abs(img[where].astype(int) - MAGENTA) <= tol).all())


# --- photo ------------------------------------------------------------------------------------


@pytest.fixture
def photo(tmp_path, astronaut) -> Path:
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), astronaut)
    return path


PHOTO_REGIONS = [
    {"rect": PHOTO_RECT, "mode": "solid"},
    {"polygon": PHOTO_POLYGON, "mode": "pixelate"},
]


def test_photo_regions_are_masked_and_the_excluded_face_is_left_alone(photo, tmp_path, lossless, engine, astronaut):
    write_sidecar(photo, PHOTO_REGIONS + [{"type": "exclude", "rect": PHOTO_EXCLUDE}])
    report = process_file(photo, tmp_path / "out.png", settings=lossless, engine=engine, job_id="t1")
    out = read_png(tmp_path / "out.png")
    hw = out.shape[:2]

    rect, poly = rect_mask(hw, PHOTO_RECT), poly_mask(hw, PHOTO_POLYGON)
    assert is_solid(out, rect)
    changed = np.abs(out.astype(int) - astronaut).sum(axis=2) > 0
    assert changed[shrink(poly, 1)].mean() > 0.9  # pixelated
    face = box_mask(hw, FACE)
    np.testing.assert_array_equal(out[face], astronaut[face])  # excluded: not masked
    elsewhere = ~grow(rect | poly, 2)
    np.testing.assert_array_equal(out[elsewhere], astronaut[elsewhere])

    m = report.manual_regions
    assert (m.sidecar, m.applied, m.excluded) == ("applied", 2, 1)
    # One counting rule for photos and videos (anond.report): detections after the exclusions.
    assert "face" not in report.detections and "face" not in report.masked
    assert report.masked.get("manual") == 2


def test_without_the_exclude_region_the_same_face_is_masked(photo, tmp_path, lossless, engine, astronaut):
    write_sidecar(photo, PHOTO_REGIONS)
    report = process_file(photo, tmp_path / "out.png", settings=lossless, engine=engine, job_id="t2")
    out = read_png(tmp_path / "out.png")
    face = box_mask(out.shape[:2], FACE)
    assert (np.abs(out[face].astype(int) - astronaut[face]).sum(axis=1) > 0).mean() > 0.5
    assert report.manual_regions.excluded == 0 and report.detections.get("face") == 1
    # `masked` also counts what verify masked after the first pass (at face_threshold 0.2 the
    # blurred oval above the dark collar can itself be face-like, and is masked too).
    assert report.masked.get("face") == 1 + report.verify_fixes


def test_photo_coordinates_are_those_of_the_upright_picture(tmp_path, lossless, engine):
    # Stored 100 wide x 200 high with orientation 6 ("rotate 90 clockwise"): upright 200 x 100.
    rng = np.random.default_rng(1)
    upright = rng.integers(40, 200, (100, 200, 3), np.uint8)
    stored = np.rot90(upright, 1).copy()  # what the file holds
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    src = tmp_path / "sideways.png"
    buf = io.BytesIO()
    Image.fromarray(stored[:, :, ::-1]).save(buf, "PNG", exif=exif.tobytes())
    src.write_bytes(buf.getvalue())
    rect = {"x": 150, "y": 10, "w": 40, "h": 20}  # x = 150 exists only in the upright picture
    write_sidecar(src, [{"rect": rect, "mode": "solid"}])
    report = process_file(src, tmp_path / "out.png", settings=lossless, engine=engine, job_id="t3")
    out = read_png(tmp_path / "out.png")
    assert out.shape[:2] == (100, 200)  # saved upright
    m = rect_mask(out.shape[:2], rect)
    assert is_solid(out, m)
    np.testing.assert_array_equal(out[~grow(m, 2)], upright[~grow(m, 2)])
    assert report.manual_regions.sidecar == "applied"


def test_bad_photo_sidecar_is_rejected_and_the_job_goes_on(photo, tmp_path, lossless, engine):
    write_sidecar(photo, [{"rect": PHOTO_RECT}, {"polygon": [[10, 10], [50, 50]]}])
    report = process_file(photo, tmp_path / "out.png", settings=lossless, engine=engine, job_id="t4")
    assert report.manual_regions.sidecar == "rejected: regions[1]: polygon has 2 points, needs at least 3"
    assert report.manual_regions.applied == 0
    # Automatic masking is unaffected: the face is masked (plus whatever verify found after).
    assert report.detections.get("face") == 1 and report.masked.get("face") == 1 + report.verify_fixes
    out = read_png(tmp_path / "out.png")
    assert not is_solid(out, rect_mask(out.shape[:2], PHOTO_RECT))  # nothing of the sidecar used


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"version": 1, "regions": [{"rect": ', "sidecar is not valid JSON: Expecting value (line 1, column 37)"),
        (json.dumps({"version": 1, "regions": [{"rect": {"x": 500, "y": 0, "w": 20, "h": 20}}]}),
         "regions[0]: rectangle lies outside the 512x512 frame"),
        (json.dumps({"version": 1, "regions": [{"polygon": [[0, 0], [9, 9]]}]}),
         "regions[0]: polygon has 2 points, needs at least 3"),
        (json.dumps({"version": 1, "regions": [{"rect": PHOTO_RECT, "end": 2}]}),
         "regions[0]: a time span or keyframes only apply to video, not to a still image"),
        (None, "regions sidecar is required but missing"),
    ],
)
def test_bad_photo_sidecar_fails_the_job_when_required(photo, tmp_path, lossless, engine, content, message):
    if content is not None:
        R.sidecar_path(photo).write_text(content)
    with pytest.raises(RegionsError) as exc:
        process_file(photo, tmp_path / "out.png", settings=lossless, engine=engine, job_id="t5",
                     regions_policy="required")
    assert str(exc.value) == message
    code = "regions_missing" if content is None else "regions_invalid"
    assert exc.value.report.status == "failed" and exc.value.report.error == code
    assert not (tmp_path / "out.png").exists()


# --- video ------------------------------------------------------------------------------------


def decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut) -> tuple[Path, list[np.ndarray]]:
    """2 s, 10 fps, 160x120 H.264 (lossless) of the astronaut; and its decoded frames."""
    import av

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    picture = cv2.resize(astronaut[:384], (W, H), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt, s.options = W, H, "yuv420p", {"qp": "0"}
        for i in range(N):
            frame = picture.copy()
            frame[:8, i * 8:(i + 1) * 8] = 255  # a marker that makes every frame distinct
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path, decode(path)


VIDEO_REGIONS = [
    {"rect": VIDEO_RECT, "mode": "solid", "start_frame": 5, "end_frame": 14},
    {"mode": "solid", "keyframes": [{"t": 0.5, "polygon": TRI_START.tolist()},
                                    {"t": 1.5, "polygon": TRI_END.tolist()}]},
]


def _run_video(clip, tmp_path, regions, settings, engine, **kw):
    src = tmp_path / "clip.mp4"
    src.write_bytes(clip[0].read_bytes())
    write_sidecar(src, regions)
    report = process_file(src, tmp_path / "out.mp4", settings=settings, engine=engine, job_id="v1", **kw)
    return report, decode(tmp_path / "out.mp4")


def test_video_regions_are_masked_on_exactly_the_frames_named(clip, tmp_path, lossless, engine):
    report, out = _run_video(clip, tmp_path, VIDEO_REGIONS + [{"type": "exclude", "rect": VIDEO_EXCLUDE}],
                             lossless, engine)
    ref = clip[1]
    assert len(out) == len(ref) == N
    hw = (H, W)
    rect = rect_mask(hw, VIDEO_RECT)
    face = box_mask(hw, VIDEO_FACE)
    for i, (o, r) in enumerate(zip(out, ref)):
        masked = np.zeros(hw, bool)
        if 5 <= i <= 14:
            assert is_solid(o, shrink(rect, 2), tol=6), f"rectangle not masked on frame {i}"
            masked |= rect
        else:
            np.testing.assert_array_equal(o[rect], r[rect], err_msg=f"rectangle masked on frame {i}")
        if 5 <= i <= 15:  # the triangle moves linearly from t = 0.5 s to t = 1.5 s
            a = (i / FPS - 0.5) / 1.0
            tri = poly_mask(hw, (1 - a) * TRI_START + a * TRI_END)
            assert is_solid(o, shrink(tri, 2), tol=6), f"triangle not masked (or not moved) on frame {i}"
            masked |= tri
        else:
            sweep = poly_mask(hw, [[5, 85], [90, 85], [75, 115], [20, 115]])
            np.testing.assert_array_equal(o[sweep], r[sweep], err_msg=f"triangle masked on frame {i}")
        elsewhere = ~grow(masked, 3)
        np.testing.assert_array_equal(o[elsewhere], r[elsewhere], err_msg=f"frame {i} changed elsewhere")
        np.testing.assert_array_equal(o[face], r[face], err_msg=f"excluded face masked on frame {i}")

    m = report.manual_regions
    assert (m.sidecar, m.applied) == ("applied", 2)
    assert m.excluded >= N // 2  # the face, found on (nearly) every frame, was excluded each time
    assert "face" not in report.masked and not report.tracks.get("face")


def test_video_face_outside_an_exclude_region_is_masked(clip, tmp_path, lossless, engine):
    report, out = _run_video(clip, tmp_path, VIDEO_REGIONS, lossless, engine)
    face = box_mask((H, W), VIDEO_FACE)
    changed = [(np.abs(o[face].astype(int) - r[face]).sum(axis=1) > 0).mean() for o, r in zip(out, clip[1])]
    assert min(changed) > 0.5, "the face must be masked on every frame when nothing excludes it"
    assert report.manual_regions.excluded == 0 and report.masked.get("face", 0) >= N // 2


@pytest.mark.parametrize(
    "regions, message",
    [
        ([{"rect": VIDEO_RECT, "start": 1.0, "end": 5.0}], "regions[0]: span ends at 5.00 s, beyond the 2.00 s video"),
        ([{"rect": VIDEO_RECT, "start_frame": 10, "end_frame": 25}],
         "regions[0]: span ends at frame 25, beyond the video's last frame 19"),
        ([{"rect": VIDEO_RECT}, {"rect": {"x": 150, "y": 100, "w": 20, "h": 10}}],
         "regions[1]: rectangle lies outside the 160x120 frame"),
        ([{"keyframes": [{"t": 1.5, "polygon": TRI_END.tolist()}, {"t": 0.5, "polygon": TRI_START.tolist()}]}],
         "regions[0]: keyframes out of order: keyframe 1 is not after keyframe 0"),
    ],
)
def test_bad_video_sidecar_fails_the_job_when_required(
    clip, tmp_path, lossless, engine, regions, message
):
    with pytest.raises(RegionsError) as exc:
        _run_video(clip, tmp_path, regions, lossless, engine, regions_policy="required")
    assert str(exc.value) == message
    assert not (tmp_path / "out.mp4").exists()


def test_bad_video_sidecar_is_reported_when_optional(clip, tmp_path, lossless, engine):
    report, out = _run_video(clip, tmp_path, [{"rect": VIDEO_RECT, "end": 5.0}], lossless, engine)
    assert report.manual_regions.sidecar == "rejected: regions[0]: span ends at 5.00 s, beyond the 2.00 s video"
    assert len(out) == N and report.manual_regions.applied == 0
    assert not any(is_solid(o, shrink(rect_mask((H, W), VIDEO_RECT), 2), tol=6) for o in out)


def decode_upright(path: Path) -> list[np.ndarray]:
    """Frames as a player shows them (display rotation applied)."""
    import av

    from anond.media import video as vio

    with av.open(str(path)) as c:
        return [vio.upright(f.to_ndarray(format="bgr24"), vio.frame_rotation(f)) for f in c.decode(video=0)]


def test_video_coordinates_are_those_of_the_upright_frame(tmp_path, lossless, engine, astronaut):
    import av

    # Stored 120 wide x 160 high with a 90 degree display rotation: upright 160 x 120.
    picture = cv2.resize(astronaut[:384], (W, H), interpolation=cv2.INTER_AREA)
    src = tmp_path / "rotated.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt, s.options = H, W, "yuv420p", {"qp": "0"}
        s.set_display_rotation(90)
        for _ in range(6):
            stored = np.ascontiguousarray(np.rot90(picture, -1))
            for p in s.encode(av.VideoFrame.from_ndarray(stored, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    ref = decode_upright(src)
    assert ref[0].shape[:2] == (H, W)
    rect = {"x": 130, "y": 90, "w": 24, "h": 20}  # x = 130 exists only in the upright frame
    write_sidecar(src, [{"rect": rect, "mode": "solid", "start_frame": 2, "end_frame": 3}])
    report = process_file(src, tmp_path / "out.mp4", settings=lossless, engine=engine, job_id="v2")
    out = decode_upright(tmp_path / "out.mp4")
    assert report.manual_regions.sidecar == "applied" and len(out) == 6
    m = rect_mask((H, W), rect)
    for i, (o, r) in enumerate(zip(out, ref)):
        face = box_mask((H, W), VIDEO_FACE)
        keep = ~grow(m, 3) & ~grow(face, 12)  # the face is masked automatically
        np.testing.assert_array_equal(o[keep], r[keep], err_msg=f"frame {i} changed elsewhere")
        if i in (2, 3):
            assert is_solid(o, shrink(m, 2), tol=6), f"rectangle not masked on frame {i}"
        else:
            np.testing.assert_array_equal(o[m], r[m], err_msg=f"rectangle masked on frame {i}")


# --- anond process ----------------------------------------------------------------------------


def _config(tmp_path, models_dir) -> Path:
    path = tmp_path / "anond.toml"
    path.write_text(f'[models]\ndir = "{models_dir}"\n[profile]\ntargets = ["face"]\n'
                    '[profile.mask]\nsolid_color = [255, 0, 255]\n')
    return path


def test_directory_run_uses_sidecars_and_never_copies_them(tmp_path, models_dir, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    picture = np.random.default_rng(2).integers(40, 200, (48, 64, 3), np.uint8)
    cv2.imwrite(str(src / "sub" / "a.png"), picture)
    cv2.imwrite(str(src / "b.png"), picture)
    rect = {"x": 8, "y": 8, "w": 20, "h": 10}
    write_sidecar(src / "sub" / "a.png", [{"rect": rect, "mode": "solid"}])
    (src / "orphan.jpg.regions.json").write_text("{}")  # a sidecar without media: ignored too
    rc = cli.main(["process", "--config", str(_config(tmp_path, models_dir)), str(src), str(dst)])
    assert rc == 0
    assert "2 files: 2 anonymized, 0 failed, 0 skipped" in capsys.readouterr().out
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*")) == ["b.png", "sub", "sub/a.png"]
    a, b = read_png(dst / "sub" / "a.png"), read_png(dst / "b.png")
    assert is_solid(a, rect_mask(a.shape[:2], rect))
    np.testing.assert_array_equal(b, picture)  # b has no sidecar: a's regions are not b's


def test_process_regions_option_and_required_policy(tmp_path, models_dir, capsys):
    picture = np.random.default_rng(3).integers(40, 200, (48, 64, 3), np.uint8)
    src = tmp_path / "p.png"
    cv2.imwrite(str(src), picture)
    config = str(_config(tmp_path, models_dir))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "regions": [{"rect": {"x": 60, "y": 0, "w": 20, "h": 10}}]}))
    rc = cli.main(["process", "--config", config, "--regions", str(bad), "--regions-policy", "required",
                   str(src), str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "regions[0]: rectangle lies outside the 64x48 frame" in err
    assert str(tmp_path) not in err and not (tmp_path / "o.png").exists()

    good = tmp_path / "good.json"
    rect = {"x": 4, "y": 4, "w": 10, "h": 10}
    good.write_text(json.dumps({"version": 1, "regions": [{"rect": rect, "mode": "solid"}]}))
    rc = cli.main(["process", "--config", config, "--regions", str(good), "--regions-policy", "required",
                   str(src), str(tmp_path / "o.png")])
    assert rc == 0
    assert is_solid(read_png(tmp_path / "o.png"), rect_mask((48, 64), rect))


# --- the service ------------------------------------------------------------------------------


def test_service_waits_for_required_sidecars_consumes_them_and_never_outputs_them(tmp_path, models_dir):
    from service_harness import Anond, files_under, wait_for, write_config

    req_in, req_out = tmp_path / "req_in", tmp_path / "req_out"
    opt_in, opt_out = tmp_path / "opt_in", tmp_path / "opt_out"
    failed = tmp_path / "failed"
    for d in (req_in, opt_in):
        d.mkdir()
    pictures = {name: np.random.default_rng(seed).integers(40, 200, (48, 64, 3), np.uint8)
                for seed, name in enumerate(["a", "b", "c", "d"])}
    for folder, name in ((req_in, "a"), (req_in, "b"), (opt_in, "c"), (opt_in, "d")):
        cv2.imwrite(str(folder / f"{name}.png"), pictures[name])
    rect = {"x": 8, "y": 8, "w": 20, "h": 10}
    good = [{"rect": rect, "mode": "solid"}]
    bad = [{"polygon": [[0, 0], [9, 9]]}]
    write_sidecar(req_in / "b.png", bad)  # required + bad: fails
    write_sidecar(opt_in / "c.png", bad)  # optional + bad: processed, reported as rejected
    write_sidecar(opt_in / "d.png", good)
    config = write_config(tmp_path / "anond.toml", models_dir=models_dir,
                          service={"state_dir": str(tmp_path / "state"), "failed_dir": str(failed),
                                   "stable_after_s": 0.3, "rescan_interval_s": 0.3},
                          inboxes=[{"path": str(req_in), "outbox": str(req_out), "regions": "required"},
                                   {"path": str(opt_in), "outbox": str(opt_out), "regions": "optional"}])
    svc = Anond(tmp_path, config).start()
    try:
        wait_for(lambda: (opt_out / "c.png").exists() and (opt_out / "d.png").exists(), 60, "optional outputs", svc)
        wait_for(lambda: list(failed.glob("*.reason.json")), 30, "the bad required sidecar's failure", svc)
        time.sleep(1.5)  # several rescans: a.png has no sidecar yet and must wait for it
        assert (req_in / "a.png").exists() and not (req_out / "a.png").exists()
        write_sidecar(req_in / "a.png", good)
        wait_for(lambda: (req_out / "a.png").exists(), 30, "a.png once its sidecar arrived", svc)
        assert svc.stop() == 0
    finally:
        svc.kill()

    assert files_under(req_out) == ["a.png"] and files_under(opt_out) == ["c.png", "d.png"]
    assert files_under(req_in) == [] and files_under(opt_in) == []  # sidecars consumed with their jobs
    for name, out_dir in (("a", req_out), ("d", opt_out)):
        out = read_png(out_dir / f"{name}.png")
        assert (out[rect_mask(out.shape[:2], rect)] == 0).all()  # solid, the default black
    np.testing.assert_array_equal(read_png(opt_out / "c.png"), pictures["c"])

    (reason_path,) = failed.glob("*.reason.json")
    reason = json.loads(reason_path.read_text())
    assert (reason["code"], reason["message"]) == ("regions_invalid", "regions[0]: polygon has 2 points, needs at least 3")
    job = reason["job"]
    assert files_under(failed / job) == ["b.png", "b.png.regions.json"]  # kept for the operator to fix

    reports = [json.loads(p.read_text())["manual_regions"] for p in (tmp_path / "state" / "reports").glob("*.json")]
    assert sorted(r["sidecar"] for r in reports) == [
        "applied", "applied", "rejected: regions[0]: polygon has 2 points, needs at least 3"]
    assert sorted(r["applied"] for r in reports) == [0, 1, 1]
