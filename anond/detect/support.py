"""A second face model's look at weak face detections in video (issue 21: precision).

At the recall-first face threshold (0.2) the video face model (RetinaFace-MobileNet0.25) also
fires now and then on a tree, a wheel or a shadow; one such detection starts a track, and the
track's pre/post frames and gap filling turn it into a blurred ellipse on a dozen frames
(measured on the 38-frame highway clip with no person in it: 5 such detections, 4 tracks,
1.16 false masks a frame). A real face that the video model scores weakly is usually seen by
the other face model too; the things it mistakes for faces mostly are not: on that clip the
photo model (CenterFace) scores none of them 0.2 in a crop around it, while on the hamilton
stage clip it supports 74 % of the video model's weak detections at 0.1.

So a face detection that could start a track but is not confident (`track.support_below`) is
looked at again by the second model, on a square crop three times its size around it,
resized to CROP_PX (one batched call for all of a batch's weak detections). Seen there
(a box overlapping it at IoU >= SUPPORT_IOU scoring at least `track.support_threshold`), it
stays as it is; not seen, it is demoted to the tracker's low band: it may still extend a
track that a confident or supported detection started (ByteTrack's second stage), but never
starts one. Confident detections are never looked at again.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..types import iou_matrix
from .base import Detector

CROP_PX = 128  # side of the square crop the second model sees
CONTEXT = 3.0  # the crop spans this many times the detection's longer side...
MIN_CONTEXT_PX = 32  # ...and at least this many image pixels
SUPPORT_IOU = 0.3


def crops(image: np.ndarray, xyxy: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Square CROP_PX crops around each box (edges replicated) and per crop (x0, y0, image
    pixels per crop pixel), to map the second model's boxes back."""
    out, maps = [], []
    for x0, y0, x1, y1 in np.asarray(xyxy, np.float64).reshape(-1, 4):
        side = max(CONTEXT * max(x1 - x0, y1 - y0), MIN_CONTEXT_PX)
        left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
        k = CROP_PX / side
        warp = np.float32([[k, 0, -left * k], [0, k, -top * k]])
        out.append(cv2.warpAffine(image, warp, (CROP_PX, CROP_PX), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE))
        maps.append((left, top, 1 / k))
    return out, np.array(maps, np.float64).reshape(-1, 3)


class Support:
    """`supported(images, boxes)`: which weak detections the second model sees too."""

    def __init__(self, detector: Detector, threshold: float) -> None:
        self.detector = detector
        self.threshold = threshold

    def supported(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Per image, a bool per box (N, 4 image pixels) of it; one detector call for all."""
        views, owners = [], []
        for k, (image, xyxy) in enumerate(zip(images, boxes)):
            cut, maps = crops(image, xyxy)
            views += cut
            owners += [(k, i, m) for i, m in enumerate(maps)]
        out = [np.zeros(len(b), bool) for b in boxes]
        if not views:
            return out
        for (k, i, (left, top, per)), (xyxy, score) in zip(owners, self.detector.detect(views, self.threshold)):
            if len(score):
                seen = xyxy.astype(np.float64) * per + [left, top, left, top]
                out[k][i] = bool((iou_matrix(boxes[k][i:i + 1].astype(np.float64), seen) >= SUPPORT_IOU).any())
        return out
