"""Real and generated images for tests, demos and benchmarks, without internet.

Real photos come from scikit-image and scikit-learn (``pip install tfeed[test]``);
:func:`synthetic_shapes` and :func:`encode` need only numpy and OpenCV.
All images are RGB uint8 ``[H, W, 3]`` (or gray ``[H, W]``).
"""

import io
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp", "gif": ".gif", "tiff": ".tiff"}
_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
SHAPE_CLASSES = ("circle", "square", "triangle")
_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
_TEST_HINT = "pip install tfeed[test]"


def _require(module):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise ImportError(f"{module} is needed for this; install it with `{_TEST_HINT}`") from exc


def sample_photos():
    """Return ``{name: RGB uint8 array}``: 6 scikit-image photos plus sklearn's china and flower."""
    data = _require("skimage.data")
    datasets = _require("sklearn.datasets")
    photos = {name: np.ascontiguousarray(getattr(data, name)()) for name in _SKIMAGE_PHOTOS}
    samples = datasets.load_sample_images()
    for path, image in zip(samples.filenames, samples.images):
        photos[os.path.splitext(os.path.basename(path))[0]] = np.ascontiguousarray(image)
    return photos


def digits():
    """Return sklearn's 8x8 digits: (uint8 images [N, 8, 8] in 0..255, int labels [N])."""
    bunch = _require("sklearn.datasets").load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def _bright_colour(rng):
    hsv = np.array([[[rng.integers(0, 180), rng.integers(140, 256), rng.integers(180, 256)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _draw_shape(canvas, label, rng):
    size = canvas.shape[0]
    radius = rng.uniform(0.15, 0.3) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    colour = _bright_colour(rng)
    angle = rng.uniform(0, 2 * np.pi)
    if label == 0:
        cv2.circle(canvas, (int(cx), int(cy)), int(radius), colour, -1, cv2.LINE_AA)
        return
    corners = 4 if label == 1 else 3
    theta = angle + np.arange(corners) * 2 * np.pi / corners
    points = np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], colour, cv2.LINE_AA)


def synthetic_shapes(n, size=64, seed=0):
    """Draw ``n`` images of one shape each: 0 circle, 1 square, 2 triangle (see SHAPE_CLASSES).

    Random bright colour, position, scale and rotation over a dark noisy gradient.
    Classes are balanced (``n // 3`` each, remainder spread) and shuffled.
    Deterministic in ``seed``. Returns (uint8 [n, size, size, 3], int64 [n]).
    """
    if n < 0 or size < 16:
        raise ValueError(f"synthetic_shapes: need n >= 0 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SHAPE_CLASSES))
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    images = np.empty((n, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        base = rng.uniform(0, 70, size=3)
        slope = rng.uniform(-40, 40, size=3)
        gradient = base + ramp[:, None, None] * slope if rng.random() < 0.5 else base + ramp[None, :, None] * slope
        noise = rng.normal(0, 12, size=(size, size, 3))
        canvas = np.clip(gradient + noise, 0, 255).astype(np.uint8)
        _draw_shape(canvas, label, rng)
        images[i] = canvas
    return images, labels.astype(np.int64)


def _canonical_format(fmt):
    name = _ALIASES.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise ValueError(f"encode: unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    return name


def encode(image, fmt, quality=90):
    """Encode an RGB ``[H, W, 3]`` or gray ``[H, W]`` uint8 array as ``fmt`` bytes.

    ``fmt`` is one of FORMATS ("jpg"/"tif" accepted); ``quality`` applies to jpeg and webp.
    """
    fmt = _canonical_format(fmt)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"encode: expected uint8 [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
    if fmt == "gif":
        pil = _require("PIL.Image")
        buffer = io.BytesIO()
        pil.fromarray(image).save(buffer, format="GIF")
        return buffer.getvalue()
    params = {"jpeg": [cv2.IMWRITE_JPEG_QUALITY, int(quality)],
              "webp": [cv2.IMWRITE_WEBP_QUALITY, int(quality)]}.get(fmt, [])
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(FORMATS[fmt], bgr, params)
    if not ok:
        raise RuntimeError(f"encode: OpenCV could not encode {fmt}")
    return buffer.tobytes()


def _split_counts(n, formats):
    """Exact per-format counts summing to n, by largest remainder of n * weight."""
    names = [_canonical_format(f) for f in formats]
    weights = np.array(list(formats.values()), dtype=np.float64)
    if len(names) == 0 or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"web_like_corpus: formats needs positive weights, got {formats}")
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[:n - counts.sum()]] += 1
    return dict(zip(names, counts.tolist()))


def _web_image(photo, short_side, aspect, zoom, gain, rng):
    """Crop ``photo`` to ``aspect`` (w/h) at ``zoom`` of the largest such crop, resize, colour-jitter."""
    h, w = photo.shape[:2]
    crop_h = min(h, w / aspect) * zoom
    crop_w = crop_h * aspect
    top = int(rng.uniform(0, h - crop_h + 1e-9))
    left = int(rng.uniform(0, w - crop_w + 1e-9))
    crop = photo[top:top + max(1, int(crop_h)), left:left + max(1, int(crop_w))]
    out_h, out_w = (short_side, round(short_side * aspect)) if aspect >= 1 else (round(short_side / aspect), short_side)
    resized = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA if zoom * h > out_h else cv2.INTER_LINEAR)
    return np.clip(resized.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def web_like_corpus(n, seed=0, formats=None, workers=None):
    """Return ``{name: bytes}`` of ``n`` distinct web-like images made from :func:`sample_photos`.

    Random crops rescaled to ImageNet-like sizes (shorter side 300..500 px, aspect
    3:4..4:3), random per-channel gain so no two files are equal, JPEG/WebP quality
    75..95. ``formats`` maps format -> weight (default jpeg 0.7, png 0.15, webp 0.15);
    counts per format are exact (largest remainder) and shuffled. Names are
    ``img_000123.jpg``. Deterministic in ``seed``; encodes on ``workers`` threads
    (default: CPU count).
    """
    counts = _split_counts(n, formats or {"jpeg": 0.7, "png": 0.15, "webp": 0.15})
    photos = list(sample_photos().values())
    rng = np.random.default_rng(seed)
    kinds = rng.permutation([fmt for fmt, count in counts.items() for _ in range(count)])
    # Draw every random parameter first, in order, so threading cannot change the result.
    jobs = [dict(index=i, fmt=str(fmt), photo=photos[rng.integers(len(photos))], short_side=int(rng.integers(300, 501)),
                 aspect=float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))), zoom=float(rng.uniform(0.5, 1.0)),
                 gain=rng.uniform(0.85, 1.15, size=3).astype(np.float32), quality=int(rng.integers(75, 96)),
                 crop_seed=int(rng.integers(2**31)))
            for i, fmt in enumerate(kinds)]

    def make(job):
        image = _web_image(job["photo"], job["short_side"], job["aspect"], job["zoom"], job["gain"],
                           np.random.default_rng(job["crop_seed"]))
        return f"img_{job['index']:06d}{FORMATS[job['fmt']]}", encode(image, job["fmt"], job["quality"])

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return dict(pool.map(make, jobs))


def write_images(mapping, directory):
    """Write ``{relative name: bytes}`` below ``directory`` (creating subdirs); return the paths in order."""
    root = os.path.abspath(directory)
    paths = []
    for name, data in mapping.items():
        path = os.path.abspath(os.path.join(root, *name.split("/")))
        if os.path.commonpath([root, path]) != root or path == root:
            raise ValueError(f"write_images: {name!r} is not a relative path inside {directory}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths
