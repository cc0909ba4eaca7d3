"""Fetch stage: ``(url, label)`` elements in, ``(bytes, label, url)`` out.

The shape is the tf.data tutorial's -- ``map(py_function(fetch))`` -- split in
two so network latency is hidden instead of paid per thread::

    (url, label) --batch(group_size)--> map(py_function(submit))   # returns at once
                 --prefetch(max_in_flight / group_size)             # keeps the engine full
                 --map(py_function(collect), num_parallel_calls)    # blocks only until ready
                 --unbatch--> (bytes, label, url)

``submit`` hands a group of URLs to the :class:`~tfeed.fetching.python.engine.FetchEngine`
and returns a ticket; the prefetch buffer keeps submitting ahead, so hundreds
of requests are in flight while only ``num_parallel_calls`` tf.data threads
ever wait.  Failed URLs are counted in the engine's stats, passed to the error
policy, and dropped here.

The ``py_function`` bodies reach the engine weakly (:mod:`tfeed.lifetime`);
the dataset holds it (:func:`tfeed.plan.attach`).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import tensorflow as tf

from tfeed import contract
from tfeed.lifetime import held_by_dataset
from tfeed.fetching.python.engine import FetchEngine
from tfeed.errors import ErrorPolicy, resolve_policy

DEFAULT_GROUP_SIZE = contract.GROUP_SIZE


def fetch(engine: FetchEngine, *, on_error: ErrorPolicy = "skip", deterministic: bool = False,
          group_size: int = DEFAULT_GROUP_SIZE, num_parallel_calls: int = 2
          ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Return a ``Dataset -> Dataset`` function for ``ds.apply``.

    Input elements: ``(url: tf.string [], label: tf.int64 [])``, or groups of
    them as vectors ``[n]`` (what :func:`tfeed.url_dataset` yields).
    Output elements: ``(body: tf.string [], label: tf.int64 [], url: tf.string [])``,
    one per URL that downloaded as an image; failures are dropped after being
    counted in ``engine.stats`` and handed to ``on_error``.
    ``deterministic=True`` keeps input order; otherwise fast responses
    overtake slow ones.
    """
    if group_size < 1 or num_parallel_calls < 1:
        raise ValueError(f"group_size and num_parallel_calls must be >= 1, got {group_size}, {num_parallel_calls}")
    handle = resolve_policy(on_error)
    ordered = bool(deterministic)
    live_engine = held_by_dataset(engine, "fetch engine")

    def submit(urls, labels, run):
        return live_engine().submit(int(run), [u.decode() for u in urls.numpy()], labels.numpy().tolist(), ordered)

    def collect(ticket):
        engine = live_engine()
        try:
            results = engine.collect(int(ticket))
            for result in results:
                if result.failure is not None:
                    handle(result.failure)
        except Exception as exc:  # the policy raised, or the engine died
            engine.stats.fail(exc)
            raise
        return ([r.body or b"" for r in results], [r.label for r in results],
                [r.url.encode() for r in results], [r.failure is None for r in results])

    def submit_op(group, run):
        urls, labels = group
        return tf.py_function(submit, [urls, labels, run], tf.int64, name="tfeed_submit")

    def collect_op(ticket):
        body, label, url, ok = tf.py_function(collect, [ticket], [tf.string, tf.int64, tf.string, tf.bool],
                                              name="tfeed_collect")
        return tuple(tf.boolean_mask(tf.ensure_shape(t, [None]), tf.ensure_shape(ok, [None]))
                     for t in (body, label, url))

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        # one run id per iterator, repeated for each of its groups
        runs = tf.data.Dataset.from_generator(lambda: itertools.repeat(live_engine().new_run()),
                                              output_signature=tf.TensorSpec([], tf.int64))
        if dataset.element_spec[0].shape.rank == 0:
            dataset = dataset.batch(group_size)
        tickets = tf.data.Dataset.zip((dataset, runs)).map(submit_op)
        tickets = tickets.prefetch(math.ceil(engine.config.max_in_flight / group_size))
        fetched = tickets.map(collect_op, num_parallel_calls=num_parallel_calls, deterministic=ordered)
        return fetched.unbatch()

    return apply

