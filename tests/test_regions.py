"""Manual regions: the sidecar format, its validation messages and the per-frame geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anond import regions as R
from anond.errors import RegionsError
from anond.types import Detections, Target

ROOT = Path(__file__).resolve().parents[1]
RECT = {"x": 10, "y": 20, "w": 30, "h": 40}
TRIANGLE = [[0, 0], [50, 0], [25, 40]]


def load(regions, *, version=1, width=160, height=120, **video):
    return R.parse_sidecar(json.dumps({"version": version, "regions": regions}), width=width, height=height, **video)


def error(raw, **kw) -> str:
    with pytest.raises(RegionsError) as exc:
        if isinstance(raw, (str, bytes)):
            R.parse_sidecar(raw, width=kw.pop("width", 160), height=kw.pop("height", 120), **kw)
        else:
            load(raw, **kw)
    return str(exc.value)


VIDEO = dict(fps=10.0, frames=20, duration=2.0)  # 20 frames at t = 0.0, 0.1, ... 1.9


# --- the format -------------------------------------------------------------------------------


def test_committed_schema_is_the_generated_one():
    committed = json.loads((ROOT / "docs" / "regions.schema.json").read_text())
    assert committed == R.json_schema(), "regenerate: python -m anond.regions > docs/regions.schema.json"


def test_documented_examples_load():
    # Every ```json block in docs/REGIONS.md is a valid sidecar for a 1920x1080, 10 s video.
    text = (ROOT / "docs" / "REGIONS.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```json\n")[1:]]
    assert len(blocks) >= 2
    for block in blocks:
        regions = R.parse_sidecar(block, width=1920, height=1080, fps=25, duration=10.0)
        assert len(regions) == len(json.loads(block)["regions"])


def test_rect_becomes_its_four_corners_and_applies_everywhere():
    regions = load([{"rect": RECT, "mode": "pixelate"}])
    [(poly, mode)] = regions.masks_at()
    assert mode == "pixelate"
    np.testing.assert_array_equal(poly, [[10, 20], [40, 20], [40, 60], [10, 60]])
    assert regions.applied_count == 1 and regions.exclude_at() == []


def test_mode_defaults_to_none_meaning_the_profiles():
    [(_, mode)] = load([{"polygon": TRIANGLE}]).masks_at()
    assert mode is None


def test_span_in_frames_is_inclusive():
    regions = load([{"rect": RECT, "start_frame": 5, "end_frame": 9}], **VIDEO)
    active = [i for i in range(20) if regions.masks_at(i, i / 10)]
    assert active == [5, 6, 7, 8, 9]


def test_span_in_seconds_is_inclusive_at_exact_frame_times():
    regions = load([{"rect": RECT, "start": 0.5, "end": 0.9}], **VIDEO)
    active = [i for i in range(20) if regions.masks_at(i, i / 10)]
    assert active == [5, 6, 7, 8, 9]


def test_open_span():
    regions = load([{"rect": RECT, "start": 1.5}], **VIDEO)
    assert [i for i in range(20) if regions.masks_at(i, i / 10)] == [15, 16, 17, 18, 19]


def test_keyframes_interpolate_linearly_and_bound_the_span():
    tri0 = [[20, 60], [50, 60], [35, 90]]
    tri1 = [[100, 60], [130, 60], [115, 90]]
    regions = load([{"keyframes": [{"t": 0.5, "polygon": tri0}, {"t": 1.5, "polygon": tri1}]}], **VIDEO)
    assert regions.masks_at(4, 0.4) == []
    assert regions.masks_at(16, 1.6) == []
    np.testing.assert_allclose(regions.masks_at(5, 0.5)[0][0], tri0)
    np.testing.assert_allclose(regions.masks_at(10, 1.0)[0][0], [[60, 60], [90, 60], [75, 90]])
    np.testing.assert_allclose(regions.masks_at(15, 1.5)[0][0], tri1)


def test_rect_keyframes_by_frame_number_with_a_longer_span_hold_the_end_shapes():
    regions = load(
        [{"keyframes": [{"frame": 4, "rect": {"x": 0, "y": 0, "w": 10, "h": 10}},
                        {"frame": 8, "rect": {"x": 40, "y": 20, "w": 30, "h": 10}}],
          "start_frame": 0, "end_frame": 19}],
        **VIDEO,
    )
    np.testing.assert_allclose(regions.masks_at(0, 0.0)[0][0], [[0, 0], [10, 0], [10, 10], [0, 10]])
    np.testing.assert_allclose(regions.masks_at(6, 0.6)[0][0], [[20, 10], [40, 10], [40, 20], [20, 20]])
    np.testing.assert_allclose(regions.masks_at(19, 1.9)[0][0], [[40, 20], [70, 20], [70, 30], [40, 30]])


def test_applied_counts_only_regions_used_on_some_frame():
    regions = load([{"rect": RECT, "start_frame": 2, "end_frame": 3}, {"rect": RECT, "start_frame": 15}], **VIDEO)
    for i in range(5):
        regions.masks_at(i, i / 10)
    assert regions.applied_count == 1


# --- exclude regions --------------------------------------------------------------------------


def _dets(*boxes, cls=Target.FACE):
    n = len(boxes)
    return Detections(np.array(boxes, np.float32), np.ones(n), np.full(n, int(cls)))


def test_detection_mostly_inside_an_exclude_region_is_dropped():
    regions = load([{"type": "exclude", "rect": {"x": 0, "y": 0, "w": 100, "h": 100}}])
    inside = [10, 10, 30, 30]
    edge = [90, 10, 110, 30]  # half of its box outside: stays
    outside = [120, 10, 140, 30]
    kept, n = regions.filter_detections(_dets(inside, edge, outside))
    assert n == 1 and regions.excluded == 1
    np.testing.assert_array_equal(kept.xyxy, [edge, outside])


def test_exclusion_counts_only_the_detections_the_report_counts():
    """Video: all excluded detections are dropped in one pass, but only the confident ones
    (`counted`) are added to the report's `excluded`; count=False adds none."""
    regions = load([{"type": "exclude", "rect": {"x": 0, "y": 0, "w": 100, "h": 100}}])
    dets = _dets([10, 10, 30, 30], [40, 40, 60, 60], [120, 10, 140, 30])
    kept, n = regions.filter_detections(dets, counted=np.array([True, False, True]))
    assert n == 1 and regions.excluded == 1 and len(kept) == 1
    kept, n = regions.filter_detections(dets, count=False)
    assert n == 0 and regions.excluded == 1 and len(kept) == 1


