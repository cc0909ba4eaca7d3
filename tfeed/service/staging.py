"""The epoch's URLs as data: text shards the workers read, written by the client as it reads the source.

One epoch's selected pairs are streamed (never held whole) into shard files
under ``<staging_dir>/tfeed-<id>/epoch<N>/`` (one ``tfeed-<id>`` per dataset,
removed at the end of each epoch; without ``staging_dir``, a new temp dir)::

    shard-000000.txt   one line per pair:  <tag>\\t<url>\\n

``tag`` is one int64 that tells the client where an element came from:
``shard << 43 | row << 23 | (class index + 1)`` (:func:`pack_tags`,
:func:`unpack_tags`), so it can account for every URL per shard without
keeping the list.  Limits: 2^20 shards, 2^20 rows per shard, 2^23 - 1 classes.

Shard sizes grow: :data:`SMALL_ROWS` rows for the first shards, doubling
every :data:`SHARDS_PER_SIZE` shards up to :data:`MAX_ROWS` (about 3 MB of
URLs), so a list of a few thousand URLs still spreads over several workers
(tf.data service hands out whole files) and a list of millions makes a few
hundred files.  A shard is written to a temporary name and renamed when
complete: a reader never sees half a shard.

With ``shuffle`` (a :class:`RowOrder`) the rows are shuffled as they are
staged, by the local pipeline's rule (a uniform permutation of lists up to
``buffer_size`` URLs, a buffer of that size beyond), so each shard is a
sample of the list and a worker needs no shuffle buffer of its own (one
made it read ahead, and take every file of a small job; see
:mod:`tfeed.service.graph`).

Files go through ``tf.io.gfile``, so ``staging_dir`` may be a local path
(workers on this machine) or any path the workers can read (``gs://...``,
a shared mount).  Text, not TFRecord: writing buffered lines measured
0.5 us per URL, TFRecord records 2.6 us.  Staging a 10M-line ``.txt`` list
end to end (read, select, label, write) ran at 252,000 URLs/s on 2 shared
cores with +2 MB of RSS (``benchmarks/bench_service_scale.py``); shuffling
while staging takes it to about 210,000.
"""

from __future__ import annotations

import dataclasses
import queue
import random
import tempfile
import threading
import time
import uuid
import weakref
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfeed import errors
from tfeed.source.generator import LabelIndex, Selection, admit, shuffled

SMALL_ROWS = 256
SHARDS_PER_SIZE = 8
MAX_ROWS = 32768
SHARD_BITS, ROW_BITS, LABEL_BITS = 20, 20, 23
MAX_CLASSES = 2**LABEL_BITS - 1
GIL_YIELD_ROWS = 64  # source rows between the staging thread's GIL releases (see _yielding)


