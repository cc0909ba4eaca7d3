"""The fetch engine: hundreds of downloads in flight on one background loop.

tf.data threads talk to the engine through two cheap calls:

* :meth:`FetchEngine.submit` hands over a group of ``(url, label)`` and returns
  a ticket at once; downloads start in submission order (FIFO) as long as
  fewer than ``max_in_flight`` run and held bodies stay under
  ``max_in_flight_bytes``.
* :meth:`FetchEngine.collect` blocks (without the GIL) until a ticket's worth
  of results is ready: the ticket's own results in order (``ordered=True``), or
  the first ones to complete in that iterator (``ordered=False``).

Every submitted URL produces exactly one :class:`Result`.  Each tf.data
iterator is a *run*; results never cross runs, so an abandoned iterator (a
``take(3)`` in a notebook) cannot leak examples into the next epoch.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import itertools
import queue
import random
import threading
import weakref
from typing import Dict, List, Optional, Sequence

from tfeed import errors
from tfeed.fetching.cache import DiskCache
from tfeed.fetching.limiter import RequestConnections
from tfeed.config import FetchConfig
from tfeed.fetching.python.download import download
from tfeed.fetching.python.guard import connector_hooks
from tfeed.fetching.python.heap import HeapHold
from tfeed.fetching.python.hosts import Host, HostQueues, Pending
from tfeed.fetching.python.loop_priority import LoopPriority
from tfeed.fetching.python.wakeup import Wakeup
from tfeed.lifetime import weak_method
from tfeed.stats import Stats

_LIVE_RUNS = 4  # iterators kept alive at once; older runs are retired


@dataclasses.dataclass
class Result:
    """One URL's outcome: ``body`` is image bytes, or None with ``failure``."""

    url: str
    label: int
    body: Optional[bytes]
    failure: Optional[errors.Failure]
    cached: bool = False  # answered from the disk cache, no request made

    @property
    def size(self) -> int:
        return len(self.body) if self.body is not None else 0


class _Run:
    """Results of one tf.data iterator."""

    def __init__(self):
        self.done: "queue.SimpleQueue[Result]" = queue.SimpleQueue()  # completion order
        self.tickets: Dict[int, "queue.SimpleQueue"] = {}  # ordered mode: per ticket
        self.retired = False
        # Unordered collects take their results in submission order, so the
        # oldest waiting ticket is filled first and one slow URL holds back
        # only the ticket that ends up with it (as the native pooled calls do).
        self.turns = threading.Condition()
        self.submitted = 0
        self.serving = 1