def test_exclusion_threshold_is_80_percent_of_the_box():
    regions = load([{"type": "exclude", "rect": {"x": 0, "y": 0, "w": 100, "h": 100}}])
    assert R.EXCLUDE_MIN_INSIDE == 0.8
    _, n = regions.filter_detections(_dets([80, 0, 105, 10]))  # 20 of 25 px wide inside: 80 %
    assert n == 1
    _, n = regions.filter_detections(_dets([80, 0, 106, 10]))  # 20 of 26: 77 %
    assert n == 0


def test_exclusion_uses_the_polygon_not_its_bounding_box():
    regions = load([{"type": "exclude", "polygon": [[0, 0], [100, 0], [0, 100]]}])  # lower-left half
    _, n = regions.filter_detections(_dets([60, 60, 90, 90]))  # inside the bbox, outside the triangle
    assert n == 0
    _, n = regions.filter_detections(_dets([5, 5, 40, 40]))
    assert n == 1


def test_exclusion_follows_the_span_and_spares_manual_boxes():
    regions = load([{"type": "exclude", "rect": {"x": 0, "y": 0, "w": 100, "h": 100}, "start_frame": 10}], **VIDEO)
    assert regions.filter_detections(_dets([10, 10, 20, 20]), 9, 0.9)[1] == 0
    assert regions.filter_detections(_dets([10, 10, 20, 20]), 10, 1.0)[1] == 1
    assert regions.filter_detections(_dets([10, 10, 20, 20], cls=Target.MANUAL), 10, 1.0)[1] == 0
    assert regions.excluded == 1


def test_inside_fraction_of_a_concave_polygon():
    l_shape = np.array([[0, 0], [20, 0], [20, 10], [10, 10], [10, 20], [0, 20]], np.float32)
    assert R.inside_fraction(np.array([0, 0, 20, 20]), l_shape) == pytest.approx(0.75)
    assert R.inside_fraction(np.array([10, 10, 20, 20]), l_shape) == pytest.approx(0.0)


# --- bad sidecars: one specific message each --------------------------------------------------


@pytest.mark.parametrize(
    "raw, message",
    [
        ('{"version": 1, "regions": [', "sidecar is not valid JSON: Expecting value (line 1, column 28)"),
        (b'{"version": 1, "regions": ["\xff"]}', "sidecar is not UTF-8 text"),
        ("[]", "sidecar must be a JSON object with `version` and `regions`"),
        ('{"version": 2, "regions": []}', "sidecar version 2 is not supported (this anond reads version 1)"),
        ('{"regions": []}', "version: Field required"),
        ('{"version": 1}', "regions: Field required"),
    ],
)
def test_bad_file_messages(raw, message):
    assert error(raw) == message


