"""Batch and deliver: examples to batches with encoded labels, then the final prefetch.

    (image, index, *rest) --[per-example augment]--> batch --> encode labels
        ... account (tfeed.batching.accounting) --> deliver: options + prefetch (to device)
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import tensorflow as tf

from tfeed.batching.labels import encode_labels
from tfeed.single_device import keep_working


def batch_with_labels(dataset: tf.data.Dataset, label_mode: Optional[str], num_classes: int,
                      batch_size: Optional[int], augment_stage: Optional[Callable] = None) -> tf.data.Dataset:
    """``(image, index, *rest)`` examples -> batches of ``(image[, label], *rest)``.

    Labels are encoded once per batch, not per example (a sequential
    per-example map there cost 5-10% of throughput), unless ``augment_stage``
    (``Dataset -> Dataset`` over ``(image, label, *rest)``) must see them per
    example.
    """
    if augment_stage is not None:
        dataset = dataset.apply(encode_labels(label_mode or "int", num_classes)).apply(augment_stage)
    if batch_size is not None:
        dataset = dataset.batch(int(batch_size))
    if augment_stage is None:
        return dataset.apply(encode_labels(label_mode, num_classes))
    return dataset.map(lambda image, label, *rest: (image, *rest)) if label_mode is None else dataset


def finish(dataset: tf.data.Dataset, prefetch_to_device: Optional[str] = None, *,
           autotune: bool = False, buffer_batches: int = 2) -> tf.data.Dataset:
    """Options and the final prefetch of ``buffer_batches`` (onto
    ``prefetch_to_device`` if given).

    Blocking fetch calls run on a private thread pool sized so that decoding
    always has every core (tf.data's default pool has one thread per core).
    """
    dataset = dataset.with_options(pipeline_options(autotune))
    device = _resolve_device(prefetch_to_device)
    if device is not None:
        return dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_batches))
    return dataset.prefetch(tf.data.AUTOTUNE if autotune else buffer_batches)


def _resolve_device(prefetch_to_device: Optional[str]) -> Optional[str]:
    if prefetch_to_device != "auto":
        return prefetch_to_device
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else None


def pipeline_options(autotune: bool = False) -> tf.data.Options:
    """tfeed's dataset options: a private thread pool of ``2 * cores + 8``
    threads (blocking fetch calls never take a decode thread: tf.data's
    default pool has one thread per core), autotune off unless asked (with it
    on, the end of an epoch was seen to wait 0.1-2.5 s for the autotuner's
    next tick), and the pipeline kept whole (:func:`tfeed.single_device.keep_working`)."""
    options = keep_working(tf.data.Options())
    options.threading.private_threadpool_size = 2 * (os.cpu_count() or 2) + 8
    options.autotune.enabled = autotune
    return options
