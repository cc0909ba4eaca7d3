"""Decode image bytes as a browser shows them: upright, transparency composited, no larger than needed.

Shared by the decode stage, augmentation recipes and tf.data service workers;
graph ops only (plus the core kernels' ``tfeed_image_header`` where they
load), so it runs in tf.data's C++ threads and on service workers.

* Header: ``tfeed_image_header`` (kernels/shared/image_header.cc) reads the
  format, the stored size and the JPEG EXIF orientation in well under a
  microsecond.  Without the core kernels a JPEG's size comes from
  ``tf.image.extract_jpeg_shape`` and its orientation from
  :func:`tfeed.exif.jpeg_orientation` (graph ops, ~1 ms per JPEG with EXIF).
* JPEG: decoded by libjpeg-turbo in the DCT domain at 1/2, 1/4 or 1/8 scale
  (``decode_jpeg(ratio=...)``), the largest reduction whose output still
  covers the target size.  Measured on one core, 1600x1200 photos to
  224x224: full decode + bilinear resize 4.2 ms, 1/4 decode + resize 2.5 ms;
  and closer to a full decode + antialiased resize (``benchmarks/bench_decode.py``
  prints the PSNRs).
* Orientation: EXIF Orientation 1-8 applied after resizing (on the small
  image: a transpose and a reversal that are no-ops, forwarded without a
  copy, for orientation 1).
* Transparency: bodies whose header announces alpha (PNG colour type 4/6 or
  tRNS, WebP with alpha) are decoded with 4 channels and composited onto
  ``alpha_background`` (or the alpha dropped); the others decode with 3
  channels as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Tuple

import tensorflow as tf

from tfeed import contract
from tfeed.exif import jpeg_orientation
from tfeed.images import center_crop_to_aspect

FORMAT = {name: code for code, name in enumerate(contract.HEADER_FORMATS)}
JPEG_RATIOS = (1, 2, 4, 8)  # the DCT scalings libjpeg offers (1/ratio)
FORMAT_AT, HEIGHT_AT, WIDTH_AT, ORIENTATION_AT, ALPHA_AT = range(5)  # fields of a header vector


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How bodies are decoded.

    ``apply_exif_orientation``: turn JPEGs upright per their EXIF Orientation
    tag, as browsers and OpenCV's ``imread`` do (Keras's loader does not).
    ``alpha_background``: ``(r, g, b)`` 0-255 that transparent pixels are
    composited onto; ``None`` drops the alpha channel (the colour stored under
    transparent pixels shows, often black).  ``scaled_jpeg``: decode JPEGs at
    the smallest DCT scale that still covers the target.  ``ops``: the core
    kernels module (``tfeed.kernels.load_core()``), loaded on first use when
    ``None`` and ``load_ops``.
    """

    apply_exif_orientation: bool = True
    alpha_background: Optional[Tuple[int, int, int]] = (255, 255, 255)
    scaled_jpeg: bool = True
    ops: Any = None
    load_ops: bool = True

    def __post_init__(self):
        background = self.alpha_background
        if background is not None:
            try:
                background = tuple(int(v) for v in background)
            except (TypeError, ValueError):
                raise ValueError(f"alpha_background must be (r, g, b) or None, got {background!r}") from None
            if len(background) != 3 or not all(0 <= v <= 255 for v in background):
                raise ValueError(f"alpha_background must be three ints in 0-255, got {self.alpha_background!r}")
            object.__setattr__(self, "alpha_background", background)

    def kernels(self):
        """The core kernels module with ``tfeed_image_header``, or None."""
        ops = self.ops
        if ops is None and self.load_ops:
            from tfeed import kernels

            ops = kernels.load_core()
        return ops if ops is not None and hasattr(ops, "tfeed_image_header") else None


DEFAULT_OPTIONS = DecodeOptions()


