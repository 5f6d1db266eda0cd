"""Do the masks hold? Re-identification of masked faces and reading of masked plates, before
and after an attacker who knows the mask (mode and parameters) tries to undo it.

- Faces: dlib's ResNet face descriptor (128-d; `face-recognition-models`, CC0 weights; the
  5-point landmark model, CC0) embeds every labelled face in the original and in the masked
  image. Landmarks come from the original for both (the attacker is given the alignment: the
  conservative choice). Identification: rank-1 of each masked face against the gallery of all
  original faces of the set (chance = 1 / gallery size); the same in galleries of GALLERY
  faces (chance 1 / GALLERY), as the exact mean over every such gallery holding the face's own
  original — the full gallery expects one hit by chance whatever its size, so a rate near chance
  there rests on one or two faces, where the small galleries average over all of them;
  verification: the share whose distance to their own original is below dlib's same-person
  threshold (0.6).
- Plates: PP-OCRv4's recogniser (Apache-2.0, `ppocr-v4-rec` from the rapidocr wheel) reads
  each labelled plate crop; exact reads and character error rate against the label.
- The attacker (`attacks`): for a Gaussian blur, Wiener and Richardson-Lucy deconvolution with
  the exact kernel; for anond's blur (cell averages, smoothed, noised), Wiener with the
  smoothing kernel and smooth re-interpolation of the cell grid; for pixelation, smooth
  interpolation of the block grid ("unpixelate"). Faces: the attacker's best method counts
  (the masked face as it is, or one restoration applied to every face), not the best try per
  face, which would need the answer. Plates: a plate counts as read if any try reads it exactly
  (stricter: every try is a chance for a reader to recognise the text).

Only rates leave this module: no text, no embedding, no crop, no name.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SAME_PERSON = 0.6  # dlib's documented threshold on the descriptor distance
SIZE_BUCKETS = ((0, 32, "<32 px"), (32, 64, "32-64 px"), (64, 128, "64-128 px"), (128, 1e9, ">=128 px"))
CHIP = 150  # dlib's aligned face chip size
GALLERY = 10  # the small galleries' size (chance 10 %)


class AttackToolsMissing(RuntimeError):
    pass


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: it needs pkg_resources
    if spec is None or spec.origin is None:
        raise AttackToolsMissing("install the attack extra: pip install 'anond[attack]'")
    return Path(spec.origin).parent / "models"


class FaceEmbedder:
    """dlib's face descriptor on chips aligned with landmarks found in the original."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise AttackToolsMissing("install the attack extra: pip install 'anond[attack]'") from None
        d = _models_dir()
        self.dlib = dlib
        self.shapes = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))

    def landmarks(self, original_bgr: np.ndarray, box) -> object:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rgb = np.ascontiguousarray(original_bgr[:, :, ::-1])
        return self.shapes(rgb, self.dlib.rectangle(x0, y0, x1, y1))

    def embed(self, image_bgr: np.ndarray, shape) -> np.ndarray:
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        chip = self.dlib.get_face_chip(rgb, shape, size=CHIP)
        return np.asarray(self.net.compute_face_descriptor(chip), np.float32)


