"""Fetch stages built on the native op: the same contract as :func:`tfeed.fetching.python.stage.fetch`.

The shape is the tf.data tutorial's ``map(fetch)``, with the network work moved
out of tf.data's threads::

    (url, label) --batch(group_size)--> map(TfeedFetch, num_parallel_calls=2*max_in_flight/group_size)
        + transcode rare formats --map(record: counters, failures to Python, keep rows)--> --unbatch-->
        (body, label, url)

``TfeedFetch`` is an async kernel: it hands its URLs to the process-wide
libcurl loop and returns at once, so no tf.data thread waits on the network.
Unless ``deterministic``, the stages call ``TfeedFetchPooled`` instead, with
a lot id drawn once per iterator (:func:`with_lot`): the calls of one
iterator share their results, each returning as many rows as it brought URLs,
in completion order, so a URL that hangs until its timeout holds back the
epoch's last call only, not the finished rest of its group (measured with 2%
hanging URLs and a 5 s read timeout: 1,824 of 2,000 images in 2.0 s instead
of 10.7 s; ``benchmarks/bench_hanging.py``).
Twice ``max_in_flight / group_size`` groups are submitted at once: the loop
keeps ``max_in_flight`` requests open and queues the rest, so a group waiting
on its slowest URL, or a finished group not yet consumed, does not leave
request slots idle (measured at 100 ms latency, 2,000 JPEGs: 16 groups of 16
fetched 1,300-1,750 images/s, 32 groups 1,800-2,100).  The ``record`` step
runs no Python for a group without failures: its counters (fetched, bytes,
retries, cache hits) are one CPU variable that :class:`GraphCounters` adds to,
and ``TfeedKeepRows`` drops failed rows; a group with a failure calls one
``py_function`` behind one ``tf.cond`` (each ``tf.cond`` costs every
iterator ~4 ms to instantiate).  A ``py_function`` per group had cost ~2% of
throughput on 2 cores.  Groups holding a rare format (AVIF, animated WebP,
TIFF, ...) are transcoded the same way, in the parallel fetch map: in the
sequential ``record`` step, they held the modern-web corpus (1 in 10 an
AVIF, ~25 ms each) to 86 images/s where the parallel map gives 111
(``benchmarks/bench_decode.py``).  Bodies cross into Python only for the
rows to transcode.

:func:`fetch_native_graph` is the same fetch without any ``py_function``: it
keeps failures, with their reason, for pipelines that run where Python cannot
(tf.data service workers); the caller counts the reasons.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfeed import contract, errors, kernels
from tfeed.fetching import sniff
from tfeed.fetching.cache import HEADER_BYTES, DiskCache
from tfeed.config import FetchConfig
from tfeed.errors import ErrorPolicy, resolve_policy
from tfeed.stats import Stats

DEFAULT_GROUP_SIZE = contract.GROUP_SIZE
NATIVE_SCHEMES = ("http", "https", "file")


def fetch_native(config: FetchConfig, stats: Stats, *, on_error: ErrorPolicy = "skip", deterministic: bool = False,
                 group_size: int = DEFAULT_GROUP_SIZE, num_parallel_calls: Optional[int] = None,
                 ops=None, cache: Optional[DiskCache] = None, transcode_cover: Optional[Tuple[int, int]] = None
                 ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Return a ``Dataset -> Dataset`` function for ``ds.apply``.

    Input elements: ``(url: tf.string [], label: tf.int64 [])`` or groups of
    them as vectors ``[n]``.  Unless ``deterministic``, the groups of one
    iterator share their results (``TfeedFetchPooled``, see :func:`with_lot`),
    so a URL that hangs until its timeout holds back only the epoch's last
    group instead of the finished URLs of its own.  Output: ``(body, label,
    url)`` for each URL that downloaded as an image; failures are counted in
    ``stats``, handed to ``on_error`` and dropped.  ``num_parallel_calls``
    groups are fetched at once (default ``2 * ceil(config.max_in_flight /
    group_size)``).  ``ops`` is
    the loaded op module (default :func:`tfeed.kernels.load`).  ``cache``: a
    :class:`tfeed.DiskCache` (the op reads and writes its format itself,
    GIL-free; with ``max_bytes``, the bytes it wrote reach
    :meth:`~tfeed.DiskCache.grew` every ``max_bytes / 10``, which evicts).

    ``transcode_cover`` ``(height, width)``: formats transcoded here (AVIF,
    animated WebP, TIFF, ...) are reduced to the smallest 1/2, 1/4, 1/8 that
    still covers it (:func:`tfeed.fetching.sniff.reduce_to_cover`); None
    keeps them at full size.

    Raises ValueError for schemes the op does not read (use
    :func:`tfeed.fetching.python.stage.fetch` for ``gs://`` and other ``tf.io.gfile`` schemes)
    and RuntimeError when the op is unavailable.
    """
    handle = resolve_policy(on_error)
    ops = _require(ops)
    core = kernels.load_core() or ops
    ordered = bool(deterministic)
    fetch_group, calls = _fetch_group(config, ops, group_size, num_parallel_calls, pass_transcodable=True,
                                      cache=cache)

    counters = GraphCounters()
    stats.add_counter_source(counters.read)
    hosts = HostTable(ops)
    stats.add_host_source(hosts.rows)
    stats.add_counter_source(hosts.throttled_since_created)
    unreported = CacheGrowth(cache) if cache is not None and cache.max_bytes is not None else None
    if cache is not None:  # entries the op found corrupt (and deleted) count in cache.corrupt_entries
        cache.add_corrupt_source("native", lambda: int(ops.tfeed_cache_corrupt(cache.directory)))

    def settle(urls, reasons, details, written):
        """Python for a group with a failure or cache growth due: count and
        handle its failures, report ``written`` cache bytes when due.
        Returns the cache bytes reported."""
        try:
            reported = unreported.report(int(written)) if unreported is not None else 0
            for url, reason, detail in zip(urls.numpy(), reasons.numpy(), details.numpy()):
                if reason:
                    failure = errors.Failure(url.decode(errors="replace"), reason.decode(),
                                             detail.decode(errors="replace"))
                    stats.record_failure(failure)
                    handle(failure)
        except Exception as exc:  # the policy (or eviction) raised: the accounting stage re-raises it
            stats.fail(exc)
            raise
        return np.int64(reported)

    def transcode(bodies, reasons, details):
        """PNG-transcode a group's rows in formats tf.io cannot decode (no
        reason, a non-empty ``detail``; bodies are read only for those).
        Returns the transcoded rows ``[k, 1]`` and their new bodies, then the
        rows no decoder read and their failure details."""
        rows, pngs, unread, why = [], [], [], []
        for row, (reason, detail) in enumerate(zip(reasons.numpy(), details.numpy())):
            if reason or not detail:
                continue
            png = sniff.transcode_to_png(bodies[row].numpy(), transcode_cover)
            if png is None:
                unread.append(row), why.append(b"could not read " + detail)  # as the Python engine says
            else:
                rows.append(row), pngs.append(png)
        return (np.array(rows, np.int64).reshape(-1, 1), np.array(pngs, dtype=object),
                np.array(unread, np.int64).reshape(-1, 1), np.array(why, dtype=object))

    def fetch_and_transcode(*group):
        """``fetch_group``, then its rare formats transcoded, within the
        parallel fetch map (OpenCV and Pillow release the GIL; on the
        modern-web corpus an AVIF costs ~25 ms): rows no decoder reads become
        ``decode_error`` failures.  Adds ``sizes [n]``, the bodies' lengths as
        fetched (and cached)."""
        bodies, labels, urls, reasons, attempts, details = fetch_group(*group)
        sizes = tf.cast(tf.strings.length(bodies), tf.int64)

        def rare():  # one cond, Python only for a group with a format to transcode
            rows, pngs, unread, why = tf.py_function(transcode, [bodies, reasons, details],
                                                     [tf.int64, tf.string, tf.int64, tf.string],
                                                     name="tfeed_native_transcode")
            unread_reasons = tf.fill(tf.shape(why), errors.DECODE_ERROR)
            return (tf.tensor_scatter_nd_update(bodies, rows, pngs),
                    tf.tensor_scatter_nd_update(reasons, unread, unread_reasons),
                    tf.tensor_scatter_nd_update(details, unread, why))

        plain = tf.logical_or(tf.not_equal(reasons, ""), tf.equal(details, ""))
        bodies, reasons, details = tf.cond(tf.reduce_all(plain), lambda: (bodies, reasons, details), rare)
        return bodies, labels, urls, reasons, attempts, details, sizes

    def record_op(bodies, labels, urls, reasons, attempts, details, sizes):
        """One group at a time: failures, counters, cache growth; keeps the images."""
        ok = tf.equal(reasons, "")
        quiet = tf.reduce_all(ok)
        written = tf.constant(0, tf.int64)
        if unreported is not None:  # the cache entries this group added, not yet reported
            written = unreported.add(tf.where(tf.logical_and(ok, attempts > 0), sizes + HEADER_BYTES, 0))
            quiet = tf.logical_and(quiet, written < unreported.every)

        def flagged():  # one cond, Python only for a group with a failure or cache growth
            reported = tf.py_function(settle, [urls, reasons, details, written], tf.int64, name="tfeed_native_settle")
            done = [unreported.subtract(reported)] if unreported is not None else []
            with tf.control_dependencies(done):
                return tf.identity(reported)

        settled = tf.cond(quiet, lambda: tf.constant(0, tf.int64), flagged)
        attempts = tf.cast(attempts, tf.int64)
        counted = counters.add(
            fetched=tf.reduce_sum(tf.cast(ok, tf.int64)),
            bytes=tf.reduce_sum(tf.where(ok, tf.cast(tf.strings.length(bodies), tf.int64), 0)),
            retries=tf.reduce_sum(tf.maximum(attempts - 1, 0)),
            cache_hits=tf.reduce_sum(tf.cast(tf.logical_and(ok, tf.equal(attempts, 0)), tf.int64))
            if cache is not None else 0)
        with tf.control_dependencies([settled, counted]):
            return tuple(core.tfeed_keep_rows(ok, [bodies, labels, urls]))

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        groups = _grouped(dataset, group_size)
        groups = groups if ordered else with_lot(groups)
        fetched = groups.map(fetch_and_transcode, num_parallel_calls=calls, deterministic=ordered)
        return fetched.map(record_op).unbatch()

    return apply


