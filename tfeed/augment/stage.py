"""How ``image_dataset_from_urls(augment=...)`` runs an augmentation.

Three kinds of ``augment``, three wirings (elements after fetch are
``(body, label, url)``)::

    Recipe (a preset):  draws -> recipe.decode + its ops, the tail as one native step (one map)
                          -> batch -> labels -> drop draws
    other tfeed op:     keys -> decode + resize(image_size) -> labels -> op(image, label, key) -> batch
    fn(image, label):          decode + resize(image_size) -> labels -> fn(image, label) -> batch

``keys`` appends ``key = [hash(url), hash(seed, epoch)]`` (see
:mod:`tfeed.augment.randomness`), computed for groups of ``KEY_GROUP``
elements at a time; for a Recipe, ``draws`` appends the uniforms that key
stands for (``[recipe.draws]``, drawn once per example) followed by the
parameters of its colour-and-flip tail (:mod:`tfeed.augment.tail`, computed
for the whole group at once), which then runs per example as one native
step; without the op library the tail's ops run as graph ops, with the same
images up to float rounding.  The augment step drops that column again.
Every URL gets the same draws whatever its position: a rerun in the same or
another order gives the same images.

Image size: a Recipe fixes its own ``output_size``, which becomes the
dataset's; an explicit ``image_size`` that differs is a ValueError.  Without
a Recipe, ``image_size`` defaults to ``(256, 256)`` as in Keras.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence, Tuple

import tensorflow as tf

from tfeed.augment import randomness
from tfeed.augment.base import Op, Recipe
from tfeed.augment.tail import ColorTail, color_tail
from tfeed.images import DEFAULT_IMAGE_SIZE, DecodeHooks, check_image_size
from tfeed.single_device import single_device_functions
from tfeed.upright import DEFAULT_OPTIONS, DecodeOptions

KEY_GROUP = 32  # elements per call of the keys stage


@dataclasses.dataclass(frozen=True)
class AugmentPlan:
    """The validated ``augment`` of one pipeline and the stages it adds."""

    augment: Optional[Callable]
    image_size: Tuple[int, int]
    seed: int
    deterministic: bool = False
    tail: Optional[ColorTail] = None  # a Recipe's colour-and-flip tail as one native step
    decode_options: DecodeOptions = DEFAULT_OPTIONS  # how a Recipe's decode step reads bodies

    def with_ops(self, ops, decode_options: DecodeOptions = DEFAULT_OPTIONS) -> "AugmentPlan":
        """This plan with the Recipe's tail as one native step where ``ops``
        (the loaded :mod:`tfeed.kernels` module, or None) has the kernel, and
        its decode step reading bodies per ``decode_options``."""
        tail = color_tail(self.augment, ops) if isinstance(self.augment, Recipe) else None
        return dataclasses.replace(self, tail=tail, decode_options=decode_options)

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
        recipe, options = self.augment, self.decode_options
        return lambda body, label, url, u: recipe.decode_drawn(body, u, options)

    @property
    def jpeg_decoder(self) -> Optional[Callable]:
        """Like :attr:`decoder`, for JPEG bodies only (other formats make it
        fail): the pipeline tries it first and falls back to :attr:`decoder`,
        which saves a ``tf.cond`` on the format per example.  None if the
        Recipe's decode step has no such path."""
        if not isinstance(self.augment, Recipe) or not self.augment.jpeg_path:
            return None
        recipe, options = self.augment, self.decode_options
        return lambda body, label, url, u: recipe.decode_jpeg_drawn(body, u, options)

    @property
    def finisher(self) -> Optional[Callable]:
        """``fn(image, body, label, url, u) -> image``: the Recipe's ops after
        its decode step, the tail as one native step where :attr:`tail` (they
        cannot fail on a decoded image), or None."""
        if not isinstance(self.augment, Recipe):
            return None
        recipe, tail = self.augment, self.tail
        if tail is None:
            return lambda image, body, label, url, u: recipe.after_decode_drawn(image, u)
        return lambda image, body, label, url, u: tail.apply(recipe.after_decode_drawn(image, u, tail.start),
                                                             u[recipe.draws:])

    @property
    def decode_hooks(self) -> Optional[DecodeHooks]:
        """How a Recipe takes over decoding (None for anything else)."""
        if self.decoder is None:
            return None
        return DecodeHooks(self.decoder, self.jpeg_decoder, self.finisher)

    @property
    def per_example(self) -> bool:
        """Whether :meth:`apply` adds a per-example stage (which then sees encoded labels)."""
        return self.augment is not None and not isinstance(self.augment, Recipe)

    def after_batch(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """After batching, for a Recipe: ``(images, *columns, draws)`` ->
        ``(images, *columns)``; unchanged for anything else."""
        if not isinstance(self.augment, Recipe):
            return dataset
        return dataset.map(lambda *columns: columns[:-1])

    def keys(self, first_epoch: int = 0) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
        """Stage after fetch: ``(body, label, url)`` -> ``(body, label, url, key)``
        when the augmentation is seeded (a Recipe: the key's draws, then its
        tail's parameters where :attr:`tail`, instead of the key); unchanged otherwise."""
        if not self.seeded:
            return lambda dataset: dataset
        then = None
        if isinstance(self.augment, Recipe):
            then = functools.partial(_recipe_draws, self.augment.draws, self.tail)
        return randomness.grouped_keys(self.seed, url_index=2, first_epoch=first_epoch, then=then,
                                       group_size=KEY_GROUP)

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


def _recipe_draws(count: int, tail: Optional[ColorTail], keys: tf.Tensor) -> tf.Tensor:
    """float32 ``[n, count (+ ColorTail.SIZE)]`` for int64 ``keys [n, 2]``."""
    draws = randomness.draw_each(keys, count)
    return draws if tail is None else tf.concat([draws, tail.parameters(draws)], axis=1)


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