class PlateReader:
    """PP-OCRv4 text recognition (CTC) on a plate crop; the character set from the model."""

    def __init__(self, model_path: Path) -> None:
        import onnx

        from ..config import RuntimeSettings
        from ..detect.runtime import create_session

        meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
        self.chars = ["<blank>", *meta["character"].splitlines(), " "]
        self.session, _ = create_session(Path(model_path), RuntimeSettings(providers=["CPUExecutionProvider"]))
        self.input = self.session.get_inputs()[0].name

    def read(self, crop_bgr: np.ndarray) -> str:
        h, w = crop_bgr.shape[:2]
        if h < 2 or w < 2:
            return ""
        width = max(16, min(320, int(math.ceil(48 * w / h))))
        x = cv2.resize(crop_bgr, (width, 48), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = (x[:, :, ::-1] / 255.0 - 0.5) / 0.5
        probs = self.session.run(None, {self.input: x.transpose(2, 0, 1)[None]})[0][0]
        best = probs.argmax(axis=1)
        out, last = [], 0
        for i in best:
            if i != last and i != 0 and i < len(self.chars):
                out.append(self.chars[i])
            last = i
        return "".join(out)


def normalise_plate(text: str) -> str:
    return "".join(c for c in text.upper() if c.isalnum())


def char_errors(read: str, truth: str) -> int:
    """Levenshtein distance (the CER's numerator)."""
    prev = list(range(len(truth) + 1))
    for i, a in enumerate(read, 1):
        cur = [i]
        for j, b in enumerate(truth, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1]


# -- the attacker ---------------------------------------------------------------------------------


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    k = cv2.getGaussianKernel(2 * radius + 1, sigma)
    return (k @ k.T).astype(np.float32)


def wiener(patch: np.ndarray, kernel: np.ndarray, nsr: float = 0.005) -> np.ndarray:
    """Wiener deconvolution per channel (FFT, the kernel centred, edges replicated)."""
    pad = kernel.shape[0]
    src = cv2.copyMakeBorder(patch, pad, pad, pad, pad, cv2.BORDER_REFLECT).astype(np.float32)
    h, w = src.shape[:2]
    kpad = np.zeros((h, w), np.float32)
    kh, kw = kernel.shape
    kpad[:kh, :kw] = kernel
    kpad = np.roll(kpad, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    K = np.fft.rfft2(kpad)
    filt = np.conj(K) / (np.abs(K) ** 2 + nsr)
    chans = src if src.ndim == 3 else src[:, :, None]
    out = np.stack([np.fft.irfft2(np.fft.rfft2(chans[:, :, c]) * filt, s=(h, w))
                    for c in range(chans.shape[2])], axis=2)
    out = out[pad:h - pad, pad:w - pad]
    return np.clip(out, 0, 255).astype(np.uint8).reshape(patch.shape)


def richardson_lucy(patch: np.ndarray, kernel: np.ndarray, iterations: int = 30) -> np.ndarray:
    est = np.full(patch.shape, 128.0, np.float32)
    obs = patch.astype(np.float32) + 1.0
    flipped = kernel[::-1, ::-1]
    for _ in range(iterations):
        conv = cv2.filter2D(est, -1, kernel, borderType=cv2.BORDER_REFLECT) + 1e-3
        est *= cv2.filter2D(obs / conv, -1, flipped, borderType=cv2.BORDER_REFLECT)
    return np.clip(est - 1.0, 0, 255).astype(np.uint8)


def unpixelate(patch: np.ndarray, block: float) -> np.ndarray:
    """Back to the block grid (area means), then a smooth (bicubic) interpolation up."""
    h, w = patch.shape[:2]
    small = cv2.resize(patch, (max(1, round(w / block)), max(1, round(h / block))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclass(frozen=True)
class Mask:
    """A mask to attack: anond's (mode, strength) or a weak reference (gaussian sigma)."""

    mode: str  # blur | pixelate | solid | gaussian
    strength: float  # blur: cells across; pixelate: blocks across; gaussian: sigma in px
    small: float | None = None  # blur: cells across boxes under small_px (anond's size rule)
    small_px: float = 0.0

    @classmethod
    def default(cls, mode: str, settings) -> "Mask":
        """The mask `mode` at the strength of a profile's MaskSettings (size rule included)."""
        if mode == "blur":
            return cls("blur", settings.blur_cells, settings.blur_cells_small, settings.small_object_px)
        return cls(mode, settings.pixel_blocks if mode == "pixelate" else 0.0)

    def cells(self, size: float) -> float:
        return self.small if self.small is not None and size < self.small_px else self.strength

    @property
    def label(self) -> str:
        unit = {"blur": "cells", "pixelate": "blocks", "gaussian": "sigma px", "solid": ""}[self.mode]
        if self.mode == "solid":
            return "solid"
        small = f" ({self.small:g} under {self.small_px:g} px)" if self.small is not None else ""
        return f"{self.mode} {self.strength:g} {unit}{small}"


def apply_mask(image: np.ndarray, box, m: Mask, margin: float) -> tuple[np.ndarray, tuple]:
    """`image` with the object masked as anond would (box + margin, the whole box); returns the
    masked copy and the margined region (x0, y0, x1, y1) in pixels."""
    from .. import mask as anond_mask

    h, w = image.shape[:2]
    x0, y0, x1, y1 = anond_mask.margined_box(box, margin)
    c0, r0, c1, r1 = max(0, int(x0)), max(0, int(y0)), min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))
    out = image.copy()
    patch = out[r0:r1, c0:c1]
    size = max(x1 - x0, y1 - y0)
    if m.mode == "gaussian":
        patch[:] = cv2.GaussianBlur(patch, (0, 0), m.strength, borderType=cv2.BORDER_REPLICATE)
    elif m.mode == "solid":
        patch[:] = 0
    elif m.mode == "blur":
        patch[:] = anond_mask.blur_patch(patch, size, cells=m.cells(size))
    else:
        patch[:] = anond_mask.pixelate_patch(patch, size, blocks=m.strength)
    return out, (c0, r0, c1, r1)


def attacks(masked: np.ndarray, region, m: Mask) -> list[np.ndarray]:
    """What an attacker who knows the mask makes of it: candidate restorations."""
    if m.mode == "solid":
        return []
    c0, r0, c1, r1 = region
    patch = masked[r0:r1, c0:c1]
    size = max(c1 - c0, r1 - r0)
    candidates = []
    if m.mode == "gaussian":
        k = gaussian_kernel(m.strength)
        candidates = [wiener(patch, k), richardson_lucy(patch, k)]
    elif m.mode == "blur":
        cell = max(1.0, size / m.cells(size))
        smooth = cv2.GaussianBlur(patch, (0, 0), 1.0)  # the noise first
        candidates = [wiener(smooth, gaussian_kernel(max(0.8, cell / 2))), unpixelate(smooth, cell)]
    else:
        candidates = [unpixelate(patch, max(2.0, size / m.strength))]
    out = []
    for c in candidates:
        img = masked.copy()
        img[r0:r1, c0:c1] = c
        out.append(img)
    return out


def bucket(box) -> str:
    side = max(box[2] - box[0], box[3] - box[1])
    return next(label for lo, hi, label in SIZE_BUCKETS if lo <= side < hi)


# -- the measurements -----------------------------------------------------------------------------


def _percent(values) -> float | None:
    """Mean of hits (booleans) or probabilities, in %."""
    return round(100.0 * sum(values) / len(values), 1) if values else None


def small_gallery_rank1(closer: int, others: int, size: int = GALLERY) -> float:
    """P(rank 1) of a face whose own original has `closer` of the `others` other originals
    nearer to it, in a gallery of its original and size - 1 others drawn at random."""
    size = min(size, others + 1)
    return math.comb(others - closer, size - 1) / math.comb(others, size - 1)


def run_faces(samples, masks: list[Mask], margin: float, min_side: float = 20.0,
              progress=None) -> dict:
    """Identification (rank-1 against all originals) and verification (< SAME_PERSON to its own
    original) of every labelled face: original, masked, masked + attack; per mask and bucket."""
    emb = FaceEmbedder()
    gallery, faces = [], []  # original embeddings; (bucket, {mask label: (masked, [attacked])})
    for sample in samples:
        image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
        if image is None:
            continue
        for box, ignore in zip(sample.boxes, sample.ignore):
            if ignore or min(box[2] - box[0], box[3] - box[1]) < min_side:
                continue
            shape = emb.landmarks(image, box)
            gallery.append(emb.embed(image, shape))
            seen = {}
            for m in masks:
                masked, region = apply_mask(image, box, m, margin)
                seen[m.label] = (emb.embed(masked, shape),
                                 [emb.embed(a, shape) for a in attacks(masked, region, m)])
            faces.append((bucket(box), seen))
        if progress:
            progress()
    if not gallery:
        return {"faces": 0}
    g = np.stack(gallery)

    def identified(vec, i):
        """(rank 1 in the full gallery, same person, how many other originals are nearer)."""
        d = np.linalg.norm(g - vec, axis=1)
        closer = int((d < d[i]).sum())
        return closer == 0, float(d[i]) < SAME_PERSON, closer

    def small(results) -> float | None:
        return _percent([small_gallery_rank1(r[2], len(g) - 1) for r in results])

    orig = [identified(g[i], i) for i in range(len(faces))]
    rows = []
    for m in masks:
        # One result list per method, over every face: the masked face as it is, then each
        # restoration (`attacks`); computed once, then cut per size bucket.
        methods = zip(*[(seen[m.label][0], *seen[m.label][1]) for _, seen in faces])
        tried = [[identified(v, i) for i, v in enumerate(vecs)] for vecs in methods]
        for label in [b[2] for b in SIZE_BUCKETS] + ["all"]:
            idx = [i for i, (b, _) in enumerate(faces) if label in ("all", b)]
            if not idx:
                continue
            per_method = [[results[i] for i in idx] for results in tried]
            masked = per_method[0]

            # The attacker's best method (one pipeline for every face, chosen with hindsight),
            # not the best try per face: picking per face needs the answer, and any k random
            # tries would look k times "better than chance".
            def best(rate):
                return max(rate(results) for results in per_method)

            rows.append({"mask": m.label, "bucket": label, "faces": len(idx),
                         "rank1_original": _percent([orig[i][0] for i in idx]),
                         "rank1_masked": _percent([r[0] for r in masked]),
                         "rank1_attacked": best(lambda t: _percent([r[0] for r in t])),
                         f"g{GALLERY}_masked": small(masked),
                         f"g{GALLERY}_attacked": best(small),
                         "same_person_masked": _percent([r[1] for r in masked]),
                         "same_person_attacked": best(lambda t: _percent([r[1] for r in t]))})
    return {"faces": len(faces), "chance": round(100.0 / len(faces), 3),
            "chance_small": round(100.0 / min(GALLERY, len(faces)), 1), "rows": rows}


def run_plates(samples, texts: list[list[str | None]], masks: list[Mask], margin: float,
               reader: PlateReader, progress=None) -> dict:
    """Exact reads and character error rate of every labelled plate with a text: original,
    masked, masked + attack (the best attack per plate); per mask and bucket."""
    plates = []  # (bucket, truth, original read, {mask: (masked read, [attacked reads])})
    for sample, labels in zip(samples, texts):
        image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
        if image is None:
            continue
        for box, truth in zip(sample.boxes, labels):
            truth = normalise_plate(truth or "")
            if not truth:
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            crop = lambda img: img[max(0, y0):y1, max(0, x0):x1]  # noqa: E731
            reads = {}
            for m in masks:
                masked, region = apply_mask(image, box, m, margin)
                reads[m.label] = (normalise_plate(reader.read(crop(masked))),
                                  [normalise_plate(reader.read(crop(a))) for a in attacks(masked, region, m)])
            plates.append((bucket(box), truth, normalise_plate(reader.read(crop(image))), reads))
        if progress:
            progress()
    rows = []
    for m in masks:
        for label in [b[2] for b in SIZE_BUCKETS] + ["all"]:
            chosen = [p for p in plates if label in ("all", p[0])]
            if not chosen:
                continue
            chars = sum(len(p[1]) for p in chosen)
            best = [min([p[3][m.label][0], *p[3][m.label][1]], key=lambda r: char_errors(r, p[1]))
                    for p in chosen]
            rows.append({
                "mask": m.label, "bucket": label, "plates": len(chosen),
                "exact_original": _percent([p[2] == p[1] for p in chosen]),
                "exact_masked": _percent([p[3][m.label][0] == p[1] for p in chosen]),
                "exact_attacked": _percent([any(r == p[1] for r in [p[3][m.label][0], *p[3][m.label][1]])
                                          for p in chosen]),
                "cer_original": round(100.0 * sum(char_errors(p[2], p[1]) for p in chosen) / chars, 1),
                "cer_attacked": round(100.0 * sum(char_errors(b, p[1]) for b, p in zip(best, chosen)) / chars, 1),
            })
    return {"plates": len(plates), "rows": rows}


def format_rows(result: dict, kind: str) -> str:
    """A plain table of the rows (numbers only)."""
    rows = result.get("rows") or []
    if not rows:
        return "nothing measured"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    head = (f"{result['faces']} faces, chance {result['chance']} % (galleries of {GALLERY}: "
            f"{result['chance_small']} %)" if kind == "face"
            else f"{result['plates']} plates with a text")
    return head + "\n" + "\n".join(lines)
