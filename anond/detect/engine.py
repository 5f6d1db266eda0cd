"""Engine: the detectors of one worker, loaded once; tiling and per-target thresholds.

    engine = Engine.load(settings)
    found = engine.detect([bgr_image], profile.detect, ["face", "plate"])
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ..config import DetectSettings, Settings
from ..errors import ConfigError, ModelMissing
from ..models import InstalledModel, verified_model
from ..types import Detections, Target, iou_matrix
from .base import Detector
from .check import CropCheck
from .rescale import SecondLook, TrackLook
from .support import SUPPORT_IOU
from .nms import merge
from .tiling import RECENT, RECENT_PX, View, around, plan

TARGETS = {"face": Target.FACE, "plate": Target.PLATE}


@dataclass(frozen=True)
class ModelInfo:
    """What a report may say about a model: name, task, family, sha256, provider, licence."""

    name: str
    task: str
    family: str
    sha256: str
    provider: str
    licence: str


def build_detector(installed: InstalledModel, runtime) -> Detector:
    """The decoder class for the model's family, with its session."""
    family = installed.spec.family
    if family == "centerface":
        from .centerface import CenterFace as cls
    elif family == "retinaface":
        from .retinaface import RetinaFace as cls
    elif family == "yolov8":
        from .yolov8 import YoloV8 as cls
    elif family == "ppocr":
        from .dbnet import DBNet as cls
    else:
        raise ConfigError(f"model {installed.spec.name!r}: family {family!r} cannot serve detection")
    return cls(installed, runtime)


def _load_detector(settings: Settings, name: str, target: str) -> Detector:
    """The installed model `name`, checked (sha256, and that it detects `target`), loaded."""
    installed = verified_model(name, settings.models.dir, settings.models.manifest)
    if installed.spec.task != target:
        raise ConfigError(f"model {name!r} detects {installed.spec.task}, not {target}")
    return build_detector(installed, settings.runtime)


def load_check(settings: Settings, detector: Detector) -> "CropCheck | SecondLook | None":
    """The detector's second stage, verified and loaded: its check model (manifest `check`) or
    its second look at a canonical scale (`second_look`, maybe by itself); None if neither."""
    if detector.spec.second_look is not None:
        looker = _load_looker(settings, detector, detector.spec.second_look, "second look",
                              {detector.spec.name: detector})
        return SecondLook(looker, detector.spec.second_look_size, detector.spec.second_look_floor)
    name = detector.spec.check
    if name is None:
        return None
    installed = verified_model(name, settings.models.dir, settings.models.manifest)
    if installed.spec.family != "crop-check" or installed.spec.task != detector.spec.task:
        raise ConfigError(f"model {detector.spec.name!r}: its check {name!r} is not a "
                          f"{detector.spec.task} crop-check model")
    return CropCheck(installed, settings.runtime, detector.spec.check_threshold,
                     detector.spec.check_min_width)


def load_track_look(settings: Settings, detector: Detector,
                    loaded: dict[str, Detector] | None = None) -> TrackLook | None:
    """The look at each new video track of `detector` (manifest `track_look`), verified and
    loaded (or taken from `loaded`, detectors by name already in memory); None if it has none."""
    if detector.spec.track_look is None:
        return None
    looker = _load_looker(settings, detector, detector.spec.track_look, "track look", loaded or {})
    return TrackLook(SecondLook(looker, detector.spec.track_look_size, 0.0),
                     detector.spec.track_look_threshold)


def _load_looker(settings: Settings, detector: Detector, name: str, role: str,
                 loaded: dict[str, Detector]) -> Detector:
    """The segmentation model `name` that looks again at `detector`'s regions (its `role`):
    taken from `loaded` (detectors by name already in memory) or verified and loaded."""
    looker = loaded.get(name) or _load_detector(settings, name, detector.spec.task)
    if looker.spec.family != "ppocr":
        raise ConfigError(f"model {detector.spec.name!r}: its {role} {name!r} is not a "
                          "segmentation model (family ppocr)")
    return looker


def _by_name(detectors: dict[str, Detector], checks: dict) -> dict[str, Detector]:
    """Detectors already loaded, by model name: the targets' and those of their second looks."""
    found = {d.spec.name: d for d in detectors.values()}
    found.update({c.detector.spec.name: c.detector for c in checks.values() if isinstance(c, SecondLook)})
    return found


