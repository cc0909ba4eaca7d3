"""Photometric ops: the fb.resnet.torch colour jitter and PCA lighting,
normalization, and salt-and-pepper noise.

RGB values 0-255 in, float32 out; nothing is clipped (as in fb.resnet.torch,
the jitter can leave 0-255 slightly; normalization usually follows).  All but
salt-and-pepper are affine per pixel (:class:`~tfeed.augment.base.ColorOp`),
so a chain of them costs one pass over the image.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfeed.augment import randomness
from tfeed.augment.base import EYE, ColorOp, Compose, Op, RandomOrder, check_probability, matvec, to_float

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as fb.resnet.torch
# ImageNet RGB statistics from fb.resnet.torch (AlexNet's PCA lighting); the
# eigenvalues are for 0-1 images, so the op scales them by 255.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


TO_GRAY = np.tile(np.asarray([GRAY_WEIGHTS], np.float32), (3, 1))  # every channel becomes the luma


def blend_factor(u: tf.Tensor, strength: float) -> tf.Tensor:
    """``1 + uniform(-strength, strength)`` from the draw ``u[0]``."""
    return randomness.between(u[0], 1.0 - strength, 1.0 + strength)


def check_strength(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


@dataclasses.dataclass(frozen=True)
class Brightness(ColorOp):
    """``image * a``, ``a = 1 + uniform(-strength, strength)`` (blend with black)."""

    strength: float = 0.4

    draws = 1

    def __post_init__(self):
        check_strength("strength", self.strength)

    def affine(self, mean, u):
        return blend_factor(u, self.strength) * EYE, tf.zeros([3])


@dataclasses.dataclass(frozen=True)
class Contrast(ColorOp):
    """Blend with the image's mean luma: ``image * a + mean(luma) * (1 - a)``."""

    strength: float = 0.4

    draws = 1
    needs_mean = True

    def __post_init__(self):
        check_strength("strength", self.strength)

    def affine(self, mean, u):
        factor = blend_factor(u, self.strength)
        mean_luma = tf.reduce_sum(tf.constant(GRAY_WEIGHTS, tf.float32) * mean)
        return factor * EYE, tf.fill([3], (1.0 - factor) * mean_luma)


@dataclasses.dataclass(frozen=True)
class Saturation(ColorOp):
    """Blend with the per-pixel luma: ``image * a + luma * (1 - a)``."""

    strength: float = 0.4

    draws = 1

    def __post_init__(self):
        check_strength("strength", self.strength)

    def affine(self, mean, u):
        factor = blend_factor(u, self.strength)
        return factor * EYE + (1.0 - factor) * TO_GRAY, tf.zeros([3])


def color_jitter(brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, *,
                 random_order: bool = True) -> Op:
    """Brightness, contrast and saturation in a random order (fb.resnet.torch).

    Unclipped, these three blends commute: brightness scales everything,
    saturation keeps each pixel's luma and contrast keeps the mean luma, so
    any order gives the same image up to float rounding (the tests check it).
    ``random_order=False`` therefore changes no distribution; it only skips
    drawing and dispatching an order per example (a Compose, not a RandomOrder).
    """
    ops = [Brightness(brightness), Contrast(contrast), Saturation(saturation)]
    return RandomOrder(ops) if random_order else Compose(ops)


@dataclasses.dataclass(frozen=True)
class Lighting(ColorOp):
    """AlexNet's PCA lighting noise: add ``eigvec @ (alpha * eigval)`` to
    every pixel, ``alpha ~ normal(0, stddev)`` per eigenvalue.  ``eigval`` is
    for 0-1 images and is scaled by ``scale`` (255 for 0-255 images)."""

    stddev: float = 0.1
    eigval: Sequence[float] = IMAGENET_EIGVAL
    eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC
    scale: float = 255.0

    draws = 3

    def __post_init__(self):
        if self.stddev < 0:
            raise ValueError(f"stddev must be >= 0, got {self.stddev!r}")
        eigval, eigvec = np.asarray(self.eigval, np.float64), np.asarray(self.eigvec, np.float64)
        if eigval.shape != (3,) or eigvec.shape != (3, 3):
            raise ValueError(f"need eigval [3] and eigvec [3, 3], got {eigval.shape} and {eigvec.shape}")
        object.__setattr__(self, "eigval", tuple(eigval.tolist()))
        object.__setattr__(self, "eigvec", tuple(map(tuple, eigvec.tolist())))

    def offset(self, u: tf.Tensor) -> tf.Tensor:
        """The per-channel shift ``[3]`` for the draws ``u`` (alpha is the
        inverse normal CDF of ``u`` times ``stddev``)."""
        alpha = randomness.standard_normal(u) * self.stddev
        weights = alpha * tf.constant(self.eigval, tf.float32) * self.scale
        return matvec(tf.constant(self.eigvec, tf.float32), weights)

    def affine(self, mean, u):
        return tf.constant(EYE), self.offset(u)


@dataclasses.dataclass(frozen=True)
class Normalize(ColorOp):
    """``(image - mean) / std`` per channel (defaults: ImageNet, 0-255 scale)."""

    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __post_init__(self):
        mean = np.broadcast_to(np.asarray(self.mean, np.float64), (3,))
        std = np.broadcast_to(np.asarray(self.std, np.float64), (3,))
        if std.min() <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        object.__setattr__(self, "mean", tuple(mean.tolist()))
        object.__setattr__(self, "std", tuple(std.tolist()))

    def affine(self, mean, u):
        scale = 1.0 / np.asarray(self.std, np.float32)
        return tf.constant(np.diag(scale)), tf.constant(-np.asarray(self.mean, np.float32) * scale)


@dataclasses.dataclass(frozen=True)
class SaltPepper(Op):
    """Set each pixel (all channels) to ``black`` with probability
    ``black_probability`` or to ``white`` with ``white_probability``."""

    white_probability: float = 0.01
    black_probability: float = 0.01
    white: float = 255.0
    black: float = 0.0

    draws = 2  # the seed of the noise field

    def __post_init__(self):
        check_probability("white_probability", self.white_probability)
        check_probability("black_probability", self.black_probability)
        if self.white_probability + self.black_probability > 1:
            raise ValueError("white_probability + black_probability must be <= 1")

    def transform(self, image, u):
        image = to_float(image)
        noise = randomness.uniform(randomness.seed_from(u), tf.concat([tf.shape(image)[:2], [1]], axis=0))
        image = tf.where(noise < self.black_probability, self.black, image)
        return tf.where(noise >= 1.0 - self.white_probability, self.white, image)
