"""Readers for labelled image sets, on tiny generated files in each format (and the real sets)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from anond.evaluation.datasets import DatasetError, read_dataset


def _image(path, w=200, h=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))
    return path


def test_voc_reads_every_class_as_the_target_and_ignores_difficult(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text("""<annotation><filename>a.jpg</filename>
      <object><name>con_mascarilla</name><difficult>0</difficult>
        <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax><ymax>50</ymax></bndbox></object>
      <object><name>sin_mascarilla</name>
        <bndbox><xmin>40</xmin><ymin>5</ymin><xmax>60</xmax><ymax>25</ymax></bndbox></object>
      <object><name>other</name><difficult>1</difficult>
        <bndbox><xmin>70</xmin><ymin>5</ymin><xmax>90</xmax><ymax>25</ymax></bndbox></object>
    </annotation>""")
    [s] = read_dataset(tmp_path, "voc")
    assert s.image.name == "a.jpg"
    np.testing.assert_array_equal(s.boxes, [[10, 20, 30, 50], [40, 5, 60, 25], [70, 5, 90, 25]])
    assert s.ignore.tolist() == [False, False, True]
    [s] = read_dataset(tmp_path, "voc", labels=["sin_mascarilla"])
    np.testing.assert_array_equal(s.boxes, [[40, 5, 60, 25]])


def test_coco_converts_xywh_and_ignores_crowds(tmp_path):
    _image(tmp_path / "images" / "x.png")
    _image(tmp_path / "images" / "y.png")
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "x.png"}, {"id": 2, "file_name": "y.png"}],
        "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "plate"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 5, 6], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 10], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "iscrowd": 1},
        ]}))
    x, y = read_dataset(tmp_path, "coco", labels=["face"])
    np.testing.assert_array_equal(x.boxes, [[10, 20, 15, 26], [0, 0, 40, 40]])
    assert x.ignore.tolist() == [False, True]
    assert len(y.boxes) == 0  # an image with no object still counts (false positives)
    x, _ = read_dataset(tmp_path / "instances.json", "coco")
    assert len(x.boxes) == 3


def test_yolo_denormalises_with_the_image_size(tmp_path):
    _image(tmp_path / "images" / "sub" / "a.jpg", w=200, h=100)
    _image(tmp_path / "images" / "b.jpg")
    (tmp_path / "labels" / "sub").mkdir(parents=True)
    (tmp_path / "labels" / "sub" / "a.txt").write_text("0 0.5 0.5 0.1 0.2\n1 0.25 0.25 0.5 0.5\n")
    b, a = read_dataset(tmp_path, "yolo")  # sorted by path: images/b.jpg first
    np.testing.assert_allclose(a.boxes, [[90, 40, 110, 60], [0, 0, 100, 50]])
    assert len(b.boxes) == 0
    _, a = read_dataset(tmp_path, "yolo", labels=["1"])
    np.testing.assert_allclose(a.boxes, [[0, 0, 100, 50]])


def test_wider_reads_counts_zero_lines_and_invalid_flags(tmp_path):
    _image(tmp_path / "images" / "0--Parade" / "p1.jpg")
    _image(tmp_path / "images" / "0--Parade" / "p2.jpg")
    (tmp_path / "wider_face_val_bbx_gt.txt").write_text(
        "0--Parade/p1.jpg\n2\n"
        "10 20 30 40 0 0 0 0 0 0 \n"
        "5 5 8 9 2 0 0 1 0 0 \n"
        "0--Parade/p2.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    p1, p2 = read_dataset(tmp_path, "wider")
    np.testing.assert_array_equal(p1.boxes, [[10, 20, 40, 60], [5, 5, 13, 14]])
    assert p1.ignore.tolist() == [False, True]
    assert len(p2.boxes) == 0


def test_openalpr_reads_boxes_and_keeps_no_text(tmp_path):
    _image(tmp_path / "car1.jpg")
    (tmp_path / "car1.txt").write_text("car1.jpg 396 340 203 46 AB123CD\n")
    (tmp_path / "SOURCE.txt").write_text("OpenALPR benchmark photos, region 'eu'\nformat: one .txt\n")
    [s] = read_dataset(tmp_path, "openalpr")
    np.testing.assert_array_equal(s.boxes, [[396, 340, 599, 386]])
    assert "AB123CD" not in repr(s)


def test_missing_or_wrong_format_is_a_one_line_error_without_the_path(tmp_path):
    with pytest.raises(DatasetError) as exc:
        read_dataset(tmp_path / "nope", "voc")
    assert str(tmp_path) not in str(exc.value)
    with pytest.raises(DatasetError):
        read_dataset(tmp_path, "voc")  # no annotation at all
    with pytest.raises(DatasetError):
        read_dataset(tmp_path, "pascal")


@pytest.mark.data
def test_real_sets_have_the_documented_counts(data_dir):
    faces = read_dataset(data_dir / "faces" / "face_mask", "voc")
    assert len(faces) == 853 and sum(len(s.boxes) for s in faces) == 4072
    eu = read_dataset(data_dir / "plates" / "openalpr_eu", "openalpr")
    br = read_dataset(data_dir / "plates" / "openalpr_br", "openalpr")
    assert len(eu) == 108 and len(br) == 114
    assert all(len(s.boxes) == 1 for s in eu + br)