class ViewMemo:
    """What each view of one photo found, for verification's searches of the same photo.

    The detector sees a view and nothing else, so a view whose pixels are the very pixels it was
    run on before finds the very same boxes: it need not run again. After masking, the
    whole-image view always sees a mask; a large photo's native-resolution tiles mostly do not
    (a 12 MP photo has 48, a plate or a face touches one to four), and in later verification
    rounds only the tiles the last round masked have changed. Every view an `Engine.detect` with
    this memo runs is remembered with a digest of its pixels (BLAKE2b, 128 bits); a view is
    reused when its pixels' digest is the one remembered.
    """

    def __init__(self) -> None:
        self.found: dict[tuple, tuple[bytes, tuple[np.ndarray, np.ndarray]]] = {}
        self.reused = 0  # views not run again

    @staticmethod
    def digest(view, image: np.ndarray) -> bytes:
        crop = image[view.y0:view.y0 + view.h, view.x0:view.x0 + view.w]
        head = np.asarray(crop.shape, np.int64).tobytes()
        return hashlib.blake2b(head + np.ascontiguousarray(crop).tobytes(), digest_size=16).digest()

    def recall(self, key: tuple, digest: bytes):
        """The boxes the view found on these very pixels, or None."""
        known = self.found.get(key)
        if known is None or known[0] != digest:
            return None
        self.reused += 1
        return known[1]

    def remember(self, key: tuple, digest: bytes, result) -> None:
        self.found[key] = (digest, result)


def _supported(xyxy: np.ndarray, score: np.ndarray, whole: np.ndarray, threshold: float,
               confident: float, support: float) -> np.ndarray:
    """Which boxes of one image's views to keep: every box of a detail view (enlarged or
    tiles) at >= threshold; a box of the whole-image view at >= confident, or at >= threshold
    when a detail view sees it too (a box there at >= support overlapping it, IoU >=
    SUPPORT_IOU, as a second model's support: detect.support). Boxes under `threshold` only
    support."""
    keep = score >= threshold
    weak = np.flatnonzero(whole & keep & (score < confident))
    helpers = ~whole & (score >= support)
    if len(weak) and helpers.any():
        seen = iou_matrix(xyxy[weak].astype(np.float64), xyxy[helpers].astype(np.float64)).max(axis=1)
        keep[weak] = seen >= SUPPORT_IOU
    elif len(weak):
        keep[weak] = False
    return keep


