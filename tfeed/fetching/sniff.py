"""Recognise image bytes by their magic numbers and headers, before any decoding.

``tf.io`` reads JPEG, PNG, GIF, BMP and (still) WebP.  AVIF (Pillow), other
formats that OpenCV reads (animated WebP: first frame, TIFF, JPEG 2000, PNM,
...) and ICO are transcoded here (BMP, or PNG with alpha) so the graph decoder can take them;
formats no installed decoder reads (HEIC) count as ``unsupported_format``;
anything else counts as ``not_image``.  A header declaring more than
``max_pixels`` pixels counts as ``too_large`` before anything decodes it.

The Python engine's check (:func:`check`) reads headers with the core
kernels' parser (the one the native engine compiles in,
kernels/shared/image_header.cc, called through ctypes); without the core
kernels it cannot read sizes, so ``max_pixels`` is then not enforced and
animated WebPs fail to decode (``decode_error``).
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional, Tuple

from tfeed import contract, errors

TF_FORMATS = contract.DECODABLE
_MAY_HAVE_ALPHA = ("tiff",)  # decoded twice: IMREAD_COLOR applies its EXIF orientation, the alpha comes along
_ONE_DECODE = ("avif", "webp")  # AVIF turns by its irot/imir boxes, not EXIF; an animated WebP carries no EXIF here


def sniff(data: bytes) -> Optional[str]:
    """Format name of ``data`` from its first bytes (:data:`tfeed.contract.SIGNATURES`),
    or None if not an image.

    Returns one of ``TF_FORMATS`` or ``"tiff"``, ``"jp2"``, ``"pnm"``,
    ``"avif"``, ``"heic"``, ``"ico"``.
    """
    head = bytes(data[:16])
    for name, min_length, parts in contract.SIGNATURES:
        if len(data) >= min_length and all(head[offset:offset + len(magic)] == magic for offset, magic in parts):
            return name
    return None


class Verdict(NamedTuple):
    """What :func:`check` found: ``reason`` (None: an image to keep), a
    human ``detail``, and ``transcode`` (the format name to transcode, or None)."""

    reason: Optional[str]
    detail: str = ""
    transcode: Optional[str] = None


def read_header(data: bytes):
    """``(format name, height, width, animated)`` from the core kernels' header
    parser (:func:`tfeed.kernels.image_header_reader`), or None when they are unavailable."""
    from tfeed import kernels

    read = kernels.image_header_reader()
    if read is None:
        return None
    code, height, width, _, _, animated = read(data)
    return contract.HEADER_FORMATS[code], height, width, bool(animated)


def check(data: bytes, max_pixels: Optional[int] = contract.DEFAULT_MAX_PIXELS) -> Verdict:
    """The rule the native op's ``CheckImage`` (kernels/fetch/sniff.cc) applies, in Python."""
    kind = sniff(data)
    if kind is None:
        return Verdict(errors.NOT_IMAGE, f"body starts with {bytes(data[:24])!r}")
    header = read_header(data)
    animated = False
    if header is not None:
        name, height, width, animated = header
        kind = "avif" if name == "avif" else kind
        if max_pixels and height * width > max_pixels:
            return Verdict(errors.TOO_LARGE,
                           f"{kind} header declares {width}x{height} pixels > max_pixels {max_pixels}")
    if kind in contract.UNSUPPORTED:
        return Verdict(errors.UNSUPPORTED_FORMAT, f"{kind}: no installed decoder reads it")
    if kind in TF_FORMATS and not animated:
        return Verdict(None)
    return Verdict(None, kind + (" (animated)" if animated else ""), kind)


