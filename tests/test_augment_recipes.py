"""tfeed.augment's recipes: the presets (the eval preset against a hand computation, static output
sizes, the same result from every entry point, validation), seeding (same seed same stream, a new
epoch new crops, element and grouped keys) and the preview grid."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfeed import augment
from tfeed.augment import randomness
from tfeed.testing import encode

from helpers import seed_of, smooth_image


# --- presets --------------------------------------------------------------------------------------

def bilinear_resize(image, out_h, out_w):
    """Reference resize: bilinear with half-pixel centres (what tf.image.resize does)."""
    in_h, in_w = image.shape[:2]

    def taps(out_size, in_size):
        src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        src = np.clip(src, 0, in_size - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, src - low

    y0, y1, fy = taps(out_h, in_h)
    x0, x1, fx = taps(out_w, in_w)
    image = image.astype(np.float64)
    rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def test_eval_preset_equals_hand_computation():
    image = np.random.default_rng(0).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    recipe = augment.imagenet_eval(224)
    resized = bilinear_resize(image, 256, 341)  # 400 * 256 / 300 = 341.3
    expected = resized[16:16 + 224, 58:58 + 224]
    out, label = recipe(tf.constant(image), 7, seed_of(0))
    assert int(label) == 7
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-2)  # float32 arithmetic
    body = tf.constant(encode(image, "png"))
    decoded, _ = recipe.after_decode(recipe.decode(body, seed_of(0)), 7, seed_of(0))
    np.testing.assert_allclose(decoded.numpy(), expected, atol=1e-2)


@pytest.mark.parametrize("name,size", [("imagenet_train", 48), ("imagenet_eval", 48), ("mnist_train", 28)])
def test_presets_have_static_output_size_and_agree_across_entry_points(name, size):
    recipe = augment.get_preset(name, size)
    assert recipe.output_size == (size, size)
    pixels = smooth_image(120, 150)
    body = tf.constant(encode(pixels, "png"))
    for i in range(3):
        whole, _ = recipe(tf.constant(pixels), 0, seed_of(i))
        split, _ = recipe.after_decode(recipe.decode(body, seed_of(i)), 0, seed_of(i))
        assert whole.shape == (size, size, 3) and whole.dtype == tf.float32
        np.testing.assert_allclose(whole.numpy(), split.numpy(), atol=1e-3)


def test_get_preset_and_validation():
    assert augment.get_preset("imagenet_train").output_size == (224, 224)
    assert augment.get_preset("mnist_train").output_size == (28, 28)
    with pytest.raises(ValueError, match="preset must be one of"):
        augment.get_preset("cifar")
    with pytest.raises(ValueError, match="size"):
        augment.imagenet_train(0)
    with pytest.raises(TypeError, match="tfeed.augment ops"):
        augment.Compose([lambda image, seed: image])
    with pytest.raises(ValueError, match="probability"):
        augment.HorizontalFlip(1.5)
    with pytest.raises(ValueError, match="area"):
        augment.RandomResizedCrop(32, area=(0.5, 0.1))


# --- seeding --------------------------------------------------------------------------------------

def keyed_stream(bodies, recipe, seed, passes=1):
    """bodies -> (url, body) -> element_keys -> recipe, as the pipeline wires it."""
    urls = [f"http://example/{i}.png" for i in range(len(bodies))]
    ds = tf.data.Dataset.from_tensor_slices((list(bodies), urls)).apply(augment.element_keys(seed))
    ds = ds.map(lambda body, url, key: recipe.after_decode(recipe.decode(body, key), url, key)[0])
    options = tf.data.Options()
    options.autotune.enabled = False  # else the end of each pass can wait for an autotune tick
    ds = ds.with_options(options)
    return [np.stack([image.numpy() for image in ds]) for _ in range(passes)]


def test_same_seed_same_stream_new_epoch_new_crops():
    bodies = [encode(smooth_image(80, 100, seed=i), "png") for i in range(6)]
    recipe = augment.imagenet_train(32)
    first_epoch, second_epoch = keyed_stream(bodies, recipe, seed=5, passes=2)
    again, = keyed_stream(bodies, recipe, seed=5)
    other_seed, = keyed_stream(bodies, recipe, seed=6)
    np.testing.assert_array_equal(first_epoch, again)
    assert all(not np.allclose(a, b) for a, b in zip(first_epoch, second_epoch))
    assert all(not np.allclose(a, b) for a, b in zip(first_epoch, other_seed))


def test_element_key_depends_on_seed_epoch_and_url_only():
    key = lambda seed, epoch, url: randomness.element_key(seed, epoch, tf.constant(url)).numpy()
    assert np.array_equal(key(1, 0, "a"), key(1, 0, "a"))
    assert len({tuple(key(s, e, u)) for s in (1, 2) for e in (0, 1) for u in ("a", "b")}) == 8
    # A resumed run starts counting at its epoch.
    resumed = tf.data.Dataset.from_tensor_slices(["a", "b"]).apply(augment.element_keys(1, first_epoch=3))
    assert [tuple(k.numpy()) for _, k in resumed] == [tuple(key(1, 3, "a")), tuple(key(1, 3, "b"))]
    assert [tuple(k.numpy()) for _, k in resumed] == [tuple(key(1, 4, "a")), tuple(key(1, 4, "b"))]


def test_grouped_keys_are_the_element_keys_in_order():
    urls = [f"http://example/{i}.jpg" for i in range(11)]
    by_element = tf.data.Dataset.from_tensor_slices(urls).apply(augment.element_keys(4, first_epoch=2))
    grouped = tf.data.Dataset.from_tensor_slices(urls).apply(
        randomness.grouped_keys(4, first_epoch=2, group_size=4, then=lambda keys: randomness.draw_each(keys, 3)))
    expected = [(url.numpy(), randomness.draw(key, 3).numpy()) for url, key in by_element]
    got = [(url.numpy(), draws.numpy()) for url, draws in grouped]
    assert [url for url, _ in got] == [url for url, _ in expected]  # 11 = 4 + 4 + 3: the last group is short
    for (_, a), (_, b) in zip(got, expected):
        np.testing.assert_array_equal(a, b)


# --- preview --------------------------------------------------------------------------------------

def test_augmentation_grid_layout_and_save(tmp_path):
    photos = [smooth_image(60, 80, seed=0), smooth_image(90, 60, seed=1)]
    grid = augment.augmentation_grid(photos, augment.imagenet_train(32), n_variants=3, seed=0)
    gap, column_gap = augment.preview.GAP, augment.preview.COLUMN_GAP
    assert grid.shape == (2 * 32 + 3 * gap, 4 * 32 + 4 * gap + column_gap, 3) and grid.dtype == np.uint8
    path = tmp_path / "grid.png"
    saved = augment.save_grid(path, photos, augment.imagenet_train(32), n_variants=3, seed=0)
    np.testing.assert_array_equal(saved, grid)
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), grid)
    first_original = grid[gap:gap + 32, gap:gap + 32]
    fitted = cv2.resize(photos[0], (32, 24), interpolation=cv2.INTER_AREA)  # 60x80 into 32x32: 24x32
    np.testing.assert_array_equal(first_original[4:28], fitted)
    assert np.all(first_original[:4] == 255) and np.all(first_original[28:] == 255)
