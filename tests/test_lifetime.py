"""A dropped dataset releases what it owns (URL list, fetch engine), and an iterator keeps its dataset's."""

import collections
import gc
import os
import threading
import time

import numpy as np
import pytest

import tfeed
from tfeed.testing import ImageServer, encode
from tfeed.fetching.python.engine import FetchEngine
from tfeed.source.generator import UrlGenerator


def _live(kind):
    gc.collect()
    return sum(isinstance(o, kind) for o in gc.get_objects())


def _fetch_threads():
    return sum(t.name == "tfeed-fetch" for t in threading.enumerate())


def _dataset(server, names, engine):
    rows = [(server.url(name), i) for i, name in enumerate(names)]
    return tfeed.image_dataset_from_urls(rows, image_size=(16, 16), batch_size=4, shuffle=False, fetch_engine=engine)


@pytest.mark.parametrize("engine", ["native", "python"])
def test_dropped_datasets_release_their_url_source_and_engine(server, small_images, engine):
    names = sorted(small_images)[:8]

    def some_datasets(count):
        for _ in range(count):
            batches = list(_dataset(server, names, engine))
            assert sum(int(labels.shape[0]) for _, labels in batches) == len(names)
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    files = some_datasets(3)  # one-time state (the native loop's pooled connections) out of the count
    sources, engines, threads = _live(UrlGenerator), _live(FetchEngine), _fetch_threads()
    assert some_datasets(6) <= files + 2  # a Python engine left open held ~20 files
    assert _live(UrlGenerator) == sources
    assert _live(FetchEngine) == engines
    assert _fetch_threads() == threads


@pytest.mark.parametrize("engine", ["native", "python"])
def test_an_iterator_keeps_working_after_its_dataset_object_is_dropped(server, small_images, engine):
    names = sorted(small_images)[:12]
    iterator = iter(_dataset(server, names, engine))  # nothing else holds the dataset
    gc.collect()
    labels = [int(label) for _, batch in iterator for label in batch.numpy()]
    assert sorted(labels) == list(range(len(names)))


def test_a_python_engine_dropped_mid_epoch_closes_quietly_on_its_own_loop(capfd):
    """The last download of a dropped dataset releases the engine on the loop thread, which must close
    itself without waiting for itself (it raised "cannot join current thread" and left its connector open)."""
    images = {f"{i}.png": encode(np.full((8, 8, 3), i % 256, np.uint8), "png") for i in range(300)}
    with ImageServer(images, latency=0.5) as server:
        iterator = iter(_dataset(server, sorted(images), "python"))
        next(iterator)  # after ~3 round trips of slow start: most of the 300 requests are still to come
        del iterator
        gc.collect()
        assert _fetch_threads() == 1
        deadline = time.monotonic() + 20
        while _fetch_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
            gc.collect()
    assert _fetch_threads() == 0
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "Unclosed" not in err and "never awaited" not in err
