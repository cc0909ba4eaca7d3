"""Tests for tfeed.testing's images (encode, synthetic_shapes, sample_photos, digits,
web_like_corpus, write_images): real codecs; no mocks.  The servers are in test_testing_server.py."""

import os
from collections import Counter

import cv2
import numpy as np
import pytest

from tfeed.testing import digits, encode, sample_photos, synthetic_shapes, web_like_corpus, write_images

pytestmark = pytest.mark.timeout(60)

MAGIC = {".jpg": b"\xff\xd8\xff", ".png": b"\x89PNG", ".webp": b"RIFF"}


def decode(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


# --- images ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "bmp", "gif", "tiff"])
def test_encode_round_trips_through_cv2(fmt):
    rgb = synthetic_shapes(1, size=48, seed=2)[0][0]
    lossless = fmt in ("png", "bmp", "tiff")
    for image in (rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)):
        decoded = decode(encode(image, fmt))
        assert decoded is not None, fmt
        if image.ndim == 3:
            decoded = cv2.cvtColor(decoded[:, :, :3], cv2.COLOR_BGR2RGB)  # checks RGB order too
        elif decoded.ndim == 3:
            decoded = decoded[:, :, 0]
        assert decoded.shape == image.shape
        error = np.abs(decoded.astype(int) - image.astype(int)).mean()
        assert error == 0 if lossless else error < 12, (fmt, image.ndim, error)


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError, match="format"):
        encode(np.zeros((4, 4, 3), np.uint8), "heic")
    with pytest.raises(ValueError, match="uint8"):
        encode(np.zeros((4, 4, 3), np.float32), "png")


def test_synthetic_shapes_are_deterministic_and_balanced():
    images, labels = synthetic_shapes(30, size=32, seed=5)
    again, labels_again = synthetic_shapes(30, size=32, seed=5)
    other, _ = synthetic_shapes(30, size=32, seed=6)
    assert images.shape == (30, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, other)
    assert Counter(labels.tolist()) == {0: 10, 1: 10, 2: 10}


def test_sample_photos_and_digits():
    photos = sample_photos()
    assert {"astronaut", "coffee", "chelsea", "rocket", "china", "flower"} <= set(photos)
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos.values())
    images, labels = digits()
    assert images.shape[1:] == (8, 8) and images.dtype == np.uint8 and images.max() == 255
    assert len(labels) == len(images) and set(labels.tolist()) == set(range(10))


def test_web_like_corpus_mix_sizes_and_determinism():
    corpus = web_like_corpus(40, seed=1)
    assert len(corpus) == 40 and len(set(corpus.values())) == 40
    assert Counter(os.path.splitext(name)[1] for name in corpus) == {".jpg": 28, ".png": 6, ".webp": 6}
    for name, data in corpus.items():
        assert name.startswith("img_") and data.startswith(MAGIC[os.path.splitext(name)[1]])
        height, width = decode(data).shape[:2]
        assert 300 <= min(height, width) <= 500
        assert max(height, width) / min(height, width) <= 4 / 3 + 0.01
    assert web_like_corpus(5, seed=1, formats={"png": 1}) == web_like_corpus(5, seed=1, formats={"png": 1})


def test_write_images(tmp_path):
    paths = write_images({"x/y/z.jpg": b"1", "w.png": b"22"}, tmp_path)
    assert paths == [str(tmp_path / "x" / "y" / "z.jpg"), str(tmp_path / "w.png")]
    assert (tmp_path / "w.png").read_bytes() == b"22"
    with pytest.raises(ValueError):
        write_images({"../escape.jpg": b""}, tmp_path / "sub")
