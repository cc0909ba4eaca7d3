"""Recognise image bytes by their magic numbers, before any decoding.

``tf.io.decode_image`` reads JPEG, PNG, GIF, BMP and WebP.  Other formats that
OpenCV reads (TIFF, JPEG 2000, PNM, ...) are transcoded here to PNG so the
graph decoder can take them; anything else counts as ``not_image``.
"""

from __future__ import annotations

from typing import Optional

TF_FORMATS = ("jpeg", "png", "gif", "bmp", "webp")


def sniff(data: bytes) -> Optional[str]:
    """Format name of ``data`` from its first bytes, or None if not an image.

    Returns one of ``TF_FORMATS`` or ``"tiff"``, ``"jp2"``, ``"pnm"``.
    """
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xffO\xffQ"):
        return "jp2"
    if len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "pnm"
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
