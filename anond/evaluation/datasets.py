"""Readers for labelled image sets: one `Sample` (image path + ground-truth boxes) per image.

Formats (`DIR` is what `anond eval --dataset` names):
- ``voc``: Pascal VOC XML per image, in ``DIR/annotations/`` (or ``DIR/Annotations/`` or next
  to the images); the image is ``<filename>`` looked up in ``DIR/images/``, ``DIR/JPEGImages/``
  or beside the XML. Every object counts unless `labels` names the classes to keep;
  ``<difficult>1`` objects are ignored (neither missed nor false positives).
- ``coco``: a COCO JSON (``DIR`` itself, or the only ``*.json`` in ``DIR`` or ``DIR/annotations``);
  images relative to ``DIR`` or ``DIR/images``. ``iscrowd`` boxes are ignored.
- ``yolo``: ``DIR/images/**`` with ``DIR/labels/**.txt`` of the same stem
  (``cls cx cy w h``, normalised); `labels` are class ids.
- ``wider``: WIDER FACE ``*_bbx_gt.txt`` (or the only ``*.txt``) in ``DIR``, images under
  ``DIR/images/``; ``invalid`` boxes are ignored, zero-size boxes dropped.
- ``openalpr``: ``name.jpg`` with ``name.txt``: ``name.jpg x y w h TEXT`` per line. The text
  is never read into memory beyond the line split, never stored, never printed.

Only box coordinates are kept. Errors name the format problem, never a file or a path.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

FORMATS = ("voc", "coco", "yolo", "wider", "openalpr")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class DatasetError(ConfigError):
    """The data set is missing or not in the format named."""

    code = "dataset"


@dataclass
class Sample:
    """One labelled image: xyxy float64 boxes (N, 4) and an ignore flag per box."""

    image: Path
    boxes: np.ndarray
    ignore: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.ignore = np.asarray(self.ignore, bool).reshape(-1)
        if len(self.ignore) != len(self.boxes):
            raise ValueError("boxes and ignore differ in length")


def read_dataset(root: str | Path, fmt: str, labels: list[str] | None = None) -> list[Sample]:
    """Samples of the data set at `root` in format `fmt`, sorted by image path."""
    root = Path(root)
    if not root.exists():
        raise DatasetError("data set not found")
    readers = {"voc": read_voc, "coco": read_coco, "yolo": read_yolo, "wider": read_wider,
               "openalpr": read_openalpr}
    if fmt not in readers:
        raise DatasetError(f"unknown data set format {fmt!r}: one of {', '.join(FORMATS)}")
    samples = readers[fmt](root, labels)
    if not samples:
        raise DatasetError(f"no labelled images found in the {fmt} data set")
    return sorted(samples, key=lambda s: str(s.image))


def _sample(image: Path, boxes: list, ignore: list) -> Sample:
    return Sample(image, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(ignore, bool))


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


# --- Pascal VOC ---------------------------------------------------------------------------

def read_voc(root: Path, labels: list[str] | None = None) -> list[Sample]:
    ann_dir = _first_dir(root, ("annotations", "Annotations")) or root
    image_dirs = [d for d in (_first_dir(root, ("images", "JPEGImages")), ann_dir, root) if d]
    samples = []
    for xml in sorted(ann_dir.glob("*.xml")):
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError:
            raise DatasetError("a VOC annotation is not valid XML") from None
        filename = (tree.findtext("filename") or "").strip() or xml.with_suffix(".jpg").name
        image = next((d / filename for d in image_dirs if (d / filename).is_file()), None)
        if image is None:
            stem = [p for d in image_dirs for p in d.glob(xml.stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES]
            if not stem:
                raise DatasetError("a VOC annotation names an image that is not there")
            image = stem[0]
        boxes, ignore = [], []
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if labels and name not in labels:
                continue
            bb = obj.find("bndbox")
            if bb is None:
                continue
            try:
                box = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                raise DatasetError("a VOC box has a missing or non-numeric coordinate") from None
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            boxes.append(box)
            ignore.append((obj.findtext("difficult") or "0").strip() == "1")
        samples.append(_sample(image, boxes, ignore))
    return samples


# --- COCO ---------------------------------------------------------------------------------

def read_coco(root: Path, labels: list[str] | None = None) -> list[Sample]:
    if root.is_file():
        ann_file, base = root, root.parent
    else:
        candidates = sorted(root.glob("*.json")) or sorted((root / "annotations").glob("*.json"))
        if len(candidates) != 1:
            raise DatasetError("a COCO data set needs exactly one JSON annotation file")
        ann_file, base = candidates[0], root
    try:
        data = json.loads(ann_file.read_text())
        images = {im["id"]: im["file_name"] for im in data["images"]}
        cats = {c["id"]: str(c.get("name", c["id"])) for c in data.get("categories", [])}
        anns = data.get("annotations", [])
    except (KeyError, TypeError, ValueError):
        raise DatasetError("the COCO annotation file lacks images/annotations") from None
    keep_cats = None
    if labels:
        keep_cats = {cid for cid, name in cats.items() if name in labels or str(cid) in labels}
    per_image: dict = {iid: ([], []) for iid in images}
    for a in anns:
        if keep_cats is not None and a.get("category_id") not in keep_cats:
            continue
        if a.get("image_id") not in per_image:
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        if w <= 0 or h <= 0:
            continue
        per_image[a["image_id"]][0].append([x, y, x + w, y + h])
        per_image[a["image_id"]][1].append(bool(a.get("iscrowd", 0)))
    image_dirs = [base, base / "images"]
    samples = []
    for iid, name in images.items():
        image = next((d / name for d in image_dirs if (d / name).is_file()), None)
        if image is None:
            raise DatasetError("the COCO annotation names an image that is not there")
        samples.append(_sample(image, *per_image[iid]))
    return samples


# --- YOLO ---------------------------------------------------------------------------------

def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:  # reads the header only
        w, h = im.size
        # Boxes refer to the upright image, the one the pipeline sees.
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    return w, h


def read_yolo(root: Path, labels: list[str] | None = None) -> list[Sample]:
    image_root = root / "images" if (root / "images").is_dir() else root
    label_root = root / "labels" if (root / "labels").is_dir() else image_root
    keep = {int(c) for c in labels} if labels else None
    samples = []
    for image in sorted(p for p in image_root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        label_file = label_root / image.relative_to(image_root).with_suffix(".txt")
        boxes = []
        if label_file.is_file():
            w, h = _image_size(image)
            for line in label_file.read_text().splitlines():
                parts = line.split()
                if not parts:
                    continue
                try:
                    cls, cx, cy, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
                except (ValueError, TypeError):
                    raise DatasetError("a YOLO label line is not `cls cx cy w h`") from None
                if keep is not None and cls not in keep:
                    continue
                if bw > 0 and bh > 0:
                    boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        samples.append(_sample(image, boxes, [False] * len(boxes)))
    return samples


# --- WIDER FACE ---------------------------------------------------------------------------

def read_wider(root: Path, labels: list[str] | None = None) -> list[Sample]:
    if root.is_file():
        ann_file, base = root, root.parent
    else:
        txts = sorted(root.glob("*_bbx_gt.txt")) or sorted(root.glob("*.txt"))
        if len(txts) != 1:
            raise DatasetError("a WIDER data set needs exactly one *_bbx_gt.txt file")
        ann_file, base = txts[0], root
    image_root = base / "images" if (base / "images").is_dir() else base
    lines = [ln.strip() for ln in ann_file.read_text().splitlines()]
    samples, i = [], 0
    try:
        while i < len(lines):
            if not lines[i]:
                i += 1
                continue
            name, count = lines[i], int(lines[i + 1])
            i += 2
            boxes, ignore = [], []
            # An image with no face still has one line of zeros.
            for row in lines[i:i + max(count, 1)]:
                v = [float(x) for x in row.split()]
                x, y, w, h = v[:4]
                invalid = len(v) > 7 and v[7] == 1
                if count and w > 0 and h > 0:
                    boxes.append([x, y, x + w, y + h])
                    ignore.append(invalid)
            i += max(count, 1)
            image = image_root / name
            if not image.is_file():
                raise DatasetError("the WIDER annotation names an image that is not there")
            samples.append(_sample(image, boxes, ignore))
    except (IndexError, ValueError):
        raise DatasetError("the WIDER annotation file is malformed") from None
    return samples


# --- OpenALPR benchmark -------------------------------------------------------------------

def read_openalpr(root: Path, labels: list[str] | None = None) -> list[Sample]:
    samples = []
    for txt in sorted(root.glob("*.txt")):
        rows = txt.read_text(errors="replace").splitlines()
        boxes, image = [], None
        for row in rows:
            parts = row.split()
            if len(parts) < 5:
                continue
            try:
                x, y, w, h = (float(v) for v in parts[1:5])
            except ValueError:
                break  # not an annotation file (a README, SOURCE.txt): skip it whole
            image = root / parts[0]
            if w > 0 and h > 0:
                boxes.append([x, y, x + w, y + h])
        else:
            if image is None:
                continue
            if not image.is_file():
                raise DatasetError("an OpenALPR annotation names an image that is not there")
            samples.append(_sample(image, boxes, [False] * len(boxes)))
    return samples


def read_openalpr_texts(samples: list[Sample]) -> list[list[str | None]]:
    """The plate texts of OpenALPR samples (the 6th column), in the order of their boxes; None
    where a row has none. Only `anond eval --attack` reads them, to compare internally."""
    out = []
    for sample in samples:
        texts = []
        for row in sample.image.with_suffix(".txt").read_text(errors="replace").splitlines():
            parts = row.split()
            if len(parts) >= 5:
                try:
                    w, h = float(parts[3]), float(parts[4])
                except ValueError:
                    continue
                if w > 0 and h > 0:
                    texts.append(parts[5] if len(parts) > 5 else None)
        out.append(texts)
    return out