def _count_rule(rules: dict[str, dict[str, int]] | None, name: str, kept: np.ndarray) -> None:
    """Add a rule's outcome to a caller's `rules` (None: not counted): `kept`, a bool per box
    it judged."""
    if rules is None:
        return
    tally = rules.setdefault(name, {"kept": 0, "dropped": 0})
    tally["kept"] += int(kept.sum())
    tally["dropped"] += int(len(kept) - kept.sum())


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Grey or BGRA input (not the contract, but cheap to accept) as 3-channel BGR."""
    if image.ndim == 2:
        import cv2

        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


class Engine:
    """Detectors for faces and plates, ready to run on lists of BGR images."""

    def __init__(self, detectors: dict[str, Detector], video: "Engine | None" = None,
                 checks: "dict[str, CropCheck | SecondLook] | None" = None,
                 second: dict[str, Detector] | None = None,
                 track_looks: dict[str, TrackLook] | None = None) -> None:
        self.detectors = detectors
        self.checks = checks or {}
        # Per target, the look each new video track of it needs before it is masked
        # (`TrackLook`; anond/track.py): the video job asks, the Engine only holds it.
        self.track_looks = track_looks or {}
        # Per target, another model of it (the video engine's faces: the photo face model),
        # for a second look at weak detections (anond/detect/support.py).
        self.second = second or {}
        infos = {
            d.spec.name: ModelInfo(d.spec.name, d.spec.task, d.spec.family, d.sha256, d.provider,
                                   d.spec.licence)
            for d in [*detectors.values(), *self.checks.values(), *self.track_looks.values()]
        }  # by name: a model looking again at its own regions is listed once
        self.models = list(infos.values())
        self.provider = self.models[0].provider if self.models else "none"
        self._video = video
        # Called with (target, seconds) after every detector call (the service's per-call
        # inference histogram); None: not observed.
        self.observe: Callable[[str, float], None] | None = None

    def set_observer(self, observe: Callable[[str, float], None] | None) -> None:
        """Time every detector call of this engine and of its video engine."""
        self.observe = observe
        if self._video is not None:
            self._video.observe = observe

    def for_video(self) -> "Engine":
        """The engine video jobs use: the same, with `models.video_face` serving faces and
        `models.video_plate` plates where they name models of their own."""
        return self._video or self

    @classmethod
    def load(cls, settings: Settings, targets: Iterable[str] | None = None) -> "Engine":
        """Verify and load the models serving `targets` (default: face and plate) once."""
        wanted = list(targets) if targets is not None else list(TARGETS)
        detectors: dict[str, Detector] = {}
        checks: dict[str, CropCheck | SecondLook] = {}
        looks: dict[str, TrackLook] = {}
        for target in wanted:
            if target not in TARGETS:
                raise ConfigError(f"unknown target {target!r}")
            detectors[target] = _load_detector(settings, getattr(settings.models, target), target)
            check = load_check(settings, detectors[target])
            if check is not None:
                checks[target] = check
            look = load_track_look(settings, detectors[target], _by_name(detectors, checks))
            if look is not None:
                looks[target] = look
        video = cls._load_video(settings, detectors, checks, looks)
        return cls(detectors, video, checks, track_looks=looks)

    @classmethod
    def _load_video(cls, settings: Settings, detectors: dict[str, Detector],
                    checks: "dict[str, CropCheck | SecondLook]",
                    looks: dict[str, TrackLook]) -> "Engine | None":
        """The engine of video jobs when `models.video_face` or `models.video_plate` names a
        model of its own (with its check model); None: videos use the photo engine."""
        own = {t: n for t, n in (("face", settings.models.video_face), ("plate", settings.models.video_plate))
               if t in detectors and n and n != getattr(settings.models, t)}
        if not own:
            return None
        if settings.video.intra_op_threads:  # its sessions serve video jobs only
            settings = settings.model_copy(update={"runtime": settings.runtime.model_copy(
                update={"intra_op_threads": settings.video.intra_op_threads})})
        video, video_checks, track_looks = dict(detectors), dict(checks), dict(looks)
        for target, name in own.items():
            video[target] = _load_detector(settings, name, target)
            video_checks.pop(target, None)
            track_looks.pop(target, None)
            check = load_check(settings, video[target])
            if check is not None:
                video_checks[target] = check
            # The look model may be one the photo engine holds already (a second look): shared.
            look = load_track_look(settings, video[target], _by_name(detectors, checks))
            if look is not None:
                track_looks[target] = look
        # A weak video face may be looked at again by the photo face model (detect.support).
        second = {"face": detectors["face"]} if "face" in own else {}
        return cls(video, checks=video_checks, second=second, track_looks=track_looks)

    def detect(
        self, images: list[np.ndarray], detect: DetectSettings, targets: Sequence[str],
        memos: "Sequence[ViewMemo | None] | None" = None,
        rules: dict[str, dict[str, int]] | None = None,
        near: "Sequence[Callable[[], np.ndarray] | None] | None" = None,
        recent: "Sequence[Callable[[], np.ndarray] | None] | None" = None,
    ) -> list[Detections]:
        """Boxes per image (pixel coordinates of that image), thresholds applied, NMS done.

        Boxes from all views of an image are merged: NMS picks one box per object and that box
        grows to the union of the boxes it suppressed (see `nms.merge`). A target whose model
        has a second stage runs it on the merged boxes: a check model keeps those it accepts
        (`check.CropCheck`); a second look re-scores each region (`rescale.SecondLook`).
        `memos` (one per image, or None): what each view found before (`ViewMemo`); a view
        whose pixels are those it was run on is not run again. `rules` (a caller's dict, e.g.
        a job report's): each second stage's counts are added to it, what it kept and what it
        dropped ({"plate_second_look": {"kept": 2, "dropped": 5}}; counts only).
        `near` (one per image, or None): a function giving the boxes of what changed since the
        image was searched whole (verification: the masks), called only when they are used: a
        model of dynamic input then searches a small image's enlarged detail view only around
        them (`tiling.around`), the whole-image view whole as always. (A large image's native tiles are left to `memos`: those no mask
        touches are not run again, and a tile is smaller than the crop around a large mask;
        a fixed-input model would letterbox the crops.)
        `recent` (one per image, or None): a function giving the boxes of what changed since this
        target's last search of the image (a later verification round: what the round before
        masked), called only for a local model (`Detector.local`: convolutions only), which then
        searches every view only around them (`tiling.around`, RECENT / RECENT_PX): elsewhere
        its outputs are the last search's. (Both are functions because finding the boxes of a
        large photo's masks costs ~0.1 s, and most searches do not need them.)
        """
        images = [_as_bgr(img) for img in images]
        memos = list(memos) if memos is not None else [None] * len(images)
        near = list(near) if near is not None else [None] * len(images)
        recent = list(recent) if recent is not None else [None] * len(images)
        per_image: list[list[Detections]] = [[] for _ in images]
        for target in targets:
            if target not in self.detectors:
                raise ModelMissing(f"no model loaded for target {target!r}")
            detector = self.detectors[target]
            threshold = detect.threshold(target)
            stage = self.checks.get(target)
            first = stage.first_threshold(threshold) if stage else threshold
            support = detect.view_support(target)
            # With a view-support rule, views report down to its support score (what a weak
            # box of the whole-image view needs from the detail views, `_supported`).
            low = min(first, support[1]) if support is not None else first
            views, owners = [], []  # owners: (image, view, its digest, what it found if known)
            heads: list[View | None] = []  # per image: its whole-image view, if it has detail views
            for k, image in enumerate(images):
                planned = plan(image.shape[0], image.shape[1], detect, detector.fixed_size)
                heads.append(planned[0] if len(planned) > 1 else None)
                if recent[k] is not None and detector.local and detector.fixed_size is None:
                    changed = recent[k]()
                    planned = [v for group in ([planned[0]], planned[1:]) if group
                               for v in around(group, changed, *image.shape[:2], RECENT, RECENT_PX)]
                elif near[k] is not None and detector.fixed_size is None and len(planned) == 2:
                    planned = planned[:1] + around(planned[1:], near[k](), *image.shape[:2])
                for view in planned:
                    digest = ViewMemo.digest(view, image) if memos[k] is not None else b""
                    seen = memos[k].recall((target, low, view), digest) if memos[k] is not None else None
                    if seen is None:
                        views.append(view.cut(image))
                    owners.append((k, view, digest, seen))
            began = time.perf_counter()
            ran = iter(detector.detect(views, low) if views else [])
            if self.observe is not None and views:
                self.observe(target, time.perf_counter() - began)
            found = []  # in the views' order, run or known
            for k, view, digest, seen in owners:
                if seen is None:
                    seen = next(ran)
                    if memos[k] is not None:
                        memos[k].remember((target, low, view), digest, seen)
                found.append(seen)
            boxes: list[list[np.ndarray]] = [[] for _ in images]
            scores: list[list[np.ndarray]] = [[] for _ in images]
            whole: list[list[np.ndarray]] = [[] for _ in images]  # per box: from the whole-image view
            for (k, view, _, _), (xyxy, score) in zip(owners, found):
                if len(score):
                    boxes[k].append(view.to_image(xyxy))
                    scores[k].append(score)
                    # The whole-image view, or a crop of it at its scale (`recent`).
                    whole[k].append(np.full(len(score), heads[k] is not None
                                            and view.scale == heads[k].scale, bool))
            for k in range(len(images)):
                if not scores[k]:
                    continue
                xyxy, score = np.concatenate(boxes[k]), np.concatenate(scores[k])
                if support is not None:
                    from_whole = np.concatenate(whole[k])
                    keep = _supported(xyxy, score, from_whole, first, *support)
                    weak = from_whole & (score >= first) & (score < support[0])
                    _count_rule(rules, f"{target}_view_support", keep[weak])
                    xyxy, score = xyxy[keep], score[keep]
                    if not len(score):
                        continue
                xyxy, score = merge(xyxy, score, detect.nms_iou)
                if stage is not None:
                    keep, score = stage.review(images[k], xyxy, score, threshold)
                    xyxy, score = xyxy[keep], score[keep]
                    _count_rule(rules, f"{target}_{stage.rule}", keep)
                cls_ = np.full(len(score), int(TARGETS[target]), np.int16)
                per_image[k].append(Detections(xyxy, score, cls_))
        return [Detections.concat(parts) for parts in per_image]

    def fixed_input(self, target: str) -> tuple[int, int] | None:
        """(height, width) the target's model letterboxes every view to, or None if dynamic."""
        detector = self.detectors.get(target)
        return None if detector is None else detector.fixed_size

    def warmup(self) -> None:
        """One tiny inference per model (before the service reports READY=1)."""
        if self._video is not None:
            self._video.warmup()
        for detector in [*self.detectors.values(), *self.checks.values(), *self.track_looks.values()]:
            detector.warmup()