def read_header(body: tf.Tensor, options: DecodeOptions = DEFAULT_OPTIONS, jpeg_only: bool = False) -> tf.Tensor:
    """int64 ``[6]``: format code (:data:`FORMAT`), stored height, width,
    orientation (1-8), alpha (0/1), animated (0/1); see ``tfeed_image_header``.
    ``jpeg_only``: fail (InvalidArgument) for other formats, before any
    decoder sees them (libjpeg would print "Not a JPEG file").

    Without the core kernels: format JPEG or unknown, sizes 0, a JPEG's
    orientation from :func:`tfeed.exif.jpeg_orientation` (else 1), alpha 1
    for PNG and WebP (which are then decoded with 4 channels)."""
    ops = options.kernels()
    if ops is not None:
        return ops.tfeed_image_header(body, require_format=FORMAT["jpeg"] if jpeg_only else 0)
    if jpeg_only:
        header = read_header(body, options)
        return require_jpeg(header, header)
    magic = tf.strings.substr(body, 0, 4)
    alpha = tf.logical_or(tf.equal(magic, b"\x89PNG"), tf.equal(magic, b"RIFF"))
    jpeg = tf.io.is_jpeg(body)
    code = tf.where(jpeg, tf.constant(FORMAT["jpeg"], tf.int64), 0)
    orientation = tf.cond(jpeg, lambda: jpeg_orientation(body), lambda: tf.constant(1, tf.int64))
    return tf.stack([code, 0, 0, orientation, tf.cast(alpha, tf.int64), 0])


def jpeg_size(body: tf.Tensor, header: tf.Tensor, options: DecodeOptions = DEFAULT_OPTIONS) -> tf.Tensor:
    """int32 ``[2]`` stored height, width of a JPEG ``body``: from ``header``
    (read by the core kernels; 0 when the body has no SOF, which then fails
    to decode), else ``extract_jpeg_shape``."""
    if options.kernels() is not None:
        return tf.cast(header[HEIGHT_AT:WIDTH_AT + 1], tf.int32)
    return tf.image.extract_jpeg_shape(body)[:2]


def orientation_of(header: tf.Tensor, options: DecodeOptions = DEFAULT_OPTIONS) -> tf.Tensor:
    """int32 scalar: the orientation to apply (1 when ``apply_exif_orientation`` is off)."""
    if not options.apply_exif_orientation:
        return tf.constant(1, tf.int32)
    return tf.cast(header[ORIENTATION_AT], tf.int32)


def transposes(orientation: tf.Tensor) -> tf.Tensor:
    """bool: orientations 5-8 swap height and width."""
    return orientation >= 5


def stored_size(size: Sequence, orientation: tf.Tensor) -> tf.Tensor:
    """int32 ``[2]``: the upright ``size`` (height, width) in the stored frame."""
    return swapped_if(transposes(orientation), tf.cast(tf.stack(size), tf.int32))


def swapped_if(swap: tf.Tensor, pair: tf.Tensor) -> tf.Tensor:
    """``pair`` ``[2]`` with its entries swapped where ``swap`` (a gather, not
    ``pair[::-1]``: Grappler's layout pass logs an error for negative strides)."""
    return tf.gather(pair, tf.where(swap, tf.constant([1, 0]), tf.constant([0, 1])))


def orient(image: tf.Tensor, orientation: tf.Tensor, options: DecodeOptions = DEFAULT_OPTIONS) -> tf.Tensor:
    """``image`` ``[H, W, C]`` in the stored frame turned upright for EXIF
    ``orientation`` (1: as stored; 2 mirror; 3 rotate 180; 4 flip; 5
    transpose; 6 rotate 90 clockwise; 7 transverse; 8 rotate 90
    counter-clockwise): an optional transpose, then optional flips.  With the
    core kernels one ``tfeed_orient`` (orientation 1 forwards the image)."""
    ops = options.kernels()
    if ops is not None and image.dtype in (tf.uint8, tf.float32):
        return ops.tfeed_orient(image, orientation)
    perm = tf.where(transposes(orientation), tf.constant([1, 0, 2]), tf.constant([0, 1, 2]))
    image = tf.transpose(image, perm)  # the identity permutation forwards its input
    flips = tf.stack([tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8])),   # rows (top-bottom)
                      tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))])  # columns (left-right)
    return tf.reverse(image, tf.reshape(tf.where(flips), [-1]))


def scale_plan(region: tf.Tensor, size: Sequence[int], orientation: tf.Tensor,
               options: DecodeOptions = DEFAULT_OPTIONS) -> Tuple[tf.Tensor, tf.Tensor]:
    """``(index, target)``: :func:`jpeg_ratio_index` of the stored ``region``
    ``[h, w]`` for the upright ``size``, and that size in the stored frame
    (:func:`stored_size`); one ``tfeed_scale_plan`` with the core kernels."""
    ops = options.kernels()
    if ops is not None:
        return ops.tfeed_scale_plan(tf.cast(region, tf.int32), tf.constant(size, tf.int32), orientation,
                                    scaled=options.scaled_jpeg)
    target = stored_size(size, orientation)
    return jpeg_ratio_index(region, target, options), target


