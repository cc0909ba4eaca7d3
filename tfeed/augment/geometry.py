"""Geometric ops: crops, resizes, flip, rotation, paste.

:class:`RandomResizedCrop` is the one that fuses with decoding: it computes
its crop window from the image's upright shape alone -- read from the JPEG
header (``tfeed_image_header``: size and EXIF orientation) or from the
decoded image -- then either decodes just that window from the stored frame
(``decode_and_crop_jpeg`` at the smallest covering DCT scale) and turns it
upright, or crops the decoded image.  Both paths take the same window for
the same seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence, Tuple, Union

import tensorflow as tf

from tfeed.augment import randomness
from tfeed.augment.base import Op, check_probability, to_float
from tfeed.config import check_choice
from tfeed import upright
from tfeed.images import INTERPOLATIONS, check_image_size
from tfeed.upright import DEFAULT_OPTIONS, DecodeOptions

Size = Union[int, Sequence[int]]


def as_size(size: Size) -> Tuple[int, int]:
    """An int ``n`` as ``(n, n)``; a pair as ``(height, width)``; validated."""
    return check_image_size((size, size) if isinstance(size, int) else size)


def center_window(shape: tf.Tensor, aspect: float) -> tf.Tensor:
    """The largest centred ``[top, left, height, width]`` (int32) with
    width / height == ``aspect`` inside an image of ``shape`` ``[H, W]``."""
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    crop_h = tf.maximum(tf.minimum(height, tf.round(width / aspect)), 1.0)
    crop_w = tf.maximum(tf.minimum(width, tf.round(height * aspect)), 1.0)
    top, left = tf.floor((height - crop_h) / 2), tf.floor((width - crop_w) / 2)
    return tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)


def crop(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    top, left, height, width = tf.unstack(window)
    return image[top:top + height, left:left + width]


def resize(image: tf.Tensor, size: Tuple[int, int], interpolation: str, antialias: bool = False) -> tf.Tensor:
    resized = tf.image.resize(image, size, method=interpolation, antialias=antialias)
    resized = to_float(resized)
    resized.set_shape([size[0], size[1], image.shape[-1]])
    return resized


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(Op):
    """Inception-style crop, resized to ``size``.

    Up to ``attempts`` candidates: area a uniform fraction ``area`` of the
    image, aspect ratio (width / height) log-uniform in ``aspect``, rounded
    to whole pixels; the first that fits is placed uniformly at random.  If
    none fits: the largest centred crop with the output's aspect (that is,
    resize shorter side + center crop).
    """

    size: Size = 224
    area: Tuple[float, float] = (0.08, 1.0)
    aspect: Tuple[float, float] = (3 / 4, 4 / 3)
    attempts: int = 10
    interpolation: str = "bilinear"
    antialias: bool = False

    def __post_init__(self):
        object.__setattr__(self, "size", as_size(self.size))
        if not 0 < self.area[0] <= self.area[1] <= 1:
            raise ValueError(f"area must satisfy 0 < low <= high <= 1, got {self.area!r}")
        if not 0 < self.aspect[0] <= self.aspect[1]:
            raise ValueError(f"aspect must satisfy 0 < low <= high, got {self.aspect!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts!r}")
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)

    @property
    def draws(self):
        return 2 * self.attempts + 2  # areas, aspects, top, left

    def window(self, shape: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
        """The crop ``[top, left, height, width]`` (int32) for an image of
        ``shape`` ``[H, W, ...]``; depends only on the shape and the draws."""
        height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        count = self.attempts
        areas = randomness.between(u[:count], *self.area) * height * width
        aspects = tf.exp(randomness.between(u[count:2 * count], math.log(self.aspect[0]), math.log(self.aspect[1])))
        crop_w = tf.round(tf.sqrt(areas * aspects))
        crop_h = tf.round(tf.sqrt(areas / aspects))
        fits = (crop_w <= width) & (crop_h <= height) & (crop_w >= 1) & (crop_h >= 1)
        first = tf.minimum(tf.reduce_min(tf.where(fits, tf.range(count), count)), count - 1)
        crop_h, crop_w = crop_h[first], crop_w[first]
        top = tf.floor(u[2 * count] * (height - crop_h + 1))
        left = tf.floor(u[2 * count + 1] * (width - crop_w + 1))
        found = tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)
        return tf.where(tf.reduce_any(fits), found, center_window(shape, self.size[1] / self.size[0]))

    def transform(self, image, u):
        cropped = crop(image, self.window(tf.shape(image), u))
        return resize(cropped, self.size, self.interpolation, self.antialias)

    jpeg_path = True

    def decode_transform(self, body, u, options: DecodeOptions = DEFAULT_OPTIONS):
        """Decode only the crop window of a JPEG; other formats decode fully,
        then crop.  The window is the same either way, drawn in the upright
        frame (EXIF orientation applied per ``options``)."""
        header = upright.read_header(body, options)

        def other():
            image = upright.decode_other(body, header, options)
            return self._resized(crop(image, self.window(tf.shape(image), u)))

        is_jpeg = tf.equal(header[upright.FORMAT_AT], upright.FORMAT["jpeg"])
        return tf.cond(is_jpeg, lambda: self._jpeg_window(body, header, u, options), other)

    def decode_jpeg_transform(self, body, u, options: DecodeOptions = DEFAULT_OPTIONS):
        header = upright.read_header(body, options, jpeg_only=True)
        return self._jpeg_window(body, header, u, options)

    def _jpeg_window(self, body, header, u, options):
        """The crop drawn in the upright frame, decoded from the JPEG's stored
        frame at the smallest DCT scale that covers the output size (the
        scaled window snapped outwards to whole pixels, then the exact window
        resampled from it), resized, turned upright."""
        orientation = upright.orientation_of(header, options)
        stored = upright.jpeg_size(body, header, options)
        upright_size = upright.swapped_if(upright.transposes(orientation), stored)
        window = upright.window_to_stored(self.window(upright_size, u), upright_size, orientation)
        target = upright.stored_size(self.size, orientation)
        index = upright.jpeg_ratio_index(window[2:], target, options)
        snapped = upright.scaled_window(window, stored, index)
        cropped = upright.decode_jpeg_scaled(body, index, snapped)
        if self.interpolation == "bilinear" and not self.antialias:  # the exact window, not the snapped one
            resized = upright.resample_window(cropped, window, snapped, index, target)
        else:  # the snapped window (within one decoded pixel of it); the scale left is under 2x
            resized = to_float(tf.image.resize(cropped, target, method=self.interpolation, antialias=self.antialias))
        return tf.ensure_shape(upright.orient(resized, orientation, options), [*self.size, 3])

    def _resized(self, cropped):
        cropped.set_shape([None, None, 3])
        return resize(cropped, self.size, self.interpolation, self.antialias)


@dataclasses.dataclass(frozen=True)
class HorizontalFlip(Op):
    """Mirror left-right with ``probability``."""

    probability: float = 0.5

    draws = 1
    mirrors = True

    def __post_init__(self):
        check_probability("probability", self.probability)

    def mirrored(self, u):
        return u[0] < self.probability

    def transform(self, image, u):
        return tf.cond(self.mirrored(u), lambda: tf.reverse(image, axis=[1]), lambda: tf.identity(image))


@dataclasses.dataclass(frozen=True)
class Resize(Op):
    """Resize to ``size`` (the aspect ratio is not kept)."""

    size: Size
    interpolation: str = "bilinear"
    antialias: bool = False

    def __post_init__(self):
        object.__setattr__(self, "size", as_size(self.size))
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)

    def transform(self, image, u):
        return resize(image, self.size, self.interpolation, self.antialias)


@dataclasses.dataclass(frozen=True)
class ResizeShorter(Op):
    """Resize so the shorter side is ``size`` pixels, keeping the aspect
    ratio (the longer side is rounded to the nearest pixel)."""

    size: int
    interpolation: str = "bilinear"
    antialias: bool = False

    def __post_init__(self):
        if int(self.size) < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}")
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)

    def transform(self, image, u):
        shape = tf.cast(tf.shape(image)[:2], tf.float64)
        scaled = tf.cast(tf.round(shape * (self.size / tf.reduce_min(shape))), tf.int32)
        resized = tf.image.resize(image, tf.maximum(scaled, self.size), method=self.interpolation,
                                  antialias=self.antialias)
        return to_float(resized)


@dataclasses.dataclass(frozen=True)
class CenterCrop(Op):
    """The centred ``size`` window (top/left offsets rounded down); the
    image must be at least that large."""

    size: Size

    def __post_init__(self):
        object.__setattr__(self, "size", as_size(self.size))

    def transform(self, image, u):
        height, width = self.size
        shape = tf.shape(image)
        top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
        checked = tf.debugging.assert_greater_equal(
            tf.minimum(top, left), 0, message=f"CenterCrop({self.size}): image is smaller than the crop")
        with tf.control_dependencies([checked]):
            cropped = image[top:top + height, left:left + width]
        cropped.set_shape([height, width, image.shape[-1]])
        return cropped


@dataclasses.dataclass(frozen=True)
class RandomCrop(Op):
    """A ``size`` window at a uniformly random position."""

    size: Size

    draws = 2

    def __post_init__(self):
        object.__setattr__(self, "size", as_size(self.size))

    def transform(self, image, u):
        height, width = self.size
        shape = tf.shape(image)
        checked = tf.debugging.assert_greater_equal(
            tf.minimum(shape[0] - height, shape[1] - width), 0,
            message=f"RandomCrop({self.size}): image is smaller than the crop")
        with tf.control_dependencies([checked]):
            top = tf.cast(tf.floor(u[0] * tf.cast(shape[0] - height + 1, tf.float32)), tf.int32)
            left = tf.cast(tf.floor(u[1] * tf.cast(shape[1] - width + 1, tf.float32)), tf.int32)
        cropped = image[top:top + height, left:left + width]
        cropped.set_shape([height, width, image.shape[-1]])
        return cropped


@dataclasses.dataclass(frozen=True)
class CenterPaste(Op):
    """Paste the image centred on a ``size`` canvas of ``background``
    (a larger image is centre-cropped to fit)."""

    size: Size
    background: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "size", as_size(self.size))

    def transform(self, image, u):
        image = to_float(image) - self.background
        pasted = tf.image.resize_with_crop_or_pad(image, *self.size) + self.background
        pasted.set_shape([*self.size, image.shape[-1]])
        return pasted


@dataclasses.dataclass(frozen=True)
class RandomResize(Op):
    """Scale height and width by independent factors drawn uniformly from
    ``height_range`` and ``width_range``."""

    height_range: Tuple[float, float] = (0.8, 1.2)
    width_range: Tuple[float, float] = (0.8, 1.2)
    interpolation: str = "bilinear"

    draws = 2

    def __post_init__(self):
        for name in ("height_range", "width_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(low, high)!r}")
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)

    def transform(self, image, u):
        factors = tf.stack([randomness.between(u[0], *self.height_range),
                            randomness.between(u[1], *self.width_range)])
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        size = tf.maximum(tf.cast(tf.round(shape * factors), tf.int32), 1)
        return to_float(tf.image.resize(image, size, method=self.interpolation))


def valid_rotated_size(height: tf.Tensor, width: tf.Tensor, angle: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Height and width of the largest axis-aligned rectangle inside a
    ``height x width`` rectangle rotated by ``angle`` (radians)."""
    sin, cos = tf.abs(tf.sin(angle)), tf.abs(tf.cos(angle))
    long_side, short_side = tf.maximum(height, width), tf.minimum(height, width)
    # Thin images (or 45 degrees): two corners of the rectangle touch the long sides.
    half = short_side / 2
    wide = width >= height
    thin_w = tf.where(wide, half / tf.maximum(sin, 1e-12), half / cos)
    thin_h = tf.where(wide, half / cos, half / tf.maximum(sin, 1e-12))
    # Otherwise all four corners touch the rotated edges.
    cos_2a = cos * cos - sin * sin
    safe = tf.where(tf.abs(cos_2a) < 1e-12, tf.ones_like(cos_2a), cos_2a)
    full_w, full_h = (width * cos - height * sin) / safe, (height * cos - width * sin) / safe
    is_thin = (short_side <= 2 * sin * cos * long_side) | (tf.abs(sin - cos) < 1e-10)
    return tf.where(is_thin, thin_h, full_h), tf.where(is_thin, thin_w, full_w)