class GraphCounters:
    """int64 counters (``fetched``, ``bytes``, ``retries``, ``cache_hits``) kept
    in one CPU variable that tf.data functions add to: no Python call per
    group, one op per group.  :meth:`read` is a :meth:`tfeed.Stats.add_counter_source`."""

    NAMES = ("fetched", "bytes", "retries", "cache_hits")

    def __init__(self):
        with tf.init_scope(), tf.device("/cpu:0"):
            self._variable = tf.Variable(tf.zeros([len(self.NAMES)], tf.int64), trainable=False, name="tfeed_counters")

    def add(self, **counts) -> tf.Operation:
        """The assign-add op for ``counts`` (name -> int64 scalar tensor; missing names add 0)."""
        unknown = set(counts) - set(self.NAMES)
        if unknown:
            raise ValueError(f"unknown counters {sorted(unknown)}; known: {self.NAMES}")
        return self._variable.assign_add(tf.stack([tf.cast(counts.get(name, 0), tf.int64) for name in self.NAMES]))

    def read(self) -> dict:
        return dict(zip(self.NAMES, (int(v) for v in self._variable.numpy())))


class HostTable:
    """The native loop's hosts (``TfeedHostStats``) for :meth:`tfeed.Stats.hosts`.

    The loop is process-wide, so its counts cover every native dataset of the
    process: the rows are the hosts asked since this table was made (an earlier
    dataset's idle hosts are left out), and ``throttled`` counts the overload
    answers since then (exact when one dataset fetches at a time)."""

    COUNTS = ("requests", "images", "failures", "throttles", "queued", "in_flight")

    def __init__(self, ops):
        self._ops = ops
        self._throttled_before = self._throttled()
        self._requests_before = {entry: row["requests"] for entry, row in self._all_rows()}

    def rows(self) -> list:
        return [row for entry, row in self._all_rows()
                if row["requests"] > self._requests_before.get(entry, -1) or row["in_flight"] or row["queued"]]

    def _all_rows(self) -> list:
        """``(entry, row)`` per host state: ``entry`` is the op's name for it (the host, a
        newline, its limiter's shape), unique where datasets with other caps share a host."""
        entries, counts, state = (t.numpy() for t in self._ops.tfeed_host_stats())
        return [(entry, {"host": entry.split(b"\n")[0].decode(errors="replace") or "(local)",
                         **dict(zip(self.COUNTS, map(int, row))),
                         "window": round(float(window), 1), "paced_rps": round(float(rps), 1) if rps > 0 else None,
                         "paused_s": round(float(paused), 2)})
                for entry, row, (window, rps, paused) in zip(entries, counts, state)]

    def _throttled(self) -> int:
        return int(self._ops.tfeed_host_stats()[1].numpy()[:, 3].sum())

    def throttled_since_created(self) -> dict:
        return {"throttled": self._throttled() - self._throttled_before}


