"""tfeed.fetching.limiter: the per-host window, pace and pause, driven by event sequences (no I/O)."""

import random

import pytest

from tfeed import contract
from tfeed.fetching.limiter import HostLimiter


def limiter(cap=256, **kwargs):
    return HostLimiter(cap, rng=random.Random(0), **kwargs)


def round_trip(host, now, latency, serial=False):
    """Start every request the window allows, then answer them all with
    ``latency`` (``serial``: the k-th after ``k * latency``, as one server thread would)."""
    tickets = []
    while host.can_start(now):
        tickets.append(host.start(now))
    for k, ticket in enumerate(tickets, 1):
        took = k * latency if serial else latency
        host.succeeded(ticket, took, now + took)
    return len(tickets)


def test_slow_start_triples_the_window_each_round_trip_up_to_the_cap():
    host = limiter(cap=100)
    assert host.window == contract.INITIAL_WINDOW
    sizes = [round_trip(host, 0.1 * i, 0.1) for i in range(8)]
    assert sizes[:4] == [4, 12, 36, 100]  # +2 per success; the fourth round trip is capped
    assert host.window == 100


def test_a_host_that_queues_requests_keeps_a_small_window():
    """One server thread, 1 ms a request: the window settles near the knee."""
    host = limiter()
    now = 0.0
    for _ in range(200):
        now += 0.001 * round_trip(host, now, 0.001, serial=True)
    assert 2 <= host.window <= 16  # far below the cap of 256: the server only queues what it gets


def test_overload_cuts_to_what_the_host_let_through_once_per_window():
    host = limiter()
    for i in range(3):  # slow start to 108
        round_trip(host, 0.1 * i, 0.1)
    tickets = [host.start(1.0) for _ in range(int(host.window))]
    for ticket in tickets[16:]:  # a concurrency limit of 16 sheds the rest
        host.overloaded(ticket, 1.05, status=503)
    assert host.window == 16  # min(0.7 * 108, 16 open before the first shed one): one cut, not 92
    assert not host.slow_start
    for ticket in tickets[:16]:
        host.succeeded(ticket, 0.1, 1.1)
    assert host.window == pytest.approx(16, abs=1.0)


def test_after_shedding_the_window_regrows_to_the_level_served_without_waiting_for_a_probe():
    """A host that sheds above 16 open requests: the cut goes below 16, the regrowth back to
    ~16 takes a few round trips, not the probe's quiet spell (else it would run at 0.7 x 16)."""
    host = limiter()
    host.window, host.slow_start = 17.0, False
    now, windows = 0.0, []
    for _ in range(12):  # 1.2 s of 100 ms round trips, well inside PROBE_QUIET_S
        tickets = []
        while host.can_start(now):
            tickets.append(host.start(now))
        for position, ticket in enumerate(tickets):
            if position >= 16:
                host.overloaded(ticket, now + 0.01, status=503)
            else:
                host.succeeded(ticket, 0.1, now + 0.1)
        now += 0.1
        windows.append(host.window)
    assert min(windows) < 13  # it was cut multiplicatively (to 0.7 x 17, then regrew)
    assert host.ceiling == 16 and windows[-1] == 16  # all of it: 16 open, none shed


def test_the_known_level_is_what_the_burst_got_served_not_the_open_count():
    """A client that has not yet read finished responses counts more requests open than the host
    holds: 16 served, but the shed one started with 25 'open'.  The ceiling is the 16 the
    burst got served, so the regrowth stops there instead of overloading the host again."""
    host = limiter()
    for i in range(2):  # slow start to 36
        round_trip(host, 0.1 * i, 0.1)
    tickets = [host.start(0.3) for _ in range(int(host.window))]
    shed = [ticket[:1] + (25,) + ticket[2:] for ticket in tickets[16:]]  # positions inflated by unread answers
    host.overloaded(shed[0], 0.31, status=503, retry_after=1.0)
    for ticket in shed[1:]:
        host.overloaded(ticket, 0.31, status=503, retry_after=1.0)
    for ticket in tickets[:16]:
        host.succeeded(ticket, 0.1, 0.4)
    assert host.ceiling == 16
    now, windows = 1.31, []
    for _ in range(20):  # 2 s of round trips after the pause, inside PROBE_QUIET_S
        round_trip(host, now, 0.1)
        now += 0.1
        windows.append(host.window)
    assert max(windows) == 16


