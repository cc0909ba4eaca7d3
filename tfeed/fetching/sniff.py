"""Recognise image bytes by their magic numbers, before any decoding.

``tf.io.decode_image`` reads JPEG, PNG, GIF, BMP and WebP.  Other formats that
OpenCV reads (TIFF, JPEG 2000, PNM, ...) are transcoded here to PNG so the
graph decoder can take them; anything else counts as ``not_image``.
"""

from __future__ import annotations

from typing import Optional

from tfeed import contract

TF_FORMATS = contract.DECODABLE


def sniff(data: bytes) -> Optional[str]:
    """Format name of ``data`` from its first bytes (:data:`tfeed.contract.SIGNATURES`),
    or None if not an image.

    Returns one of ``TF_FORMATS`` or ``"tiff"``, ``"jp2"``, ``"pnm"``.
    """
    head = bytes(data[:16])
    for name, min_length, parts in contract.SIGNATURES:
        if len(data) >= min_length and all(head[offset:offset + len(magic)] == magic for offset, magic in parts):
            return name
    return None


def transcode_to_png(data: bytes) -> Optional[bytes]:
    """Decode ``data`` with OpenCV and re-encode it losslessly as PNG.

    Returns None when OpenCV cannot read it.  Channel order is preserved
    (OpenCV decodes to BGR and encodes from BGR).
    """
    import cv2  # imported lazily: only rare formats take this path
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return encoded.tobytes() if ok else None
