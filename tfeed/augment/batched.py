"""The colour-and-flip end of a Recipe, run once per batch.

``imagenet_train`` ends with ops that keep the image's size and commute:
affine colour maps (:class:`~tfeed.augment.base.ColorOp`; their parameters may
read the mean colour) and left-right flips (which keep the mean colour).
Per example they cost ~50 small graph ops and three passes over the pixels,
and in a tf.data function every small op costs microseconds.  After
batching, the same draws give the same images (up to float rounding) with::

    mean           = channel means of the batch                 [B, 3]  one pass
    matrix, bias   = the colour algebra, vectorised over B      [B, 3, 3], [B, 3]
    mirror         = xor of the flips' decisions                [B]
    images         = TfeedAffineMirror(images, matrix, bias, mirror)    one native pass

:func:`batch_tail` returns that step for a Recipe, or None where it does not
apply (no such tail, or no native op library: the ops then run per example).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfeed.augment.base import Recipe, chain_ops, channel_mean, slices


def tail_start(recipe: Recipe) -> int:
    """Index of the first op of the recipe's colour-and-flip tail
    (``len(recipe.ops)``: no tail).  The decode step (op 0) never belongs to it."""
    start = len(recipe.ops)
    while start > 1 and (recipe.ops[start - 1].color_affine or recipe.ops[start - 1].mirrors):
        start -= 1
    return start


class BatchTail:
    """``recipe.ops[start:]`` on batches: ``tail(images, u) -> images`` with
    images float32 ``[B, H, W, 3]`` and ``u`` the recipe's draws ``[B, draws]``."""

    def __init__(self, recipe: Recipe, start: int, affine_mirror):
        self.ops = recipe.ops[start:]
        self.offset = sum(op.draws for op in recipe.ops[:start])
        self._affine_mirror = affine_mirror

    def __call__(self, images: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
        draws = u[:, self.offset:]
        means = channel_mean(images)  # [B, 3]
        matrix, bias, mirror = tf.vectorized_map(self._parameters, (draws, means))
        return self._affine_mirror(images, matrix, bias, mirror)

    def _parameters(self, args):
        """One example's ``(matrix, bias, mirror)`` from its draws and mean colour."""
        u, mean = args
        parts = slices(self.ops, u)
        colour = [(op, part) for op, part in zip(self.ops, parts) if op.color_affine]
        matrix, bias = chain_ops([op for op, _ in colour], [part for _, part in colour], mean)
        mirror = tf.constant(False)
        for op, part in zip(self.ops, parts):
            if op.mirrors:
                mirror = tf.math.logical_xor(mirror, op.mirrored(part))
        return matrix, bias, mirror


def batch_tail(recipe: Recipe, ops) -> Optional[BatchTail]:
    """The recipe's tail as a per-batch step, or None (no tail, or ``ops`` --
    the loaded :mod:`tfeed.native` module -- is None or lacks the kernel)."""
    start = tail_start(recipe)
    kernel = getattr(ops, "tfeed_affine_mirror", None) if ops is not None else None
    if start == len(recipe.ops) or kernel is None:
        return None
    return BatchTail(recipe, start, kernel)
