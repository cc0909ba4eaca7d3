"""The worker side: the URLs of one epoch to ``(image, label, url, reason)`` in graph ops only.

tf.data service workers run a serialized graph, so nothing here may call
Python (no ``from_generator``, no ``py_function``)::

    from_tensor_slices(urls, labels) --shuffle(seed of the epoch)--> fetch_native_graph
        --decode or fallback (one interleave branch per element)--> (image, label, url, reason)

Every URL yields exactly one element: a failed fetch keeps its reason and a
zero image; a body that does not decode becomes a zero image with reason
``decode_error``.  The fallback is the second element of
``decoded.ignore_errors().concatenate(fallback).take(1)``, so decode errors
are caught per element without Python and the client can tell a URL that
failed from one that never arrived (lost with its worker).
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfeed import errors
from tfeed.config import FetchConfig
from tfeed.upright import DEFAULT_OPTIONS, DecodeOptions, decode_resized
from tfeed.fetching.native import fetch_native_graph


def epoch_dataset(urls: np.ndarray, labels: np.ndarray, fetch_config: FetchConfig, image_size: Sequence[int], *,
                  shuffle: bool, seed: int, interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                  pad_to_aspect_ratio: bool = False, num_parallel_calls: Optional[int] = None,
                  ops=None, decode_options: DecodeOptions = DEFAULT_OPTIONS) -> tf.data.Dataset:
    """One epoch's graph-only dataset of ``(image, label, url, reason)``.

    ``urls`` / ``labels``: the epoch's selected URLs and class indices.
    ``seed``: the shuffle seed of this epoch (the caller mixes in the epoch
    number, so every epoch has a new order and the same seed the same one).
    """
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(urls, tf.string), tf.constant(labels, tf.int64)))
    if shuffle and len(urls) > 1:
        dataset = dataset.shuffle(len(urls), seed=seed, reshuffle_each_iteration=True)
    return (dataset
            .apply(fetch_native_graph(fetch_config, ops=ops))
            .apply(decode_or_fallback(image_size, interpolation=interpolation,
                                      crop_to_aspect_ratio=crop_to_aspect_ratio,
                                      pad_to_aspect_ratio=pad_to_aspect_ratio,
                                      num_parallel_calls=num_parallel_calls, options=decode_options)))


def decode_or_fallback(image_size: Sequence[int], *, interpolation: str = "bilinear",
                       crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False,
                       num_parallel_calls: Optional[int] = None,
                       options: DecodeOptions = DEFAULT_OPTIONS) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """``(body, label, url, reason)`` -> ``(image float32 [h, w, 3], label, url, reason)``,
    one output per input: a zero image when the fetch failed (its reason kept)
    or the body did not decode (reason ``decode_error``)."""
    height, width = (int(v) for v in image_size)
    cores = os.cpu_count() or 2

    def decode_one(body, label, url, reason):
        image = decode_resized(body, (height, width), interpolation=interpolation,
                               crop_to_aspect_ratio=crop_to_aspect_ratio, pad_to_aspect_ratio=pad_to_aspect_ratio,
                               options=options)
        return image, label, url, reason

    def branch(body, label, url, reason):
        fetched = tf.equal(reason, "")
        decoded = (tf.data.Dataset.from_tensors((body, label, url, reason))
                   .filter(lambda *_: fetched).map(decode_one).ignore_errors())
        fallback_reason = tf.where(fetched, tf.constant(errors.DECODE_ERROR), reason)
        fallback = tf.data.Dataset.from_tensors((tf.zeros([height, width, 3], tf.float32), label, url,
                                                 fallback_reason))
        return decoded.concatenate(fallback).take(1)

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        return dataset.interleave(branch, cycle_length=2 * cores, block_length=1,
                                  num_parallel_calls=num_parallel_calls or cores, deterministic=False,
                                  name="tfeed_service_decode")

    return apply
