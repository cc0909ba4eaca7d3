"""While the Python engine has requests in flight, the older heap sits in CPython's permanent
generation (tfeed/fetching/python/heap.py), and only then."""

from __future__ import annotations

import gc
import threading
import time

import pytest

import tfeed
from tfeed.fetching.python.engine import FetchEngine
from tfeed.fetching.python.heap import SWITCH, HeapHold
from tfeed.testing import ImageServer, encode, synthetic_shapes

LATENCY_S = 0.6


@pytest.fixture(scope="module")
def server():
    images, _ = synthetic_shapes(4, 16)
    files = {f"{i}.png": encode(image, "png") for i, image in enumerate(images)}
    with ImageServer(files, latency=LATENCY_S) as running:
        yield running


@pytest.fixture(autouse=True)
def no_freeze_before():
    assert gc.get_freeze_count() == 0, "an earlier test left objects frozen"
    yield
    gc.unfreeze()


def freeze_counts_around_a_download(server):
    """``(frozen while the requests wait on the server, frozen after the results came)``."""
    engine = FetchEngine(tfeed.FetchConfig(), tfeed.Stats(), seed=0)
    try:
        urls = [server.url(f"{i}.png") for i in range(4)]
        server.reset_counts()
        ticket = engine.submit(engine.new_run(), urls, [0] * 4, ordered=True)
        deadline = time.monotonic() + 30
        while server.request_count() == 0 and time.monotonic() < deadline:  # sent: the loop has set its hold
            time.sleep(0.01)
        during = gc.get_freeze_count()  # the server holds every request LATENCY_S
        results = engine.collect(ticket)
        assert all(r.body for r in results)
        time.sleep(0.05)  # the loop settles the last result, then finds nothing in flight
        return during, gc.get_freeze_count()
    finally:
        engine.close()


def test_the_heap_is_frozen_only_while_requests_are_in_flight(server):
    marker = [object()]  # a container made before the download: frozen with the rest
    during, after = freeze_counts_around_a_download(server)
    assert during > 0 and after == 0
    assert gc.is_tracked(marker)


def test_the_switch_leaves_the_collector_alone(server, monkeypatch):
    monkeypatch.setenv(SWITCH, "0")
    assert freeze_counts_around_a_download(server) == (0, 0)


def test_an_application_freeze_is_left_as_it_was(server):
    gc.freeze()
    frozen = gc.get_freeze_count()
    during, after = freeze_counts_around_a_download(server)
    # Frozen objects may still be freed by reference counting; a freeze of ours would add the
    # engine's objects, an unfreeze would empty the permanent generation.
    assert during <= frozen and 0 < after <= frozen


def test_the_hold_lasts_until_every_engine_has_finished():
    first, second = HeapHold(), HeapHold()
    first.set(True)
    second.set(True)
    first.set(False)
    assert gc.get_freeze_count() > 0
    second.set(False)
    assert gc.get_freeze_count() == 0


def test_holds_from_many_threads_balance():
    holds = [HeapHold() for _ in range(8)]

    def toggle(hold):
        for _ in range(200):
            hold.set(True)
            hold.set(False)

    threads = [threading.Thread(target=toggle, args=(hold,)) for hold in holds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gc.get_freeze_count() == 0
