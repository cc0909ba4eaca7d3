"""Photometric ops: the fb.resnet.torch colour jitter and PCA lighting,
normalization, and salt-and-pepper noise.

Values are 0-255 in, float32 out; nothing is clipped (as in fb.resnet.torch,
the jitter can leave 0-255 slightly; normalization usually follows).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfeed.augment import randomness
from tfeed.augment.base import Op, RandomOrder, check_probability, to_float

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as fb.resnet.torch
# ImageNet RGB statistics from fb.resnet.torch (AlexNet's PCA lighting); the
# eigenvalues are for 0-1 images, so the op scales them by 255.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def grayscale(image: tf.Tensor) -> tf.Tensor:
    """Luma ``[H, W, 1]`` of an RGB image."""
    return tf.reduce_sum(image * tf.constant(GRAY_WEIGHTS, tf.float32), axis=-1, keepdims=True)


def blend_factor(seed: tf.Tensor, strength: float) -> tf.Tensor:
    """``1 + uniform(-strength, strength)``."""
    return 1.0 + randomness.uniform(seed, (), -strength, strength)


def check_strength(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


@dataclasses.dataclass(frozen=True)
class Brightness(Op):
    """``image * a``, ``a = 1 + uniform(-strength, strength)`` (blend with black)."""

    strength: float = 0.4

    def __post_init__(self):
        check_strength("strength", self.strength)

    def apply(self, image, seed):
        return to_float(image) * blend_factor(seed, self.strength)


@dataclasses.dataclass(frozen=True)
class Contrast(Op):
    """Blend with the image's mean luma: ``image * a + mean(gray) * (1 - a)``."""

    strength: float = 0.4

    def __post_init__(self):
        check_strength("strength", self.strength)

    def apply(self, image, seed):
        image = to_float(image)
        factor = blend_factor(seed, self.strength)
        return image * factor + tf.reduce_mean(grayscale(image)) * (1.0 - factor)


@dataclasses.dataclass(frozen=True)
class Saturation(Op):
    """Blend with the per-pixel luma: ``image * a + gray * (1 - a)``."""

    strength: float = 0.4

    def __post_init__(self):
        check_strength("strength", self.strength)

    def apply(self, image, seed):
        image = to_float(image)
        factor = blend_factor(seed, self.strength)
        return image * factor + grayscale(image) * (1.0 - factor)


def color_jitter(brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4) -> RandomOrder:
    """Brightness, contrast and saturation in a random order (fb.resnet.torch)."""
    return RandomOrder([Brightness(brightness), Contrast(contrast), Saturation(saturation)])


@dataclasses.dataclass(frozen=True)
class Lighting(Op):
    """AlexNet's PCA lighting noise: add ``eigvec @ (alpha * eigval)`` to
    every pixel, ``alpha ~ normal(0, stddev)`` per eigenvalue.  ``eigval`` is
    for 0-1 images and is scaled by ``scale`` (255 for 0-255 images)."""

    stddev: float = 0.1
    eigval: Sequence[float] = IMAGENET_EIGVAL
    eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC
    scale: float = 255.0

    def __post_init__(self):
        if self.stddev < 0:
            raise ValueError(f"stddev must be >= 0, got {self.stddev!r}")
        eigval, eigvec = np.asarray(self.eigval, np.float64), np.asarray(self.eigvec, np.float64)
        if eigval.ndim != 1 or eigvec.shape != (len(eigval), len(eigval)):
            raise ValueError(f"need eigval [n] and eigvec [n, n], got {eigval.shape} and {eigvec.shape}")
        object.__setattr__(self, "eigval", tuple(eigval.tolist()))
        object.__setattr__(self, "eigvec", tuple(map(tuple, eigvec.tolist())))

    def offset(self, seed: tf.Tensor) -> tf.Tensor:
        """The per-channel shift ``[n]`` for ``seed``."""
        alpha = randomness.normal(seed, [len(self.eigval)], self.stddev)
        weights = alpha * tf.constant(self.eigval, tf.float32) * self.scale
        return tf.linalg.matvec(tf.constant(self.eigvec, tf.float32), weights)

    def apply(self, image, seed):
        return to_float(image) + self.offset(seed)


@dataclasses.dataclass(frozen=True)
class Normalize(Op):
    """``(image - mean) / std`` per channel (defaults: ImageNet, 0-255 scale)."""

    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in np.atleast_1d(self.mean)))
        object.__setattr__(self, "std", tuple(float(v) for v in np.atleast_1d(self.std)))
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")

    def apply(self, image, seed):
        return (to_float(image) - tf.constant(self.mean)) / tf.constant(self.std)


@dataclasses.dataclass(frozen=True)
class SaltPepper(Op):
    """Set each pixel (all channels) to ``black`` with probability
    ``black_probability`` or to ``white`` with ``white_probability``."""

    white_probability: float = 0.01
    black_probability: float = 0.01
    white: float = 255.0
    black: float = 0.0

    def __post_init__(self):
        check_probability("white_probability", self.white_probability)
        check_probability("black_probability", self.black_probability)
        if self.white_probability + self.black_probability > 1:
            raise ValueError("white_probability + black_probability must be <= 1")

    def apply(self, image, seed):
        image = to_float(image)
        noise = randomness.uniform(seed, tf.concat([tf.shape(image)[:2], [1]], axis=0))
        image = tf.where(noise < self.black_probability, self.black, image)
        return tf.where(noise >= 1.0 - self.white_probability, self.white, image)