@pytest.mark.parametrize(
    "regions, message",
    [
        ([{"rect": {"x": 150, "y": 0, "w": 20, "h": 10}}], "regions[0]: rectangle lies outside the 160x120 frame"),
        ([{"rect": {"x": -1, "y": 0, "w": 20, "h": 10}}], "regions[0]: rectangle lies outside the 160x120 frame"),
        ([{"rect": RECT}, {"polygon": [[0, 0], [10, 0], [5, 121]]}],
         "regions[1]: polygon point 2 lies outside the 160x120 frame"),
        ([{"polygon": [[0, 0], [10, 10]]}], "regions[0]: polygon has 2 points, needs at least 3"),
        ([{"polygon": []}], "regions[0]: polygon has 0 points, needs at least 3"),
        ([{"polygon": [[0, 0], [10, 10], [20, 20]]}], "regions[0]: polygon has no area (its points lie on one line)"),
        ([{"rect": {"x": 0, "y": 0, "w": 0, "h": 10}}], "regions[0]: rectangle has zero or negative size"),
        ([{"rect": RECT, "polygon": TRIANGLE}], "regions[0]: needs exactly one of rect, polygon or keyframes (got rect, polygon)"),
        ([{"type": "mask"}], "regions[0]: needs exactly one of rect, polygon or keyframes"),
        ([{"type": "exclude", "mode": "solid", "rect": RECT}], "regions[0]: an exclude region has no mask mode"),
        ([{"rect": RECT, "mode": "smudge"}], "regions[0].mode: Input should be 'blur', 'pixelate' or 'solid'"),
        ([{"rect": RECT, "colour": "red"}], "regions[0].colour: Extra inputs are not permitted"),
        ([{"type": "hide", "rect": RECT}], "regions[0].type: Input should be 'mask' or 'exclude'"),
        ([{"rect": {"x": 0, "y": 0, "w": 10}}], "regions[0].rect.h: Field required"),
        ([{"polygon": [[0, 0, 1], [5, 5], [0, 5]]}], "regions[0].polygon[0]: Tuple should have at most 2 items after validation, not 3"),
        ([{"rect": RECT, "start": -1}], "regions[0].start: Input should be greater than or equal to 0"),
        ([{"rect": RECT, "start": 1}], "regions[0]: a time span or keyframes only apply to video, not to a still image"),
    ],
)
def test_bad_region_messages_for_a_photo(regions, message):
    assert error(regions) == message


@pytest.mark.parametrize(
    "regions, message",
    [
        ([{"rect": RECT, "start": 1.0, "end": 3.5}], "regions[0]: span ends at 3.50 s, beyond the 2.00 s video"),
        ([{"rect": RECT, "start": 2.5}], "regions[0]: span starts at 2.50 s, beyond the 2.00 s video"),
        ([{"rect": RECT, "start_frame": 5, "end_frame": 20}], "regions[0]: span ends at frame 20, beyond the video's last frame 19"),
        ([{"rect": RECT, "start": 1.0, "end": 0.5}], "regions[0]: span ends before it starts"),
        ([{"rect": RECT, "start": 0.5, "end_frame": 9}],
         "regions[0]: mixes seconds (start, end, t) and frame numbers (start_frame, end_frame, frame)"),
        ([{"keyframes": [{"t": 1.0, "rect": RECT}, {"t": 0.5, "rect": RECT}]}],
         "regions[0]: keyframes out of order: keyframe 1 is not after keyframe 0"),
        ([{"keyframes": [{"frame": 3, "rect": RECT}, {"frame": 3, "rect": RECT}]}],
         "regions[0]: keyframes out of order: keyframe 1 is not after keyframe 0"),
        ([{"keyframes": [{"t": 0.5, "polygon": TRIANGLE}, {"t": 1.0, "polygon": [[0, 0], [9, 0], [9, 9], [0, 9]]}]}],
         "regions[0]: keyframe 1 has 4 points, keyframe 0 has 3"),
        ([{"keyframes": [{"t": 0.5, "polygon": TRIANGLE}, {"t": 1.0, "rect": RECT}]}],
         "regions[0]: keyframe 1 mixes rect and polygon with keyframe 0"),
        ([{"keyframes": [{"rect": RECT}]}], "regions[0]: keyframe 0 needs exactly one of t or frame"),
        ([{"keyframes": [{"t": 0.1}]}], "regions[0]: keyframe 0 needs exactly one of rect or polygon"),
        ([{"keyframes": [{"t": 0.1, "rect": RECT}, {"t": 0.3, "rect": {"x": 150, "y": 0, "w": 20, "h": 5}}]}],
         "regions[0]: keyframe 1: rectangle lies outside the 160x120 frame"),
        ([{"keyframes": [{"t": 0.1, "polygon": [[0, 0], [5, 5]]}]}],
         "regions[0]: keyframe 0: polygon has 2 points, needs at least 3"),
        ([{"keyframes": [{"t": 0.1, "rect": RECT}, {"t": 4.0, "rect": RECT}], "end": 1.0}],
         "regions[0]: last keyframe is at 4.00 s, beyond the 2.00 s video"),
        ([{"keyframes": []}], "regions[0]: keyframes is empty"),
    ],
)
def test_bad_region_messages_for_a_video(regions, message):
    assert error(regions, **VIDEO) == message


