"""Stateless randomness for augmentation: one seed per (seed, epoch, element).

Every op draws from ``tf.random.stateless_*`` with an explicit seed -- an
int64 tensor of shape ``[2]`` -- so nothing depends on thread scheduling or
arrival order::

    key = fold_in([seed, hash(url)], epoch)      # one per element and epoch
    op i of a Compose draws from fold_in(key, i)  # one per op

The same ``seed`` therefore reproduces the same augmented stream run after
run, while different URLs and different epochs get different draws.  (The
same URL twice in one epoch gets the same draw.)

:func:`element_keys` is the stage that adds ``key`` to each element; the epoch
is counted per iterator: each pass over the dataset (each ``iter(ds)``, each
Keras epoch, each round of ``ds.repeat()``) is the next epoch, starting at 0.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import tensorflow as tf

ALG = "philox"  # pinned: "auto_select" may pick a different generator per device
URL_BUCKETS = 2**62


def as_seed(seed) -> tf.Tensor:
    """An int ``s`` as the stateless seed ``[s, 0]``; a ``[2]`` tensor as int64."""
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return tf.cast(tf.ensure_shape(seed, [2]), tf.int64)


def fold(seed: tf.Tensor, data) -> tf.Tensor:
    """A new seed derived from ``seed`` and the integer ``data``."""
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int64), alg=ALG)


def split(seed: tf.Tensor, count: int) -> list:
    """``count`` independent seeds derived from ``seed``."""
    return [fold(seed, i) for i in range(count)]


def uniform(seed: tf.Tensor, shape: Sequence = (), minval=0.0, maxval=1.0) -> tf.Tensor:
    """float32 uniform in ``[minval, maxval)``."""
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval, alg=ALG)


def normal(seed: tf.Tensor, shape: Sequence = (), stddev=1.0) -> tf.Tensor:
    """float32 normal with mean 0."""
    return tf.random.stateless_normal(shape, seed, stddev=stddev, alg=ALG)


def coin(seed: tf.Tensor, probability: float) -> tf.Tensor:
    """A bool scalar that is True with ``probability``."""
    return uniform(seed) < probability


def element_key(seed: int, epoch: tf.Tensor, url: tf.Tensor) -> tf.Tensor:
    """The seed of one element: ``fold_in([seed, hash(url)], epoch)``."""
    base = tf.stack([tf.constant(int(seed), tf.int64), tf.strings.to_hash_bucket_fast(url, URL_BUCKETS)])
    return fold(base, epoch)


def epoch_numbers(counter: Callable[[], int]) -> tf.data.Dataset:
    """An endless dataset repeating ``counter()``, which is called once per
    iterator (one Python call per pass, not per element)."""
    once = tf.data.Dataset.from_generator(lambda: iter([counter()]),
                                          output_signature=tf.TensorSpec([], tf.int64))
    return once.flat_map(lambda epoch: tf.data.Dataset.from_tensors(epoch).repeat())


def element_keys(seed: int, url_index: int = -1, first_epoch: int = 0
                 ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Return a ``Dataset -> Dataset`` function for ``ds.apply`` that appends
    each element's key: ``(*element)`` becomes ``(*element, key: int64 [2])``,
    with the URL read from ``element[url_index]`` (a string scalar).

    Each new iterator over the result counts as the next epoch
    (``first_epoch``, then +1 each time; a resumed run passes its epoch).
    """
    seed = int(seed)
    counter = itertools.count(int(first_epoch))

    def add_key(element, epoch):
        return (*element, element_key(seed, epoch, element[url_index]))

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        epochs = epoch_numbers(lambda: next(counter))
        paired = tf.data.Dataset.zip((dataset.map(lambda *element: element), epochs))
        return paired.map(add_key, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
                          name="tfeed_element_keys")

    return apply
