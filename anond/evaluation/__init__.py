"""Measurement of detection and masking quality (`anond eval`, bench/).

- `datasets`: readers for labelled image sets (VOC, COCO, YOLO, WIDER FACE, OpenALPR);
- `metrics`: matching, precision/recall/F1, size buckets, masked recall, COCO-protocol AP;
- `runner`: the pipeline's detection path (tiling, masking geometry, verification) over a set;
- `video`: temporal metrics on a clip (mask stability, flicker, detections per frame).

Results hold counts and ratios only: never a file name, a box or a pixel.
"""
