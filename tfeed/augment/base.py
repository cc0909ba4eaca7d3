"""The op contract, the combinators, and :class:`Recipe` (decode + ops).

An op is a small frozen dataclass (its settings, validated once).  It draws
its random parameters first, then applies a fixed transform::

    op.draws -> int                            # uniforms in [0, 1) it needs per image
    op.transform(image, u) -> image            # u: float32 [draws]; graph ops only
    op.apply(image, seed) -> image             # = transform(image, draw(seed, draws))
    op(image, label, seed) -> (image, label)   # the Dataset-friendly form
    op.decode(body, seed) -> image             # encoded bytes in; same result as
                                               # apply(decode_image(body), seed)

Images are ``[height, width, channels]`` with values 0-255; ops that do
arithmetic return float32.  Randomness comes only from ``seed`` (see
:mod:`tfeed.augment.randomness`), so ``op(x, y, s)`` is a pure function.
Combinators hand each op its own slice of ``u``.

Colour ops are *affine per pixel*: ``rgb' = matrix @ rgb + bias``, where the
matrix and bias may depend on the image's mean colour (contrast does).  They
say so with ``color_affine = True`` and ``affine(mean, u) -> (matrix,
bias)``.  Because the mean of the output is ``matrix @ mean + bias``, a run
of such ops -- in a Compose, a RandomOrder or a RandomApply -- collapses
into one 3x3 matrix, and the image is touched once instead of once per op.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfeed.augment import randomness
from tfeed.images import check_image_size
from tfeed.upright import DEFAULT_OPTIONS, DecodeOptions, decode_full

Affine = Tuple[tf.Tensor, tf.Tensor]  # (matrix [3, 3], bias [3])
EYE = np.eye(3, dtype=np.float32)


class Op:
    """Base class of the augmentation ops (subclasses are frozen dataclasses)."""

    draws = 0             # uniforms per image
    color_affine = False  # True: also implements affine() (see the module docstring)
    needs_mean = False    # True: affine() reads the mean colour
    mirrors = False       # True: a left-right mirror or not, per mirrored(u) (keeps the mean colour)
    jpeg_path = False     # True: also implements decode_jpeg_transform()

    def transform(self, image: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def affine(self, mean: tf.Tensor, u: tf.Tensor) -> Affine:
        """``(matrix, bias)`` of this op for an image of mean colour ``mean``."""
        raise TypeError(f"{self!r} is not a per-pixel affine colour op")

    def mirrored(self, u: tf.Tensor) -> tf.Tensor:
        """bool scalar: whether this op mirrors the image for draws ``u`` (ops with ``mirrors``)."""
        raise TypeError(f"{self!r} is not a mirror op")

    def decode_transform(self, body: tf.Tensor, u: tf.Tensor, options: DecodeOptions = DEFAULT_OPTIONS) -> tf.Tensor:
        """Decode ``body`` (any format ``decode_image`` reads; upright and
        composited per ``options``) and transform.  Ops that can skip work
        while decoding (a crop) override this."""
        return self.transform(decode_full(body, options), u)

    def decode_jpeg_transform(self, body: tf.Tensor, u: tf.Tensor,
                              options: DecodeOptions = DEFAULT_OPTIONS) -> tf.Tensor:
        """:meth:`decode_transform` for a JPEG ``body`` only, without the test
        for the format (ops with ``jpeg_path``); other formats make it fail."""
        raise TypeError(f"{self!r} has no JPEG-only decode path")

    def apply(self, image: tf.Tensor, seed) -> tf.Tensor:
        return self.transform(image, randomness.draw(seed, self.draws))

    def decode(self, body: tf.Tensor, seed) -> tf.Tensor:
        return self.decode_transform(body, randomness.draw(seed, self.draws))

    def __call__(self, image: tf.Tensor, label, seed) -> Tuple[tf.Tensor, object]:
        return self.apply(image, seed), label


class ColorOp(Op):
    """Base of the affine colour ops: ``transform`` is ``affine`` on the pixels."""

    color_affine = True

    def transform(self, image, u):
        image = to_float(image)
        return apply_affine(image, *self.affine(mean_for([self], image), u))


def to_float(image: tf.Tensor) -> tf.Tensor:
    return image if image.dtype == tf.float32 else tf.cast(image, tf.float32)


def channel_mean(image: tf.Tensor) -> tf.Tensor:
    """Mean colour ``[..., 3]`` of float32 ``[..., H, W, 3]`` images (one
    image or a batch).  (Two steps: TensorFlow reduces one outer axis at a
    time several times faster.)"""
    return tf.reduce_mean(tf.reduce_mean(image, axis=-3), axis=-2)


def apply_affine(image: tf.Tensor, matrix: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """``rgb' = matrix @ rgb + bias`` for every pixel (one pass)."""
    pixels = tf.reshape(image, [-1, 3])
    out = tf.reshape(tf.matmul(pixels, matrix, transpose_b=True) + bias, tf.shape(image))
    out.set_shape(image.shape)
    return out


