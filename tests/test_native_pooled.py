"""Cancellation and pooling in the native fetch stage (fetch_native): an abandoned iterator waits
for no hanging transfer and keeps no request slot, a hanging URL holds back only the last group,
and two iterators of one pooled dataset never share rows."""

from __future__ import annotations

import threading
import time

import tensorflow as tf

import tfeed
from tfeed.fetching.native import fetch_kwargs, fetch_native

from helpers import FAST, fetch, fresh


# -- abandoned iterators, pooled groups ------------------------------------------------

def test_abandoned_iterator_does_not_wait_for_the_deadline(ops, server, jpg):
    config = FAST.replace(deadline=60, read_timeout=60)
    urls = [server.url(jpg)] + [server.url(jpg, hang=1, i=i) for i in range(31)]
    ds = tf.data.Dataset.from_tensor_slices((urls, tf.range(32, dtype=tf.int64)))
    iterator = iter(ds.apply(fetch_native(config, tfeed.Stats(), group_size=1)))
    next(iterator)
    start = time.monotonic()
    del iterator  # cancels the 31 hanging transfers
    assert time.monotonic() - start < 5


def _indexed(urls):
    """``(url, label)`` rows whose label is the URL's index."""
    return tf.data.Dataset.from_tensor_slices((urls, tf.range(len(urls), dtype=tf.int64)))


def test_a_hanging_url_holds_back_only_the_last_group(ops, server, small_images):
    # 8 groups of 8, two with a URL that hangs until read_timeout.  Unpooled, each of
    # those groups would keep its 7 finished bodies until then (48 rows early, not 56).
    config = FAST.replace(read_timeout=4, deadline=5, retries=0)
    names = sorted(small_images)
    urls = [fresh(server, names[i % len(names)]) for i in range(64)]
    hanging = {5, 21}
    for i in hanging:
        urls[i] = fresh(server, names[0], hang=1)
    stats = tfeed.Stats()
    ds = _indexed(urls).apply(fetch_native(config, stats, group_size=8))
    start, arrivals = time.monotonic(), []
    for body, label, url in ds:
        arrivals.append((time.monotonic() - start, int(label)))
        assert url.numpy().decode() == urls[int(label)] and body.numpy() == small_images[names[int(label) % len(names)]]
    assert sorted(label for _, label in arrivals) == sorted(set(range(64)) - hanging)  # each good URL once
    assert stats.snapshot()["failures"] == {"timeout": 2}
    assert sum(1 for t, _ in arrivals if t < 3) >= 56  # all but the last group's 6, before any timeout


def test_a_short_call_of_a_lot_takes_results_only_while_no_full_one_waits(ops, server, small_images):
    # An epoch's last group is short, and tf.data may hand it to the op before a full one:
    # the full call is filled first, so the straggler (a URL that hangs until read_timeout)
    # holds back the short call's one other row, not three of the full call's.
    config = FAST.replace(read_timeout=3, deadline=4, retries=0)
    names = sorted(small_images)
    slow = [fresh(server, names[i % len(names)], delay=0.5) for i in range(5)]
    lot, ended, start = tf.constant(20_240_601, tf.int64), {}, time.monotonic()

    def call(name, urls):
        ops.tfeed_fetch_pooled(tf.constant(urls), tf.range(len(urls), dtype=tf.int64), lot, **fetch_kwargs(config))
        ended[name] = time.monotonic() - start

    short = threading.Thread(target=call, args=("short", [slow[0], fresh(server, names[0], hang=1)]))
    short.start()
    time.sleep(0.2)  # the short call reaches the loop first
    full = threading.Thread(target=call, args=("full", slow[1:]))
    full.start()
    short.join()
    full.join()
    assert ended["full"] < 2 < ended["short"], ended


def test_two_iterators_of_one_pooled_dataset_never_share_rows(server, small_images):
    # Each iterator draws its own lot: had they shared one, their rows would be split between them.
    names = sorted(small_images)
    urls = [fresh(server, names[i % len(names)]) for i in range(40)]
    ds = _indexed(urls).apply(fetch_native(FAST, tfeed.Stats(), group_size=4))
    first, second = iter(ds), iter(ds)
    seen = {0: [], 1: []}
    for _ in range(40):
        for k, iterator in enumerate((first, second)):
            seen[k].append(int(next(iterator)[1]))
    assert sorted(seen[0]) == sorted(seen[1]) == list(range(40))


def test_abandoned_pooled_iterator_frees_its_request_slots(ops, server, jpg):
    # max_in_flight=4: had the abandoned lot kept its 4 admitted hanging transfers, the
    # next fetch would queue behind them until their 60 s deadline.
    config = FAST.replace(deadline=60, read_timeout=60, max_in_flight=4)
    urls = [fresh(server, jpg)] + [fresh(server, jpg, hang=1) for _ in range(7)]
    iterator = iter(_indexed(urls).apply(fetch_native(config, tfeed.Stats(), group_size=1)))
    assert int(next(iterator)[1]) == 0
    start = time.monotonic()
    del iterator  # cancels the lot: its transfers and its calls
    [(_, reason, _, _)] = fetch(ops, [fresh(server, jpg)], config)
    assert reason == "" and time.monotonic() - start < 5