def transcode_to_png(data: bytes, cover: Optional[Tuple[int, int]] = None) -> Optional[bytes]:
    """Decode ``data`` (OpenCV; ICO here) and re-encode it losslessly: PNG
    when it has alpha, else BMP.  ``cover`` ``(height, width)``: OpenCV's
    decode is then reduced (:func:`reduce_to_cover`) to the smallest 1/2,
    1/4 or 1/8 that still covers it, as JPEGs are decoded at their DCT scale.

    Returns None when it cannot be read.  AVIF is decoded by Pillow when it
    reads AVIF (:func:`_pillow_avif`: a third less CPU than OpenCV's, and the
    ``irot``/``imir`` orientation applied, which OpenCV ignores), else like an
    animated WebP (first frame): once with ``IMREAD_UNCHANGED``, alpha kept (the decode
    stage composites it; a second decode doubled an AVIF's cost); others with
    ``IMREAD_COLOR``, which applies EXIF orientation, plus a TIFF's alpha
    from an ``IMREAD_UNCHANGED`` decode of the same size.
    Channel order is preserved (OpenCV decodes to BGR and encodes from BGR).
    """
    import cv2  # imported lazily: only rare formats take this path
    import numpy as np

    kind = sniff(data)
    if kind == "ico":
        return ico_to_png(data)
    image = _pillow_avif(data, cover) if kind == "avif" else None
    if image is None:
        image = _opencv_decode(kind, np.frombuffer(data, np.uint8))
        image = reduce_to_cover(image, cover) if image is not None else None
    if image is None:
        return None
    # The body only crosses into the decode stage, so it is written uncompressed: BMP (a copy of the
    # pixels), or PNG level 0 when there is alpha; PNG level 1 took 40% of a 1.5 MP AVIF's transcode.
    if image.shape[2] == 4:
        ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    else:
        ok, encoded = cv2.imencode(".bmp", image)
    return encoded.tobytes() if ok else None


def cover_ratio(height: int, width: int, cover: Optional[Tuple[int, int]]) -> int:
    """The largest of 1, 2, 4, 8 that keeps ``height x width`` (divided,
    rounded up, as libjpeg's DCT scaling) at least ``cover`` ``(height, width)``."""
    fits = [r for r in (2, 4, 8) if cover is not None and -(-height // r) >= cover[0] and -(-width // r) >= cover[1]]
    return fits[-1] if fits else 1


def _opencv_decode(kind: str, buffer):
    """``buffer`` (uint8 bytes of a ``kind`` image) as uint8 BGR or BGRA, or None."""
    import cv2
    import numpy as np

    if kind in _ONE_DECODE:  # orientation lives outside EXIF: one IMREAD_UNCHANGED decode keeps alpha
        return _as_8bit_bgr_or_bgra(cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED))
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is not None and kind in _MAY_HAVE_ALPHA:
        unchanged = _as_8bit_bgr_or_bgra(cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED))
        if unchanged is not None and unchanged.shape[:2] == image.shape[:2] and unchanged.shape[2] == 4:
            image = np.dstack([image, unchanged[..., 3]])
    return image