def shed_before_the_burst_is_read(retry_after=None):
    """A host that serves 4 at once: its first answer lets slow start send two more, and one of
    them is shed (503) before the other three answers of the opening burst are read.  Returns the
    host and those three tickets."""
    host = limiter()
    opening = [host.start(0.0) for _ in range(int(host.window))]  # 4 open
    host.succeeded(opening[0], 0.1, 0.1)  # window 6
    extra = [host.start(0.1) for _ in range(2)]
    host.overloaded(extra[1], 0.101, status=503, retry_after=retry_after)
    host.succeeded(extra[0], 0.1, 0.2)
    return host, opening[1:]


def test_a_503_read_before_the_burst_lifts_the_window_to_what_the_burst_got_served():
    """Only one success read at the 503: the cut goes to 1; the burst's successes, read next,
    show 4 at once, and the window returns to 4 with them, not by one per round trip."""
    host, rest = shed_before_the_burst_is_read()
    assert host.window == 1.0
    for ticket in rest:
        host.succeeded(ticket, 0.1, 0.1)
    assert host.ceiling == 4 and host.window == 4.0


def test_a_latency_cut_ends_the_burst_lift():
    """A host that shed one of 16 and then starts to queue: the burst's late successes raise
    the known level, not the window the latency cut just set."""
    host = limiter()
    host.window, host.slow_start = 16.0, False
    burst = [host.start(0.0) for _ in range(16)]
    host.succeeded(burst[0], 0.1, 0.1)
    host.overloaded(host.start(0.1), 0.101, status=503)  # read before the rest: a cut to 1, lifted
    for ticket in burst[1:9]:
        host.succeeded(ticket, 0.1, 0.11)
    assert host.window == 8.0  # lifted by the 8 served since the cut
    queued = host.start(0.11)  # started after the cut: its latency speaks of the new window
    host.succeeded(queued, 5.0, 5.11)
    cut = host.window
    assert cut == pytest.approx(8.0 * contract.LATENCY_DECREASE)
    for ticket in burst[9:]:
        host.succeeded(ticket, 0.1, 5.12)
    assert host.ceiling == 15 and host.window == cut


def open_burst(n):
    """A host answering in 1 ms (its floor), then ``n`` requests opened at once; returns both."""
    host = limiter()
    host.window, host.slow_start = 64.0, False
    for i in range(5):
        host.succeeded(host.start(0.01 * i), 0.001, 0.01 * i + 0.001)
    return host, [host.start(0.1) for _ in range(n)]


def test_overload_after_a_latency_cut_is_still_an_overload():
    """A burst whose first answer is slow (a latency cut, x0.9), then its connections time out
    (a full accept queue): those timeouts cut the window again, as overload.  They were taken
    for answers to the latency cut, and the window stayed high while SYNs kept being dropped."""
    host, burst = open_burst(50)
    before = host.window
    host.succeeded(burst[0], 0.1, 0.2)
    after_latency_cut = host.window
    assert after_latency_cut == pytest.approx(contract.LATENCY_DECREASE * before)
    host.overloaded(burst[30], 0.3)  # a connect timeout
    assert host.window <= contract.OVERLOAD_DECREASE * after_latency_cut


def test_a_success_proves_only_the_concurrency_answered_while_it_was_open():
    """50 open, most of them stuck in a dropped SYN: the two that get through answer alone, so
    the host served 1-2 at once, not the 41 open when they started, and the cut goes there."""
    host, burst = open_burst(50)
    host.succeeded(burst[40], 0.001, 0.101)
    host.succeeded(burst[41], 0.001, 0.101)
    host.overloaded(burst[45], 0.2)
    assert host.window == 2.0


def test_a_latency_cut_never_raises_a_window_an_overload_left_small():
    host = limiter()
    host.window, host.slow_start = 2.0, False
    host.succeeded(host.start(0.0), 0.1, 0.1)
    before = host.window
    host.succeeded(host.start(0.1), 5.0, 5.1)  # queueing: a latency cut
    assert before < contract.LATENCY_MIN_WINDOW and host.window == before


def test_after_a_retry_after_pause_the_burst_raises_only_the_known_level():
    """With Retry-After the host asked for rest: the window regrows to the known level about one
    per round trip after the pause, as before."""
    host, rest = shed_before_the_burst_is_read(retry_after=1.0)
    for ticket in rest:
        host.succeeded(ticket, 0.1, 0.1)
    assert host.ceiling == 4 and host.window == 1.0


