"""The client side: read one job of tf.data service through a watchdog, and keep the books.

A plain tf.data service client waits forever when a worker dies mid-epoch
(its in-flight elements are gone and the job never ends).  Here a daemon
thread iterates the distributed dataset into a small queue and the
``from_generator`` callable of the client pipeline waits on that queue at
most ``stall_timeout`` seconds per element.  When nothing arrives in time the
epoch ends: the URLs of the epoch that were neither delivered nor counted as
failed are recorded as ``lost`` (one :class:`tfeed.Failure` each, through the
error policy), and a warning names the count.  When nothing at all arrived,
a :class:`ServiceUnavailableError` is raised instead.

With ``shared=True`` (trainers sharing a job through ``job_name``) each
trainer receives only its share of the URLs, so the ones it did not receive
are not counted as lost: a stall ends the epoch with a warning only.

The thread left blocked in the stalled iterator is abandoned (TensorFlow
offers no way to cancel it); it holds no lock and exits if it ever wakes.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
from typing import Callable, Iterator, List, Tuple

import numpy as np
import tensorflow as tf

from tfeed import errors
from tfeed.stats import Stats

LOST = "lost"
DUPLICATE = "duplicate"
_END = object()
_log = logging.getLogger("tfeed.service")


class ServiceUnavailableError(RuntimeError):
    """No element came from the tf.data service within ``stall_timeout``."""


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


class WatchdogReader:
    """Callable for ``from_generator``: each call reads one epoch (one job).

    ``make_dataset(epoch)`` returns that epoch's distributed dataset of
    ``(image, label, url, reason)``; ``urls`` are the epoch's URLs (the
    client knows them, so it can tell delivered, failed and lost apart).
    Elements arrive in groups (vectors of ``[n]``); yields groups of
    ``(images, labels, urls)`` of the delivered images; failures go to
    ``stats`` and ``handle`` (the error policy).  ``invalid`` failures (bad
    labels found while reading the source) are recorded at each epoch start.
    """

    def __init__(self, make_dataset: Callable[[int], tf.data.Dataset], urls: List[str], stats: Stats,
                 handle: Callable[[errors.Failure], None], *, stall_timeout: float,
                 invalid: Tuple[errors.Failure, ...] = (), queue_size: int = 8, shared: bool = False):
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0 seconds, got {stall_timeout!r}")
        self._make_dataset, self._urls, self._stats, self._handle = make_dataset, urls, stats, handle
        self._stall_timeout, self._invalid, self._queue_size = float(stall_timeout), invalid, queue_size
        self._shared = shared
        self._epochs = itertools.count()

    def __call__(self) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        epoch = next(self._epochs)
        self._stats.begin_epoch(epoch)
        try:
            for failure in self._invalid:
                self._fail(failure)
            yield from self._read(epoch)
        except Exception as exc:  # re-raised by the accounting stage, with its type
            self._stats.fail(exc)
            raise

    def _read(self, epoch: int):
        expected = collections.Counter(self._urls)
        items: "queue.Queue" = queue.Queue(self._queue_size)
        stop = threading.Event()
        thread = threading.Thread(target=_pull, args=(self._make_dataset, epoch, items, stop),
                                  name=f"tfeed-service-epoch-{epoch}", daemon=True)
        thread.start()
        received = 0
        try:
            while True:
                try:
                    item = items.get(timeout=self._stall_timeout)
                except queue.Empty:
                    if received == 0:
                        raise ServiceUnavailableError(
                            f"no element from the tf.data service within stall_timeout={self._stall_timeout:g} s: "
                            "is the dispatcher running and is a worker (tfeed service worker) registered?") from None
                    self._stalled(expected, received)
                    return
                if item is _END:
                    break
                if isinstance(item, _Raised):
                    raise item.error
                images, labels, urls, reasons = item
                received += len(urls)
                keep = np.zeros(len(urls), bool)
                for row, (url, reason) in enumerate(zip(urls, reasons)):
                    url_text = url.decode(errors="replace")
                    if expected[url_text] <= 0:
                        expected.pop(url_text, None)
                        _log.debug("tfeed service: %s arrived more than once", url_text)
                    else:
                        expected[url_text] -= 1
                    if reason:
                        detail = "image could not be decoded" if reason == errors.DECODE_ERROR.encode() else ""
                        self._fail(errors.Failure(url_text, reason.decode(), detail))
                    else:
                        keep[row] = True
                if keep.all():
                    yield images, labels, urls
                elif keep.any():
                    yield images[keep], labels[keep], urls[keep]
        finally:
            stop.set()
        missing = sum(count for count in expected.values() if count > 0)
        if missing and not self._shared:  # the job ended without them: a worker was lost and the service moved on
            self._record_lost(expected, "the tf.data service job ended without this URL (worker lost)")

    def _stalled(self, expected, received):
        missing = sum(count for count in expected.values() if count > 0)
        if self._shared:
            _log.warning("tfeed service: no element for %g s after %d; ending the epoch (the job is shared: "
                         "the %d URL(s) this trainer did not receive may have gone to another trainer)",
                         self._stall_timeout, received, missing)
            return
        _log.warning("tfeed service: no element for %g s after %d; ending the epoch with %d URL(s) lost "
                     "(a worker died mid-epoch?)", self._stall_timeout, received, missing)
        self._record_lost(expected, f"no element from the tf.data service for {self._stall_timeout:g} s "
                                    "(worker lost mid-epoch)")

    def _record_lost(self, expected, detail):
        for url, count in expected.items():
            for _ in range(max(count, 0)):
                self._fail(errors.Failure(url, LOST, detail))

    def _fail(self, failure: errors.Failure) -> None:
        self._stats.record_failure(failure)
        self._handle(failure)


def _pull(make_dataset, epoch, items: "queue.Queue", stop: threading.Event) -> None:
    """Thread body: the epoch's elements (numpy) into ``items``, then ``_END``."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    try:
        for element in make_dataset(epoch).as_numpy_iterator():
            if not put(element):
                return
        put(_END)
    except Exception as exc:  # noqa: BLE001 - handed to the reading side
        put(_Raised(exc))
