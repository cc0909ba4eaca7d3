"""The web's awkward images, generated: EXIF-rotated JPEGs, AVIF, animated WebP, ICO, alpha, pixel bombs.

For tests and ``benchmarks/bench_decode.py``; needs Pillow (``pip install
tfeed[test]``; Pillow 11+ writes AVIF).  Images are RGB uint8 ``[H, W, 3]``
arrays in, encoded bytes out.

EXIF orientation (tag 0x0112) says how to turn the stored pixels to show
them upright: 1 as stored, 2 mirror left-right, 3 rotate 180, 4 flip
top-bottom, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
counter-clockwise.  :func:`exif_jpeg` stores an upright image so that a
reader honouring the tag shows it upright again; :func:`to_upright` is the
reference reader.
"""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfeed.testing.images import _require, sample_photos

ORIENTATIONS = tuple(range(1, 9))


def to_upright(stored: np.ndarray, orientation: int) -> np.ndarray:
    """``stored`` pixels ``[H, W, ...]`` as shown upright for EXIF ``orientation``."""
    transforms = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
                  5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
                  8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(transforms[orientation](stored))


def to_stored(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels that :func:`to_upright` turns into ``upright``."""
    inverse = {6: 8, 8: 6}.get(orientation, orientation)  # every other orientation is its own inverse
    return to_upright(upright, inverse)


def _pil(image, mode=None):
    return _require("PIL.Image").fromarray(np.ascontiguousarray(image), mode)


def _save(pil, fmt, **params) -> bytes:
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def exif_jpeg(upright: np.ndarray, orientation: int, quality: int = 90, subsampling: int = -1) -> bytes:
    """A JPEG of ``upright`` stored per ``orientation`` with that EXIF tag
    (``subsampling``: Pillow's chroma subsampling, 0 = 4:4:4; -1 its default)."""
    return _save(_pil(to_stored(upright, orientation)), "JPEG", quality=quality, subsampling=subsampling,
                 exif=_orientation_exif(orientation))


def _orientation_exif(orientation: int) -> bytes:
    """EXIF bytes holding only the Orientation tag."""
    exif = _require("PIL.Image").Exif()
    exif[0x0112] = int(orientation)
    return exif.tobytes()


def avif(image: np.ndarray, quality: int = 80, orientation: int = 1) -> bytes:
    """AVIF bytes (RGB, or RGBA for ``[H, W, 4]``).  ``orientation`` 2-8:
    ``image`` is the upright picture, stored turned (:func:`to_stored`) with
    the ``irot`` / ``imir`` boxes that turn it back (Pillow writes them from
    an EXIF orientation)."""
    if orientation == 1:
        return _save(_pil(image), "AVIF", quality=quality)
    return _save(_pil(to_stored(image, orientation)), "AVIF", quality=quality, exif=_orientation_exif(orientation))


def animated_webp(frames, duration_ms: int = 100) -> bytes:
    """An animated WebP of ``frames`` (RGB arrays of one size), lossless."""
    first, *rest = [_pil(frame) for frame in frames]
    return _save(first, "WEBP", save_all=True, append_images=rest, duration=duration_ms, lossless=True)


def ico(image: np.ndarray, sizes=((16, 16), (32, 32), (48, 48))) -> bytes:
    """An ICO holding ``image`` (RGB or RGBA) at ``sizes`` (``(width, height)`` each, at most the image's)."""
    return _save(_pil(image), "ICO", sizes=list(sizes))


def with_alpha(image: np.ndarray, fmt: str) -> bytes:
    """``image`` (RGBA ``[H, W, 4]``) as ``"png"``, ``"webp"`` (lossless) or ``"avif"``."""
    if fmt == "avif":
        return avif(image)
    params = {"lossless": True, "exact": True} if fmt == "webp" else {}  # exact: keep RGB under alpha 0
    return _save(_pil(image, "RGBA"), fmt.upper(), **params)


def palette_png_with_transparency(image: np.ndarray, transparent_index: int = 0) -> bytes:
    """A palette PNG of ``image`` whose colour ``transparent_index`` is transparent (a tRNS chunk)."""
    pil = _pil(image).convert("P", palette=_require("PIL.Image").Palette.ADAPTIVE, colors=16)
    return _save(pil, "PNG", transparency=transparent_index)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 12000, height: int = 12000, rows=None) -> bytes:
    """A PNG of black RGB pixels declaring ``width x height``: the default
    is 144 MP in ~420 KB (deflate packs zeros ~1000:1), so a decoder that
    trusts the header writes 432 MB of pixels.  ``rows``: only that many
    rows present (a few KB; the rest missing)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    packer, row = zlib.compressobj(6), bytes(3 * width + 1)
    idat = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def gif_bomb(width: int = 65535, height: int = 65535) -> bytes:
    """A GIF whose screen and one frame declare ``width x height`` pixels (2 colours, no pixel data)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def jpeg_bomb(width: int = 60000, height: int = 60000, quality: int = 90) -> bytes:
    """A small real JPEG whose SOF is rewritten to declare ``width x height``."""
    data = bytearray(_save(_pil(np.zeros((16, 16, 3), np.uint8)), "JPEG", quality=quality))
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def heic_like() -> bytes:
    """The start of a HEIC file (an ``ftyp`` box of brand ``heic``): an image
    format no installed decoder reads, for the ``unsupported_format`` reason."""
    ftyp = struct.pack(">I", 24) + b"ftypheic" + struct.pack(">I", 0) + b"mif1heic"
    return ftyp + struct.pack(">I", 16) + b"meta" + bytes(8) + bytes(64)


def _phone_photo(photo: np.ndarray, megapixels: float, aspect: float, rng) -> np.ndarray:
    """``photo`` resized (Lanczos) to about ``megapixels`` at ``aspect`` (w/h), colour-jittered."""
    cv2 = _require("cv2")
    height = int(round((megapixels * 1e6 / aspect) ** 0.5))
    width = int(round(height * aspect))
    resized = cv2.resize(photo, (width, height), interpolation=cv2.INTER_LANCZOS4)
    gain = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    return np.clip(resized.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def modern_web_corpus(n: int, seed: int = 0, workers=None) -> dict:
    """``{name: bytes}`` of ``n`` images as today's web serves them, from :func:`sample_photos`.

    Of every 10: 6 JPEGs of 1-12 MP (phone and news sizes, 4:3 / 3:2 /
    16:9, either way up; every second one carries an EXIF orientation of 2-8,
    stored accordingly, the others no EXIF), 2 WebPs (0.5-2 MP), 1 AVIF (0.5-2 MP) and 1 PNG with
    alpha (0.2-1 MP, a soft-edged transparent margin).  Deterministic in
    ``seed``."""
    photos = list(sample_photos().values())
    rng = np.random.default_rng(seed)
    kinds = ["jpeg"] * 6 + ["webp"] * 2 + ["avif", "png"]
    jobs = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        megapixels = {"jpeg": rng.uniform(1, 12), "png": rng.uniform(0.2, 1)}.get(kind, rng.uniform(0.5, 2))
        aspect = float(rng.choice([4 / 3, 3 / 2, 16 / 9])) ** float(rng.choice([1, -1]))
        orientation = int(rng.integers(2, 9)) if kind == "jpeg" and i % 2 else 1
        jobs.append((i, kind, photos[int(rng.integers(len(photos)))], megapixels, aspect, orientation,
                     int(rng.integers(2**31))))

    def make(job):
        i, kind, photo, megapixels, aspect, orientation, job_seed = job
        image = _phone_photo(photo, megapixels, aspect, np.random.default_rng(job_seed))
        if kind == "jpeg" and orientation == 1:  # no EXIF at all
            return f"web_{i:05d}.jpg", _save(_pil(image), "JPEG", quality=85)
        if kind == "jpeg":
            return f"web_{i:05d}.jpg", exif_jpeg(image, orientation, quality=85)
        if kind == "png":
            return f"web_{i:05d}.png", with_alpha(_soft_margin(image), "png")
        if kind == "avif":
            return f"web_{i:05d}.avif", avif(image, quality=60)
        return f"web_{i:05d}.webp", _save(_pil(image), "WEBP", quality=80)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(make, jobs))


def _soft_margin(image: np.ndarray) -> np.ndarray:
    """RGBA: ``image`` with alpha falling from 255 in the middle to 0 over the outer eighth."""
    height, width = image.shape[:2]
    ramp_y = np.clip(np.minimum(np.arange(height), np.arange(height)[::-1]) / max(1, height // 8), 0, 1)
    ramp_x = np.clip(np.minimum(np.arange(width), np.arange(width)[::-1]) / max(1, width // 8), 0, 1)
    alpha = (np.minimum(ramp_y[:, None], ramp_x[None, :]) * 255).astype(np.uint8)
    return np.dstack([image, alpha])
