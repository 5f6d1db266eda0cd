"""Threads that let decoding, detection and encoding overlap (PyAV and ONNX Runtime release
the GIL while they work)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator


class Prefetch:
    """Run an iterator in a thread, `size` items ahead, so decoding overlaps detection."""

    _END = object()

    def __init__(self, source: Iterator, size: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), name="anond-decode", daemon=True)
        self._thread.start()

    def _run(self, source: Iterator) -> None:
        try:
            for item in source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_end(self._END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put_end(exc)

    def _put_end(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _Cancelled(Exception):
    pass


class Background:
    """Run calls in order in one worker thread, at most `size` waiting, so that compositing
    and encoding overlap detection (PyAV and ONNX Runtime release the GIL while they work).

    The first call that fails stops the worker; its exception is raised by the next
    `submit` or by `drain`, in the caller's thread.
    """

    _END = object()

    def __init__(self, size: int, name: str = "anond-encode") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if self._error is None:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc

    def submit(self, fn, *args) -> None:
        self._raise()
        self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait until every submitted call ran; raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(self._END)
            self._thread.join()
        self._raise()

    def cancel(self) -> None:
        """Skip what is still waiting and stop the worker (on the error path; raises nothing)."""
        if self._error is None:
            self._error = _Cancelled()
        if self._thread.is_alive():
            self._queue.put(self._END)
            self._thread.join()
        self._error = None

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
