"""How ``image_dataset_from_urls(augment=...)`` runs an augmentation.

Three kinds of ``augment``, three wirings (elements after fetch are
``(body, label, url)``)::

    Recipe (a preset):  keys -> recipe.decode + recipe.after_decode (one map) -> batch -> labels, drop keys
    other tfeed op:     keys -> decode + resize(image_size) -> labels -> op(image, label, key) -> batch
    fn(image, label):          decode + resize(image_size) -> labels -> fn(image, label) -> batch

``keys`` appends ``key = [hash(url), hash(seed, epoch)]`` (see
:mod:`tfeed.augment.randomness`) and the augment step drops it again.

Image size: a Recipe fixes its own ``output_size``, which becomes the
dataset's; an explicit ``image_size`` that differs is a ValueError.  Without
a Recipe, ``image_size`` defaults to ``(256, 256)`` as in Keras.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Tuple

import tensorflow as tf

from tfeed.augment.base import Op, Recipe
from tfeed.augment.randomness import element_keys
from tfeed.decoding import check_image_size

DEFAULT_IMAGE_SIZE = (256, 256)


@dataclasses.dataclass(frozen=True)
class AugmentPlan:
    """The validated ``augment`` of one pipeline and the stages it adds."""

    augment: Optional[Callable]
    image_size: Tuple[int, int]
    seed: int
    deterministic: bool = False

    @property
    def seeded(self) -> bool:
        return isinstance(self.augment, Op)

    @property
    def decoder(self) -> Optional[Callable]:
        """``fn(body, label, url, key) -> image`` replacing decode + resize, or
        None.  With :attr:`finisher`, a Recipe runs whole in the decode map
        (one map per example, not two)."""
        if not isinstance(self.augment, Recipe):
            return None
        recipe = self.augment
        return lambda body, label, url, key: recipe.decode(body, key)

    @property
    def finisher(self) -> Optional[Callable]:
        """``fn(image, body, label, url, key) -> image``: the Recipe's ops after
        its decode step (they cannot fail on a decoded image), or None."""
        if not isinstance(self.augment, Recipe):
            return None
        recipe = self.augment
        return lambda image, body, label, url, key: recipe.after_decode(image, label, key)[0]

    @property
    def per_example(self) -> bool:
        """Whether :meth:`apply` adds a per-example stage (which then sees encoded labels)."""
        return self.augment is not None and not isinstance(self.augment, Recipe)

    def drop_keys(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """After batching: ``(*columns, keys)`` -> ``columns`` where a Recipe's
        keys are still attached; unchanged otherwise."""
        if not isinstance(self.augment, Recipe):
            return dataset
        return dataset.map(lambda *columns: columns[:-1])

    def keys(self, first_epoch: int = 0) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
        """Stage after fetch: ``(body, label, url)`` -> ``(body, label, url, key)``
        when the augmentation is seeded; unchanged otherwise."""
        if not self.seeded:
            return lambda dataset: dataset
        return element_keys(self.seed, url_index=2, first_epoch=first_epoch)

    def apply(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Stage after labels: ``(image, label, url[, key])`` -> ``(image, label, url)``
        (none for a Recipe: it ran in :attr:`decoder`)."""
        augment = self.augment
        if not self.per_example:
            return dataset
        if self.seeded:
            step = lambda image, label, url, key: (*augment(image, label, key), url)
        else:
            step = lambda image, label, url: (*augment(image, label), url)
        return dataset.map(step, num_parallel_calls=tf.data.AUTOTUNE, deterministic=self.deterministic,
                           name="tfeed_augment")


def plan(augment, image_size: Optional[Sequence[int]], seed: int, *, deterministic: bool = False,
         crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False) -> AugmentPlan:
    """Validate ``augment`` against the pipeline's options (ValueError /
    TypeError naming what was received) and resolve the image size."""
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a tfeed.augment op or a callable fn(image, label), got {augment!r}")
    if isinstance(augment, Recipe):
        if image_size is not None and check_image_size(image_size) != augment.output_size:
            height, width = augment.output_size
            raise ValueError(f"augment makes {height}x{width} images but image_size={tuple(image_size)!r}; "
                             f"leave image_size out or pass ({height}, {width})")
        if crop_to_aspect_ratio or pad_to_aspect_ratio:
            raise ValueError("crop_to_aspect_ratio / pad_to_aspect_ratio do nothing when augment is a Recipe "
                             "(it crops and resizes while decoding)")
        size = augment.output_size
    else:
        size = check_image_size(image_size if image_size is not None else DEFAULT_IMAGE_SIZE)
    return AugmentPlan(augment, size, int(seed), deterministic)