def window_to_stored(window: tf.Tensor, upright_size: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """A crop ``[top, left, height, width]`` (int32) drawn in the upright
    frame of an image whose upright size is ``upright_size`` ``[H, W]``, as
    the same pixels' window in the stored frame (which :func:`orient` of the
    stored crop turns back into the upright crop)."""
    top, left, height, width = tf.unstack(window)
    size_h, size_w = upright_size[0], upright_size[1]
    # Undo the flips (they act in the upright frame, after the transpose) ...
    flip_rows = tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8]))
    flip_cols = tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))
    top = tf.where(flip_rows, size_h - top - height, top)
    left = tf.where(flip_cols, size_w - left - width, left)
    # ... then the transpose.
    swap = transposes(orientation)
    return tf.where(swap, tf.stack([left, top, width, height]), tf.stack([top, left, height, width]))


def jpeg_ratio_index(stored: tf.Tensor, covered: tf.Tensor, options: DecodeOptions = DEFAULT_OPTIONS) -> tf.Tensor:
    """int32 index into :data:`JPEG_RATIOS`: the largest reduction at which a
    region of ``stored`` pixels ``[h, w]`` still spans at least ``covered``
    ``[h, w]`` pixels (libjpeg rounds scaled sizes up).  0 (full size) when
    ``scaled_jpeg`` is off."""
    if not options.scaled_jpeg:
        return tf.constant(0, tf.int32)
    ratios = tf.constant(JPEG_RATIOS, tf.int32)
    stored, covered = tf.cast(stored, tf.int32), tf.cast(covered, tf.int32)
    scaled_h = (stored[0] + ratios - 1) // ratios
    scaled_w = (stored[1] + ratios - 1) // ratios
    fits = tf.logical_and(scaled_h >= covered[0], scaled_w >= covered[1])
    return tf.maximum(tf.reduce_sum(tf.cast(fits, tf.int32)) - 1, 0)


def decode_jpeg_scaled(body: tf.Tensor, index: tf.Tensor, window: Optional[tf.Tensor] = None) -> tf.Tensor:
    """uint8 ``[h, w, 3]``: a JPEG decoded at 1/``JPEG_RATIOS[index]`` scale;
    with ``window`` (``[top, left, height, width]`` in the scaled image's
    pixels) only that window."""
    def at(ratio):
        if window is None:
            return lambda: tf.io.decode_jpeg(body, channels=3, ratio=ratio)
        return lambda: tf.raw_ops.DecodeAndCropJpeg(contents=body, crop_window=window, channels=3, ratio=ratio)

    image = tf.switch_case(index, [at(ratio) for ratio in JPEG_RATIOS])
    image.set_shape([None, None, 3])
    return image


