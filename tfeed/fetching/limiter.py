"""Per-host adaptive concurrency and pacing: how many requests one host gets, and when.

The rules (constants in :mod:`tfeed.contract`; the native op's ``limiter.cc``
implements the same state machine and is checked against this one):

* **Window.** A host starts with ``INITIAL_WINDOW`` open requests (a burst of
  new connections that fits the 5-deep accept queue of ``python -m
  http.server``) and gains ``SLOW_START_GROWTH`` per success ("slow start":
  two per success, the window triples per round trip; an HTTP/2 host's opens
  to ``MULTIPLEXED_WINDOW`` streams at its first answer), until the first sign
  of overload; then about one per round trip.  ``cap``
  (``FetchConfig.connections_per_host``) bounds it.
* **Overload** (``503``, a refused or reset connection, a connect timeout):
  the window becomes the smallest of ``OVERLOAD_DECREASE`` times itself, the
  number of requests that were open before the overloaded one started, and
  the most requests served at once among the successes since the last cut
  (what a concurrency limiter let through: for each success, the requests open
  when it started, but no more than were answered while it was open), at most
  once per window of requests (signals from requests started before the last
  overload are the same event; a latency cut does not end it).  Against
  ``python -m http.server`` a burst of new connections overflows its accept
  queue: the few that get through answer alone while the rest wait on dropped
  SYNs, and counting those as served (or taking the timeouts for answers to an
  earlier latency cut) held the window at 100-230 for up to a second of
  timeouts; 4 of 11 first epochs ran at 616-980 images/s, against 10 of 10 at
  1,077-1,110 now.
  The level the host served when it overloaded is remembered: the window
  regrows to it by about one per round trip, and probes above it only after
  ``PROBE_QUIET_S`` without overload, a spell that doubles with each failed
  probe (a failed probe returns to the known level, no deeper cut), and is at
  least ``PAUSE_PROBE_QUIET`` times the host's last ``Retry-After`` pause.  That
  level is the larger of the most requests open among earlier successes and
  the successes among the requests open at the cut (the *burst*), never above
  the requests open before the shed one: in slow start the first bound lags a
  round trip, and the open count of a client that has not yet read finished
  responses runs high (the Python engine counted 25 open against a host that
  sheds above 16, regrew to 18 and was shed again, a second 1 s
  ``Retry-After`` pause).  A host that sheds above 16 open requests thus
  runs at 15-16, not at 0.7 x 16.  After a ``503`` without ``Retry-After``
  the burst's successes lift the window with that level at once: a 503 may
  be read before the answers of the requests open with it, and the cut then
  went to the one or two successes read so far (16 hosts serving 4 at once
  each, a fair-priority loop: 483-489 images/s in the first epoch regrowing
  one per round trip, 544-555 lifted).  After a ``Retry-After`` pause the
  window regrows one per round trip, as the host asked for rest.
* **Rate limits** (``429``): the host is paced: requests start at most one per
  ``gap`` seconds.  The first 429 sets the gap to ``PACE_MARGIN`` times the
  moving average of the interval between the host's successes (before any
  success: one start per round trip); each later 429 (once per window) widens
  it by ``PACE_BACKOFF``, and each start the pace held back narrows it by
  ``PACE_RELAX`` (by ``PACE_RELAX_FIRST`` until the second 429, since the
  first guess is read from slow start's successes and often lands at half
  the rate).  So the pace saw-tooths within 10% under the rate the host
  accepts, about one start in 20 answered 429.  (Setting the gap from the
  successes at every 429 ratcheted down: lost slots stretch the intervals
  between successes, and nginx ``limit_req`` 200 r/s without burst got 69
  images/s.)
* **Latency.** The decisions read a moving average of latencies
  (``LATENCY_SMOOTHING``), so the jitter of a real origin (100 +- 20 ms) does
  not pass for queueing.  The window grows (slow start, or about one per
  round trip after it) only while that average stays within
  ``SLOW_START_EXIT`` times the host's floor (the minimum of the last 64-128
  latencies) plus ``LATENCY_SLACK_S``; above that it holds and slow start
  ends; above ``LATENCY_TOLERANCE`` times the floor it is cut by
  ``LATENCY_DECREASE`` (once per window), never below ``LATENCY_MIN_WINDOW``
  (overload signals alone go lower).  So a server that queues requests (one
  process behind a GIL, as ``python -m http.server``) keeps a small window,
  where it is fastest, while one that answers in constant time lets
  the window grow to its cap.  (A per-sample Vegas rule held a 100 +- 20 ms
  origin at ~16 open requests: 140-240 images/s instead of ~1,000.)
* **Connect timeouts.**  A new connection to the host may take
  ``CONNECT_FLOOR_FACTOR`` times its latency floor, at least
  ``MIN_CONNECT_TIMEOUT_S``, doubled per overflow (connect timeouts of requests
  started after the last counted one) since the last success, at most the
  configured ``connect_timeout`` (:meth:`connect_timeout`).
  A full accept queue drops SYNs, and the kernel resends them only after 1 s;
  a connect timeout is overload, so the URL is queued again and the window cut.
* **Pauses.** ``Retry-After`` pauses the host's whole queue (capped at
  ``MAX_PAUSE_S``).  Overload at the minimum window without ``Retry-After``
  pauses it for an exponential backoff with equal jitter, doubled per overload
  event since the last success (answers to requests started before the last
  cut are the same event: counted per answer, one overflow of ``python -m
  http.server`` could reach the 8 s maximum).
* **Patience.** A host that has answered only with overload for longer than
  ``patience`` seconds since its last success is given up: its URLs count as
  ``rate_limited``.

* **Memory.** A host's state outlives the dataset that learned it: the
  native engine keeps one table for the process; a new Python engine starts
  each host from the last limiter of that host in the process
  (:meth:`HostLimiter.learn_from`, as TCP starts a connection from what the
  last one to that destination learned, RFC 2140), so a second dataset (a
  validation split, a notebook's rebuilt pipeline) does not begin at
  ``INITIAL_WINDOW`` again.

An overloaded request is not a failed one: the engine puts its URL back in
the host's queue without spending its retry budget.  All times are seconds of
a monotonic clock, passed in by the caller, so the state machine runs the
same in tests, in the Python engine and in the C++ one.
"""

