"""The native limiter (kernels/fetch/limiter.cc) and the Python one (tfeed/fetching/limiter.py)
run the same event traces to the same states: one design behind both engines."""

import random

import pytest

from tfeed.fetching.limiter import HostLimiter
from test_kernels_build import compile_program, needs_gxx, run

DRIVER = r"""
    #include <cstdio>
    #include <iostream>
    #include <map>
    #include <random>
    #include <string>
    #include "limiter.h"
    using tfeed::fetch::HostLimiter;
    using tfeed::fetch::LimiterTicket;
    int main() {
      HostLimiter host(64, 0.0, 0.0, 5.0, true);  // no backoff jitter: both sides draw nothing
      std::mt19937_64 rng(0);
      std::map<long, LimiterTicket> open;
      std::string op;
      long id = 0;
      double now, latency, retry_after;
      long status;
      int multiplexed;
      while (std::cin >> op >> id >> now) {
        if (op == "start") {
          if (host.CanStart(now)) open[id] = host.Start(now);
        } else if (op == "ok") {
          std::cin >> latency >> multiplexed;
          if (open.count(id)) host.Succeeded(open[id], latency, now, multiplexed != 0), open.erase(id);
        } else if (op == "miss") {
          if (open.count(id)) host.ConnectMissed(open[id]);
        } else if (op == "over") {
          std::cin >> status >> retry_after;
          if (open.count(id)) host.Overloaded(open[id], now, status, retry_after, rng), open.erase(id);
        }
        std::printf("%.9g %.9g %.9g %lld %d %d %.9g\n", host.window(), host.gap(), host.paused_until(),
                    static_cast<long long>(host.in_flight()), host.CanStart(now) ? 1 : 0, host.GivenUp(now) ? 1 : 0,
                    host.ConnectTimeout(10.0));
      }
    }
"""


def trace(seed, events=3000):
    """A random but plausible sequence of starts and answers (latencies, 429s, 503s, Retry-After;
    answers over HTTP/2 streams in the odd seeds' traces)."""
    rng = random.Random(seed)
    multiplexed = seed % 2
    now, next_id, open_ids, lines = 0.0, 0, [], []
    for _ in range(events):
        now += rng.choice([0.0, 0.0005, 0.003, 0.02, 0.2])
        if open_ids and rng.random() < 0.02:
            lines.append(f"miss {rng.choice(open_ids)} {now!r}")
            continue
        if not open_ids or rng.random() < 0.5:
            lines.append(f"start {next_id} {now!r}")
            open_ids.append(next_id)
            next_id += 1
            continue
        request = open_ids.pop(rng.randrange(len(open_ids)))
        draw = rng.random()
        if draw < 0.02:
            status = rng.choice([429, 503, 0])
            retry_after = rng.choice([-1.0, -1.0, 0.5])
            lines.append(f"over {request} {now!r} {status} {retry_after!r}")
        else:
            lines.append(f"ok {request} {now!r} {rng.choice([0.1, 0.1, 0.11, 0.12, 0.4])!r} {multiplexed}")
    return lines


def replay(lines):
    host = HostLimiter(64, backoff=0.0, max_backoff=0.0, patience=5.0, rng=random.Random(0))
    tickets, states = {}, []
    for line in lines:
        op, request, now, *rest = line.split()
        request, now = int(request), float(now)
        if op == "start" and host.can_start(now):
            tickets[request] = host.start(now)
        elif op == "ok" and request in tickets:
            host.succeeded(tickets.pop(request), float(rest[0]), now, multiplexed=rest[1] == "1")
        elif op == "miss" and request in tickets:
            host.connect_missed(tickets[request])
        elif op == "over" and request in tickets:
            retry_after = float(rest[1])
            host.overloaded(tickets.pop(request), now, status=int(rest[0]),
                            retry_after=retry_after if retry_after >= 0 else None)
        states.append((host.window, host.gap, host.paused_until, host.in_flight, int(host.can_start(now)),
                       int(host.given_up(now)), host.connect_timeout(10.0)))
    return states


@needs_gxx
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_limiters_reach_the_same_state_after_every_event(tmp_path, seed):
    program = compile_program(tmp_path, "limiter_driver", DRIVER, sources=["limiter.cc"])
    lines = trace(seed)
    native = [tuple(float(v) for v in row.split()) for row in run(program, "\n".join(lines) + "\n")]
    python = replay(lines)
    assert len(native) == len(python) == len(lines)
    for index, (ours, theirs) in enumerate(zip(python, native)):
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-9), (index, lines[max(0, index - 3):index + 1])
    windows = {round(state[0]) for state in python}
    assert len(windows) >= 5  # the trace moved the window around, so the comparison means something