def scaled_window(window: tf.Tensor, stored: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """A stored-frame window ``[top, left, height, width]`` in the pixels of
    the image decoded at 1/``JPEG_RATIOS[index]`` (whose size is ``stored``
    divided and rounded up): the scaled pixels that cover it, at least 1."""
    ratio = tf.gather(tf.constant(JPEG_RATIOS, tf.int32), index)
    scaled = (tf.cast(stored, tf.int32) + ratio - 1) // ratio
    top, left = window[0] // ratio, window[1] // ratio
    bottom = tf.minimum((window[0] + window[2] + ratio - 1) // ratio, scaled[0])
    right = tf.minimum((window[1] + window[3] + ratio - 1) // ratio, scaled[1])
    return tf.stack([top, left, tf.maximum(bottom - top, 1), tf.maximum(right - left, 1)])


def resample_window(cropped: tf.Tensor, window: tf.Tensor, snapped: tf.Tensor, index: tf.Tensor,
                    size: tf.Tensor) -> tf.Tensor:
    """float32 ``[size[0], size[1], 3]``: the exact stored-frame ``window``
    resampled (bilinear, half-pixel centres as ``tf.image.resize``) from
    ``cropped``, the decode of its outward-snapped scaled window ``snapped``
    (:func:`scaled_window`) at 1/``JPEG_RATIOS[index]``.  Sample points are
    kept inside ``cropped`` (they only leave it when upsampling)."""
    ratio = tf.cast(tf.gather(tf.constant(JPEG_RATIOS, tf.int32), index), tf.float32)
    start = tf.cast(window[:2], tf.float32) / ratio - tf.cast(snapped[:2], tf.float32)
    extent = tf.cast(window[2:], tf.float32) / ratio
    count = tf.cast(size, tf.float32)
    last = tf.maximum(tf.cast(tf.shape(cropped)[:2], tf.float32) - 1.0, 1.0)
    first_sample = start + 0.5 * extent / count - 0.5
    last_sample = start + extent - 0.5 * extent / count - 0.5
    low = tf.clip_by_value(first_sample / last, 0.0, 1.0)
    high = tf.clip_by_value(last_sample / last, 0.0, 1.0)
    box = tf.concat([low, high], 0)[tf.newaxis]
    return tf.image.crop_and_resize(tf.cast(cropped, tf.float32)[tf.newaxis], box, [0], size)[0]


def composite(image: tf.Tensor, background: Tuple[int, int, int]) -> tf.Tensor:
    """uint8 ``[h, w, 3]``: RGBA ``image`` (uint8 ``[h, w, 4]``) over ``background``."""
    pixels = tf.cast(image, tf.float32)
    alpha = pixels[..., 3:] / 255.0
    blended = pixels[..., :3] * alpha + tf.constant(background, tf.float32) * (1.0 - alpha)
    return tf.cast(tf.round(blended), tf.uint8)


def decode_other(body: tf.Tensor, header: tf.Tensor, options: DecodeOptions = DEFAULT_OPTIONS) -> tf.Tensor:
    """uint8 ``[h, w, 3]`` of any format ``tf.io.decode_image`` reads (GIF:
    first frame), transparency composited per ``options`` (``None``: alpha
    dropped; bodies with alpha are still decoded with 4 channels, since
    TensorFlow's WebP decoder refuses 3 for them)."""
    def opaque():
        return tf.io.decode_image(body, channels=3, expand_animations=False)

    def transparent():
        image = tf.io.decode_image(body, channels=4, expand_animations=False)
        if options.alpha_background is None:
            return image[..., :3]
        return composite(image, options.alpha_background)

    image = tf.cond(header[ALPHA_AT] > 0, transparent, opaque)
    image.set_shape([None, None, 3])
    return image


def resize_to(image: tf.Tensor, target: tf.Tensor, interpolation: str, crop_to_aspect_ratio: bool,
              pad_to_aspect_ratio: bool) -> tf.Tensor:
    """float32 ``[target[0], target[1], C]`` (``target`` int32 ``[2]``, may be
    dynamic), as :func:`tfeed.images.resize_image` makes it."""
    if crop_to_aspect_ratio:
        aspect = tf.cast(target[1], tf.float32) / tf.cast(target[0], tf.float32)
        image = center_crop_to_aspect(image, aspect)
    if pad_to_aspect_ratio:
        resized = tf.image.resize_with_pad(image, target[0], target[1], method=interpolation)
    else:
        resized = tf.image.resize(image, target, method=interpolation)
    return tf.cast(resized, tf.float32)


def require_jpeg(body: tf.Tensor, header: tf.Tensor) -> tf.Tensor:
    """``body``, after an assertion that ``header`` is a JPEG's: other formats
    fail here, before libjpeg sees them (it would print "Not a JPEG file")."""
    checked = tf.debugging.Assert(tf.equal(header[FORMAT_AT], FORMAT["jpeg"]), [contract.FORMAT_REFUSAL])
    with tf.control_dependencies([checked]):
        return tf.identity(body)


def decode_resized(body: tf.Tensor, image_size: Sequence[int], *, interpolation: str = "bilinear",
                   crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False,
                   options: DecodeOptions = DEFAULT_OPTIONS, jpeg_only: bool = False) -> tf.Tensor:
    """float32 ``[height, width, 3]`` (0-255) of any readable ``body``:
    decoded (JPEG: at the smallest covering DCT scale), resized in its stored
    frame to ``image_size`` turned by its orientation, then turned upright.
    ``jpeg_only``: skip the format test; other formats fail (the decode
    stage's fast path, with the general call as its fallback)."""
    height, width = (int(v) for v in image_size)
    header = read_header(body, options, jpeg_only=jpeg_only)
    orientation = orientation_of(header, options)
    known = options.kernels() is not None  # the header holds the JPEG's size
    index, target = scale_plan(header[HEIGHT_AT:WIDTH_AT + 1], (height, width), orientation, options)

    def resized(image):
        return resize_to(image, target, interpolation, crop_to_aspect_ratio, pad_to_aspect_ratio)

    def jpeg():
        scale = index if known else jpeg_ratio_index(jpeg_size(body, header, options), target, options)
        return resized(decode_jpeg_scaled(body, scale))

    def other():
        if pad_to_aspect_ratio or options.alpha_background is None:  # padding stays black: composite first
            return resized(decode_other(body, header, options))
        if interpolation == "bilinear":
            composited = lambda: composite_bilinear(body, target, options.alpha_background,  # noqa: E731
                                                    crop_to_aspect_ratio)
        else:
            composited = lambda: composite_resized(body, resized, options.alpha_background)  # noqa: E731
        return tf.cond(header[ALPHA_AT] > 0, composited, lambda: resized(decode_other(body, header, options)))

    if jpeg_only:
        image = jpeg()
    else:
        image = tf.cond(tf.equal(header[FORMAT_AT], FORMAT["jpeg"]), jpeg, other)
    upright = orient(image, orientation, options)
    upright.set_shape([height, width, 3])  # the plan's target, turned: no runtime check needed
    return upright


def composite_resized(body: tf.Tensor, resize, background: Tuple[int, int, int]) -> tf.Tensor:
    """float32 ``[h, w, 3]``: a body with alpha decoded with 4 channels,
    premultiplied, resized by ``resize``, then composited onto
    ``background``: the same image as compositing first (resizing is linear
    in premultiplied colour), with the compositing arithmetic on the small
    image (measured on a 1 MP RGBA PNG, one thread: 45 ms for a full-size
    composite, 17 ms for this premultiplication, 2 ms to resize uint8)."""
    rgba = tf.io.decode_image(body, channels=4, expand_animations=False)
    alpha = rgba[..., 3:]
    premultiplied = resize(tf.cast(rgba[..., :3], tf.float32) * tf.cast(alpha, tf.float32))  # 0..255*255
    coverage = resize(alpha) * (1.0 / 255.0)
    return premultiplied * (1.0 / 255.0) + tf.constant(background, tf.float32) * (1.0 - coverage)


def bilinear_taps(length: tf.Tensor, count: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """``(taps, weight)`` of ``tf.image.resize``'s bilinear (half-pixel
    centres) from ``length`` to ``count`` pixels along one axis: int32
    ``[2 * count]`` the lower then the upper input pixel of each output pixel,
    float32 ``[count]`` the upper one's weight (as resize_bilinear_op.cc)."""
    centre = (tf.cast(tf.range(count), tf.float32) + 0.5) * (tf.cast(length, tf.float32) / tf.cast(count, tf.float32))
    centre = centre - 0.5
    floor = tf.floor(centre)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(centre), tf.int32), length - 1)
    return tf.concat([lower, upper], 0), centre - floor


def composite_bilinear(body: tf.Tensor, target: tf.Tensor, background: Tuple[int, int, int],
                       crop_to_aspect_ratio: bool = False) -> tf.Tensor:
    """float32 ``[target[0], target[1], 3]``: a body with alpha composited onto
    ``background`` and resized bilinearly (optionally after the centred crop
    to the target's aspect): the image of compositing at full size then
    ``tf.image.resize``, computed on the at most ``2 x 2`` input pixels each
    output pixel reads (gathered from the uint8 decode), so no full-size
    float pass is made."""
    rgba = tf.io.decode_image(body, channels=4, expand_animations=False)
    rgba.set_shape([None, None, 4])
    if crop_to_aspect_ratio:
        rgba = center_crop_to_aspect(rgba, tf.cast(target[1], tf.float32) / tf.cast(target[0], tf.float32))
    shape = tf.shape(rgba)
    rows, row_weight = bilinear_taps(shape[0], target[0])
    cols, col_weight = bilinear_taps(shape[1], target[1])
    taps = tf.cast(tf.gather(tf.gather(rgba, rows, axis=0), cols, axis=1), tf.float32)  # [2h, 2w, 4]
    alpha = taps[..., 3:] * (1.0 / 255.0)
    pixels = taps[..., :3] * alpha + tf.constant(background, tf.float32) * (1.0 - alpha)
    left, right = tf.split(pixels, 2, axis=1)
    across = left + (right - left) * col_weight[:, tf.newaxis]
    top, bottom = tf.split(across, 2, axis=0)
    return top + (bottom - top) * row_weight[:, tf.newaxis, tf.newaxis]


def decode_full(body: tf.Tensor, options: DecodeOptions = DEFAULT_OPTIONS) -> tf.Tensor:
    """uint8 ``[h, w, 3]``: any readable ``body`` at full size, upright, transparency composited."""
    header = read_header(body, options)
    orientation = orientation_of(header, options)

    def jpeg():
        return orient(tf.io.decode_jpeg(body, channels=3), orientation, options)

    image = tf.cond(tf.equal(header[FORMAT_AT], FORMAT["jpeg"]), jpeg, lambda: decode_other(body, header, options))
    image.set_shape([None, None, 3])
    return image