def reduce_to_cover(image, cover: Optional[Tuple[int, int]]):
    """``image`` ``[h, w, c]`` (upright, as OpenCV decodes it) reduced by the
    largest of 2, 4, 8 that keeps it at least ``cover`` ``(height, width)``
    (sizes rounded up, as libjpeg's DCT scaling), by area averaging; as it is
    when ``cover`` is None or no reduction keeps it covered."""
    if cover is None:
        return image
    import cv2

    height, width = image.shape[:2]
    ratio = cover_ratio(height, width, cover)
    if ratio == 1:
        return image
    return cv2.resize(image, (-(-width // ratio), -(-height // ratio)), interpolation=cv2.INTER_AREA)


def _as_8bit_bgr_or_bgra(image):
    """An OpenCV ``IMREAD_UNCHANGED`` result as uint8 BGR or BGRA (None stays None)."""
    import cv2
    import numpy as np

    if image is None:
        return None
    if image.dtype != np.uint8:
        image = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else cv2.convertScaleAbs(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def ico_to_png(data: bytes) -> Optional[bytes]:
    """The largest image of an ICO as PNG bytes (RGBA): an entry stored as
    PNG is returned as it is; a 32- or 24-bit BMP entry is converted; other
    entries need Pillow (used when installed).  None when unreadable."""
    count = struct.unpack_from("<H", data, 4)[0] if len(data) >= 6 else 0
    entries = []
    for i in range(count):
        if 6 + 16 * (i + 1) > len(data):
            break
        width, height, _, _, _, _, size, offset = struct.unpack_from("<BBBBHHII", data, 6 + 16 * i)
        entries.append(((width or 256) * (height or 256), offset, size))
    for _, offset, size in sorted(entries, reverse=True)[:1]:
        entry = bytes(data[offset:offset + size])
        if entry.startswith(b"\x89PNG\r\n\x1a\n"):
            return entry
        return _dib_to_png(entry) or _pillow_to_png(data)
    return None


def _dib_to_png(entry: bytes) -> Optional[bytes]:
    """A 32-bit (BGRA) or 24-bit ICO bitmap entry (height doubled, rows
    bottom-up, a 1-bit AND mask after 24-bit pixels) as PNG, or None."""
    import cv2
    import numpy as np

    if len(entry) < 40:
        return None
    header_size, width, double_height, _, bits = struct.unpack_from("<IiiHH", entry, 0)
    height = abs(double_height) // 2
    if bits not in (24, 32) or width <= 0 or height <= 0:
        return None
    stride = (width * bits // 8 + 3) // 4 * 4
    pixels_end = header_size + stride * height
    if len(entry) < pixels_end:
        return None
    rows = np.frombuffer(entry[header_size:pixels_end], np.uint8).reshape(height, stride)[::-1]
    pixels = rows[:, :width * bits // 8].reshape(height, width, bits // 8)
    if bits == 24:
        mask_stride = (width + 31) // 32 * 4
        mask = np.frombuffer(entry[pixels_end:pixels_end + mask_stride * height], np.uint8)
        if mask.size == mask_stride * height:
            bits_set = np.unpackbits(mask.reshape(height, mask_stride)[::-1], axis=1)[:, :width]
            alpha = np.where(bits_set == 1, 0, 255).astype(np.uint8)
        else:
            alpha = np.full((height, width), 255, np.uint8)
        pixels = np.dstack([pixels, alpha])
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return encoded.tobytes() if ok else None


def _pillow_avif(data: bytes, cover: Optional[Tuple[int, int]]):
    """An AVIF as uint8 BGR or BGRA ``[h, w, c]``, upright per its ``irot`` /
    ``imir`` boxes (Pillow reports them as an EXIF orientation) and reduced
    as :func:`reduce_to_cover` does; None when Pillow is missing, reads no
    AVIF, or cannot read this one.

    Measured on the modern-web corpus (0.5-2 MP AVIFs, one thread): Pillow 13
    (libavif 1.4, dav1d) decodes in 25 ms CPU where OpenCV 5.1 takes 37.5 ms;
    reducing in Pillow before the array copy took the rest from 15 ms to ~2."""
    try:
        from PIL import Image, features
    except ImportError:
        return None
    if not features.check("avif"):
        return None
    import io

    import cv2
    import numpy as np

    from tfeed.exif import ORIENTATION_TAG

    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
            width, height = image.size if orientation < 5 else image.size[::-1]
            alpha = "A" in image.getbands()
            ratio = cover_ratio(height, width, cover)
            if ratio > 1 and not alpha:  # Pillow reduces RGBA premultiplied: the colour under alpha 0 would be lost
                image = image.reduce(ratio)
            turn = _pillow_turns().get(orientation)
            image = image.transpose(turn) if turn is not None else image
            pixels = np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except Exception:  # noqa: BLE001 - unreadable here: OpenCV gets its turn
        return None
    if alpha:
        return reduce_to_cover(cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA), cover)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)


def _pillow_turns() -> dict:
    """EXIF orientation (2-8) -> the ``Image.Transpose`` that turns it upright."""
    from PIL.Image import Transpose

    return {2: Transpose.FLIP_LEFT_RIGHT, 3: Transpose.ROTATE_180, 4: Transpose.FLIP_TOP_BOTTOM,
            5: Transpose.TRANSPOSE, 6: Transpose.ROTATE_270, 7: Transpose.TRANSVERSE, 8: Transpose.ROTATE_90}


def _pillow_to_png(data: bytes) -> Optional[bytes]:
    try:
        import io

        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.convert("RGBA").save(out, format="PNG", compress_level=1)
            return out.getvalue()
    except Exception:  # noqa: BLE001 - any unreadable entry: the caller counts decode_error
        return None