def shard_rows(shard: int) -> int:
    """Rows of shard number ``shard``: 256 for shards 0-7, 512 for 8-15, ... up to MAX_ROWS."""
    return min(MAX_ROWS, SMALL_ROWS << min(shard // SHARDS_PER_SIZE, 20))


def pack_tags(shard: int, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """int64 tags of ``rows`` of ``shard`` with class indices ``labels`` (NO_LABEL allowed)."""
    return (np.int64(shard) << (ROW_BITS + LABEL_BITS)) | (rows.astype(np.int64) << LABEL_BITS) | (labels + 1)


def unpack_tags(tags: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shards, rows, labels)`` of int64 ``tags`` (labels are class indices or NO_LABEL)."""
    tags = np.asarray(tags, np.int64)
    return (tags >> (ROW_BITS + LABEL_BITS), (tags >> LABEL_BITS) & (2**ROW_BITS - 1),
            (tags & MAX_CLASSES) - 1)


def check_classes(num_classes: int) -> None:
    if num_classes > MAX_CLASSES:
        raise ValueError(f"service= supports up to {MAX_CLASSES} classes, got {num_classes}")


@dataclasses.dataclass(frozen=True)
class RowOrder:
    """How one epoch's rows are shuffled while staged: ``seed`` and the
    shuffle buffer's ``buffer_size`` in URLs (about 100 bytes each)."""

    seed: int
    buffer_size: int


class StagingRoot:
    """The directory of one dataset's epochs under ``staging_dir`` (default: a new temp dir).

    Each epoch writes under :meth:`epoch_dir` and removes the whole root when
    it ends (:meth:`EpochStaging.remove`); the next epoch creates it again.
    What is left after a crash goes at garbage collection or interpreter exit.
    """

    def __init__(self, staging_dir: Optional[str] = None, name: Optional[str] = None):
        if staging_dir is None:
            self.path = tempfile.mkdtemp(prefix="tfeed-staging-")
        else:
            self.path = f"{str(staging_dir).rstrip('/')}/{name or 'tfeed-' + uuid.uuid4().hex[:12]}"
        self._finalizer = weakref.finalize(self, remove_tree, self.path)

    def epoch_dir(self, epoch: int) -> str:
        return f"{self.path}/epoch{epoch}"


def remove_tree(path: str) -> None:
    """Delete ``path`` and everything under it; nothing if it is already gone."""
    try:
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)
    except (tf.errors.OpError, OSError):
        pass


class EpochStaging:
    """Writes one epoch's selected pairs as shards in a background thread.

    ``pairs``: a factory of the source's ``(url, label)`` iterator (called
    once, in the thread).  :meth:`next_shards` hands out completed shards;
    :meth:`shard_length` tells a shard's rows; :meth:`take_failures` the pairs
    that could not be staged (``invalid_label``; ``invalid_url`` for a URL
    holding a line break, which a line-based shard cannot carry).  An error
    reading the source is re-raised by :meth:`next_shards`.  ``shuffle``: a
    :class:`RowOrder`, or None to stage in the source's order.
    """

    def __init__(self, directory: str, pairs: Callable[[], Iterator], selection: Selection,
                 label_index: Optional[LabelIndex], owned: Optional[str] = None, shuffle: Optional[RowOrder] = None):
        self.directory, self._owned = directory, owned or directory
        self._pairs, self._selection, self._labels, self._order = pairs, selection, label_index, shuffle
        self._lock = threading.Condition()
        self._paths: List[str] = []
        self._lengths: List[int] = []
        self._failures: "queue.SimpleQueue[errors.Failure]" = queue.SimpleQueue()
        self._done, self._error = False, None
        self._stop = threading.Event()
        self._writer = uuid.uuid4().hex[:12]
        tf.io.gfile.makedirs(directory)
        self._thread = threading.Thread(target=self._run, name="tfeed-staging", daemon=True)
        self._thread.start()

    # -- the reading side ------------------------------------------------
    def next_shards(self, start: int, wait_all: float) -> List[Tuple[int, str]]:
        """``[(shard, path)]`` of completed shards numbered ``start`` and up:
        waits until staging is done or ``wait_all`` seconds passed, then at
        least one shard or the end.  Empty: no more shards."""
        with self._lock:
            self._lock.wait_for(lambda: self._done, timeout=wait_all)
            self._lock.wait_for(lambda: self._done or len(self._paths) > start)
            if self._error is not None:
                raise self._error
            return list(enumerate(self._paths[start:], start))

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done

    def shard_length(self, shard: int) -> int:
        with self._lock:
            return self._lengths[shard]

    def take_failures(self) -> List[errors.Failure]:
        taken = []
        while True:
            try:
                taken.append(self._failures.get_nowait())
            except queue.Empty:
                return taken

    def close(self) -> None:
        """Stop writing (the thread ends at its next pair) and wait for it."""
        self._stop.set()
        self._thread.join(timeout=30)

    def remove(self) -> None:
        """:meth:`close`, then delete ``owned`` (by default the shards' directory)."""
        self.close()
        remove_tree(self._owned)

    # -- the writing thread ----------------------------------------------
    def _run(self) -> None:
        try:
            rows: List[str] = []
            high, size = self._next_shard()
            for url, label in self._selected():
                if self._stop.is_set():
                    return
                url, index, failure = admit(url, label, self._labels)  # line breaks are invalid_url
                if failure is not None:
                    self._failures.put(failure)
                    continue
                rows.append(f"{high | (len(rows) << LABEL_BITS) | (index + 1)}\t{url}\n")
                if len(rows) == size:
                    self._write(rows)
                    rows = []
                    high, size = self._next_shard()
            if rows:
                self._write(rows)
        except Exception as exc:  # noqa: BLE001 - re-raised on the reading side
            self._error = exc
        finally:
            with self._lock:
                self._done = True
                self._lock.notify_all()

    def _selected(self) -> Iterator:
        pairs = self._selection.select(_yielding(self._pairs()))  # per row read, selected or not
        if self._order is None:
            return pairs
        return shuffled(pairs, random.Random(self._order.seed), self._order.buffer_size)

    def _next_shard(self) -> Tuple[int, int]:
        """(the shard bits of the next shard's tags, its rows)."""
        shard = len(self._paths)
        if shard >= 2**SHARD_BITS:
            raise ValueError(f"service= stages at most {2**SHARD_BITS} shards per epoch")
        return shard << (ROW_BITS + LABEL_BITS), shard_rows(shard)

    def _write(self, rows: List[str]) -> None:
        path = f"{self.directory}/shard-{len(self._paths):06d}.txt"
        partial = f"{path}.partial-{self._writer}"  # trainers sharing a job write the same shards at once
        with tf.io.gfile.GFile(partial, "w") as handle:
            handle.write("".join(rows))
        tf.io.gfile.rename(partial, path, overwrite=True)
        with self._lock:
            self._paths.append(path)
            self._lengths.append(len(rows))
            self._lock.notify_all()


def _yielding(items: Iterator) -> Iterator:
    """``items``, with the GIL released every :data:`GIL_YIELD_ROWS` of them.

    Staging is pure Python.  Held through whole 5 ms switch intervals, the
    GIL made each of the reader's short Python steps wait one out: with a
    1M-URL list the first batch came after 15.5 s, when staging ended.  With
    a release every 64 rows it came after 3.9 s (3.6 s with
    ``sys.setswitchinterval(0.0005)`` instead), for 8-10% of staging's rate.
    """
    for count, item in enumerate(items):
        if count % GIL_YIELD_ROWS == 0:
            time.sleep(0)
        yield item


def read_shard(path: str) -> List[Tuple[int, str]]:
    """``[(row, url)]`` of a shard file, in row order (for naming lost URLs)."""
    with tf.io.gfile.GFile(path, "r") as handle:
        lines = handle.read().split("\n")
    out = []
    for line in lines:
        if line:
            tag, _, url = line.partition("\t")
            out.append((int(unpack_tags(np.int64(int(tag)))[1]), url))
    return out
