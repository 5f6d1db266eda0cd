"""The review UI end to end: a real `anond run` with a review inbox and [web] enabled, driven by
Debian's chromium through Playwright (log in, exclude a detected face, draw a rectangle, key a
moving box on a video, apply, approve), then the outbox pixels checked, and the privacy rule
checked on everything the run left (logs, job table, reports): no name, no coordinate.

Screenshots of the editor go to docs/ when ANOND_UPDATE_SCREENSHOTS=1 (else a temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from service_harness import Anond, decode, encode_jpeg, wait_for, write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(packaging/setup-system.sh installs it)")
NAMES = ["Jane_Doe", "ABC123", "Holiday_Oslo"]
PHOTO = "Jane_Doe_ABC123.jpg"
VIDEO = "Holiday_Oslo.mp4"
FRAMES, W, H = 40, 320, 240


@pytest.fixture(scope="session")
def browser_type_launch_args():
    return {"executable_path": CHROMIUM, "args": ["--no-sandbox"]}


@pytest.fixture(scope="module")
def review(tmp_path_factory, models_dir):
    """The service (review inbox, web UI on a free port), its folders and its login token."""
    tmp = tmp_path_factory.mktemp("review")
    inbox, outbox, failed, state = (tmp / n for n in ("inbox", "outbox", "failed", "state"))
    config = write_config(
        tmp / "anond.toml", models_dir=models_dir,
        service={"state_dir": str(state), "failed_dir": str(failed), "stable_after_s": 0.3},
        inboxes=[{"path": str(inbox), "outbox": str(outbox), "review": True}],
        sections={"web": {"enabled": True, "port": 0}})
    svc = Anond(tmp, config, log_level="debug").start()
    try:
        (listening,) = svc.wait_event("web.listening", 90)
        svc.wait_ready()
        token = (state / "web.token").read_text().strip()
        yield {"svc": svc, "url": f"http://127.0.0.1:{listening['port']}", "token": token,
               "inbox": inbox, "outbox": outbox, "failed": failed, "state": state, "tmp": tmp}
    finally:
        svc.kill()


def _photo() -> np.ndarray:
    """The scikit-image astronaut (a real face) beside a texture a blur visibly changes."""
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[:, :, ::-1], (384, 384), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(7)
    texture = cv2.resize(rng.integers(0, 256, (48, 32, 3), dtype=np.uint8), (256, 384),
                         interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(np.hstack([face, texture]))


def _video(path: Path) -> None:
    """FRAMES frames of a coarse texture (survives H.264) drifting slowly, 25 fps."""
    import av
    import cv2

    rng = np.random.default_rng(3)
    base = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (W + 40, H),
                      interpolation=cv2.INTER_NEAREST)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "12", "g": "10"}  # keyframes every 10: seeks decode forward
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, i // 2:i // 2 + W]),
                                               format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24").astype(np.float32) for f in c.decode(video=0)]


def _login(page, review) -> None:
    page.goto(review["url"] + "/")
    assert page.url.endswith("/login")  # redirected: not logged in
    page.fill("#secret", "wrong-" + review["token"])
    page.click("#login")
    page.wait_for_selector("#login-error:has-text('Wrong')")
    page.fill("#secret", review["token"])
    page.click("#login")
    page.wait_for_url(review["url"] + "/")


def _open_job(page, review, name: str) -> str:
    row = page.locator("#queue tbody tr", has_text=name)
    row.locator("td", has_text="ready").wait_for(timeout=120_000)
    job = row.get_attribute("data-job")
    row.locator("a.job-link").click()
    page.wait_for_selector("body[data-ready='1']")
    return job


def _client(page, x: float, y: float) -> tuple[float, float]:
    return tuple(page.evaluate("([x, y]) => window.editor.imageToClient(x, y)", [x, y]))


def _drag(page, a, b) -> None:
    page.mouse.move(*_client(page, *a))
    page.mouse.down()
    page.mouse.move(*_client(page, *((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)))
    page.mouse.move(*_client(page, *b))
    page.mouse.up()


def _apply_and_approve(page, review, shots: str) -> None:
    page.click("#apply")
    page.wait_for_selector("#stage[data-revision='2']", timeout=120_000)
    page.wait_for_timeout(300)
    target = ROOT / "docs" if os.environ.get("ANOND_UPDATE_SCREENSHOTS") == "1" else review["tmp"]
    page.screenshot(path=str(target / shots), type="jpeg", quality=80)
    page.click("#approve")
    page.wait_for_selector("body[data-done='approve']", timeout=120_000)


def _mean_diff(a: np.ndarray, b: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return float(np.abs(a[y0:y1, x0:x1].astype(np.float32) - b[y0:y1, x0:x1].astype(np.float32)).mean())


def test_the_ui_needs_a_login_and_every_post_a_csrf_token(review, page):
    url = review["url"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "/api/jobs", timeout=10)
    assert err.value.code == 401
    assert err.value.headers["Cache-Control"] == "no-store"
    assert "default-src 'self'" in err.value.headers["Content-Security-Policy"]
    response = page.request.get(url + "/", max_redirects=0, headers={"Accept": "text/html"})
    assert response.status == 303 and response.headers["location"] == "/login"
    _login(page, review)
    assert page.request.get(url + "/api/jobs").status == 200
    # Logged in, but a POST without the page's CSRF token is refused, and so is a wrong one.
    assert page.request.post(url + "/api/jobs/x/approve").status == 403
    assert page.request.post(url + "/api/jobs/x/approve", headers={"X-CSRF-Token": "guess"}).status == 403
    assert page.request.post(url + "/api/login", data={"secret": review["token"]}).status == 403


def test_photo_exclude_a_face_draw_a_rectangle_apply_approve(review, page):
    folder = review["inbox"] / "Jane_Doe"
    folder.mkdir()
    (folder / PHOTO).write_bytes(encode_jpeg(_photo(), 95))
    original = decode(folder / PHOTO)  # what the service reads
    _login(page, review)
    _open_job(page, review, PHOTO)
    faces = [b for b in page.evaluate("window.editor.state.boxes['0'] || []") if b[4] == 0]
    assert len(faces) == 1, faces
    face = faces[0][:4]
    page.mouse.click(*_client(page, (face[0] + face[2]) / 2, (face[1] + face[3]) / 2))  # exclude it
    page.keyboard.press("r")
    rect = (420, 60, 600, 200)
    _drag(page, rect[:2], rect[2:])
    sidecar = page.evaluate("window.editor.sidecar()")
    assert [r["type"] for r in sidecar["regions"]] == ["exclude", "mask"]
    from anond.regions import parse_sidecar  # what the editor saves, `anond process` reads

    assert len(parse_sidecar(json.dumps(sidecar), width=original.shape[1], height=original.shape[0])) == 2
    _apply_and_approve(page, review, "review-photo.jpg")

    out_path = review["outbox"] / "Jane_Doe" / PHOTO
    wait_for(out_path.exists, 60, "the approved photo in the outbox", review["svc"])
    out = decode(out_path)
    assert out.shape == original.shape
    assert _mean_diff(out, original, rect) > 20  # the drawn rectangle is masked
    assert _mean_diff(out, original, face) < 4  # the excluded face is not
    rest = np.abs(out.astype(np.float32) - original.astype(np.float32)).mean(axis=2)
    keep = np.ones(rest.shape, bool)
    keep[rect[1] - 8:rect[3] + 8, rect[0] - 8:rect[2] + 8] = False
    assert float(rest[keep].mean()) < 3  # and nothing else changed (JPEG noise only)
    assert not any(review["state"].glob("review/*"))  # the review area is emptied


def test_video_box_keyed_at_frames_5_and_20_masks_exactly_that_span(review, page):
    src = review["tmp"] / VIDEO
    _video(src)
    original = _frames(src)
    shutil.copy(src, review["inbox"] / VIDEO)
    _login(page, review)
    _open_job(page, review, VIDEO)
    for _ in range(5):
        page.click("#step-next")
    page.wait_for_selector("#stage[data-loaded-frame='5']")
    page.keyboard.press("r")
    a0, a1 = (30, 30), (90, 90)
    _drag(page, a0, a1)
    for _ in range(15):
        page.keyboard.press("ArrowRight")
    page.wait_for_selector("#stage[data-loaded-frame='20']")
    page.keyboard.press("v")
    _drag(page, (60, 60), (210, 160))  # the box's centre moved by (150, 100)
    (region,) = page.evaluate("window.editor.sidecar()")["regions"]
    assert [k["frame"] for k in region["keyframes"]] == [5, 20]
    assert (region["start_frame"], region["end_frame"]) == (5, 20)
    _apply_and_approve(page, review, "review-video.jpg")

    (landed,) = wait_for(lambda: list(review["outbox"].glob("Holiday_Oslo.*")), 60, "the video",
                         review["svc"])
    out = _frames(landed)
    assert len(out) == FRAMES
    for i in range(FRAMES):
        # the box where it is at frame i (held at its first/last keyframe outside 5..20), inset
        a = min(1.0, max(0.0, (i - 5) / 15))
        x0, y0 = a0[0] + 150 * a, a0[1] + 100 * a
        inner = _mean_diff(out[i], original[i], (x0 + 12, y0 + 12, x0 + 48, y0 + 48))
        if 5 <= i <= 20:
            assert inner > 20, (i, inner)  # masked along the interpolated path
        else:
            assert inner < 6, (i, inner)  # re-encoding noise only
            assert float(np.abs(out[i] - original[i]).mean()) < 3.5, i


def test_nothing_personal_in_logs_state_or_reports_after_the_browser_tests(review):
    svc, state = review["svc"], review["state"]
    wait_for(lambda: not svc.events("job.started") or len(svc.events("job.completed")) >= 2,
             60, "both jobs completed", svc)
    assert svc.stop() == 0
    logs = (svc.stdout() + svc.stderr()).encode()
    state_bytes = b"".join(p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file())
    assert b"web.request" in logs and b"review.decided" in logs
    for where, data in {"logs": logs, "state": state_bytes}.items():
        for secret in NAMES:
            assert secret.encode() not in data, (where, secret)
        for coordinate in (b'"rect"', b'"polygon"', b'"keyframes"', b"xyxy"):
            assert coordinate not in data, (where, coordinate)
    reports = [json.loads(p.read_text()) for p in (state / "reports").glob("*.json")]
    assert len(reports) == 2 and all(r["manual_regions"]["applied"] >= 1 for r in reports)
