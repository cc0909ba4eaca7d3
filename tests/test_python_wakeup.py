"""The Python engine's wake-up (tfeed.fetching.python.wakeup) on real event loops."""

import asyncio
import os
import random
import sys

import pytest

import tfeed
from tfeed.fetching.python.engine import FetchEngine
from tfeed.fetching.python.wakeup import Wakeup

LINUX = sys.platform.startswith("linux")


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


async def _wake_times(wakeup_factory, delays):
    """(armed time, loop time at the callback) for each delay, one after another."""
    loop = asyncio.get_running_loop()
    seen = []
    for delay in delays:
        fired = loop.create_future()
        wakeup = wakeup_factory(loop, lambda: fired.set_result(loop.time()))
        when = loop.time() + delay
        wakeup.arm(when)
        seen.append((when, await fired))
        wakeup.close()
    return seen


@pytest.mark.skipif(not LINUX, reason="timerfd is Linux's")
def test_a_wakeup_on_asyncios_loop_is_a_timerfd_and_never_early():
    delays = [random.Random(3).uniform(0.0002, 0.003) for _ in range(40)]
    seen = asyncio.run(_wake_times(Wakeup, delays))
    assert all(woke >= when for when, woke in seen)
    loop = asyncio.new_event_loop()
    try:
        assert Wakeup(loop, lambda: None).precise
    finally:
        loop.close()


def test_without_a_timerfd_clock_it_falls_back_to_the_loops_timers():
    class OwnClock(asyncio.SelectorEventLoop):
        def time(self):  # a loop whose clock the timerfd does not read
            return super().time() + 1000.0

    loop = OwnClock()
    try:
        wakeup = Wakeup(loop, lambda: None)
        assert not wakeup.precise
        wakeup.close()
        seen = loop.run_until_complete(_wake_times(Wakeup, [0.001, 0.002]))
    finally:
        loop.close()
    assert all(woke >= when for when, woke in seen)


async def _rearm_after_expiry():
    """Arm in the past, then move the wake-up 20 ms on before the loop reads the expiry."""
    loop = asyncio.get_running_loop()
    calls = []
    wakeup = Wakeup(loop, lambda: calls.append(loop.time()))
    wakeup.arm(loop.time() - 1.0)
    later = loop.time() + 0.02
    await asyncio.sleep(0)  # the past time has expired by now, unread
    wakeup.arm(later)
    await asyncio.sleep(0.05)
    wakeup.close()
    return calls, later


def test_moving_a_wakeup_after_it_expired_runs_it_once_at_the_new_time():
    calls, later = asyncio.run(_rearm_after_expiry())
    assert len(calls) == 1 and calls[0] >= later


async def _arm_then_close():
    loop = asyncio.get_running_loop()
    calls = []
    wakeups = [Wakeup(loop, lambda: calls.append(1)) for _ in range(50)]
    for wakeup in wakeups:
        wakeup.arm(loop.time() + 0.005)
    opened = _open_fds()
    for wakeup in wakeups:
        wakeup.close()
        wakeup.close()  # idempotent
    await asyncio.sleep(0.02)
    return calls, opened


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_closing_a_wakeup_disarms_it_and_releases_its_file():
    before = _open_fds()
    calls, opened = asyncio.run(_arm_then_close())
    assert calls == []
    assert opened >= before + 50
    assert _open_fds() <= before + 2  # asyncio.run's own loop has closed too


def _download_paced(server, names):
    """One Python engine, a host paced at 200 requests/s, closed after its results."""
    engine = FetchEngine(tfeed.FetchConfig(max_requests_per_second_per_host=200), tfeed.Stats(), seed=0)
    try:
        results = engine.collect(engine.submit(engine.new_run(), [server.url(n) for n in names], [0] * len(names),
                                               ordered=True))
        assert all(r.body for r in results)
    finally:
        engine.close()


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_closed_python_engines_leave_no_timer_open(server, small_images):
    names = sorted(small_images)[:6]
    _download_paced(server, names)  # the first engine's one-time opens (imports, the DNS cache)
    before = _open_fds()
    for _ in range(10):
        _download_paced(server, names)
    assert _open_fds() <= before + 1