def test_a_failed_probe_returns_to_the_known_level_and_waits_longer():
    host = limiter()
    host.window, host.slow_start, host.ceiling = 17.0, False, 16.0
    ticket = host.start(0.0)
    host.overloaded(ticket, 0.1, status=503)
    assert host.window == 16.0
    quiet_after_one = host._probe_at - 0.1
    ticket = host.start(50.0)
    host.window = 17.0
    host.overloaded(ticket, 50.1, status=503)
    assert host._probe_at - 50.1 == pytest.approx(2 * quiet_after_one)


def test_connect_timeouts_of_one_overflow_double_the_timeout_once():
    """A full accept queue drops the SYNs of every connection opened meanwhile: one event."""
    host = limiter()
    host.succeeded(host.start(0.0), 0.001, 0.001)
    burst = [host.start(1.0) for _ in range(6)]
    for ticket in burst:
        host.connect_missed(ticket)
    assert host.connect_timeout(10.0) == pytest.approx(2 * contract.MIN_CONNECT_TIMEOUT_S)  # not 2 ** 6 x
    host.connect_missed(host.start(1.2))  # a connection opened after that overflow: a new one
    assert host.connect_timeout(10.0) == pytest.approx(4 * contract.MIN_CONNECT_TIMEOUT_S)


def test_after_a_retry_after_pause_probes_wait_fifty_pauses():
    """A failed probe pauses the host's whole queue again: probes come at most once per 50 pauses."""
    host = limiter()
    host.window, host.slow_start, host.ceiling = 17.0, False, 16.0  # probing above the known level
    ticket = host.start(0.0)
    host.overloaded(ticket, 0.1, status=503, retry_after=2.0)
    assert host.window == 16.0
    assert host._probe_at == pytest.approx(0.1 + 100.0)  # not 20 s (PROBE_QUIET_S doubled) after the cut
    ticket = host.start(200.0)
    host.window = 17.0  # probing above the known level, and shed again
    host.overloaded(ticket, 200.1, status=503, retry_after=2.0)
    assert host.window == 16.0 and host._probe_at == pytest.approx(200.1 + 100.0)  # doubling never shortens it


def test_retry_after_pauses_the_host():
    host = limiter()
    ticket = host.start(0.0)
    host.overloaded(ticket, 0.5, status=503, retry_after=2.0)
    assert not host.can_start(1.0)
    assert host.ready_at(1.0) == pytest.approx(2.5)
    assert host.can_start(2.5)


def test_429_without_retry_after_paces_the_host_instead_of_failing():
    host = limiter()
    now = 0.0
    for _ in range(20):  # one request every 10 ms
        ticket = host.start(now)
        host.succeeded(ticket, 0.001, now + 0.001)
        now += 0.01
    ticket = host.start(now)
    host.overloaded(ticket, now, status=429)
    assert host.gap == pytest.approx(0.01 * contract.PACE_MARGIN, rel=0.05)  # just under the rate served
    assert not host.can_start(now + 0.001) and host.can_start(now + host.gap + 1e-9)


def test_the_pace_settles_just_under_a_strict_rate_limit():
    """Simulated nginx ``limit_req rate=200r/s`` without burst (a request less than 5 ms
    after the last accepted one gets 429), 1 ms per request, start times jittered by up to
    0.3 ms: after the first second the host delivers >= 85% of its limit, with < 15% 429s."""
    rng = random.Random(7)
    host, limit_gap, latency = limiter(), 0.005, 0.001
    now, last_accepted, served, answered_429 = 0.0, -1.0, [], 0
    while now < 3.0:
        now = host.ready_at(now) + rng.uniform(0, 0.0003)
        if not host.can_start(now):
            continue
        ticket = host.start(now)
        if now - last_accepted >= limit_gap:
            last_accepted = now
            host.succeeded(ticket, latency, now + latency)
            served.append(now)
        else:
            host.overloaded(ticket, now + latency, status=429)
            answered_429 += now >= 1.0
    settled = [t for t in served if t >= 1.0]
    assert len(settled) / 2.0 >= 0.85 * 200
    assert answered_429 < 0.15 * len(settled)


