"""Accounting stage: mark delivered examples and close each epoch's books.

Placed after batching, it reads the URL column (dropping it) so that
:class:`~tfeed.stats.Stats` knows which fetched images made it through
decoding -- through a ``py_function`` per batch, or, with the native op, a
journal the stats read lazily; after the last batch, an empty tail dataset
calls :meth:`Stats.finish_epoch`, which counts the rest as ``decode_error``.

Both places re-raise an error an earlier stage recorded with
:meth:`Stats.fail`, so errors are never lost to ``ignore_errors`` upstream
(the Python engine's path; the native path has no ``ignore_errors``).
"""

from __future__ import annotations

import uuid
from typing import Callable

import tensorflow as tf

from tfeed.elements import failed_rows
from tfeed.stats import Stats


def account(stats: Stats, ops=None, journal: bool = False) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Return a ``Dataset -> Dataset`` function for ``ds.apply``: elements
    ``(*values, url)`` (``url`` a string scalar or vector) become ``values``
    (a single value is unwrapped), unchanged otherwise.  Rows whose URL
    :func:`tfeed.elements.mark_failed` marked are counted as ``decode_error``
    and removed (a batch holding one is that much shorter) by the native
    ``tfeed_keep_rows`` op (``ops``: the loaded :mod:`tfeed.kernels` module;
    without it no rows can be marked).

    ``journal=True`` (needs ``ops``): each batch's URLs go to the native
    journal instead of a ``py_function`` (~1.5-2% of throughput on 2 cores),
    and ``stats`` applies them when read (:meth:`Stats.attach_journal`).
    """

    if journal and ops is None:
        raise ValueError("account(journal=True) needs the native op module (ops)")
    name = f"tfeed-journal-{uuid.uuid4().hex}"
    if journal:
        stats.attach_journal(lambda: _drained(ops.tfeed_journal_drain(journal=name)))
    keep_rows = ops.tfeed_keep_rows if ops is not None else None

    def mark(urls):
        stats.check()
        values = urls.numpy()
        stats.record_batch([values] if isinstance(values, bytes) else values)
        return True

    def strip(*element):
        *values, url = element
        if journal:
            marked = ops.tfeed_journal_append(tf.reshape(url, [-1]), journal=name)
        else:
            marked = tf.py_function(mark, [url], tf.bool, name="tfeed_account")
        with tf.control_dependencies([marked]):
            if keep_rows is None:
                values = [tf.identity(v) for v in values]
            elif url.shape.rank == 0:
                return (*[tf.identity(v) for v in values], tf.logical_not(failed_rows(url)))
            else:
                values = keep_rows(tf.logical_not(failed_rows(url)), values)
        return values[0] if len(values) == 1 else tuple(values)

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        marked = dataset.map(strip, num_parallel_calls=None)
        if keep_rows is not None and dataset.element_spec[-1].shape.rank == 0:  # drop undecodable examples
            marked = marked.filter(_last_column).map(_all_but_last_column)
        return marked.concatenate(_epoch_end(stats, marked.element_spec))

    return apply


# Plain graph functions: AutoGraph has nothing to convert in them (and cannot
# parse two lambdas on one line: it warned about them in users' output).
@tf.autograph.experimental.do_not_convert
def _last_column(*columns):
    return columns[-1]


@tf.autograph.experimental.do_not_convert
def _all_but_last_column(*columns):
    return columns[0] if len(columns) == 2 else columns[:-1]


def _drained(outputs) -> tuple:
    urls, sizes, first_time = outputs
    return list(urls.numpy()), sizes.numpy().tolist(), float(first_time.numpy())


def _epoch_end(stats: Stats, element_spec) -> tf.data.Dataset:
    """An empty dataset with ``element_spec`` that closes the epoch when reached."""

    def finish():
        stats.check()
        stats.finish_epoch()
        return False

    # One function: a filter that never keeps its one (empty) element.  Each
    # function here is instantiated when the epoch ends, on the way to the
    # end of the iteration: a map, filter, map chain took ~5 ms more.
    empty = tf.nest.map_structure(
        lambda spec: tf.zeros([d if d is not None else 0 for d in spec.shape], spec.dtype), element_spec)
    return tf.data.Dataset.from_tensors(empty).filter(lambda *_: tf.py_function(finish, [], tf.bool))
