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


def run(src: Path, out: Path, settings) -> JobReport:
    from anond.detect.engine import Engine

    engine = Engine.load(settings, settings.profile.targets)
    report = JobReport.start("data", "video", engine=engine, profile=settings.profile)
    process_video(src, out, settings=settings, engine=engine, profile=settings.profile, report=report)
    return report


def frames_and_times(path: Path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.to_ndarray(format="bgr24"), f.pts * v.time_base) for f in c.decode(v)]
    with av.open(str(path)) as c:
        audio = [bytes(p) for p in c.demux(audio=0) if p.size] if c.streams.audio else []
    return [f for f, _ in frames], [t for _, t in frames], audio


def test_hamilton_is_masked_for_an_independent_detector(data_dir, models_dir, tmp_path):
    src = data_dir / "video" / "hamilton" / "short_hamilton_clip.mp4"
    out = tmp_path / "out.mp4"
    settings = load_settings(None, models={"dir": models_dir}, profile={"targets": ["face"]})
    report = run(src, out, settings)

    frames_in, times_in, audio_in = frames_and_times(src)
    frames_out, times_out, audio_out = frames_and_times(out)
    assert len(frames_in) == len(frames_out) == report.media.frames == 275
    assert times_out == times_in
    assert audio_out and audio_out == audio_in
    assert report.tracks.get("face", 0) >= 1

    from anond.detect.engine import Engine

    checker_name = CHECKERS[settings.models.face]
    checker_settings = load_settings(None, models={"dir": models_dir, "face": checker_name})
    checker = Engine.load(checker_settings, ["face"])
    assert checker.models[0].family != "centerface" or settings.models.face != "centerface"
    detect = checker_settings.profile.detect
    found_in = sum(len(d) for d in _detect_all(checker, frames_in, detect))
    found_out = sum(len(d) for d in _detect_all(checker, frames_out, detect))
    print(f"independent {checker_name}: {found_in} faces in the input, {found_out} in the output")
    assert found_in >= 200  # the check is only worth something if the checker sees the faces
    assert found_out <= 0.01 * found_in


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
    frames_out, times_out, _ = frames_and_times(out)
    assert report.media.frames == len(frames_out) == frames
    assert report.skipped_packets == 0
    assert all(np.diff([float(t) for t in times_out]) > 0)
    if src.suffix == ".mp4":
        _, times_in, audio_in = frames_and_times(src)
        assert times_out == times_in
        with av.open(str(out)) as c:
            assert len(c.streams.audio) == 1