def matvec(matrix: tf.Tensor, vector: tf.Tensor) -> tf.Tensor:
    """``matrix [3, 3] @ vector [3]`` in two small ops (``tf.linalg.matvec``
    takes three; the colour algebra runs per image, where op count is cost)."""
    return tf.reduce_sum(matrix * vector, axis=-1)


def chain(first: Affine, then: Affine) -> Affine:
    """The affine map ``then(first(x))``.  The 3x3 product is a multiply and
    a sum, not ``tf.matmul``: vectorised over examples (a tail's parameters,
    :mod:`tfeed.augment.tail`), oneDNN's matmul rounded the same product
    differently from call to call in the last bit."""
    (m1, b1), (m2, b2) = first, then
    return tf.reduce_sum(m2[..., :, :, None] * m1[..., None, :, :], axis=-2), matvec(m2, b1) + b2


def identity_affine() -> Affine:
    return tf.constant(EYE), tf.zeros([3])


def slices(ops, u: tf.Tensor) -> list:
    """Each op's part of ``u``, in order."""
    parts, start = [], 0
    for op in ops:
        parts.append(u[start:start + op.draws])
        start += op.draws
    return parts


def chain_ops(ops, parts, mean: tf.Tensor) -> Affine:
    """One affine map for colour ops applied in order, starting at ``mean``."""
    total = None
    for op, u in zip(ops, parts):
        step = op.affine(mean, u)
        total = step if total is None else chain(total, step)
        mean = matvec(step[0], mean) + step[1]
    return total if total is not None else identity_affine()


def mean_for(ops, image: tf.Tensor) -> tf.Tensor:
    """The mean colour if any of ``ops`` reads it (a pass over the image), else zeros."""
    return channel_mean(image) if any(op.needs_mean for op in ops) else tf.zeros([3])


def run_ops(ops, parts, image: tf.Tensor) -> tf.Tensor:
    """Apply ``ops`` in order, collapsing each run of colour ops into one pass."""
    start = 0
    while start < len(ops):
        end = start
        while end < len(ops) and ops[end].color_affine:
            end += 1
        if end > start:
            image = to_float(image)
            run = ops[start:end]
            image = apply_affine(image, *chain_ops(run, parts[start:end], mean_for(run, image)))
            start = end
        else:
            image = ops[start].transform(image, parts[start])
            start += 1
    return image


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
    """Apply ``ops`` in order, each with its own slice of the draws."""

    ops: Sequence[Op]

    def __post_init__(self):
        object.__setattr__(self, "ops", check_ops(self.ops))

    @property
    def draws(self):
        return sum(op.draws for op in self.ops)

    @property
    def color_affine(self):
        return all(op.color_affine for op in self.ops)

    @property
    def needs_mean(self):
        return any(op.needs_mean for op in self.ops)

    def transform(self, image, u):
        return run_ops(self.ops, slices(self.ops, u), image)

    def affine(self, mean, u):
        return chain_ops(self.ops, slices(self.ops, u), mean)


@dataclasses.dataclass(frozen=True)
class RandomApply(Op):
    """Apply ``op`` with ``probability``, else pass the image through."""

    op: Op
    probability: float = 0.5

    def __post_init__(self):
        check_ops([self.op])
        check_probability("probability", self.probability)

    @property
    def draws(self):
        return 1 + self.op.draws

    @property
    def color_affine(self):
        return self.op.color_affine

    @property
    def needs_mean(self):
        return self.op.needs_mean

    def transform(self, image, u):
        return tf.cond(u[0] < self.probability,
                       lambda: to_float(self.op.transform(image, u[1:])), lambda: to_float(image))

    def affine(self, mean, u):
        return tf.cond(u[0] < self.probability, lambda: self.op.affine(mean, u[1:]), identity_affine)


