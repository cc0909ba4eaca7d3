"""Image primitives shared by the decode stage, augmentation and service workers.

All are graph ops (``tf.io`` / ``tf.image``): they run in tf.data's C++ threads.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Tuple

import tensorflow as tf

DEFAULT_IMAGE_SIZE = (256, 256)  # (height, width) when neither image_size nor a Recipe gives one
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")


def check_image_size(image_size) -> Tuple[int, int]:
    """``(height, width)`` as positive ints, or ValueError."""
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


def decode_image(data: tf.Tensor) -> tf.Tensor:
    """Bytes of any supported format to uint8 ``[h, w, 3]`` (GIF: first frame),
    as stored: no EXIF orientation, alpha dropped (:mod:`tfeed.upright`
    decodes as browsers show images)."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def center_crop_to_aspect(image: tf.Tensor, aspect: float) -> tf.Tensor:
    """Largest centred crop of ``image`` with width / height == ``aspect``."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    crop_h = tf.minimum(height, tf.round(width / aspect))
    crop_w = tf.minimum(width, tf.round(height * aspect))
    crop_h, crop_w = tf.maximum(tf.cast(crop_h, tf.int32), 1), tf.maximum(tf.cast(crop_w, tf.int32), 1)
    top = (shape[0] - crop_h) // 2
    left = (shape[1] - crop_w) // 2
    return image[top:top + crop_h, left:left + crop_w]


def resize_image(image: tf.Tensor, image_size: Sequence[int], *, interpolation: str = "bilinear",
                 crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False) -> tf.Tensor:
    """Resize to float32 ``[height, width, C]`` (values keep their 0-255 range).

    ``crop_to_aspect_ratio`` first takes the largest centred crop with the
    target aspect ratio; ``pad_to_aspect_ratio`` pads with zeros instead;
    neither: the image is stretched.
    """
    height, width = check_image_size(image_size)
    if crop_to_aspect_ratio:
        image = center_crop_to_aspect(image, width / height)
    if pad_to_aspect_ratio:
        resized = tf.image.resize_with_pad(image, height, width, method=interpolation)
    else:
        resized = tf.image.resize(image, (height, width), method=interpolation)
    resized = tf.cast(resized, tf.float32)
    resized.set_shape([height, width, image.shape[-1]])
    return resized


@dataclasses.dataclass(frozen=True)
class DecodeHooks:
    """How an augmentation recipe takes over decoding (see :func:`tfeed.decode`).

    ``decoder``: ``fn(body, *rest) -> image``, used instead of decode + resize
    (e.g. a crop decoded straight from the JPEG).  ``jpeg_decoder``: the same
    for JPEG bodies only, tried first when the native kernels run the decode.
    ``finisher``: ``fn(image, body, *rest) -> image`` after ``decoder`` (work
    that cannot fail on a decoded image).
    """

    decoder: Callable[..., tf.Tensor]
    jpeg_decoder: Optional[Callable[..., tf.Tensor]] = None
    finisher: Optional[Callable[..., tf.Tensor]] = None
