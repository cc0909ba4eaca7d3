"""The colour-and-flip end of a Recipe as one native step per example.

``imagenet_train`` ends with ops that keep the image's size: affine colour
maps (:class:`~tfeed.augment.base.ColorOp`, whose offsets may read the mean
colour) and left-right flips (which keep the mean colour).  Per example, as
graph ops, they cost ~50 small ops and three passes over the pixels, and in a
tf.data function every small op costs microseconds.  The whole tail is::

    image' = matrix @ image[mirrored] + bias + mean_gain @ mean(image)

because every colour op is affine in the pixels, with an offset affine in the
mean colour (so a chain of them is too).  ``matrix``, ``bias``, ``mean_gain``
and ``mirror`` depend on the draws only, so :meth:`ColorTail.parameters`
computes them for a group of examples at once (vectorised, before decoding),
and :meth:`ColorTail.apply` runs one native ``TfeedAffineMirror`` per
example right after the resize, while the image is still in cache.

:func:`color_tail` returns that step for a Recipe, or None where it does not
apply (no such tail, or no native op library: the ops then run as graph ops,
with the same images up to float rounding).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfeed.augment.base import Recipe, chain_ops, slices

# Mean colours at which the chain is evaluated: 0, then each unit colour.
_BASIS = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def tail_start(recipe: Recipe) -> int:
    """Index of the first op of the recipe's colour-and-flip tail
    (``len(recipe.ops)``: no tail).  The decode step (op 0) never belongs to it."""
    start = len(recipe.ops)
    while start > 1 and (recipe.ops[start - 1].color_affine or recipe.ops[start - 1].mirrors):
        start -= 1
    return start


class ColorTail:
    """``recipe.ops[start:]`` as ``(matrix, bias, mean_gain, mirror)`` packed
    in ``SIZE`` floats per example: 9 + 3 + 9 + 1 (mirror as 0 or 1)."""

    SIZE = 22

    def __init__(self, recipe: Recipe, start: int, kernel):
        self.start = start
        self.ops = recipe.ops[start:]
        self.offset = sum(op.draws for op in recipe.ops[:start])
        self._kernel = kernel

    def parameters(self, u: tf.Tensor) -> tf.Tensor:
        """float32 ``[n, SIZE]`` from the recipe's draws ``u`` ``[n, draws]``."""
        draws = u[:, self.offset:]
        n = tf.shape(draws)[0]
        means = tf.repeat(tf.constant(_BASIS, tf.float32), n, axis=0)  # block k: _BASIS[k] for every example
        matrix, bias, mirror = tf.vectorized_map(self._affine, (tf.tile(draws, [len(_BASIS), 1]), means))
        base = bias[:n]
        gain = tf.stack([bias[k * n:(k + 1) * n] - base for k in range(1, len(_BASIS))], axis=-1)  # column k
        return tf.concat([tf.reshape(matrix[:n], [n, 9]), base, tf.reshape(gain, [n, 9]),
                          tf.cast(mirror[:n], tf.float32)[:, None]], axis=1)

    def apply(self, image: tf.Tensor, parameters: tf.Tensor) -> tf.Tensor:
        """The tail on float32 ``[H, W, 3]`` (or a batch ``[B, H, W, 3]`` with
        ``parameters`` ``[B, SIZE]``), one native op."""
        lead = parameters.shape[:-1]
        square = lead.as_list() + [3, 3] if lead.is_fully_defined() else tf.concat([tf.shape(parameters)[:-1], [3, 3]], 0)
        return self._kernel(image, tf.reshape(parameters[..., :9], square), parameters[..., 9:12],
                            tf.reshape(parameters[..., 12:21], square), parameters[..., 21] > 0.5)

    def _affine(self, args):
        """One example's ``(matrix, bias, mirror)`` at a given mean colour."""
        u, mean = args
        parts = slices(self.ops, u)
        colour = [(op, part) for op, part in zip(self.ops, parts) if op.color_affine]
        matrix, bias = chain_ops([op for op, _ in colour], [part for _, part in colour], mean)
        mirror = tf.constant(False)
        for op, part in zip(self.ops, parts):
            if op.mirrors:
                mirror = tf.math.logical_xor(mirror, op.mirrored(part))
        return matrix, bias, mirror


def color_tail(recipe: Recipe, ops) -> Optional[ColorTail]:
    """The recipe's tail as one native step, or None (no tail, or ``ops`` --
    the loaded :mod:`tfeed.kernels` module -- is None or lacks the kernel)."""
    start = tail_start(recipe)
    kernel = getattr(ops, "tfeed_affine_mirror", None) if ops is not None else None
    if start == len(recipe.ops) or kernel is None:
        return None
    return ColorTail(recipe, start, kernel)
