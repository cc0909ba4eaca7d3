"""Shared fixtures: real photos, a fault-injecting ImageServer and nginx."""

from __future__ import annotations

import numpy as np
import pytest

from tfeed import kernels as native
from tfeed.kernels import build as native_build
from tfeed.testing import ImageServer, NginxServer, encode, sample_photos, write_images


@pytest.fixture(scope="session")
def photos():
    """name -> JPEG bytes of a few real photos (scikit-image / scikit-learn)."""
    return {f"{name}.jpg": encode(image, "jpeg") for name, image in sample_photos().items()}


@pytest.fixture(scope="session")
def small_images():
    """40 small distinct images: name -> bytes, mixed formats, known sizes."""
    rng = np.random.default_rng(0)
    formats = ["jpeg", "png", "webp", "bmp", "gif"]
    images = {}
    for i in range(40):
        fmt = formats[i % len(formats)]
        image = rng.integers(0, 256, size=(24 + i, 32 + i, 3), dtype=np.uint8)
        ext = {"jpeg": "jpg"}.get(fmt, fmt)
        images[f"img{i:02d}.{ext}"] = encode(image, fmt)
    return images


@pytest.fixture(scope="session")
def server(small_images, photos):
    with ImageServer({**small_images, **photos}) as srv:
        yield srv


@pytest.fixture(scope="session")
def nginx(small_images, tmp_path_factory):
    root = tmp_path_factory.mktemp("nginx-root")
    write_images(small_images, root)
    with NginxServer(root) as srv:
        yield srv


@pytest.fixture(scope="session")
def ops():
    """The loaded native op library; skipped only when g++ or libcurl's headers are absent."""
    try:
        native_build.build()
    except native_build.BuildError as exc:
        if exc.missing is not None:
            pytest.skip(f"native op cannot be built here: {exc}")
        raise
    module = native.load()
    assert module is not None
    return module


@pytest.fixture(scope="session")
def core_ops():
    """The loaded core kernels (no libcurl needed); skipped only when g++ is absent."""
    try:
        native_build.build(library="core")
    except native_build.BuildError as exc:
        if exc.missing is not None:
            pytest.skip(f"core kernels cannot be built here: {exc}")
        raise
    module = native.load_core()
    assert module is not None
    return module


@pytest.fixture(scope="module")
def jpg(small_images):
    """The first JPEG of ``small_images`` by name (tests/test_native*.py)."""
    return sorted(n for n in small_images if n.endswith(".jpg"))[0]
