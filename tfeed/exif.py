"""A JPEG's EXIF Orientation in graph ops only: the fallback when the core kernels are missing.

``tfeed_image_header`` (kernels/shared/image_header.cc) reads the tag in
C++; without the core kernels :func:`jpeg_orientation` reads it from the
first :data:`WINDOW` bytes with ``decode_raw`` and gathers: it walks up to
:data:`MAX_SEGMENTS` marker segments from SOI to the APP1 ``Exif\\0\\0``
segment, then IFD0's entries (``II`` or ``MM`` byte order) for tag 0x0112.
Measured on one core: about 0.9 ms per JPEG with EXIF (a few hundred small
ops; decoding a 1-12 MP photo at its DCT scale took 13 ms), a substring
search for the others.
"""

from __future__ import annotations

import tensorflow as tf

WINDOW = 1 << 12          # bytes read: APP1 and its IFD0 come first in the files cameras and editors write
MAX_SEGMENTS = 4          # marker segments walked (APP1 comes first or after APP0 / Adobe's APP14)
MAX_ENTRIES = 64          # IFD0 entries examined
ORIENTATION_TAG = 0x0112
_EXIF = [0x45, 0x78, 0x69, 0x66, 0, 0]  # "Exif\0\0"


def _window(body: tf.Tensor) -> tf.Tensor:
    """int64 ``[WINDOW]``: the first bytes of ``body``, zero-padded."""
    head = tf.strings.substr(body, 0, WINDOW)
    padded = tf.strings.join([head, tf.constant(b"\0" * WINDOW)])
    return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, WINDOW), tf.uint8), tf.int64)


def jpeg_orientation(body: tf.Tensor) -> tf.Tensor:
    """int64 scalar 1-8: the EXIF Orientation of a JPEG ``body`` (a scalar
    string); 1 when absent, malformed, out of range, not within the first
    :data:`WINDOW` bytes or not a JPEG.  Never fails.  Bodies without
    ``Exif\0\0`` in that window skip the parse (one substring search)."""
    pieces = tf.strings.split(tf.strings.substr(body, 0, WINDOW), sep="Exif\x00\x00", maxsplit=1)
    return tf.cond(tf.size(pieces) > 1, lambda: _parse(body), lambda: tf.constant(1, tf.int64))


def _parse(body: tf.Tensor) -> tf.Tensor:
    data = _window(body)

    def at(index):
        return tf.gather(data, tf.clip_by_value(index, 0, WINDOW - 1))

    pos, tiff, walking = tf.constant(2, tf.int64), tf.constant(-1, tf.int64), tf.equal(at(0) * 256 + at(1), 0xFFD8)
    for _ in range(MAX_SEGMENTS):  # unrolled: a while_loop costs more per element than the walk
        head = at(pos + tf.range(10, dtype=tf.int64))  # FF, marker, length (2), "Exif\0\0"
        walking = tf.logical_and(walking, tf.logical_and(tf.equal(head[0], 0xFF), tf.not_equal(head[1], 0xDA)))
        found = tf.logical_and(walking, tf.logical_and(tf.equal(head[1], 0xE1), tf.reduce_all(tf.equal(head[4:], _EXIF))))
        tiff = tf.where(found, pos + 10, tiff)
        walking = tf.logical_and(walking, tf.logical_not(found))
        pos = pos + 2 + tf.maximum(head[2] * 256 + head[3], 2)
    little = tf.logical_and(tf.equal(at(tiff), 0x49), tf.equal(at(tiff + 1), 0x49))
    big = tf.logical_and(tf.equal(at(tiff), 0x4D), tf.equal(at(tiff + 1), 0x4D))

    def u16(index):
        return tf.where(little, at(index) + 256 * at(index + 1), 256 * at(index) + at(index + 1))

    def u32(index):
        return tf.where(little, u16(index) + 65536 * u16(index + 2), 65536 * u16(index) + u16(index + 2))

    ifd = tiff + u32(tiff + 4)
    entries = ifd + 2 + 12 * tf.range(MAX_ENTRIES, dtype=tf.int64)
    tagged = tf.logical_and(tf.equal(u16(entries), ORIENTATION_TAG), tf.range(MAX_ENTRIES, dtype=tf.int64) < u16(ifd))
    value = u16(tf.gather(entries, tf.argmax(tf.cast(tagged, tf.int32))) + 8)
    valid = tf.reduce_all(tf.stack([tiff >= 0, tf.logical_or(little, big), tf.reduce_any(tagged),
                                    value >= 1, value <= 8]))
    return tf.where(valid, value, tf.constant(1, tf.int64))
