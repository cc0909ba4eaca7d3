"""How ``image_dataset_from_urls(augment=...)`` runs an augmentation.

Three kinds of ``augment``, three wirings (elements after fetch are
``(body, label, url)``)::

    Recipe (a preset):  draws -> recipe.decode + ops up to its tail (one map) -> batch -> labels
                          -> colour-and-flip tail per batch, drop draws
    other tfeed op:     keys -> decode + resize(image_size) -> labels -> op(image, label, key) -> batch
    fn(image, label):          decode + resize(image_size) -> labels -> fn(image, label) -> batch

``keys`` appends ``key = [hash(url), hash(seed, epoch)]`` (see
:mod:`tfeed.augment.randomness`); for a Recipe, ``draws`` appends the
uniforms that key stands for (``[recipe.draws]``, drawn once per example).
The augment step drops that column again.  A Recipe's tail of colour ops
and flips runs per batch with the native kernel (:mod:`tfeed.augment.batched`)
when the pipeline batches and the op library is loaded; otherwise per
example, with the same images up to float rounding.  A rerun in the same
order gives identical batches; in a shuffled or unordered run each URL gets
the same draws, but its pixels can differ in the last float bit with the
batch it lands in (cause not pinned down; batched tf.matmul was one, removed).

Image size: a Recipe fixes its own ``output_size``, which becomes the
dataset's; an explicit ``image_size`` that differs is a ValueError.  Without
a Recipe, ``image_size`` defaults to ``(256, 256)`` as in Keras.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Tuple

import tensorflow as tf

from tfeed.augment import randomness
from tfeed.augment.base import Op, Recipe
from tfeed.augment.batched import BatchTail, batch_tail, tail_start
from tfeed.decoding import check_image_size
from tfeed.single_device import single_device_functions

DEFAULT_IMAGE_SIZE = (256, 256)


@dataclasses.dataclass(frozen=True)
class AugmentPlan:
    """The validated ``augment`` of one pipeline and the stages it adds."""

    augment: Optional[Callable]
    image_size: Tuple[int, int]
    seed: int
    deterministic: bool = False
    tail: Optional[BatchTail] = None  # a Recipe's colour-and-flip tail, run per batch

    def with_ops(self, ops, batched: bool) -> "AugmentPlan":
        """This plan with the Recipe's tail moved after batching where it can
        (``batched`` and ``ops``, the loaded :mod:`tfeed.native` module, has the kernel)."""
        tail = batch_tail(self.augment, ops) if isinstance(self.augment, Recipe) and batched else None
        return dataclasses.replace(self, tail=tail)

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
        return lambda body, label, url, u: recipe.decode_drawn(body, u)

    @property
    def jpeg_decoder(self) -> Optional[Callable]:
        """Like :attr:`decoder`, for JPEG bodies only (other formats make it
        fail): the pipeline tries it first and falls back to :attr:`decoder`,
        which saves a ``tf.cond`` on the format per example.  None if the
        Recipe's decode step has no such path."""
        if not isinstance(self.augment, Recipe) or not self.augment.jpeg_path:
            return None
        recipe = self.augment
        return lambda body, label, url, u: recipe.decode_jpeg_drawn(body, u)

    @property
    def finisher(self) -> Optional[Callable]:
        """``fn(image, body, label, url, u) -> image``: the Recipe's ops after
        its decode step, up to the tail when that runs per batch (they cannot
        fail on a decoded image), or None."""
        if not isinstance(self.augment, Recipe):
            return None
        recipe = self.augment
        stop = tail_start(recipe) if self.tail is not None else None
        return lambda image, body, label, url, u: recipe.after_decode_drawn(image, u, stop)

    @property
    def per_example(self) -> bool:
        """Whether :meth:`apply` adds a per-example stage (which then sees encoded labels)."""
        return self.augment is not None and not isinstance(self.augment, Recipe)

    def after_batch(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """After batching, for a Recipe: ``(images, *columns, draws)`` ->
        ``(images, *columns)``, the tail applied to ``images`` when it runs
        per batch; unchanged for anything else."""
        if not isinstance(self.augment, Recipe):
            return dataset
        tail = self.tail
        if tail is None:
            return dataset.map(lambda *columns: columns[:-1])
        return dataset.map(lambda images, *columns: (tail(images, columns[-1]), *columns[:-1]),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=self.deterministic,
                           name="tfeed_augment_tail")

    def keys(self, first_epoch: int = 0) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
        """Stage after fetch: ``(body, label, url)`` -> ``(body, label, url, key)``
        when the augmentation is seeded (a Recipe: the key's draws instead of
        the key); unchanged otherwise."""
        if not self.seeded:
            return lambda dataset: dataset
        then = None
        if isinstance(self.augment, Recipe):
            count = self.augment.draws
            then = lambda key: randomness.draw(key, count)  # noqa: E731
        return randomness.element_keys(self.seed, url_index=2, first_epoch=first_epoch, then=then)

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
        # A caller's own function keeps tf.data's default (multi-device) build: it may use
        # resources on another device, which a single-device function cannot reach.
        with single_device_functions(enabled=self.seeded):
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
