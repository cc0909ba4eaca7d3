"""The Python engine's queues: one per host, each behind a :class:`~tfeed.fetching.limiter.HostLimiter`.

URLs wait in their host's queue (oldest first) until the host's window, pace
and pause allow a start; hosts take turns (round robin over the hosts that
can start), so a throttled or slow host never holds back the others.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
import urllib.parse
from typing import Deque, Dict, Iterator, List, Optional, Tuple

from tfeed import contract, errors
from tfeed.config import FetchConfig
from tfeed.fetching.limiter import HostLimiter
from tfeed.fetching.python.download import Outcome, Overload

# Failures that say the host never answered (no connection): its refusals are then not load.
_NO_ANSWER = (errors.CONNECTION, errors.DNS, errors.TIMEOUT, errors.BLOCKED_ADDRESS, errors.INVALID_URL)


@dataclasses.dataclass
class Pending:
    """A URL waiting for (or in) a request, and where its result goes."""

    run: object
    sink: object
    index: int
    url: str
    label: int
    sheds: int = 0  # times its host shed it while answering other requests in between
    answered_mark: int = -1  # the host's answers when it was last shed


def host_key(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` as it is written (an IPv6 literal in its brackets),
    lower-cased and without credentials, as the native engine names hosts (``HostKey`` in
    ``kernels/fetch/hosts.cc``); ``""`` for local paths and unparsable URLs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}".lower() if parts.netloc else ""


# The newest limiter of each host in the process (a new engine's hosts start from them), the most
# recently created last; at most _REMEMBERED hosts.
_REMEMBERED = 4096
_limiters: "collections.OrderedDict[tuple, HostLimiter]" = collections.OrderedDict()
_limiters_lock = threading.Lock()


def _start_from_last(limiter: HostLimiter, key: tuple) -> None:
    """Start ``limiter`` from the last one of the same ``key`` if any, and remember it in its place."""
    with _limiters_lock:
        last = _limiters.pop(key, None)
        _limiters[key] = limiter
        while len(_limiters) > _REMEMBERED:
            _limiters.popitem(last=False)
    if last is not None:
        limiter.learn_from(last)


class Host:
    """One host's queue, limiter and counters."""

    def __init__(self, key: str, config: FetchConfig, rng: random.Random):
        self.key = key
        self.adaptive = config.adaptive and key.startswith(("http://", "https://"))
        cap = config.connections_per_host if key else config.max_in_flight
        self.limiter = HostLimiter(cap, backoff=config.backoff, max_backoff=config.max_backoff,
                                   patience=config.host_patience, rng=rng, adaptive=self.adaptive)
        if config.max_requests_per_second_per_host is not None and key:
            self.limiter.min_gap = 1.0 / config.max_requests_per_second_per_host
        if self.adaptive:
            _start_from_last(self.limiter, (key, cap, self.limiter.min_gap, config.backoff, config.max_backoff,
                                            config.host_patience))
        self.queue: Deque[Pending] = collections.deque()
        self.requests = self.failures = self.images = 0
        self.ever_answered = False

    def answered(self, ticket, outcome: Outcome, now: float) -> None:
        """A request ended with an image or a failure that says nothing of load."""
        self.requests += outcome.attempts
        if outcome.body is not None or outcome.failure.reason not in _NO_ANSWER:
            self.ever_answered = True  # a refusal is no answer: the host may be down
        if outcome.body is not None:
            self.images += 1
        else:
            self.failures += 1
        self.limiter.succeeded(ticket, outcome.latency, now)

    def overloaded(self, pending: Pending, ticket, overload: Overload, now: float) -> None:
        """The host shed this request: the limiter is told (the caller queues the URL again)."""
        self.requests += 1
        answered = self.images + self.failures
        if 0 <= pending.answered_mark < answered:
            pending.sheds += 1
        pending.answered_mark = answered
        self.limiter.overloaded(ticket, now, status=overload.status, retry_after=overload.retry_after)

    def takes_as_load(self, pending: Pending, status: int) -> bool:
        """Whether an overload answer (``status`` 429/503, or 0 for a refused, reset or
        timed-out connection) for ``pending`` is taken as the host's load (requeue)
        rather than as the URL's own retryable failure.  A host that never answered
        is down, not busy: its refusals are failures (as in the native engine)."""
        if not self.adaptive or pending.sheds >= contract.SHEDS_PER_URL:
            return False
        return status != 0 or self.ever_answered


class HostQueues:
    """Every host's queue, and the round robin over them."""

    def __init__(self, config: FetchConfig, rng: random.Random):
        self.config = config
        self.rng = rng
        self.hosts: Dict[str, Host] = {}
        self.turns: Deque[Host] = collections.deque()  # hosts with queued URLs

    def put(self, pending: Pending, host: Optional[Host] = None) -> None:
        """Queue ``pending`` at the end of its host's queue (a URL its host shed
        goes to the end too: one the host keeps refusing must not block the others)."""
        host = host or self._host(host_key(pending.url))
        if not host.queue:
            self.turns.append(host)
        host.queue.append(pending)

    def next_ready(self, now: float) -> Optional[Tuple[Pending, Host, tuple]]:
        """The next URL whose host can start a request now (started on its limiter), or None."""
        for _ in range(len(self.turns)):
            host = self.turns[0]
            self.turns.rotate(-1)
            if not host.queue:
                self.turns.remove(host)
                continue
            if host.limiter.can_start(now):
                pending = host.queue.popleft()
                if not host.queue:
                    self.turns.remove(host)
                return pending, host, host.limiter.start(now)
        return None

    def next_wakeup(self, now: float) -> Optional[float]:
        """When a host that is waiting on its pace or a pause (not its window) may start again."""
        times = [host.limiter.ready_at(now) for host in self.turns if host.queue]
        later = [t for t in times if t > now]
        return min(later) if later else None

    def give_up_throttled(self, now: float) -> Iterator[Pending]:
        """Queued URLs of hosts that exceeded their patience, removed from the queues."""
        for host in list(self.turns):
            if host.limiter.given_up(now):
                while host.queue:
                    yield host.queue.popleft()
                self.turns.remove(host)

    def table(self, now: float) -> List[dict]:
        return [{"host": host.key or "(local)", "requests": host.requests, "images": host.images,
                 "failures": host.failures, "queued": len(host.queue), **host.limiter.snapshot(now)}
                for host in self.hosts.values()]

    def _host(self, key: str) -> Host:
        host = self.hosts.get(key)
        if host is None:
            host = self.hosts[key] = Host(key, self.config, self.rng)
        return host
