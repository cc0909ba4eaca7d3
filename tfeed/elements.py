"""The columns that elements carry between stages, and the mark of an undecodable row.

After fetching, an element is ``(body, label, url)``; decoding replaces
``body`` with the image.  An example that fails to decode keeps its place (so
``map`` stays fused with ``batch``) and its URL column carries the mark
``FAILED_MARK + error + FAILED_MARK + url``: :func:`mark_failed` writes it,
:func:`failed_rows` finds the marked rows of a batch, and :func:`split_mark`
reads a marked entry back in Python.
"""

from __future__ import annotations

import tensorflow as tf

FETCHED = ("body", "label", "url")  # the fetch stage's output columns, in order
URL_IN_REST = FETCHED.index("url") - 1  # the URL among the columns after the body/image
FAILED_MARK = "\0"  # an undecodable element's URL column: FAILED_MARK + error + FAILED_MARK + URL


def split_mark(value: bytes):
    """``(url, error)`` of a URL-column entry (``error`` is None when the entry
    is not marked as undecodable; see :func:`tfeed.elements.mark_failed`)."""
    if not value.startswith(FAILED_MARK.encode()):
        return value, None
    _, error, original = value.split(FAILED_MARK.encode(), 2)
    return original, error.decode(errors="replace")


def mark_failed(value: tf.Tensor, error: tf.Tensor) -> tf.Tensor:
    """``value`` (a string, e.g. the URL) marked as belonging to an undecodable
    element, with its ``error`` message (read back by :func:`tfeed.elements.split_mark`)."""
    return tf.strings.join([FAILED_MARK, tf.strings.regex_replace(error, FAILED_MARK, " "), FAILED_MARK, value])


def failed_rows(values: tf.Tensor) -> tf.Tensor:
    """bool ``[n]``: which entries of a string column were marked by :func:`mark_failed`."""
    return tf.equal(tf.strings.substr(values, 0, 1), FAILED_MARK)
