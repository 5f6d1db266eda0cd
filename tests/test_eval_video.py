"""Temporal metrics: hand-made sequences with known answers, and a real clip through the stages."""

from __future__ import annotations

import numpy as np
import pytest

from anond.evaluation.video import (
    flicker_events,
    format_video,
    link_reference_tracks,
    stability,
    summarize_tracks,
)
from anond.types import Detections

T, F = True, False


def test_flicker_is_masked_unmasked_masked():
    assert flicker_events([T, T, F, T, F, F, T]) == 2
    assert flicker_events([T, F, T, F, T]) == 2
    assert flicker_events([F, T, T, F]) == 0  # unmasked ends are not flickers
    assert flicker_events([T, T, T]) == 0
    assert flicker_events([T, F]) == 0


def test_stability_is_the_masked_share_of_the_life():
    assert stability([T, T, F, T]) == 0.75
    s = summarize_tracks([np.array([T, T, F, T]), np.array([T, T])])
    assert s["tracks"] == 2 and s["track_frames"] == 6
    assert s["stability_mean"] == pytest.approx(0.875) and s["stability_min"] == 0.75
    assert s["fully_stable_tracks"] == 1 and s["flicker_events"] == 1
    assert s["masked_share"] == pytest.approx(5 / 6)


def _dets(*boxes, cls=0):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9),
                      np.full(len(boxes), cls))


def test_reference_tracks_link_across_short_gaps_and_drop_blips():
    walk = lambda f: [100 + 4 * f, 50, 140 + 4 * f, 90]  # noqa: E731 - a face moving right
    frames = [_dets(walk(0)), _dets(walk(1)), _dets(walk(2), [500, 500, 520, 520]), Detections(),
              _dets(walk(4)), _dets(walk(5)),
              _dets(walk(6), cls=1)]  # a plate at the same place is another object
    [t] = link_reference_tracks(frames, max_gap=3)
    assert t.frames == [0, 1, 2, 4, 5] and list(t.life) == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(t.box_at(3), walk(3))  # interpolated across the miss
    # With consecutive detections required (max_gap=1) the miss splits the object in two:
    # 3 hits (kept) and 2 hits (below min_hits).
    [t] = link_reference_tracks(frames, max_gap=1)
    assert t.frames == [0, 1, 2]
    assert [t.frames for t in link_reference_tracks(frames, max_gap=1, min_hits=2)] == [[0, 1, 2], [4, 5]]


def test_format_video_lists_both_maskings():
    track = {"tracks": 1, "track_frames": 4, "stability_mean": 0.75, "stability_min": 0.75,
             "fully_stable_tracks": 0, "flicker_events": 1, "masked_share": 0.75}
    r = {"frames": 4, "duration_s": 0.16, "fps": 25.0, "targets": ["face"], "models": {"face": "m"},
         "frames_with_mask": 1.0, "verify_residuals": 0, "detections_per_frame": {"face": 0.75},
         "masks_per_frame": {"face": 1.0}, "anond_tracks": {"face": 1},
         "reference_tracks": {"per_frame": track, "anond": dict(track, flicker_events=0)},
         "settings": {"min_hits": 3}, "false_positives_per_hour": {"detections (per-frame)": {"face": 3.0}}}
    text = format_video(r)
    assert "flicker events" in text and "false positives per hour" in text


@pytest.mark.data
@pytest.mark.slow
def test_real_clip_tracking_masks_at_least_as_steadily_as_per_frame(data_dir, settings, engine):
    from anond.evaluation.video import evaluate_video

    face_only = settings.model_copy(deep=True)
    face_only.profiles["default"].targets = ["face"]
    r = evaluate_video(data_dir / "video" / "hamilton" / "short_hamilton_clip.mp4", face_only,
                       max_frames=24, show_progress=False, engine=engine, negative=True)
    assert r["frames"] == 24 and r["detected_frames"] == 24
    assert r["detections_per_frame"]["face"] >= 0.8  # the performer is on screen throughout
    a, p = r["reference_tracks"]["anond"], r["reference_tracks"]["per_frame"]
    assert a["tracks"] >= 1 and a["track_frames"] == p["track_frames"]
    assert a["stability_mean"] >= p["stability_mean"] and a["stability_mean"] > 0.9
    assert a["flicker_events"] <= p["flicker_events"]
    assert r["false_positives_per_hour"]["detections (per-frame)"]["face"] > 0
