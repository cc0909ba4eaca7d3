"""Label stage: class indices to the encoding Keras expects."""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from tfeed.config import check_choice

LABEL_MODES = ("int", "categorical", "binary", None)


def encode_labels(label_mode: Optional[str], num_classes: int) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Return a ``Dataset -> Dataset`` function for ``ds.apply`` mapping
    ``(image, index: int64 [...], *rest)`` to ``(image, label, *rest)``, for
    single examples (index ``[]``) or batches (index ``[B]``, shapes below
    gain a leading ``B``):

    * ``"int"``: int32 ``[]``;
    * ``"categorical"``: float32 one-hot ``[num_classes]``;
    * ``"binary"``: float32 ``[1]`` with 0 or 1 (needs exactly 2 classes);
    * ``None``: ``(image, *rest)`` -- the label is dropped.

    Apply it after batching where nothing needs the encoded label per
    example: a sequential per-example ``map`` costs 5-10% of throughput.
    """
    check_choice("label_mode", label_mode, LABEL_MODES)
    if label_mode == "binary" and num_classes != 2:
        raise ValueError(f'label_mode="binary" needs exactly 2 classes, found {num_classes}')
    if label_mode == "categorical" and num_classes < 1:
        raise ValueError('label_mode="categorical" needs at least one class')

    def encode(image, index, *rest):
        if label_mode is None:
            return (image, *rest)
        if label_mode == "int":
            label = tf.cast(index, tf.int32)
        elif label_mode == "categorical":
            label = tf.one_hot(index, num_classes, dtype=tf.float32)
        else:
            label = tf.expand_dims(tf.cast(index, tf.float32), -1)
        return (image, label, *rest)

    return lambda dataset: dataset.map(encode)
