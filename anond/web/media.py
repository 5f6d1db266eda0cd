"""Pictures for the editor: a photo, or one frame of a video, upright, as JPEG.

Video frames are decoded on demand: the frame's presentation time is looked up in an index of
the stream's packet times (demuxed once per file, no decoding), the demuxer seeks to the
keyframe before it and decodes forward to it. Streams without packet times (raw elementary
streams) are decoded from the start. Never the whole video in memory or on disk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from ..errors import AnondError, CorruptMedia

JPEG_QUALITY = 90
MAX_SEQUENTIAL = 20_000  # a stream without times is decoded from its start, this far at most
_INDEX_CACHE = 16


class FrameNotFound(AnondError):
    code = "no_such_frame"


def jpeg(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise CorruptMedia("the picture could not be encoded for display")
    return buf.tobytes()


def photo_jpeg(path: Path, image_settings) -> bytes:
    """A photo as anond's pipeline sees it (EXIF orientation applied), as JPEG."""
    from ..media import image as image_io

    return jpeg(image_io.read(path, image_settings).bgr)


class FrameSource:
    """Frames of video files by index; keeps each file's packet-time index (LRU)."""

    def __init__(self) -> None:
        self._index: OrderedDict[tuple, list[int] | None] = OrderedDict()
        self._lock = threading.Lock()

    def frame_jpeg(self, path: Path, index: int) -> bytes:
        return jpeg(self.frame(path, index))

    def frame(self, path: Path, index: int) -> np.ndarray:
        from ..media import demuxer, kind_of
        from ..media.frames import frame_rotation, pyav, to_bgr, upright

        av = pyav()
        fmt = kind_of(path).format
        times = self._times(path, fmt)
        with av.open(str(path), format=demuxer(fmt)) as container:
            stream = container.streams.video[0]
            found = None
            if times is not None:
                if not 0 <= index < len(times):
                    raise FrameNotFound(f"frame {index} is beyond the video ({len(times)} frames)")
                target = times[index]
                container.seek(target, stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.pts is not None and frame.pts >= target:
                        found = frame
                        break
            else:
                for n, frame in enumerate(container.decode(stream)):
                    if n == index:
                        found = frame
                        break
                    if n >= MAX_SEQUENTIAL:
                        break
            if found is None:
                raise FrameNotFound(f"frame {index} could not be decoded")
            return upright(to_bgr(found), frame_rotation(found))

    def _times(self, path: Path, fmt: str) -> list[int] | None:
        """Sorted presentation times of the video packets (None: the stream has none)."""
        from ..media import demuxer
        from ..media.frames import pyav

        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._index:
                self._index.move_to_end(key)
                return self._index[key]
        times: list[int] = []
        missing = False
        with pyav().open(str(path), format=demuxer(fmt)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    missing = True
                    break
                times.append(int(packet.pts))
        found = None if missing or not times else sorted(times)
        with self._lock:
            self._index[key] = found
            while len(self._index) > _INDEX_CACHE:
                self._index.popitem(last=False)
        return found