def test_overload_at_the_minimum_window_backs_off_exponentially():
    host = limiter()
    now, pauses = 0.0, []
    for _ in range(6):
        host.window = 1.0
        ticket = host.start(host.ready_at(now))
        now = host.ready_at(now) + 0.01
        host.overloaded(ticket, now)
        pauses.append(max(0.0, host.paused_until - now))
    assert pauses[0] == 0  # one overload is not yet a streak
    assert pauses[2] < pauses[-1]


def test_a_burst_shed_at_once_backs_off_as_one_event():
    """Eight connections opened together and all refused: one overload event, not a streak of eight
    (which would pause the host for the 8 s maximum)."""
    host = limiter()  # backoff 0.25 s, max_backoff 8 s
    host.window = 8.0
    burst = [host.start(0.0) for _ in range(8)]
    for ticket in burst:
        host.overloaded(ticket, 0.1)
    assert host.window == 1.0 and host.paused_until <= 0.1  # cut to the minimum; no streak yet
    host.overloaded(host.start(0.2), 0.3)  # a request started after the cut: the second event
    assert 0.3 < host.paused_until <= 0.3 + 0.25


def test_a_host_that_only_throttles_is_given_up_after_its_patience():
    host = limiter(patience=5.0)
    ticket = host.start(0.0)
    host.overloaded(ticket, 0.0, status=429)
    assert not host.given_up(4.9)
    assert host.given_up(5.1)
    host.succeeded(host.start(6.0), 0.01, 6.01)
    assert not host.given_up(100.0)


def test_without_adaptive_the_window_is_the_cap_and_signals_change_nothing():
    host = limiter(cap=8, adaptive=False)
    assert host.window == 8
    ticket = host.start(0.0)
    host.overloaded(ticket, 0.1, status=503)
    assert host.window == 8 and host.can_start(0.2)


def test_a_new_connection_gets_a_few_latency_floors_not_the_configured_timeout():
    host = limiter()
    assert host.connect_timeout(10.0) == 10.0  # nothing known of the host yet
    host.succeeded(host.start(0.0), 0.001, 0.001)
    assert host.connect_timeout(10.0) == contract.MIN_CONNECT_TIMEOUT_S  # 4 x 1 ms is less
    host.succeeded(host.start(1.0), 0.5, 1.5)  # the floor stays the fastest answer
    assert host.connect_timeout(10.0) == contract.MIN_CONNECT_TIMEOUT_S
    far = limiter()
    far.succeeded(far.start(0.0), 0.25, 0.25)  # a far host: 250 ms answers
    assert far.connect_timeout(10.0) == pytest.approx(contract.CONNECT_FLOOR_FACTOR * 0.25)
    for misses in range(1, 8):  # each overflow's connect timeout doubles it, up to the configured one
        far.connect_missed(far.start(1.0))
        assert far.connect_timeout(10.0) == pytest.approx(min(10.0, 2 ** misses * 1.0))
    far.succeeded(far.start(1.0), 0.25, 1.25)
    assert far.connect_timeout(10.0) == pytest.approx(1.0)  # a success resets the doubling
    fixed = limiter(adaptive=False)
    fixed.succeeded(fixed.start(0.0), 0.001, 0.001)
    assert fixed.connect_timeout(10.0) == 10.0


def test_a_new_limiter_learns_the_window_pause_and_floor_of_the_last_one():
    earlier = limiter()
    for i in range(3):
        round_trip(earlier, 0.1 * i, 0.1)
    earlier.overloaded(earlier.start(0.3), 0.31, status=503, retry_after=2.0)
    later = limiter()
    later.learn_from(earlier)
    assert (later.window, later.ceiling, later.slow_start) == (earlier.window, earlier.ceiling, False)
    assert not later.can_start(1.0) and later.ready_at(1.0) == earlier.paused_until  # the host's pause holds
    assert later.connect_timeout(10.0) == earlier.connect_timeout(10.0)  # the latency floor
    assert later.in_flight == 0 and later.throttles == 0  # its own requests and counters


def test_what_is_learned_never_passes_the_cap_or_a_fixed_window():
    earlier = limiter(cap=256)
    for i in range(5):
        round_trip(earlier, 0.1 * i, 0.1)
    smaller, fixed = limiter(cap=16), limiter(cap=64, adaptive=False)
    smaller.learn_from(earlier)
    fixed.learn_from(earlier)
    assert earlier.window > 64 and smaller.window == 16 and fixed.window == 64
