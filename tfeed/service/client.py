"""The client side: read an epoch's jobs of tf.data service through a watchdog, and keep the books.

A plain tf.data service client waits forever when a worker dies mid-epoch
(its in-flight elements are gone and the job never ends).  Here a daemon
thread iterates the distributed dataset into a small queue and the
``from_generator`` callable of the client pipeline waits on that queue at
most ``stall_timeout`` seconds per element.  When nothing arrives in time the
job ends: the rows of its shards that were neither delivered nor counted as
failed are recorded as ``lost`` (one :class:`tfeed.Failure` each, named by
reading the shard back: :class:`~tfeed.service.ledger.ShardLedger`), a
warning names the count, and the epoch goes on with its next job, if any.
When nothing at all arrived in the epoch, a :class:`ServiceUnavailableError`
is raised instead.

With ``shared=True`` (trainers sharing a job through ``job_name``) each
trainer receives only its share of the URLs, so the ones it did not receive
are not counted as lost: a stall ends the epoch with a warning only.

The reading thread of a stalled job is cancelled: its pending ``get_next``
runs as a cancelable function, so the job's iterator ends with
``CancelledError`` and is deleted, and its tf.data service client stops (a
client left blocked would heartbeat to the dispatcher, and log each failed
heartbeat once a second, until the process ends).  The thread of an
abandoned epoch ends at its next element or at the job's end.
"""

from __future__ import annotations

import gc
import itertools
import logging
import queue
import threading
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import cancellation  # the only way to cancel a pending get_next

from tfeed import errors
from tfeed.service.ledger import ShardLedger
from tfeed.service.staging import EpochStaging, unpack_tags
from tfeed.stats import Stats

LOST = "lost"
DUPLICATE = "duplicate"
FIRST_WAVE_WAIT = 2.0  # seconds the first job waits for the whole epoch to be staged (~500,000 URLs)
_END = object()
_log = logging.getLogger("tfeed.service")


class ServiceUnavailableError(RuntimeError):
    """No element came from the tf.data service within ``stall_timeout``."""


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


