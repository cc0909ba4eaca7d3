"""Live counters of a dataset: what was delivered, what failed and why.

One :class:`Stats` belongs to one dataset (no globals).  It is updated from the
fetch engine's thread and tf.data's threads, and read at any time with
:meth:`Stats.snapshot`.  Accounting is exact per epoch when one iterator runs
at a time (as ``model.fit`` does): at the end of an epoch every URL is either
delivered once or counted once under a reason.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from tfeed import elements, errors
from tfeed.resume import Position, url_key


class Stats:
    """Thread-safe counters.  ``max_failures_kept`` bounds the failed-URL log."""

    def __init__(self, max_failures_kept: int = 10_000):
        self._lock = threading.Lock()
        self._failures = collections.Counter()
        self._failed = collections.deque(maxlen=max_failures_kept)
        self._pending = collections.Counter()  # fetched, not yet delivered
        self._started = time.monotonic()
        self._first_delivery = None
        self._counts = collections.Counter()
        self._epoch = 0
        self._resumed_done = np.zeros(0, np.uint64)
        self._batches: List[np.ndarray] = []  # keys of delivered batches, in order
        self._listeners: List[Callable[[str, int], None]] = []
        self._error: Optional[BaseException] = None
        self._counter_sources: List[Callable[[], Dict[str, int]]] = []
        self._journals: List[Callable[[], tuple]] = []
        self._host_sources: List[Callable[[], List[dict]]] = []
        self._drain_lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        """A stage hit an error that must stop the epoch (an error policy that
        raised, an unreadable source...).  :meth:`check` re-raises it."""
        with self._lock:
            if self._error is None:
                self._error = error

    def check(self) -> None:
        """Raise the error recorded by :meth:`fail` in this epoch, if any."""
        error = self._error
        if error is not None:
            raise error

    def add_listener(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener("delivered", n)`` for each delivered batch of ``n``
        and ``listener("epoch_end", epochs_done)`` when an epoch closes (from
        tf.data threads; keep it quick).  With the native engine (and no
        ``progress`` bar), batches are journaled natively and listeners hear of
        them when these stats are next read or the epoch ends."""
        self._listeners.append(listener)

    def add_counter_source(self, source: Callable[[], Dict[str, int]]) -> None:
        """Add ``source()`` (counter name -> total, e.g. ``fetched``, ``bytes``)
        to every :meth:`snapshot`: counts kept outside Python, such as the
        native fetch stage's graph counters."""
        self._counter_sources.append(source)

    def add_host_source(self, source: Callable[[], List[dict]]) -> None:
        """Add ``source()`` (one dict per host: ``host``, ``requests``,
        ``images``, ``failures``, ``throttles``, ``window``...) to :meth:`hosts`."""
        self._host_sources.append(source)

    def attach_journal(self, drain: Callable[[], tuple]) -> None:
        """Deliveries recorded outside Python: ``drain()`` returns ``(urls,
        batch_sizes, first_time)`` appended since its last call (``first_time``:
        ``time.monotonic()`` of the first, or -1) by the native accounting
        stage's journal.  They are applied, batch by batch, whenever these
        stats are read and at the end of each epoch; listeners hear of them
        then."""
        self._journals.append(drain)

    def _drain(self) -> None:
        if not self._journals:
            return
        with self._drain_lock:
            for journal in self._journals:
                urls, sizes, first_time = journal()
                if len(sizes) and first_time >= 0:
                    with self._lock:
                        if self._first_delivery is None:
                            self._first_delivery = first_time
                start = 0
                for size in sizes:
                    self.record_batch(urls[start:start + int(size)])
                    start += int(size)

    def _notify(self, event: str, value: int) -> None:
        for listener in self._listeners:
            listener(event, value)

    # -- updates ---------------------------------------------------------
    def record_failure(self, failure: errors.Failure) -> None:
        with self._lock:
            self._failures[failure.reason] += 1
            self._failed.append(failure)

    def record_fetched(self, url: str, nbytes: int) -> None:
        """A body of ``nbytes`` arrived for ``url``; it now awaits decoding."""
        with self._lock:
            self._pending[url] += 1
            self._counts["fetched"] += 1
            self._counts["bytes"] += nbytes

    def record_retries(self, count: int) -> None:
        if count:
            with self._lock:
                self._counts["retries"] += count

    def record_undecodable(self, url: str, detail: str) -> None:
        """``url`` arrived but its body could not be decoded (``detail``: why)."""
        with self._lock:
            self._settle(url)
            self._failures[errors.DECODE_ERROR] += 1
            self._failed.append(errors.Failure(url, errors.DECODE_ERROR, f"image could not be decoded: {detail}"))

    def record_batch(self, url_column: Iterable[bytes]) -> None:
        """One batch's URL column: marked entries (:func:`tfeed.elements.split_mark`)
        failed to decode, the others were delivered."""
        delivered = []
        for value in url_column:
            url, error = elements.split_mark(value)
            if error is None:
                delivered.append(url.decode())
            else:
                self.record_undecodable(url.decode(errors="replace"), error)
        self.record_delivered(delivered)

    def record_delivered(self, urls: Iterable[str]) -> None:
        """These examples left the pipeline decoded (one call per batch)."""
        now = time.monotonic()
        urls = list(urls)
        keys = np.fromiter((url_key(url) for url in urls), np.uint64, len(urls))
        with self._lock:
            if self._first_delivery is None:
                self._first_delivery = now
            self._batches.append(keys)
            for url in urls:
                self._counts["delivered"] += 1
                self._settle(url)
        self._notify("delivered", len(urls))

    def _settle(self, url: str) -> None:
        """``url`` is no longer pending (call with the lock held)."""
        if self._pending[url] <= 1:
            self._pending.pop(url, None)
        else:
            self._pending[url] -= 1

    def begin_epoch(self, epoch: int, done: Optional[np.ndarray] = None) -> None:
        """A new iterator starts epoch ``epoch`` (``done``: URL keys already
        consumed in it before a resume).  Examples an abandoned iterator
        fetched but never delivered were not failures: they are forgotten."""
        self._drain()
        with self._lock:
            self._pending.clear()
            self._epoch = epoch
            self._error = None
            self._resumed_done = np.zeros(0, np.uint64) if done is None else np.asarray(done, np.uint64)
            self._batches = []

    def finish_epoch(self) -> None:
        """Close an epoch: fetched examples never delivered failed to decode."""
        self._drain()
        with self._lock:
            for url, count in self._pending.items():
                self._failures[errors.DECODE_ERROR] += count
                for _ in range(count):
                    self._failed.append(errors.Failure(url, errors.DECODE_ERROR, "image could not be decoded"))
            self._pending.clear()
            self._counts["epochs"] += 1
            self._epoch += 1
            self._resumed_done = np.zeros(0, np.uint64)
            self._batches = []
            epochs = self._counts["epochs"]
        self._notify("epoch_end", epochs)

    def position(self, consumed_batches: Optional[int] = None) -> Position:
        """Where the current epoch stands: URLs in the first ``consumed_batches``
        delivered batches (default: all delivered so far) count as done."""
        self._drain()
        with self._lock:
            batches = self._batches if consumed_batches is None else self._batches[:consumed_batches]
            done = np.concatenate([self._resumed_done, *batches]) if batches else self._resumed_done
            return Position(self._epoch, done.copy())

    def record_throttle(self) -> None:
        """A host answered a request with overload (429, 503, a refusal): the URL waits and goes again."""
        with self._lock:
            self._counts["throttled"] += 1

    def record_cache_hit(self) -> None:
        with self._lock:
            self._counts["cache_hits"] += 1

    # -- reads -----------------------------------------------------------
    def snapshot(self) -> Dict[str, object]:
        """Counters now: ``delivered``, ``failed``, ``failures`` (reason -> count),
        ``retries``, ``bytes``, ``fetched``, ``epochs``, ``cache_hits``,
        ``throttled`` (overload answers: the URL waited and went again),
        ``elapsed_s`` and ``images_per_s`` (delivered / seconds since the
        first delivery)."""
        self._drain()
        now = time.monotonic()
        with self._lock:
            counts = collections.Counter(self._counts)
            failures = dict(self._failures)
            first = self._first_delivery
        for source in self._counter_sources:
            counts.update(source())
        delivered = counts.get("delivered", 0)
        span = (now - first) if first is not None else 0.0
        return {
            "delivered": delivered,
            "failed": sum(failures.values()),
            "failures": failures,
            "retries": counts.get("retries", 0),
            "bytes": counts.get("bytes", 0),
            "fetched": counts.get("fetched", 0),
            "cache_hits": counts.get("cache_hits", 0),
            "throttled": counts.get("throttled", 0),
            "epochs": counts.get("epochs", 0),
            "elapsed_s": now - self._started,
            "images_per_s": delivered / span if span > 0 else 0.0,
        }

    def hosts(self, limit: int = 20) -> List[dict]:
        """The ``limit`` busiest hosts (by requests), each a dict: ``host``,
        ``requests``, ``images``, ``failures``, ``throttles`` (429/503/refusals),
        ``window`` (open requests allowed now), ``in_flight``, ``queued``,
        ``paced_rps`` (None: unpaced) and ``paused_s`` (seconds of pause left).
        The native engine's rows cover the process: datasets with the same
        limiter settings (caps, patience, pace) share a host's row, counts and
        state, others have a row of their own for it; hosts no request went to
        since this dataset was made are left out, and its rows are at most
        50 ms old (its loop publishes them at most that often)."""
        rows = [row for source in self._host_sources for row in source()]
        rows.sort(key=lambda row: row["requests"], reverse=True)
        return rows[:limit]

    def failed_urls(self, limit: int = 100) -> List[errors.Failure]:
        """The most recent ``limit`` failures (url, reason, detail), oldest first."""
        self._drain()
        with self._lock:
            kept = list(self._failed)
        return kept[-limit:] if limit else []

    def __repr__(self) -> str:
        snap = self.snapshot()
        return f"Stats(delivered={snap['delivered']}, failed={snap['failed']}, failures={snap['failures']})"
