"""Training data for the plate detector: ../shared/data/plates/train, augmented, matched to anchors.

Every sample is one crop of one photo, built in a single affine warp (scale, small rotation
and shear, translation) so that plates of every size from ~8 px to ~200 px are seen, then
degraded the ways real footage degrades (motion and defocus blur, JPEG, night, noise, IR grey),
with plate crops of other photos pasted small into the scene (the set has few distant plates
and no dashcam footage).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# The anchors and box encoding are the decoder's: what is trained is what anond decodes.
from anond.detect.retinaface import ANCHOR_SIZES, STRIDES, VARIANCE_CENTER, VARIANCE_SIZE  # noqa: E402
from anond.detect.retinaface import priors as decoder_priors  # noqa: E402
from anond.types import iou_matrix  # noqa: E402

MEAN_BGR = (104.0, 117.0, 127.0)  # the source model's input convention (anond manifest)
POS_LOG2 = 0.75   # anchor size within 2^0.75 of the plate's sqrt(area): positive
IGNORE_LOG2 = 1.25  # ...within 2^1.25: neither positive nor negative


@dataclass
class Photo:
    path: Path
    boxes: np.ndarray  # (N, 4) xyxy
    corners: np.ndarray  # (N, 4, 2), NaN where the source has no corners
    source: str


def load_photos(root: Path) -> list[Photo]:
    photos = []
    for ann in sorted(root.glob("*/annotations.jsonl")):
        for line in ann.read_text().splitlines():
            rec = json.loads(line)
            boxes = np.asarray([p["box"] for p in rec["plates"]], np.float32).reshape(-1, 4)
            corners = np.full((len(boxes), 4, 2), np.nan, np.float32)
            for i, p in enumerate(rec["plates"]):
                if "corners" in p:
                    corners[i] = np.asarray(p["corners"], np.float32)
            photos.append(Photo(ann.parent / rec["image"], boxes, corners, ann.parent.name))
    return photos


def split(photos: list[Photo], val_fraction: float, seed: int) -> tuple[list[Photo], list[Photo]]:
    """Validation split per source (fixed seed): checkpoints and the threshold are chosen on it."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for source in sorted({p.source for p in photos}):
        group = [p for p in photos if p.source == source]
        order = rng.permutation(len(group))
        n_val = max(1, int(round(len(group) * val_fraction)))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def priors(height: int, width: int) -> np.ndarray:
    """(N, 4) anchors cx, cy, size, stride: the decoder's own anchors (anond.detect.retinaface,
    in the network's output order), each with its level's stride."""
    anchors = decoder_priors(height, width)
    strides = np.concatenate([np.full(-(-height // s) * -(-width // s) * len(sizes), s, np.float32)
                              for s, sizes in zip(STRIDES, ANCHOR_SIZES)])
    return np.column_stack([anchors[:, :3], strides]).astype(np.float32)


def match(anchors: np.ndarray, boxes: np.ndarray, corners: np.ndarray, ignore: np.ndarray):
    """Targets per anchor: label (1 plate, 0 background, -1 ignored), loc (4), landmarks (10),
    landmark validity. Scale-aware centre sampling: an anchor is positive for a plate when its
    size is within 2^POS_LOG2 of the plate's sqrt(area) and its centre lies in the plate box
    (grown to at least one stride); every plate gets at least its nearest best-sized anchor."""
    n = len(anchors)
    label = np.zeros(n, np.int64)
    loc = np.zeros((n, 4), np.float32)
    landm = np.zeros((n, 10), np.float32)
    landm_ok = np.zeros(n, bool)
    if not len(boxes):
        return label, loc, landm, landm_ok
    acx, acy, asz, ast = anchors.T
    owner = np.full(n, -1)
    owner_area = np.full(n, np.inf)
    for g, (x0, y0, x1, y1) in enumerate(boxes):
        w, h = x1 - x0, y1 - y0
        size = math.sqrt(max(w * h, 1.0))
        r = np.abs(np.log2(size / asz))
        gx, gy = np.maximum(w, ast) / 2, np.maximum(h, ast) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inside = (np.abs(acx - cx) <= gx) & (np.abs(acy - cy) <= gy)
        if ignore[g]:
            label[inside & (r <= IGNORE_LOG2) & (label == 0)] = -1
            continue
        near = inside & (r <= IGNORE_LOG2)
        label[near & (label == 0)] = -1
        pos = inside & (r <= POS_LOG2)
        if not pos.any():
            best = np.nonzero(r <= r.min() + 1e-6)[0]
            pos = np.zeros(n, bool)
            pos[best[np.argmin((acx[best] - cx) ** 2 + (acy[best] - cy) ** 2)]] = True
        take = pos & (w * h < owner_area)
        owner[take] = g
        owner_area[take] = w * h
    pos = owner >= 0
    label[pos] = 1
    idx = np.nonzero(pos)[0]
    b = boxes[owner[idx]]
    a = anchors[idx]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    w, h = np.maximum(b[:, 2] - b[:, 0], 1), np.maximum(b[:, 3] - b[:, 1], 1)
    loc[idx] = np.column_stack([(cx - a[:, 0]) / (VARIANCE_CENTER * a[:, 2]),
                                (cy - a[:, 1]) / (VARIANCE_CENTER * a[:, 2]),
                                np.log(w / a[:, 2]) / VARIANCE_SIZE,
                                np.log(h / a[:, 2]) / VARIANCE_SIZE])
    c = corners[owner[idx]]  # (k, 4, 2)
    ok = ~np.isnan(c).any(axis=(1, 2))
    pts = np.concatenate([c, c.mean(axis=1, keepdims=True)], axis=1)  # corners + centre
    enc = (pts - a[:, None, :2]) / (VARIANCE_CENTER * a[:, None, 2:3])
    landm[idx[ok]] = enc[ok].reshape(-1, 10)
    landm_ok[idx[ok]] = True
    return label, loc, landm, landm_ok


def label_candidates(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Detector candidates against the labelled plates: 1 plate (IoU >= 0.3 with one, or
    covers >= 70 % of one while at most 4x its area), 0 background (IoU < 0.05 with every plate
    and holding no plate's centre), -1 neither (not used for training)."""
    if not len(gt):
        return np.zeros(len(boxes), np.int8)
    iou = iou_matrix(boxes, gt)
    inter_w = np.clip(np.minimum(boxes[:, None, 2], gt[None, :, 2]) - np.maximum(boxes[:, None, 0], gt[None, :, 0]), 0, None)
    inter_h = np.clip(np.minimum(boxes[:, None, 3], gt[None, :, 3]) - np.maximum(boxes[:, None, 1], gt[None, :, 1]), 0, None)
    g_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    b_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    covers = (inter_w * inter_h / np.maximum(g_area[None], 1e-6) >= 0.7) & (b_area[:, None] <= 4 * g_area[None])
    gcx, gcy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    holds = ((boxes[:, None, 0] <= gcx) & (gcx <= boxes[:, None, 2]) & (boxes[:, None, 1] <= gcy) & (gcy <= boxes[:, None, 3]))
    label = np.full(len(boxes), -1, np.int8)
    label[(iou.max(1) < 0.05) & ~holds.any(1)] = 0
    label[(iou.max(1) >= 0.3) | covers.any(1)] = 1
    return label


class PlateCrops:
    """Plate crops of the training photos (with a margin), pasted small into other scenes."""

    def __init__(self, photos: list[Photo], limit: int = 1500, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.crops: list[np.ndarray] = []
        for i in rng.permutation(len(photos)):
            if len(self.crops) >= limit:
                break
            photo = photos[i]
            image = cv2.imread(str(photo.path))
            if image is None:
                continue
            for x0, y0, x1, y1 in photo.boxes:
                if (x1 - x0) < 40:  # too small to be worth shrinking further
                    continue
                self.crops.append(image[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))].copy())

    def paste(self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
        h, w = image.shape[:2]
        added = []
        for _ in range(count):
            crop = self.crops[rng.integers(len(self.crops))]
            ch, cw = crop.shape[:2]
            tw = float(np.exp(rng.uniform(np.log(10), np.log(70))))
            th = max(3.0, tw * ch / cw * rng.uniform(0.85, 1.15))
            tw_i, th_i = max(4, int(round(tw))), max(3, int(round(th)))
            if tw_i >= w - 2 or th_i >= h - 2:
                continue
            x0, y0 = int(rng.integers(0, w - tw_i)), int(rng.integers(0, h - th_i))
            box = np.array([x0, y0, x0 + tw_i, y0 + th_i], np.float32)
            everything = np.concatenate([boxes.reshape(-1, 4)] + [np.asarray(added).reshape(-1, 4)])
            if len(everything) and _overlaps(box, everything):
                continue
            small = cv2.resize(crop, (tw_i, th_i), interpolation=cv2.INTER_AREA)
            image[y0:y0 + th_i, x0:x0 + tw_i] = small
            added.append(box)
        return np.asarray(added, np.float32).reshape(-1, 4)


def _overlaps(box: np.ndarray, others: np.ndarray) -> bool:
    ix = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    iy = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    return bool(((ix > -4) & (iy > -4)).any())


# Fonts for the text negatives: the system's DejaVu and Liberation faces (Debian's
# fonts-dejavu-core / fonts-liberation), used only to render training images.
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")
_WORDS = ("OPEN", "SALE", "TAXI", "POLICE", "HOTEL", "PARKING", "EXIT", "STOP", "BAKERY", "PHARMACY",
          "DELIVERY", "SERVICE", "MOTORS", "AUTO", "GARAGE", "CAFE", "PIZZA", "BANK", "STATION",
          "EXPRESS", "LOGISTICS", "TRANSPORT", "RENTAL", "SPORT", "TURBO", "HYBRID", "DIESEL",
          "ELECTRIC", "SCHOOL", "BUS", "CITY", "CENTRE", "MARKET", "STREET", "ROAD", "NORTH",
          "Welcome", "Thank you", "Fresh", "Coffee", "Kitchen", "Studio", "Photo", "Club")


class TextNegatives:
    """Lettering that is not a plate, painted into training crops as background: brand names
    and badges, shop and bus signs, van liveries, watermarks, stickers. A text detector
    fine-tuned on plates keeps answering to such text (most of `anond-plate-db`'s stray area
    on the validation split); the training photos hold little of it.

    Kept apart from plate look-alikes on purpose: the text is drawn straight on the scene, or
    on a sign only when it is letters alone or several lines, never a short letters-and-digits
    string on a plain rectangle (that is what a plate is)."""

    def __init__(self) -> None:
        self.fonts = sorted(str(f) for d in FONT_DIRS for f in Path(d).glob("*.ttf"))
        if not self.fonts:
            raise FileNotFoundError(f"no TrueType fonts under {FONT_DIRS} (apt install fonts-dejavu-core)")

    def _text(self, rng: np.random.Generator) -> tuple[str, bool]:
        """(text, plate-free by construction: letters only or several lines)."""
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        r = rng.random()
        if r < 0.35:  # brand-like word(s)
            n = int(rng.integers(1, 3))
            words = [str(rng.choice(_WORDS)) if rng.random() < 0.5 else
                     "".join(rng.choice(list(letters), int(rng.integers(3, 10)))) for _ in range(n)]
            text = " ".join(words)
            text = text.title() if rng.random() < 0.3 else text.lower() if rng.random() < 0.15 else text
            return text, True
        if r < 0.55:  # several lines (signs, liveries)
            lines = [str(rng.choice(_WORDS)) for _ in range(int(rng.integers(2, 4)))]
            if rng.random() < 0.5:
                lines.append("".join(rng.choice(list("0123456789 "), int(rng.integers(6, 12)))).strip() or "24")
            return "\n".join(lines), True
        if r < 0.75:  # phone numbers, web addresses, opening hours
            digits = "".join(rng.choice(list("0123456789"), int(rng.integers(6, 11))))
            forms = (f"Tel {digits}", f"www.{str(rng.choice(_WORDS)).lower()}.com", f"{rng.choice(_WORDS)} {digits[:2]}",
                     f"Open {digits[0]}-{digits[1]}", f"+{digits}")
            return str(forms[int(rng.integers(len(forms)))]), False
        # short badges and numbers: route numbers, engine badges
        forms = (str(int(rng.integers(1, 400))), "".join(rng.choice(list(letters), 2)) + str(int(rng.integers(1, 9))),
                 str(rng.choice(["V6", "V8", "4x4", "GT", "RS", "TDI", "GTI", "AMG", "4MATIC", "xDrive"])))
        return str(forms[int(rng.integers(len(forms)))]), False

    def paint(self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, count: int) -> None:
        """Draw `count` texts into `image` (BGR uint8, in place) clear of every plate box."""
        from PIL import Image, ImageDraw, ImageFont

        h, w = image.shape[:2]
        grown = boxes.copy()
        if len(grown):
            pad = np.maximum(grown[:, 2:] - grown[:, :2], 8)
            grown[:, :2] -= pad
            grown[:, 2:] += pad
        for _ in range(count):
            text, plate_free = self._text(rng)
            size = float(np.exp(rng.uniform(np.log(7), np.log(60))))
            font = ImageFont.truetype(self.fonts[int(rng.integers(len(self.fonts)))], max(6, int(size)))
            probe = ImageDraw.Draw(Image.new("L", (1, 1)))
            x0, y0, x1, y1 = probe.multiline_textbbox((0, 0), text, font=font)
            tw, th = x1 - x0 + 4, y1 - y0 + 4
            sign = plate_free and rng.random() < 0.4
            padx, pady = (int(0.3 * size), int(0.2 * size)) if sign else (0, 0)
            bw, bh = tw + 2 * padx, th + 2 * pady
            if bw >= w - 2 or bh >= h - 2:
                continue
            layer = Image.new("L", (bw, bh), 0)
            ImageDraw.Draw(layer).multiline_text((padx - x0 + 2, pady - y0 + 2), text, font=font, fill=255)
            alpha = np.asarray(layer, np.float32) / 255.0
            for _try in range(6):
                ox, oy = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                place = np.array([[ox, oy, ox + bw, oy + bh]], np.float32)
                if not len(grown) or not _overlaps(place[0], grown):
                    break
            else:
                continue
            region = image[oy:oy + bh, ox:ox + bw].astype(np.float32)
            base = region.mean(axis=(0, 1))
            if sign:
                colour = rng.uniform(0, 255, 3)
                region[:] = colour
                base = colour
            ink = np.where(base.mean() > 128, rng.uniform(0, 90, 3), rng.uniform(165, 255, 3))
            if rng.random() < 0.3:
                ink = rng.uniform(0, 255, 3)
            a = alpha[..., None] * rng.uniform(0.75, 1.0)
            image[oy:oy + bh, ox:ox + bw] = np.clip(region * (1 - a) + ink * a, 0, 255).astype(np.uint8)


class Augmenter:
    """One training sample (crop BGR uint8, boxes, corners, ignore flags) from one photo.

    mode "plates" (phase 1): the crop is centred near a plate drawn at a random size, so every
    plate size is seen often; "scenes" (phase 2): 40 % whole photos, 20 % crops at a random
    place and scale, 40 % plate-centred up to 250 px: what the detector is shown at run time
    is whole frames, full of windows, signs and grilles that must stay unmasked.
    """

    def __init__(self, size: int, crops: PlateCrops | None, mode: str = "plates",
                 text: TextNegatives | None = None) -> None:
        self.size = size
        self.crops = crops
        self.mode = mode
        self.text = text

    def __call__(self, photo: Photo, rng: np.random.Generator):
        image = cv2.imread(str(photo.path))
        if image is None:
            raise FileNotFoundError(photo.path)
        S = self.size
        boxes, corners = photo.boxes.copy(), photo.corners.copy()
        # Geometry: pick a plate, give it a size drawn log-uniformly, place it in the crop.
        k = rng.integers(len(boxes))
        x0, y0, x1, y1 = boxes[k]
        plate = math.sqrt(max((x1 - x0) * (y1 - y0), 1.0))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ih, iw = image.shape[:2]
        centred = None  # where in the crop the point (cx, cy) goes; None: near a random place
        if self.mode == "scenes":
            r = rng.random()
            if r < 0.4:  # the whole photo, at a size the pipeline's whole-frame pass sees
                scale = S / max(ih, iw) * rng.uniform(0.5, 1.0)
                cx, cy, centred = iw / 2, ih / 2, (S / 2, S / 2)
            elif r < 0.6:  # anywhere, any scale: background as the detector meets it
                scale = float(np.exp(rng.uniform(np.log(0.3), np.log(1.5))))
                cx, cy = rng.uniform(0, iw), rng.uniform(0, ih)
            else:
                scale = float(np.exp(rng.uniform(np.log(7), np.log(250)))) / plate
        elif rng.random() < 0.15:  # the whole photo in view (context, several plates)
            scale = S / max(ih, iw) * rng.uniform(0.6, 1.0)
        else:
            scale = float(np.exp(rng.uniform(np.log(7), np.log(150)))) / plate
            if rng.random() < 0.7:  # mostly keep the scene filling at least half the crop
                scale = max(scale, 0.5 * S / max(ih, iw))
        angle = rng.normal(0, 4) if rng.random() < 0.7 else 0.0
        shear = rng.normal(0, 0.08) if rng.random() < 0.5 else 0.0
        aspect = float(np.exp(rng.normal(0, 0.12)))  # stretched exports, anamorphic frames
        a = math.radians(angle)
        R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        Sh = np.array([[1, shear], [0, 1]])
        A = np.diag([scale * aspect, scale / aspect]) @ R @ Sh
        if rng.random() < 0.5:
            A = np.diag([-1.0, 1.0]) @ A  # mirror
        target = np.array([rng.uniform(0.15, 0.85) * S, rng.uniform(0.15, 0.85) * S])
        if centred is not None:
            target = np.asarray(centred) + (target - S / 2) * 0.2
        t = target - A @ np.array([cx, cy])
        M = np.hstack([A, t[:, None]]).astype(np.float32)
        interp = cv2.INTER_AREA if scale < 0.7 else cv2.INTER_LINEAR
        if scale < 0.5:  # pre-shrink so the warp does not alias
            pre = cv2.resize(image, None, fx=scale * 1.5, fy=scale * 1.5, interpolation=cv2.INTER_AREA)
            M = M @ np.array([[1 / (scale * 1.5), 0, 0], [0, 1 / (scale * 1.5), 0], [0, 0, 1]], np.float32)
            image = pre
            interp = cv2.INTER_LINEAR
        out = cv2.warpAffine(image, M, (S, S), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=MEAN_BGR if rng.random() < 0.5 else (0, 0, 0))
        if scale < 0.5:
            M = M @ np.array([[scale * 1.5, 0, 0], [0, scale * 1.5, 0], [0, 0, 1]], np.float32)
        pts = np.where(np.isnan(corners), _box_corners(boxes), corners)  # (N, 4, 2)
        moved = pts @ M[:, :2].T + M[:, 2]
        new_boxes = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)
        full_area = np.prod(new_boxes[:, 2:] - new_boxes[:, :2], axis=1)
        clipped = np.clip(new_boxes, 0, S)
        vis_area = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), axis=1)
        keep = vis_area > 0
        ignore = vis_area < 0.6 * np.maximum(full_area, 1e-6)  # cut by the crop: neither
        new_corners = np.where(np.isnan(corners), np.nan, moved)
        if M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0] < 0:  # mirrored: corner order left/right swaps
            new_corners = new_corners[:, [1, 0, 3, 2]]
        boxes, corners, ignore = clipped[keep], new_corners[keep], ignore[keep]
        small = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)) < 4
        ignore = ignore | small  # a few pixels: nothing a detector can or must find
        if self.crops is not None and rng.random() < (0.35 if self.mode == "plates" else 0.25):
            added = self.crops.paste(out, boxes, rng, int(rng.integers(1, 4)))
            boxes = np.concatenate([boxes, added])
            corners = np.concatenate([corners, np.full((len(added), 4, 2), np.nan, np.float32)])
            ignore = np.concatenate([ignore, np.zeros(len(added), bool)])
        if self.text is not None and rng.random() < 0.6:
            self.text.paint(out, boxes, rng, int(rng.integers(1, 5)))
        out = photometric(out, rng)
        return out, boxes.astype(np.float32), corners.astype(np.float32), ignore


