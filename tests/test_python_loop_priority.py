"""The Python engine's loop thread follows the native loop's scheduling rule
(tfeed/fetching/python/loop_priority.py): real time where allowed, never holding a core."""

from __future__ import annotations

import os
import threading
import time

import pytest

import tfeed
from tfeed import contract
from tfeed.testing import ImageServer, encode, synthetic_shapes
from helpers import loop_may_use_realtime


@pytest.fixture(scope="module")
def server():
    images, _ = synthetic_shapes(8, 32)
    with ImageServer({f"{i}.png": encode(image, "png") for i, image in enumerate(images)}) as running:
        yield running


def _engine_after_an_epoch(server):
    """A Python engine that has fetched one epoch, and its loop thread's id."""
    urls = [server.url(f"{i}.png") for i in range(8)]
    dataset = tfeed.image_dataset_from_urls(urls, labels=None, image_size=(32, 32), fetch_engine="python")
    assert sum(int(batch.shape[0]) for batch in dataset) == 8
    engine = dataset._tfeed_engine
    return dataset, engine, engine._thread.native_id


def test_the_python_loop_runs_at_real_time_priority_where_allowed(server):
    _, _, thread = _engine_after_an_epoch(server)
    assert os.sched_getscheduler(thread) == (os.SCHED_FIFO if loop_may_use_realtime() else os.SCHED_OTHER)


def test_the_switch_leaves_the_python_loop_a_fair_thread(server, monkeypatch):
    monkeypatch.setenv(contract.LOOP_REALTIME_SWITCH, "0")
    _, _, thread = _engine_after_an_epoch(server)
    assert os.sched_getscheduler(thread) == os.SCHED_OTHER


def test_a_hot_python_loop_leaves_real_time_and_returns(server):
    """0.3 s of work on the loop (more than half a core over a check period): the next check makes
    it a fair thread; the check after a quiet period returns it to SCHED_FIFO."""
    if not loop_may_use_realtime():
        pytest.skip("this process may not use SCHED_FIFO")
    dataset, engine, _ = _engine_after_an_epoch(server)
    seen, quiet = {}, threading.Event()

    def burn():
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass

    def look(when):
        seen[when] = os.sched_getscheduler(0)
        if when == "quiet":
            quiet.set()

    engine._loop.call_soon_threadsafe(burn)
    engine._loop.call_soon_threadsafe(engine._loop.call_later, 0.5 * contract.LOOP_CHECK_PERIOD_S, look, "after burn")
    time.sleep(0.3 + 4 * contract.LOOP_CHECK_PERIOD_S)
    engine._loop.call_soon_threadsafe(look, "quiet")
    assert quiet.wait(timeout=10)
    assert seen == {"after burn": os.SCHED_OTHER, "quiet": os.SCHED_FIFO}, seen
    del dataset