@dataclasses.dataclass(frozen=True)
class RandomOrder(Op):
    """Apply every op of ``ops`` once, in a random order per example (the
    first ``len(ops)`` draws give the order, then each op's own draws)."""

    ops: Sequence[Op]

    def __post_init__(self):
        object.__setattr__(self, "ops", check_ops(self.ops))

    @property
    def draws(self):
        return len(self.ops) + sum(op.draws for op in self.ops)

    @property
    def color_affine(self):
        return all(op.color_affine for op in self.ops)

    @property
    def needs_mean(self):
        return any(op.needs_mean for op in self.ops)

    def order(self, u: tf.Tensor) -> tf.Tensor:
        """Op indices in the order they run."""
        return tf.argsort(u[:len(self.ops)])

    def transform(self, image, u):
        if self.color_affine:
            image = to_float(image)
            return apply_affine(image, *self.affine(mean_for([self], image), u))
        order, parts = self.order(u), slices(self.ops, u[len(self.ops):])
        image = to_float(image)
        for position in range(len(self.ops)):
            branches = [lambda op=op, part=part, image=image: to_float(op.transform(image, part))
                        for op, part in zip(self.ops, parts)]
            image = tf.switch_case(order[position], branches)
        return image

    def affine(self, mean, u):
        order, parts = self.order(u), slices(self.ops, u[len(self.ops):])
        total = identity_affine()
        for position in range(len(self.ops)):
            branches = [lambda op=op, part=part, mean=mean: op.affine(mean, part) for op, part in zip(self.ops, parts)]
            step = tf.switch_case(order[position], branches)
            total = chain(total, step)
            mean = matvec(step[0], mean) + step[1]
        return total


@dataclasses.dataclass(frozen=True)
class Recipe(Compose):
    """A whole augmentation from encoded bytes: what the presets return and
    what ``image_dataset_from_urls(augment=...)`` can fuse with decoding.

    ``ops[0]`` is the decode step (``ops[0].decode_transform(body, ...)``: a
    crop can decode only its window), the rest run on the decoded image.
    ``output_size`` ``(height, width)`` is the shape every example ends with;
    it is the dataset's image size (the pipeline's ``image_size`` must agree).

    Two entry points, one result for the same seed::

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

    color_affine = False

    def decode(self, body, seed):
        return self.decode_drawn(body, randomness.draw(seed, self.draws))

    def after_decode(self, image, label, seed):
        """The ops after the decode step; ``image`` is what :meth:`decode` returned."""
        return self.after_decode_drawn(image, randomness.draw(seed, self.draws)), label

    def decode_drawn(self, body, u, options: DecodeOptions = DEFAULT_OPTIONS):
        """:meth:`decode` given the recipe's draws ``u`` (float32 ``[draws]``)."""
        first = self.ops[0]
        return first.decode_transform(body, u[:first.draws], options)

    @property
    def jpeg_path(self):
        return self.ops[0].jpeg_path

    def decode_jpeg_drawn(self, body, u, options: DecodeOptions = DEFAULT_OPTIONS):
        """:meth:`decode_drawn` for JPEG bodies only (when :attr:`jpeg_path`;
        other formats make it fail, and :meth:`decode_drawn` reads them)."""
        first = self.ops[0]
        return first.decode_jpeg_transform(body, u[:first.draws], options)

    def after_decode_drawn(self, image, u, stop: Optional[int] = None):
        """:meth:`after_decode` given the draws ``u``, running ``ops[1:stop]``
        (the rest can run as one native step: :mod:`tfeed.augment.tail`)."""
        parts = slices(self.ops, u)
        return self._finish(run_ops(self.ops[1:stop], parts[1:stop], image))

    def transform(self, image, u):
        return self._finish(super().transform(image, u))

    def _finish(self, image):
        height, width = self.output_size
        return tf.ensure_shape(to_float(image), [height, width, None])