class WatchdogReader:
    """Callable for ``from_generator``: each call reads one epoch (one or more jobs).

    ``stage(epoch)`` starts writing that epoch's shards and returns its
    :class:`~tfeed.service.staging.EpochStaging`; ``make_dataset(epoch,
    wave, paths)`` returns the distributed dataset of one job over those
    shard files, of groups of ``(images uint8, tags, urls, reasons)``.

    An epoch runs in *waves*: the first job starts once staging is done or
    ``first_wave_wait`` seconds passed (then it takes the shards written so
    far), each later job takes the shards completed meanwhile.  Lists that
    stage within ``first_wave_wait`` (about 500,000 URLs at the 260,000-280,000
    URLs/s measured on 2 shared cores) are one job.
    ``shared=True`` (trainers sharing a job name) waits for the whole epoch
    to be staged, so that every trainer registers the same single job.

    Yields groups of ``(images uint8, labels, urls)`` of the delivered
    images; failures go to ``stats`` and ``handle`` (the error policy).
    The epoch's shard files are deleted when it ends or is abandoned.
    """

    def __init__(self, make_dataset: Callable[[int, int, List[str]], tf.data.Dataset],
                 stage: Callable[[int], EpochStaging], stats: Stats, handle: Callable[[errors.Failure], None], *,
                 stall_timeout: float, queue_size: int = 8, shared: bool = False,
                 first_wave_wait: Optional[float] = None):
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0 seconds, got {stall_timeout!r}")
        self._make_dataset, self._stage, self._stats, self._handle = make_dataset, stage, stats, handle
        self._stall_timeout, self._queue_size = float(stall_timeout), queue_size
        self._shared = shared
        self._first_wave_wait = FIRST_WAVE_WAIT if first_wave_wait is None else first_wave_wait
        self._epochs = itertools.count()

    def __call__(self) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        epoch = next(self._epochs)
        self._stats.begin_epoch(epoch)
        staging = None
        try:
            staging = self._stage(epoch)
            yield from self._read_epoch(epoch, staging)
        except Exception as exc:  # re-raised by the accounting stage, with its type
            self._stats.fail(exc)
            raise
        finally:
            if staging is not None:
                staging.remove()

    def _read_epoch(self, epoch: int, staging: EpochStaging):
        ledger = ShardLedger()
        next_shard, wave, received = 0, 0, 0
        while True:
            wait = None if self._shared else (self._first_wave_wait if wave == 0 else 0.0)
            shards = staging.next_shards(next_shard, wait_all=wait)
            self._report(staging.take_failures())
            if not shards:
                return
            for shard, _ in shards:
                ledger.expect(shard, staging.shard_length(shard))
            next_shard += len(shards)
            paths = [path for _, path in shards]
            received += yield from self._read_job(self._make_dataset(epoch, wave, paths), ledger, shards, received)
            wave += 1

    def _read_job(self, dataset: tf.data.Dataset, ledger: ShardLedger, shards, received_before: int):
        items: "queue.Queue" = queue.Queue(self._queue_size)
        stop, cancel = threading.Event(), cancellation.CancellationManager()
        thread = threading.Thread(target=_pull, args=(dataset, items, stop, cancel), name="tfeed-service-job",
                                  daemon=True)
        thread.start()
        received = 0
        try:
            while True:
                try:
                    item = items.get(timeout=self._stall_timeout)
                except queue.Empty:
                    cancel.start_cancel()  # the pending get_next ends (TensorFlow logs one line)
                    if received_before + received == 0:
                        raise ServiceUnavailableError(
                            f"no element from the tf.data service within stall_timeout={self._stall_timeout:g} s: "
                            "is the dispatcher running and is a worker (tfeed service worker) registered?") from None
                    self._stalled(ledger, shards, received)
                    return received
                if item is _END:
                    break
                if isinstance(item, _Raised):
                    raise item.error
                received += len(item[1])
                delivered = self._book(item, ledger)
                if delivered is not None:
                    yield delivered
        finally:
            stop.set()  # an abandoned epoch: the thread ends at its next element or the job's end
        if ledger.missing(shards) and not self._shared:  # the job ended without them: a worker was lost
            self._record_lost(ledger, shards, "the tf.data service job ended without this URL (worker lost)")
        return received

    def _book(self, item, ledger: ShardLedger):
        """Count one group; ``(images, labels, urls)`` of its delivered images, or None."""
        images, tags, urls, reasons = item
        shard_ids, rows, labels = unpack_tags(tags)
        duplicates = ledger.arrived(shard_ids, rows)
        if duplicates:
            _log.debug("tfeed service: %d element(s) arrived more than once", duplicates)
        keep = reasons == b""
        for url, reason_and_detail in zip(urls[~keep], reasons[~keep]):  # "<reason>\t<detail>" or a bare reason
            reason, _, detail = reason_and_detail.decode(errors="replace").partition("\t")
            if not detail and reason == errors.DECODE_ERROR:
                detail = "image could not be decoded"
            self._fail(errors.Failure(url.decode(errors="replace"), reason, detail))
        if keep.all():
            return images, labels, urls
        if keep.any():
            return images[keep], labels[keep], urls[keep]
        return None

    def _stalled(self, ledger, shards, received):
        missing = ledger.missing(shards)
        if self._shared:
            _log.warning("tfeed service: no element for %g s after %d; ending the job (the job is shared: "
                         "the %d URL(s) this trainer did not receive may have gone to another trainer)",
                         self._stall_timeout, received, missing)
            return
        _log.warning("tfeed service: no element for %g s after %d; ending the job with %d URL(s) lost "
                     "(a worker died mid-epoch?)", self._stall_timeout, received, missing)
        self._record_lost(ledger, shards, f"no element from the tf.data service for {self._stall_timeout:g} s "
                                          "(worker lost mid-epoch)")

    def _record_lost(self, ledger, shards, detail):
        for url in ledger.missing_urls(shards):
            self._fail(errors.Failure(url, LOST, detail))

    def _report(self, failures) -> None:
        for failure in failures:
            self._fail(failure)

    def _fail(self, failure: errors.Failure) -> None:
        self._stats.record_failure(failure)
        self._handle(failure)


def _pull(dataset, items: "queue.Queue", stop: threading.Event, cancel) -> None:
    """Thread body: the job's elements (numpy) into ``items``, then ``_END``.
    ``cancel.start_cancel()`` ends a pending ``get_next`` (CancelledError:
    nothing more is put)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    iterator = get_next = None
    try:
        iterator = iter(dataset)
        get_next = cancel.get_cancelable_function(tf.function(iterator.get_next).get_concrete_function())
        while True:
            element = tf.nest.map_structure(lambda tensor: tensor.numpy(), get_next())
            if not put(element):
                return
    except tf.errors.OutOfRangeError:
        put(_END)
    except tf.errors.CancelledError:
        return
    except Exception as exc:  # noqa: BLE001 - handed to the reading side
        put(_Raised(exc))
    finally:  # the traced function holds the iterator in reference cycles: free its client now
        del get_next, iterator
        gc.collect()