class FetchEngine:
    """Downloads URLs with ``config`` and records outcomes into ``stats``.

    With a ``cache`` (:class:`tfeed.fetching.cache.DiskCache`), cached bodies and
    remembered permanent failures are answered in :meth:`submit` without a
    request, and new bodies are stored by :meth:`collect`.

    Thread-safe.  The loop thread starts on first use; :meth:`close` (or
    garbage collection, or interpreter exit) stops it.
    """

    def __init__(self, config: FetchConfig, stats: Stats, seed: Optional[int] = None,
                 cache: Optional[DiskCache] = None, transcode_cover: Optional[tuple] = None):
        self.config = config
        self.transcode_cover = transcode_cover  # see tfeed.fetching.sniff.reduce_to_cover
        self.stats = stats
        self.cache = cache
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._session = None
        self._runs: "collections.OrderedDict[int, _Run]" = collections.OrderedDict()
        self._tickets: Dict[int, tuple] = {}
        self._run_ids = itertools.count(1)
        self._ticket_ids = itertools.count(1)
        # loop-thread state
        self._hosts = HostQueues(config, self._rng)
        self._in_flight = 0
        self._heap = HeapHold()  # keeps full collections off the older heap while requests run
        self._held_bytes = 0
        self._wakeup: Optional[Wakeup] = None  # made on the loop thread, with the session
        self._finalizer = None
        stats.add_host_source(weak_method(self.host_table, otherwise=()))  # stats may outlive the dataset

    # -- tf.data-facing API (any thread) ----------------------------------
    def new_run(self) -> int:
        """Start a run (one iterator); retires runs beyond the newest few."""
        self._ensure_started()
        with self._lock:
            run_id = next(self._run_ids)
            self._runs[run_id] = _Run()
            while len(self._runs) > _LIVE_RUNS:
                _, old = self._runs.popitem(last=False)
                old.retired = True
                self._loop.call_soon_threadsafe(self._drain_retired, old)
        return run_id

    def submit(self, run_id: int, urls: Sequence[str], labels: Sequence[int], ordered: bool) -> int:
        """Queue downloads; returns a ticket for :meth:`collect`."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RuntimeError(f"run {run_id} was retired: too many live iterators on one dataset")
            ticket = next(self._ticket_ids)
            sink = queue.SimpleQueue() if ordered else run.done
            if ordered:
                run.tickets[ticket] = sink
            run.submitted += 1
            self._tickets[ticket] = (run, len(urls), sink, ordered, run.submitted)
        items = []
        for index, (url, label) in enumerate(zip(urls, labels)):
            cached = self._from_cache(url, label) if self.cache is not None else None
            if cached is not None:
                sink.put((index, cached))
            else:
                items.append((run, sink, index, url, label))
        if items:
            self._loop.call_soon_threadsafe(self._enqueue, items)
        return ticket

    def _from_cache(self, url: str, label: int) -> Optional[Result]:
        body = self.cache.get(url)
        if body is not None:  # a body is only stored after a success, so it wins over a remembered failure
            self.stats.record_cache_hit()
            self.stats.record_fetched(url, len(body))
            return Result(url, int(label), body, None, cached=True)
        reason = self.cache.remembered_failure(url)
        if reason is None:
            return None
        failure = errors.Failure(url, reason, "remembered from an earlier attempt (cache)")
        self.stats.record_failure(failure)
        return Result(url, int(label), None, failure, cached=True)

    def collect(self, ticket: int) -> List[Result]:
        """Block until the ticket's results are ready; release their bytes."""
        with self._lock:
            run, size, sink, ordered, turn = self._tickets.pop(ticket)
        if not ordered:
            self._await_turn(run, turn)
        got = []
        try:
            while len(got) < size:
                try:
                    got.append(sink.get(timeout=1.0))
                except queue.Empty:
                    if not self._thread.is_alive():
                        raise RuntimeError("tfeed fetch engine stopped unexpectedly") from None
        finally:
            if not ordered:
                with run.turns:
                    run.serving = max(run.serving, turn + 1)
                    run.turns.notify_all()
        if ordered:
            run.tickets.pop(ticket, None)
            got.sort(key=lambda pair: pair[0])
        results = [result for _, result in got]
        downloaded = [result for result in results if not result.cached]
        freed = sum(result.size for result in downloaded)
        if freed:
            self._loop.call_soon_threadsafe(self._release, freed)
        if self.cache is not None:
            self._store(downloaded)
        return results

    def _await_turn(self, run: _Run, turn: int) -> None:
        with run.turns:
            while run.serving < turn and not run.retired:
                run.turns.wait(timeout=1.0)
                if not self._thread.is_alive():
                    raise RuntimeError("tfeed fetch engine stopped unexpectedly")

    def _store(self, results: List[Result]) -> None:
        for result in results:
            if result.body is not None:
                self.cache.put(result.url, result.body)
            elif result.failure is not None:
                self.cache.remember_failure(result.url, result.failure.reason)

    def close(self) -> None:
        """Stop the loop thread and close connections (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()

    # -- loop thread -------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            # asyncio's own loop, also where uvloop is installed: uvloop's clock and timers count
            # whole milliseconds, so a paced host's starts drift late (nginx limit_req 200 r/s, the
            # client on one core: 156-161 images/s against 168-172, with as many answers of 429),
            # while its lower per-request CPU gave the 16-host origin 3-5% in the first epoch.
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=_run_loop, args=(loop, ready), name="tfeed-fetch", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            self._session = asyncio.run_coroutine_threadsafe(self._open_on_loop(), loop).result()
            self._finalizer = weakref.finalize(self, _shutdown, loop, thread, self._session, self._wakeup, self._heap)

    async def _open_on_loop(self):
        """The HTTP session and the wake-up, made on the loop thread (both belong to the loop)."""
        import aiohttp

        # paced and paused hosts' next start; the loop holds the wake-up, which must not hold the engine
        self._wakeup = Wakeup(asyncio.get_running_loop(), weak_method(self._pump))
        connector = aiohttp.TCPConnector(limit=self.config.max_in_flight,
                                         limit_per_host=self.config.connections_per_host,
                                         ttl_dns_cache=self.config.dns_cache_ttl, use_dns_cache=True,
                                         ssl=tls_context(self.config), **connector_hooks(self.config.deny_networks))
        # No cookie jar: one host's cookies never reach another, nor a later request.
        return aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.config.user_agent},
                                     auto_decompress=True, trust_env=self.config.trust_env,
                                     cookie_jar=aiohttp.DummyCookieJar())

    def _enqueue(self, items) -> None:
        for item in items:
            self._hosts.put(Pending(*item))
        self._pump()

    def _pump(self) -> None:
        """Start queued downloads while the limits allow: hosts in turn, each
        within its adaptive window and pace, oldest URL first within a host."""
        config, now = self.config, self._loop.time()
        for pending in self._hosts.give_up_throttled(now):
            self._settle(pending, Result(pending.url, int(pending.label), None, errors.Failure(
                pending.url, errors.RATE_LIMITED, f"host answered only overload for > {config.host_patience}s")))
        # Bytes held (partial bodies, results not yet collected) pause new requests; with nothing
        # in flight one always starts, so a ticket waiting for its last URLs always completes.
        while self._in_flight < config.max_in_flight and (self._in_flight == 0
                                                          or self._held_bytes < config.max_in_flight_bytes):
            started = self._hosts.next_ready(now)
            if started is None:
                break
            pending, host, ticket = started
            if pending.run.retired:
                host.limiter.finished(ticket)
                continue
            self._in_flight += 1
            self._loop.create_task(self._fetch(pending, host, ticket))
        self._heap.set(self._in_flight > 0)
        self._schedule_wakeup(self._hosts.next_wakeup(now))

    def _schedule_wakeup(self, when: Optional[float]) -> None:
        if when is not None and (self._wakeup.when is None or when < self._wakeup.when):
            self._wakeup.arm(when)

    async def _fetch(self, pending: "Pending", host: "Host", ticket) -> None:
        url, label = pending.url, pending.label
        partial = [0]  # body bytes received so far: held against max_in_flight_bytes while downloading

        def arrived(nbytes: int) -> None:
            partial[0] += nbytes
            self._held_bytes += nbytes

        try:
            outcome = await download(self._session, url, self.config, self._rng, transcode_cover=self.transcode_cover,
                                     stop_on_overload=functools.partial(host.takes_as_load, pending), on_bytes=arrived,
                                     connections=RequestConnections(host.limiter, ticket))
            self._held_bytes -= partial[0]
            partial[0] = 0
            self.stats.record_retries(outcome.attempts - 1)
            if outcome.overload is not None:
                self._in_flight -= 1
                self.stats.record_throttle()
                host.overloaded(pending, ticket, outcome.overload, self._loop.time())
                self._hosts.put(pending, host)
                self._pump()
                return
            host.answered(ticket, outcome, self._loop.time())
            result = Result(url, int(label), outcome.body, outcome.failure)
        except BaseException as exc:  # never lose a URL, even to a bug
            self._held_bytes -= partial[0]
            result = Result(url, int(label), None, errors.Failure(url, "internal_error", repr(exc)))
            host.limiter.finished(ticket)
            if isinstance(exc, asyncio.CancelledError):
                self._in_flight -= 1
                raise
        self._in_flight -= 1
        self._settle(pending, result)
        self._pump()

    def _settle(self, pending: "Pending", result: "Result") -> None:
        """Count ``result`` and hand it to its run."""
        url, run, sink, index = pending.url, pending.run, pending.sink, pending.index
        if result.failure is not None:
            self.stats.record_failure(result.failure)
        else:
            self.stats.record_fetched(url, result.size)
        if run.retired:
            result = dataclasses.replace(result, body=None)
        else:
            self._held_bytes += result.size
        sink.put((index, result))

    def host_table(self) -> List[dict]:
        """Per-host counters and limiter state (read by :meth:`tfeed.Stats.hosts`)."""
        return self._hosts.table(self._loop.time() if self._loop is not None else 0.0)

    def _release(self, nbytes: int) -> None:
        self._held_bytes -= nbytes
        self._pump()

    def _drain_retired(self, run: _Run) -> None:
        sinks = [run.done, *run.tickets.values()]
        for sink in sinks:
            while True:
                try:
                    _, result = sink.get_nowait()
                except queue.Empty:
                    break
                if not result.cached:
                    self._held_bytes -= result.size
        self._pump()


def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    LoopPriority(loop).begin()
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
    finally:
        loop.close()  # its epoll and self-pipe: three files per engine otherwise


def _shutdown(loop, thread, session, wakeup: Wakeup, heap: HeapHold) -> None:
    """Close the session, stop the loop thread.  Runs where the engine's last reference went: any
    thread, at exit, or the loop's own (a dropped dataset's last download), which cannot wait for itself."""
    heap.set(False)  # requests cut short by the shutdown never reach _pump
    if not thread.is_alive():
        return
    if threading.current_thread() is thread:
        loop.create_task(_close_on_loop(loop, session, wakeup))
        return
    try:
        asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=5)
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
    loop.call_soon_threadsafe(wakeup.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


async def _close_on_loop(loop, session, wakeup: Wakeup) -> None:
    """:func:`_shutdown` from the loop's own thread: nothing waits for this."""
    try:
        await session.close()
    finally:
        wakeup.close()
        loop.stop()


def tls_context(config: FetchConfig):
    """aiohttp's ``ssl`` argument for ``config``: ``False`` (no verification),
    an ``SSLContext`` trusting ``config.ca_file``, or ``True`` (the system's CAs)."""
    if not config.verify_tls:
        return False
    if config.ca_file is None:
        return True
    import ssl

    return ssl.create_default_context(cafile=config.ca_file)
