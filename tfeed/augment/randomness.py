"""Stateless randomness for augmentation: one key per (seed, epoch, element).

Ops draw their random parameters first and then apply a fixed transform
(as tensorpack's augmentors do).  Each op says how many uniforms in [0, 1) it
needs (``op.draws``); a whole recipe draws all of them in one call::

    key = [hash(url), hash(seed, epoch)]          # int64 [2], one per element and epoch
    u   = stateless_uniform([recipe.draws], key)  # every parameter of the example
    op i of a Compose reads its own slice of u

Nothing depends on thread scheduling or arrival order: the same ``seed``
reproduces the same augmented stream run after run, while different URLs and
epochs get different draws (the same URL twice in one epoch gets the same).
One draw per example, instead of one per op, also matters for speed: in a
tf.data function every small op costs several microseconds.

:func:`element_keys` is the stage that adds ``key`` to each element
(:func:`grouped_keys` the same, one call per group of elements, as the
pipeline uses it); the epoch is counted per iterator: each pass over the
dataset (each ``iter(ds)``, each Keras epoch, each round of ``ds.repeat()``)
is the next epoch.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Callable, Optional, Sequence

import tensorflow as tf

ALG = "philox"  # pinned: "auto_select" may pick a different generator per device
URL_BUCKETS = 2**62
TINY = 1e-7  # keeps inverse-CDF transforms of u finite


def as_seed(seed) -> tf.Tensor:
    """An int ``s`` as the stateless seed ``[s, 0]``; a ``[2]`` tensor as int64."""
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return tf.cast(tf.ensure_shape(seed, [2]), tf.int64)


def uniform(seed: tf.Tensor, shape: Sequence = (), minval=0.0, maxval=1.0) -> tf.Tensor:
    """float32 uniform in ``[minval, maxval)``."""
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval, alg=ALG)


def draw(seed, count: int) -> tf.Tensor:
    """The ``count`` uniforms in [0, 1) that ``seed`` stands for (float32 ``[count]``)."""
    return uniform(as_seed(seed), [count])


def draw_each(keys: tf.Tensor, count: int) -> tf.Tensor:
    """float32 ``[n, count]``: row i is ``draw(keys[i], count)`` (int64 ``keys [n, 2]``)."""
    return tf.map_fn(lambda key: draw(key, count), keys, fn_output_signature=tf.TensorSpec([count], tf.float32))


def between(u: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """A uniform ``u`` in [0, 1) mapped to [low, high)."""
    return low + (high - low) * u


def standard_normal(u: tf.Tensor) -> tf.Tensor:
    """Uniforms mapped to standard normals (inverse CDF)."""
    return tf.math.ndtri(tf.clip_by_value(u, TINY, 1.0 - TINY))


def seed_from(u: tf.Tensor) -> tf.Tensor:
    """A stateless seed made from two uniforms (for ops that need a whole
    noise field, not a few numbers)."""
    return tf.cast(tf.floor(u[:2] * 2.0**31), tf.int64)


def epoch_key(seed: int, epoch: int) -> int:
    """The per-epoch half of a key: a 63-bit hash of ``(seed, epoch)``."""
    digest = hashlib.blake2b(f"tfeed.augment:{int(seed)}:{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def element_key(seed: int, epoch: int, url: tf.Tensor) -> tf.Tensor:
    """The key of one element: ``[hash(url), hash(seed, epoch)]``."""
    return element_key_from(tf.constant(epoch_key(seed, epoch), tf.int64), url)


def element_key_from(epoch_part: tf.Tensor, url: tf.Tensor) -> tf.Tensor:
    return tf.stack([tf.strings.to_hash_bucket_fast(url, URL_BUCKETS), epoch_part])


def epoch_keys(seed: int, epochs: Callable[[], int]) -> tf.data.Dataset:
    """An endless dataset repeating ``epoch_key(seed, epochs())``; ``epochs()``
    is called once per iterator (one Python call per pass, not per element)."""
    once = tf.data.Dataset.from_generator(lambda: iter([epoch_key(seed, epochs())]),
                                          output_signature=tf.TensorSpec([], tf.int64))
    return once.flat_map(lambda key: tf.data.Dataset.from_tensors(key).repeat())


def element_keys(seed: int, url_index: int = -1, first_epoch: int = 0, then: Optional[Callable] = None
                 ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Return a ``Dataset -> Dataset`` function for ``ds.apply`` that appends
    each element's key: ``(*element)`` becomes ``(*element, key: int64 [2])``,
    with the URL read from ``element[url_index]`` (a string scalar).  With
    ``then``, ``then(key)`` is appended instead (e.g. the key's draws).

    Each new iterator over the result counts as the next epoch
    (``first_epoch``, then +1 each time; a resumed run passes its epoch).
    """
    seed = int(seed)
    counter = itertools.count(int(first_epoch))

    def add_key(element, epoch_part):
        key = element_key_from(epoch_part, element[url_index])
        return (*element, then(key) if then is not None else key)

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        paired = tf.data.Dataset.zip((_as_tuples(dataset), epoch_keys(seed, lambda: next(counter))))
        return paired.map(add_key, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
                          name="tfeed_element_keys")

    return apply


def grouped_keys(seed: int, url_index: int = -1, first_epoch: int = 0, then: Optional[Callable] = None,
                 group_size: int = 32) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """:func:`element_keys` computed for ``group_size`` elements at a time
    (one function call per group instead of one per element; elements must
    batch, i.e. have equal shapes): ``then(keys)`` gets int64 ``[n, 2]`` and
    returns ``[n, ...]``.  The same keys, in the same order."""
    seed = int(seed)
    counter = itertools.count(int(first_epoch))

    def add_keys(group, epoch_part):
        urls = group[url_index]
        keys = tf.stack([tf.strings.to_hash_bucket_fast(urls, URL_BUCKETS), tf.fill(tf.shape(urls), epoch_part)],
                        axis=1)
        return (*group, then(keys) if then is not None else keys)

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        paired = tf.data.Dataset.zip((_as_tuples(dataset).batch(group_size), epoch_keys(seed, lambda: next(counter))))
        return paired.map(add_keys, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
                          name="tfeed_grouped_keys").unbatch()

    return apply


def _as_tuples(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset if isinstance(dataset.element_spec, tuple) else dataset.map(lambda value: (value,))