class CacheGrowth:
    """Bytes the op wrote into a capped :class:`tfeed.DiskCache`, counted in a
    CPU variable and reported to :meth:`~tfeed.DiskCache.grew` (which evicts)
    once ``every`` bytes (a tenth of the cap) have gathered."""

    def __init__(self, cache: DiskCache):
        self.cache = cache
        self.every = max(1, cache.max_bytes // 10)
        with tf.init_scope(), tf.device("/cpu:0"):
            self._variable = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="tfeed_cache_unreported")

    def add(self, sizes: tf.Tensor) -> tf.Tensor:
        """Add a group's written ``sizes`` (int64 ``[n]``); the unreported total after it."""
        return self._variable.assign_add(tf.reduce_sum(sizes))

    def subtract(self, reported: tf.Tensor) -> tf.Operation:
        return self._variable.assign_sub(reported)

    def report(self, unreported: int) -> int:
        """Python side: hand ``unreported`` bytes to the cache when due; the bytes handed."""
        if unreported < self.every:
            return 0
        self.cache.grew(unreported)
        return unreported


def fetch_native_graph(config: FetchConfig, *, deterministic: bool = False, group_size: int = DEFAULT_GROUP_SIZE,
                       num_parallel_calls: Optional[int] = None, ops=None
                       ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Like :func:`fetch_native`, in graph ops only (no ``py_function``).

    Output elements: ``(body, label, url, reason)``, one per input URL:
    ``reason`` is ``b""`` for an image, else the failure reason, a tab and
    its detail (``body`` is then ``b""``).  Nothing is counted or dropped
    here: count and filter ``reason`` downstream.  Formats that need
    transcoding (AVIF, animated WebP, TIFF, ICO, JPEG 2000, PNM) count as
    ``unsupported_format``, as transcoding needs Python.
    """
    fetch_group, calls = _fetch_group(config, ops, group_size, num_parallel_calls, pass_transcodable=False)

    def keep_reason(bodies, labels, urls, reasons, attempts, details):
        del attempts
        return bodies, labels, urls, tf.where(tf.equal(reasons, ""), reasons, tf.strings.join([reasons, details], "\t"))

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        groups = _grouped(dataset, group_size)
        groups = groups if deterministic else with_lot(groups)
        fetched = groups.map(fetch_group, num_parallel_calls=calls, deterministic=bool(deterministic))
        return fetched.map(keep_reason).unbatch()

    return apply


def fetch_kwargs(config: FetchConfig, pass_transcodable: bool = False, cache: Optional[DiskCache] = None) -> dict:
    """The op's attributes for ``config`` and ``cache``
    (``ops.tfeed_fetch(urls, **fetch_kwargs(config))``)."""
    unsupported = [s for s in config.schemes if s.lower() not in NATIVE_SCHEMES]
    if unsupported:
        raise ValueError(f"the native fetch op reads {NATIVE_SCHEMES}, not {tuple(unsupported)}; "
                         "use tfeed.fetching.python.stage.fetch (the Python engine) for those schemes")
    return dict(connect_timeout=config.connect_timeout, read_timeout=config.read_timeout, deadline=config.deadline,
                retries=config.retries, backoff=config.backoff, max_backoff=config.max_backoff,
                max_redirects=config.max_redirects, max_bytes=config.max_bytes, max_pixels=config.max_pixels or 0,
                max_in_flight=config.max_in_flight, max_in_flight_bytes=config.max_in_flight_bytes,
                connections_per_host=config.connections_per_host, dns_cache_ttl=config.dns_cache_ttl,
                schemes=[s.lower() for s in config.schemes], trust_env=config.trust_env,
                user_agent=config.user_agent, pass_transcodable=pass_transcodable,
                ca_file=config.ca_file or "", verify_tls=config.verify_tls,
                cache_dir=cache.directory if cache is not None else "",
                remember_failures_s=cache.remember_failures_s if cache is not None else 0.0,
                adaptive=config.adaptive, host_patience=config.host_patience,
                max_requests_per_second_per_host=config.max_requests_per_second_per_host or 0.0,
                respect_opt_out=config.respect_opt_out,
                deny_networks=list(config.deny_networks), file_root=config.file_root or "")


def _fetch_group(config, ops, group_size, num_parallel_calls, pass_transcodable, cache=None):
    if group_size < 1 or (num_parallel_calls is not None and num_parallel_calls < 1):
        raise ValueError(f"group_size and num_parallel_calls must be >= 1, got {group_size}, {num_parallel_calls}")
    attrs = fetch_kwargs(config, pass_transcodable, cache)
    ops = _require(ops)
    calls = num_parallel_calls or 2 * math.ceil(config.max_in_flight / group_size)

    def fetch_group(urls, labels, lot=None):
        if lot is not None:  # groups from with_lot: rows of any group of the lot, in completion order
            bodies, out_labels, urls, reasons, attempts, details = ops.tfeed_fetch_pooled(
                urls, tf.cast(labels, tf.int64), lot, **attrs)
            return bodies, tf.cast(out_labels, labels.dtype), urls, reasons, attempts, details
        bodies, reasons, attempts, details = ops.tfeed_fetch(urls, **attrs)
        return bodies, labels, urls, reasons, attempts, details

    return fetch_group, calls


def _require(ops):
    """``ops``, or the loaded op module; RuntimeError when it is unavailable."""
    if ops is not None:
        return ops
    ops = kernels.load_fetch()
    if ops is None:
        raise RuntimeError("the native fetch op is unavailable (see the warning above); "
                           "use tfeed.fetching.python.stage.fetch, or check tfeed.kernels.available() first")
    return ops


def with_lot(groups: tf.data.Dataset) -> tf.data.Dataset:
    """``(urls [n], labels [n])`` groups -> ``(urls, labels, lot)``: ``lot`` an
    int64 scalar drawn at random by each iterator's first group and kept for
    the rest (the ``scan`` state starts again with every iterator), so the
    pooled op's calls share results within one iterator and never across two.
    Graph ops only: it runs on tf.data service workers too."""
    def step(lot, group):
        urls, labels = group
        lot = tf.where(lot == 0, tf.random.uniform([], 1, 2**62, dtype=tf.int64), lot)
        return lot, (urls, labels, lot)

    return groups.scan(tf.constant(0, tf.int64), step)


def _grouped(dataset: tf.data.Dataset, group_size: int) -> tf.data.Dataset:
    return dataset.batch(group_size) if dataset.element_spec[0].shape.rank == 0 else dataset
