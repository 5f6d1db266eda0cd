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
starts one. Confident detections are never looked at again, nor weak ones the picture's edge
cuts (`at_edge`): the crop around them is mostly replicated border.
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
EDGE_PX = 2  # a box this close to the picture's edge is cut by it


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


def at_edge(xyxy: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Boxes within EDGE_PX of the picture's edge: a face the frame cuts (a profile half out
    of the picture). Its crop would be mostly replicated border, where the second model sees
    nothing, so it is not asked (measured on hamilton: a man's profile at the right edge,
    RetinaFace 0.32, was demoted when asked)."""
    h, w = shape_hw
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return ((xyxy[:, 0] <= EDGE_PX) | (xyxy[:, 1] <= EDGE_PX)
            | (xyxy[:, 2] >= w - EDGE_PX) | (xyxy[:, 3] >= h - EDGE_PX))


class Support:
    """`supported(images, boxes)`: which weak detections the second model sees too."""

    def __init__(self, detector: Detector, threshold: float) -> None:
        self.detector = detector
        self.threshold = threshold

    def supported(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Per image, a bool per box (N, 4 image pixels) of it; one detector call for all.
        A box at the picture's edge is supported without a look (`at_edge`)."""
        views, owners = [], []
        out = [at_edge(b, image.shape[:2]) for image, b in zip(images, boxes)]
        for k, (image, xyxy) in enumerate(zip(images, boxes)):
            looked = np.flatnonzero(~out[k])
            cut, maps = crops(image, xyxy[looked])
            views += cut
            owners += [(k, i, m) for i, m in zip(looked, maps)]
        if not views:
            return out
        for (k, i, (left, top, per)), (xyxy, score) in zip(owners, self.detector.detect(views, self.threshold)):
            if len(score):
                seen = xyxy.astype(np.float64) * per + [left, top, left, top]
                out[k][i] = bool((iou_matrix(boxes[k][i:i + 1].astype(np.float64), seen) >= SUPPORT_IOU).any())
        return out
