"""The op contract, the combinators, and :class:`Recipe` (decode + ops).

An op is a small frozen dataclass (its settings, validated once) with::

    op.apply(image, seed) -> image             # graph ops only; seed: int64 [2]
    op(image, label, seed) -> (image, label)   # the Dataset-friendly form
    op.decode(body, seed) -> image             # encoded bytes in, same result as
                                               # apply(decode_image(body), seed)

Images are ``[height, width, channels]`` with values 0-255; ops that do
arithmetic return float32.  Randomness comes only from ``seed`` (see
:mod:`tfeed.augment.randomness`), so ``op(x, y, s)`` is a pure function.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from tfeed.augment import randomness
from tfeed.decode import check_image_size, decode_image


class Op:
    """Base class of the augmentation ops (subclasses are frozen dataclasses)."""

    def apply(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def __call__(self, image: tf.Tensor, label, seed) -> Tuple[tf.Tensor, object]:
        return self.apply(image, randomness.as_seed(seed)), label

    def decode(self, body: tf.Tensor, seed) -> tf.Tensor:
        """Decode ``body`` (any format ``decode_image`` reads) and apply.
        Ops that can skip work while decoding (a crop) override this."""
        return self.apply(decode_image(body), randomness.as_seed(seed))


def to_float(image: tf.Tensor) -> tf.Tensor:
    return image if image.dtype == tf.float32 else tf.cast(image, tf.float32)


def check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_ops(ops) -> Tuple[Op, ...]:
    ops = tuple(ops)
    for op in ops:
        if not isinstance(op, Op):
            raise TypeError(f"expected tfeed.augment ops, got {op!r}")
    return ops


@dataclasses.dataclass(frozen=True)
class Compose(Op):
    """Apply ``ops`` in order; op ``i`` draws from ``fold(seed, i)``."""

    ops: Sequence[Op]

    def __post_init__(self):
        object.__setattr__(self, "ops", check_ops(self.ops))

    def apply(self, image, seed):
        for index, op in enumerate(self.ops):
            image = op.apply(image, randomness.fold(seed, index))
        return image


@dataclasses.dataclass(frozen=True)
class RandomApply(Op):
    """Apply ``op`` with ``probability``, else pass the image through."""

    op: Op
    probability: float = 0.5

    def __post_init__(self):
        check_ops([self.op])
        check_probability("probability", self.probability)

    def apply(self, image, seed):
        coin_seed, op_seed = randomness.split(seed, 2)
        return tf.cond(randomness.coin(coin_seed, self.probability),
                       lambda: to_float(self.op.apply(image, op_seed)), lambda: to_float(image))


@dataclasses.dataclass(frozen=True)
class RandomOrder(Op):
    """Apply every op of ``ops`` once, in a random order per example.
    Op ``i`` draws from ``fold(seed, i)`` whatever its position."""

    ops: Sequence[Op]

    def __post_init__(self):
        object.__setattr__(self, "ops", check_ops(self.ops))

    def apply(self, image, seed):
        count = len(self.ops)
        order_seed, *op_seeds = randomness.split(seed, count + 1)
        order = tf.argsort(randomness.uniform(order_seed, [count]))
        image = to_float(image)
        for position in range(count):
            branches = [lambda op=op, op_seed=op_seed, image=image: to_float(op.apply(image, op_seed))
                        for op, op_seed in zip(self.ops, op_seeds)]
            image = tf.switch_case(order[position], branches)
        return image


@dataclasses.dataclass(frozen=True)
class Recipe(Compose):
    """A whole augmentation from encoded bytes: what the presets return and
    what ``image_dataset_from_urls(augment=...)`` can fuse with decoding.

    ``ops[0]`` is the decode step (``ops[0].decode(body, ...)``: a crop can
    decode only its window), the rest run on the decoded image.
    ``output_size`` ``(height, width)`` is the shape every example ends with;
    it is the dataset's image size (the pipeline's ``image_size`` must agree).

    Three entry points, one result for the same seed::

        recipe.decode(body, seed) then recipe.after_decode(image, label, seed)   # the pipeline
        recipe(decoded_image, label, seed)                                        # anywhere else
    """

    output_size: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        super().__post_init__()
        if not self.ops:
            raise ValueError("a Recipe needs at least one op (its decode step)")
        if self.output_size is None:
            raise ValueError("a Recipe needs output_size=(height, width)")
        object.__setattr__(self, "output_size", check_image_size(self.output_size))

    def decode(self, body, seed):
        return self.ops[0].decode(body, randomness.fold(randomness.as_seed(seed), 0))

    def after_decode(self, image, label, seed):
        """The ops after the decode step; ``image`` is what :meth:`decode` returned."""
        seed = randomness.as_seed(seed)
        for index, op in enumerate(self.ops[1:], start=1):
            image = op.apply(image, randomness.fold(seed, index))
        return self._finish(image), label

    def apply(self, image, seed):
        return self._finish(super().apply(image, seed))

    def _finish(self, image):
        height, width = self.output_size
        return tf.ensure_shape(to_float(image), [height, width, None])