def test_the_last_frame_time_and_one_frame_of_slack_are_within_the_video():
    load([{"rect": RECT, "start": 1.9, "end": 2.1}], **VIDEO)
    load([{"rect": RECT, "start_frame": 19, "end_frame": 19}], **VIDEO)


def test_messages_carry_no_path(tmp_path):
    secret = tmp_path / "Jane Doe at home.jpg"
    sidecar = R.sidecar_path(secret)
    sidecar.write_text('{"version": 1, "regions": [{"polygon": [[0, 0], [1, 1]]}]}')
    with pytest.raises(RegionsError) as exc:
        R.load_sidecar(sidecar, width=160, height=120)
    assert "Jane" not in str(exc.value) and str(tmp_path) not in str(exc.value)
    with pytest.raises(RegionsError) as exc:
        R.load_sidecar(tmp_path / "missing.regions.json", width=160, height=120)
    assert str(exc.value) == "sidecar could not be read: No such file or directory"


# --- finding sidecars and the policy ----------------------------------------------------------


def test_sidecar_is_found_beside_the_media_by_full_name(tmp_path):
    media = tmp_path / "photo.jpg"
    media.write_bytes(b"x")
    assert R.find_sidecar(media) is None
    (tmp_path / "photo.regions.json").write_text("{}")  # wrong name: not the photo's
    assert R.find_sidecar(media) is None
    (tmp_path / "photo.jpg.regions.json").write_text("{}")
    assert R.find_sidecar(media) == tmp_path / "photo.jpg.regions.json"
    assert R.is_sidecar(tmp_path / "photo.jpg.regions.json") and R.is_sidecar("A.MP4.REGIONS.JSON")
    assert not R.is_sidecar(media) and not R.is_sidecar(tmp_path / "regions.json.jpg")


def _resolve(media, **kw):
    return R.resolve(media, width=160, height=120, **kw)


def test_policy_decides_what_a_missing_or_bad_sidecar_does(tmp_path):
    media = tmp_path / "photo.jpg"
    media.write_bytes(b"x")
    regions, status = _resolve(media)
    assert (len(regions), status) == (0, "none")
    with pytest.raises(RegionsError, match="^regions sidecar is required but missing$"):
        _resolve(media, policy="required")

    R.sidecar_path(media).write_text('{"version": 1, "regions": [{"polygon": [[0, 0], [1, 1]]}]}')
    regions, status = _resolve(media)
    assert (len(regions), status) == (0, "rejected: regions[0]: polygon has 2 points, needs at least 3")
    with pytest.raises(RegionsError, match=r"^regions\[0\]: polygon has 2 points, needs at least 3$"):
        _resolve(media, policy="required")
    assert _resolve(media, policy="off")[1] == "none"

    R.sidecar_path(media).write_text(json.dumps({"version": 1, "regions": [{"rect": RECT}]}))
    regions, status = _resolve(media, policy="required")
    assert (len(regions), status) == (1, "applied")


def test_explicit_regions_file_wins_over_the_sidecar(tmp_path):
    media = tmp_path / "photo.jpg"
    media.write_bytes(b"x")
    R.sidecar_path(media).write_text("not json")
    other = tmp_path / "manual.json"
    other.write_text(json.dumps({"version": 1, "regions": [{"rect": RECT}, {"polygon": TRIANGLE}]}))
    regions, status = _resolve(media, regions_path=other)
    assert (len(regions), status) == (2, "applied")
    assert _resolve(media, regions_path=tmp_path / "nope.json")[1] == "rejected: regions file not found"
    with pytest.raises(RegionsError, match="required but missing"):
        _resolve(media, regions_path=tmp_path / "nope.json", policy="required")