from __future__ import annotations

import random
from typing import Optional

from tfeed import contract


class HostLimiter:
    """The window, pace and pause of one host.  Not thread-safe: one event loop drives it."""

    def __init__(self, cap: int, *, backoff: float = 0.25, max_backoff: float = 8.0,
                 patience: float = contract.HOST_PATIENCE_S, rng: Optional[random.Random] = None,
                 adaptive: bool = True):
        self.cap = max(1, int(cap))
        self.adaptive = adaptive  # False: a fixed window of ``cap``, signals only counted
        self.window = float(min(contract.INITIAL_WINDOW, self.cap) if adaptive else self.cap)
        self.min_gap = 0.0  # a fixed pace (FetchConfig.max_requests_per_second_per_host)
        self.in_flight = 0
        self.slow_start = True
        self.ceiling: Optional[float] = None  # the window that last overloaded the host
        self.gap = 0.0  # seconds between request starts (0: unpaced)
        self._pace_settled = False  # a second 429 has bounded the pace from above
        self.paused_until = 0.0
        self.throttles = 0  # overload answers, in all
        self._backoff, self._max_backoff, self._patience = backoff, max_backoff, patience
        self._rng = rng or random.Random()
        self._seq = 0  # requests started
        self._cut_seq = 0  # requests started before the last cut
        self._overload_seq = 0  # requests started before the last overload event
        self._successes = 0
        self._probe_quiet = contract.PROBE_QUIET_S
        self._probe_at = 0.0
        self._next_start = 0.0
        self._start_interval = 0.0  # moving average of the interval between starts
        self._last_start: Optional[float] = None
        self._success_interval: Optional[float] = None  # moving average of the interval between successes
        self._last_success: Optional[float] = None
        self._floors = [float("inf"), float("inf")]  # latency minimum of this and the last sample block
        self._samples = 0
        self._streak = 0  # fresh overloads (one per event) since the last success
        self._unanswered_since: Optional[float] = None  # first overload since the last success
        self._served_level = 0  # most requests open at once among recent successes (position + 1)
        self._burst_seq = 0  # requests started before the last overload cut (its burst)
        self._burst_level = 0.0  # requests open before the shed one: the ceiling's upper bound
        self._burst_served = 0  # successes among the burst
        self._burst_lifts = False  # the burst's successes lift the window itself (see _cut)
        self._smooth: Optional[float] = None  # moving average of latencies
        self._connect_misses = 0  # connect timeouts since the last success, one per overflow
        self._miss_seq = 0  # requests started before the last counted connect timeout

    # -- admission --------------------------------------------------------------
    def can_start(self, now: float) -> bool:
        """Whether a request may start now (window, pace and pause allow it)."""
        return self.in_flight < int(self.window) and now >= self.paused_until and now >= self._next_start

    def ready_at(self, now: float) -> float:
        """When the pace or a pause next allows a start (``now`` if already)."""
        return max(now, self.paused_until, self._next_start)

    def start(self, now: float) -> tuple:
        """Record a started request; returns its ticket ``(sequence, requests open before it,
        the host's successes before it)``."""
        self._seq += 1
        position = self.in_flight
        self.in_flight += 1
        if self._last_start is not None:
            self._start_interval = 0.9 * self._start_interval + 0.1 * (now - self._last_start)
        self._last_start = now
        if self.gap > self.min_gap and now < self._next_start + self.gap:  # the pace held this start back
            self.gap *= contract.PACE_RELAX if self._pace_settled else contract.PACE_RELAX_FIRST
        self._next_start = now + max(self.gap, self.min_gap)
        return self._seq, position, self._successes

    # -- outcomes ------------------------------------------------------------------
    def succeeded(self, ticket: tuple, latency: float, now: float, multiplexed: bool = False) -> None:
        """A response that was not overload (an image, or a 404 alike), ``latency`` seconds after its
        start; ``multiplexed``: it came over a connection that carries concurrent streams (HTTP/2)."""
        seq, position, successes_before = ticket
        self.in_flight -= 1
        self._streak, self._unanswered_since, self._connect_misses = 0, None, 0
        # served at once: those open at its start, at most as many as were answered while it was open
        self._served_level = max(self._served_level, min(position, self._successes - successes_before) + 1)
        self._successes += 1
        if not self.adaptive:
            return
        if seq <= self._burst_seq:
            self._burst_served += 1
            self.ceiling = max(self.ceiling, min(self._burst_level, self._burst_served))
            if self._burst_lifts and self.window < self.ceiling:
                self.window = min(self.cap, self.ceiling)
        if self._last_success is not None:
            interval = now - self._last_success
            self._success_interval = interval if self._success_interval is None else \
                0.9 * self._success_interval + 0.1 * interval
        self._last_success = now
        floor = self._add_latency(latency)
        self._smooth = latency if self._smooth is None else \
            (1 - contract.LATENCY_SMOOTHING) * self._smooth + contract.LATENCY_SMOOTHING * latency
        if seq <= self._cut_seq:  # started before the last cut: says nothing of the new window
            return
        if self._smooth > contract.LATENCY_TOLERANCE * floor + contract.LATENCY_SLACK_S:
            # never below LATENCY_MIN_WINDOW, nor above the window an overload left
            self._cut(min(self.window, max(self.window * contract.LATENCY_DECREASE, contract.LATENCY_MIN_WINDOW)),
                      now)
        elif self._smooth > contract.SLOW_START_EXIT * floor + contract.LATENCY_SLACK_S:
            self.slow_start = False  # requests begin to queue at the host: hold the window
        elif self.slow_start:
            opening = contract.MULTIPLEXED_WINDOW if multiplexed else 0
            self.window = min(self.cap, max(self.window + contract.SLOW_START_GROWTH, opening))
        elif self.ceiling is None or now >= self._probe_at:
            self.window = min(self.cap, self.window + 1 / self.window)
        elif self.window < self.ceiling:  # back up to the known level, not above it before the probe
            self.window = min(self.ceiling, self.window + 1 / self.window)

    def finished(self, ticket: tuple) -> None:
        """A request that ended without telling anything of the host's load (a DNS error, a cancel)."""
        del ticket
        self.in_flight -= 1

    def overloaded(self, ticket: tuple, now: float, *, status: int = 0,
                   retry_after: Optional[float] = None) -> None:
        """A 429 / 503 (``status``), or a refused, reset or timed-out connection (``status`` 0)."""
        seq, position, _ = ticket
        self.in_flight -= 1
        self.throttles += 1
        fresh = seq > self._overload_seq  # a latency cut's burst still tells of overload
        if fresh:  # a burst shed at once is one event (fixed windows: every overload is fresh)
            self._streak += 1
        if self._unanswered_since is None:
            self._unanswered_since = now
        if not self.adaptive:
            return
        pause = None if retry_after is None else min(retry_after, contract.MAX_PAUSE_S)
        if pause is not None and fresh:  # a failed probe would cost such a pause: probe rarely
            self._probe_quiet = max(self._probe_quiet, contract.PAUSE_PROBE_QUIET * pause)
        if status == 429 and fresh:
            self._pace_settled = self.gap > 0
            self.gap = self._paced_gap()
            self._next_start = max(self._next_start, now + self.gap)
        elif fresh:
            level = max(position, contract.MIN_WINDOW)  # served lags a round trip in slow start: not the level
            served = self._served_level or self.window
            self._cut(min(self.window * contract.OVERLOAD_DECREASE, level, served), now, overload=level,
                      served=self._served_level, lifts=status != 0 and pause is None)
            self._served_level = 0
        if pause is not None:
            self._pause(now + pause)
        elif fresh and self.window <= contract.MIN_WINDOW and self._streak > 1:
            ceiling = min(self._max_backoff, self._backoff * 2 ** (self._streak - 2))
            fixed = ceiling * contract.BACKOFF_FIXED_SHARE
            self._pause(now + fixed + self._rng.uniform(0, ceiling - fixed))
        if fresh:
            self._cut_seq = self._overload_seq = self._seq

    # -- connections -----------------------------------------------------------------
    def connect_timeout(self, configured: float) -> float:
        """Seconds a new connection to the host may take (see the module's docstring)."""
        floor = min(self._floors)
        if not self.adaptive or floor == float("inf"):
            return configured
        timeout = max(contract.MIN_CONNECT_TIMEOUT_S, contract.CONNECT_FLOOR_FACTOR * floor)
        return min(configured, timeout * 2.0 ** min(self._connect_misses, 16))

    def connect_missed(self, ticket: tuple) -> None:
        """A new connection of ``ticket``'s request timed out (its URL's outcome goes to
        :meth:`overloaded`).  The timeout doubles once per overflow: misses of requests started
        before the last counted one are the same overflow (a full accept queue drops every SYN of a
        burst; doubling per miss took ``python -m http.server``'s connect timeouts past the
        kernel's 1 s SYN retransmission, and a first epoch stalled 0.9 s)."""
        if ticket[0] > self._miss_seq:
            self._connect_misses += 1
            self._miss_seq = self._seq

    def given_up(self, now: float) -> bool:
        """Whether the host has answered only with overload for longer than its patience."""
        return self._unanswered_since is not None and now - self._unanswered_since > self._patience

    # -- internals --------------------------------------------------------------------
    def _cut(self, target: float, now: float, overload: float = 0, served: float = 0, lifts: bool = False) -> None:
        """Shrink the window to ``target``.  ``overload``: the requests open before the shed
        one (0: a latency cut), the most the window may regrow to without a probe;
        ``served``: the most served at once among earlier successes (0: none), the ceiling until the
        burst's successes raise it; ``lifts``: they raise the window with it (a 503 without
        ``Retry-After``; see the module's docstring), until a latency cut."""
        probing = self.ceiling is not None and self.window > self.ceiling
        if overload and probing:  # the probe failed: back to the known level, probe later
            self._probe_quiet = max(self._probe_quiet, min(2 * self._probe_quiet, contract.MAX_PROBE_QUIET_S))
            target = max(self.ceiling, contract.MIN_WINDOW)
        elif overload:
            self.ceiling = max(min(overload, served or target), contract.MIN_WINDOW)
            self._burst_seq, self._burst_level, self._burst_served = self._seq, overload, 0
            self._burst_lifts = lifts
        else:  # latency says the host queues: the burst may still raise the level, not the window
            self._burst_lifts = False
        self.window = max(float(contract.MIN_WINDOW), target)
        self.slow_start = False
        self._probe_at = now + self._probe_quiet
        self._cut_seq = self._seq

    def _paced_gap(self) -> float:
        """The gap between starts after a 429."""
        if self.gap > 0:
            return self.gap * contract.PACE_BACKOFF
        if self._success_interval:  # None before two successes; 0 says nothing
            return self._success_interval * contract.PACE_MARGIN
        # before two successes: about one start per round trip
        return max(self._start_interval, self._smooth or 0.0, 1e-4) / contract.OVERLOAD_DECREASE

    def _pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)

    def _add_latency(self, latency: float) -> float:
        self._floors[0] = min(self._floors[0], latency)
        self._samples += 1
        if self._samples >= contract.LATENCY_SAMPLES:
            self._floors = [latency, self._floors[0]]
            self._samples = 0
        return min(self._floors)

    # What a limiter learned of its host (window, slow start, overload level, pace, pause, latency),
    # as against its own requests (in flight, tickets, signal marks) and counters.
    _LEARNED = ("window", "slow_start", "ceiling", "gap", "_pace_settled", "paused_until", "_probe_quiet",
                "_probe_at", "_samples", "_smooth", "_success_interval")

    def learn_from(self, other: "HostLimiter") -> None:
        """Start from what ``other``, an earlier limiter of the same host (and the same settings), has
        learned, before any request of this one.  ``other`` may be driven by another thread meanwhile:
        each field is read once, and a mix of two moments is still a state the rules recover from."""
        if not (self.adaptive and other.adaptive) or self._seq:
            return
        for name in self._LEARNED:
            setattr(self, name, getattr(other, name))
        self._floors = list(other._floors)
        self.window = min(self.window, float(self.cap))

    def snapshot(self, now: float) -> dict:
        """The host's state for :meth:`tfeed.Stats.hosts`."""
        return {"window": round(float(self.window), 1), "in_flight": self.in_flight, "throttles": self.throttles,
                "paced_rps": round(1 / self.gap, 1) if self.gap > 0 else None,
                "paused_s": round(max(0.0, self.paused_until - now), 2)}


class RequestConnections:
    """One request's view of its host's connection rules: the connect timeout of each attempt,
    and :meth:`connect_missed` when one timed out."""

    def __init__(self, limiter: HostLimiter, ticket: tuple):
        self._limiter, self._ticket = limiter, ticket

    def connect_timeout(self, configured: float) -> float:
        return self._limiter.connect_timeout(configured)

    def connect_missed(self) -> None:
        self._limiter.connect_missed(self._ticket)