def _box_corners(boxes: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = boxes.T
    return np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                     np.stack([x0, y1], 1)], axis=1)


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, night, colour, noise and compression, each with its own probability."""
    if rng.random() < 0.25:  # motion blur
        k = int(rng.integers(3, 10))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(kernel.sum(), 1e-6)
        img = cv2.filter2D(img, -1, kernel)
    elif rng.random() < 0.2:  # defocus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.8))
    f = img.astype(np.float32)
    if rng.random() < 0.25:  # night / under-exposed, with a gamma lift
        f = 255.0 * (f / 255.0 * rng.uniform(0.15, 0.6)) ** rng.uniform(0.8, 1.2)
    if rng.random() < 0.5:  # brightness / contrast / colour cast
        f = (f - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-30, 30)
        f *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    if rng.random() < 0.1:  # infrared / monochrome CCTV
        f = np.repeat(f.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.3:  # sensor noise
        f += rng.normal(0, rng.uniform(2, 12), size=f.shape).astype(np.float32)
    img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:  # compression
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 80))])
        if ok:
            img = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return img


def to_blob(img: np.ndarray) -> np.ndarray:
    """BGR uint8 -> CHW float32 with the source model's mean subtracted."""
    return (img.astype(np.float32) - np.asarray(MEAN_BGR, np.float32)).transpose(2, 0, 1)
