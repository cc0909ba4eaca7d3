"""Decode stage: image bytes to float32 ``[height, width, 3]`` with ``tf.image``.

Runs entirely in tf.data's C++ threads (no Python, no GIL).  JPEG, PNG, GIF
(first frame), BMP and WebP are decoded by ``tf.io``; other formats (AVIF,
animated WebP, ICO, TIFF, ...) arrive already transcoded to PNG by the fetch
stage.  Decoding follows :mod:`tfeed.upright`: JPEGs at the smallest DCT
scale that covers ``image_size`` and turned upright per their EXIF
orientation, transparency composited onto a background.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import tensorflow as tf

from tfeed import contract
from tfeed.config import check_choice
from tfeed.elements import mark_failed
from tfeed.images import INTERPOLATIONS, DecodeHooks, check_image_size
from tfeed.upright import DEFAULT_OPTIONS, DecodeOptions, decode_resized




def decode(image_size: Sequence[int] = (256, 256), *, interpolation: str = "bilinear",
           crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False,
           skip_errors: bool = True, isolate_errors: bool = True, num_parallel_calls: int = tf.data.AUTOTUNE,
           deterministic: bool = False, hooks: Optional[DecodeHooks] = None, mark_in: Optional[int] = None,
           ops=None, options: DecodeOptions = DEFAULT_OPTIONS) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Return a ``Dataset -> Dataset`` function for ``ds.apply``.

    Input elements ``(body: tf.string [], *rest)``; output ``(image: float32
    [height, width, 3], *rest)`` with values in 0-255.

    ``hooks`` (:class:`tfeed.images.DecodeHooks`, from a
    :class:`tfeed.augment.Recipe` that crops while decoding): its ``decoder``
    replaces decode + resize (the resize options are then unused); its
    ``finisher`` runs after it, outside the error-catching call when the
    decoder's output shape is static (measured ~3% faster for
    ``imagenet_train``).

    ``skip_errors=True``: an undecodable body is dropped (the pipeline counts
    it as ``decode_error``).  With ``isolate_errors=True`` each element is
    decoded inside its own ``interleave`` branch so that only decode errors
    are ignored and errors from earlier stages still reach the iterator;
    ``False`` uses ``map`` + ``ignore_errors`` (about 0.1 ms per image
    cheaper), which also swallows earlier stages' errors -- only for
    pipelines whose earlier stages report errors another way, as
    :func:`tfeed.image_dataset_from_urls` does through its Stats.
    ``skip_errors=False``: it raises ``InvalidArgumentError`` in the iterator.

    ``mark_in`` (with ``ops``, the loaded :mod:`tfeed.kernels` module, and
    ``skip_errors=True``): nothing is dropped here; an undecodable body
    becomes a zero image and the string column ``rest[mark_in]`` (the URL)
    carries the error (:func:`mark_failed`), so ``map`` stays fusable with the
    following ``batch`` (``ignore_errors`` in between prevents that fusion);
    after batching, :func:`tfeed.elements.failed_rows` finds those rows.
    There, ``hooks.jpeg_decoder`` is tried first and ``hooks.decoder`` only
    for bodies it refuses as not JPEG (:data:`tfeed.contract.FORMAT_REFUSAL`;
    a JPEG that fails to decode is not decoded again): no ``tf.cond`` on the
    format per example.  Without
    ``hooks`` the same holds for the plain decode + resize: a JPEG-only
    decode first, the general one for the bodies it refuses.

    ``options`` (:class:`tfeed.upright.DecodeOptions`): EXIF orientation,
    the alpha background, scaled JPEG decoding.
    """
    check_image_size(image_size)
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    if crop_to_aspect_ratio and pad_to_aspect_ratio:
        raise ValueError("crop_to_aspect_ratio and pad_to_aspect_ratio cannot both be True")
    decoder = hooks.decoder if hooks is not None else None
    finisher = hooks.finisher if hooks is not None else None
    jpeg_decoder = hooks.jpeg_decoder if hooks is not None else None

    def finish(image, body, *rest):
        return finisher(image, body, *rest) if finisher is not None else image

    def resized(body, jpeg_only=False):
        return decode_resized(body, image_size, interpolation=interpolation, crop_to_aspect_ratio=crop_to_aspect_ratio,
                              pad_to_aspect_ratio=pad_to_aspect_ratio, options=options, jpeg_only=jpeg_only)

    def decode_one(body, *rest):
        if decoder is not None:
            return (finish(decoder(body, *rest), body, *rest), *rest)
        return (resized(body), *rest)

    def decode_or_nothing(*element):
        single = tf.data.Dataset.from_tensors(element).map(decode_one)
        return single.ignore_errors()

    def concrete(fn, args):
        # autograph=False: converting (parsing the source) again per trace is slow, and
        # not thread-safe when datasets are built in several threads at once.
        return tf.function(fn, autograph=False).get_concrete_function(*[tf.TensorSpec.from_tensor(t) for t in args])

    def decode_marked(body, *rest):
        function = None
        if decoder is not None and finisher is not None:
            function = concrete(decoder, (body, *rest))
            if not function.structured_outputs.shape.is_fully_defined():
                function = None  # the whole recipe runs in the call: its final shape is static
        tried = function or concrete(lambda *args: decode_one(*args)[0], (body, *rest))
        shape = tried.structured_outputs.shape
        fallbacks = []
        if function is not None and jpeg_decoder is not None:
            tried, fallbacks = concrete(jpeg_decoder, (body, *rest)), [function]
        elif decoder is None:
            tried, fallbacks = concrete(lambda b, *_: resized(b, jpeg_only=True), (body, *rest)), [tried]
        (image,), ok, error = ops.tfeed_try_call([body, *rest], Tout=[tried.structured_outputs.dtype],
                                                 output_shapes=[shape], f=tried, fallbacks=fallbacks,
                                                 fallback_on=contract.FORMAT_REFUSAL, name="tfeed_try_decode")
        image.set_shape(shape)
        if function is not None:
            image = finish(image, body, *rest)
        rest = list(rest)
        rest[mark_in] = tf.where(ok, rest[mark_in], mark_failed(rest[mark_in], error))
        return (image, *rest)

    def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
        if skip_errors and mark_in is not None and ops is not None:
            return dataset.map(decode_marked, num_parallel_calls=num_parallel_calls, deterministic=deterministic,
                               name="tfeed_decode")
        if not skip_errors or not isolate_errors:
            decoded = dataset.map(decode_one, num_parallel_calls=num_parallel_calls,
                                  deterministic=deterministic, name="tfeed_decode")
            return decoded.ignore_errors() if skip_errors else decoded
        return dataset.interleave(decode_or_nothing, cycle_length=max(2, os.cpu_count() or 2) * 2,
                                  block_length=1, num_parallel_calls=num_parallel_calls,
                                  deterministic=deterministic, name="tfeed_decode")

    return apply