@dataclasses.dataclass(frozen=True)
class Rotation(Op):
    """Rotate about the centre by a uniform angle in ``+-max_degrees``;
    corners are filled with ``fill``.  ``crop_valid`` then keeps only the
    largest centred rectangle without fill (the image gets smaller)."""

    max_degrees: float = 15.0
    crop_valid: bool = False
    fill: float = 0.0
    interpolation: str = "bilinear"

    draws = 1

    def __post_init__(self):
        if not 0 <= self.max_degrees <= 180:
            raise ValueError(f"max_degrees must be in [0, 180], got {self.max_degrees!r}")
        check_choice("interpolation", self.interpolation, ("bilinear", "nearest"))

    def transform(self, image, u):
        limit = math.radians(self.max_degrees)
        angle = randomness.between(u[0], -limit, limit)
        rotated = rotate(to_float(image), angle, self.fill, self.interpolation)
        if not self.crop_valid:
            return rotated
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        valid_h, valid_w = valid_rotated_size(shape[0], shape[1], angle)
        size = tf.maximum(tf.cast(tf.floor(tf.stack([valid_h, valid_w])), tf.int32), 1)
        offset = (tf.shape(image)[:2] - size) // 2
        return rotated[offset[0]:offset[0] + size[0], offset[1]:offset[1] + size[1]]


def rotate(image: tf.Tensor, angle: tf.Tensor, fill: float = 0.0, interpolation: str = "bilinear") -> tf.Tensor:
    """``image`` (float32 ``[H, W, C]``) rotated by ``angle`` radians about
    its centre, same size."""
    shape = tf.shape(image)
    center_y = (tf.cast(shape[0], tf.float32) - 1) / 2
    center_x = (tf.cast(shape[1], tf.float32) - 1) / 2
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples input centre + R(angle) (p - centre).
    transform = tf.stack([cos, -sin, center_x - cos * center_x + sin * center_y,
                          sin, cos, center_y - sin * center_x - cos * center_y, 0.0, 0.0])
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform[tf.newaxis], output_shape=shape[:2],
        fill_value=fill, interpolation=interpolation.upper(), fill_mode="CONSTANT")
    return rotated[0]
