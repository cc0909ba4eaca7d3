"""tfeed.augment's ops, property by property: the random resized crop (window bounds, coverage, the
fused JPEG crop), flip, colour and lighting, random order and apply, normalize, salt and pepper, and
geometry.  The presets, seeding and preview are in test_augment_recipes.py; augment inside
image_dataset_from_urls is in test_augment_pipeline.py."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import tensorflow as tf

import tfeed
from tfeed import augment
from tfeed.augment import randomness
from tfeed.augment.geometry import rotate, valid_rotated_size
from tfeed.testing import encode
from tfeed.upright import DecodeOptions

from helpers import seed_of, smooth_image

SEEDS = range(200)


def draws_of(op, i):
    """The uniforms ``op`` gets for ``seed_of(i)``."""
    return randomness.draw(seed_of(i), op.draws)


def rounds_into(value, low, high):
    """Could a real number in [low, high] round to the integer ``value``?"""
    return value + 0.5 >= low and value - 0.5 <= high


# --- random resized crop -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(300, 400), (500, 333), (64, 64)])
def test_crop_window_area_and_aspect_within_bounds(shape):
    op = augment.RandomResizedCrop(32)
    window = tf.function(lambda u: op.window(tf.constant([*shape, 3]), u))
    height, width = shape
    areas = []
    for i in SEEDS:
        top, left, h, w = window(draws_of(op, i)).numpy().tolist()
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # With rounding to whole pixels: some real (area, aspect) in bounds gives (h, w).
        low_area, high_area = (h - 0.5) * (w - 0.5), (h + 0.5) * (w + 0.5)
        assert high_area >= 0.08 * height * width and low_area <= height * width
        assert (w + 0.5) / (h - 0.5) >= 3 / 4 and (w - 0.5) / (h + 0.5) <= 4 / 3
        areas.append(h * w / (height * width))
    assert abs(np.mean(areas) - expected_mean_area(height, width)) < 0.05
    assert min(areas) < 0.2 and max(areas) > 0.75


def expected_mean_area(height, width, draws=20000, seed=0):
    """Monte Carlo of the Inception rule: first of 10 (area, log-aspect) draws that fits."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(0.08, 1.0, size=(draws, 10)) * height * width
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), size=(draws, 10)))
    w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
    fits = (w <= width) & (h <= height)
    first = np.argmax(fits, axis=1)
    chosen = np.where(fits.any(axis=1), area[np.arange(draws), first], min(height, width) ** 2)
    return chosen.mean() / (height * width)


def test_crop_window_falls_back_to_center_crop_when_nothing_fits():
    op = augment.RandomResizedCrop((32, 48))  # output aspect 3:2
    for i in range(20):
        top, left, h, w = op.window(tf.constant([20, 1000, 3]), draws_of(op, i)).numpy().tolist()
        assert (top, left, h, w) == (0, 485, 20, 30)


def test_crop_positions_cover_the_image():
    op = augment.RandomResizedCrop(32, area=(0.1, 0.1), aspect=(1.0, 1.0))
    windows = np.array([op.window(tf.constant([400, 400, 3]), draws_of(op, i)).numpy() for i in range(60)])
    assert np.all(windows[:, 2:] == 126)  # sqrt(0.1 * 160000) = 126.5 -> 126 (round half to even)
    assert windows[:, 0].min() < 60 and windows[:, 0].max() > 210
    assert windows[:, 1].min() < 60 and windows[:, 1].max() > 210


def test_random_resized_crop_is_resize_of_the_window():
    image = tf.constant(smooth_image())
    op = augment.RandomResizedCrop(40)
    for i in range(5):
        top, left, h, w = op.window(tf.shape(image), draws_of(op, i)).numpy().tolist()
        expected = tf.image.resize(image[top:top + h, left:left + w], (40, 40)).numpy()
        np.testing.assert_allclose(op.apply(image, seed_of(i)).numpy(), expected, atol=1e-4)


def test_fused_jpeg_decode_takes_the_same_crop_as_full_decode():
    pixels = smooth_image(360, 480)
    jpeg, png = tf.constant(encode(pixels, "jpeg", 95)), tf.constant(encode(pixels, "png"))
    op = augment.RandomResizedCrop(64)
    fused = tf.function(op.decode)
    unscaled_options = DecodeOptions(scaled_jpeg=False)
    unscaled = tf.function(lambda body, seed: op.decode_transform(body, randomness.draw(seed, op.draws),
                                                                  unscaled_options))
    graph = fused.get_concrete_function(jpeg, seed_of(0)).graph
    op_types = {node.op for node in graph.as_graph_def().node}
    op_types |= {node.op for f in graph.as_graph_def().library.function for node in f.node_def}
    assert "DecodeAndCropJpeg" in op_types and "TfeedImageHeader" in op_types
    for i in range(12):
        from_jpeg, from_png = fused(jpeg, seed_of(i)).numpy(), fused(png, seed_of(i)).numpy()
        full = op.apply(tfeed.decode_image(jpeg), seed_of(i)).numpy()
        assert np.abs(unscaled(jpeg, seed_of(i)).numpy() - full).mean() < 0.5  # same window, same decoder
        assert np.abs(from_jpeg - full).mean() < 2.5           # DCT-scaled: same window
        assert np.abs(from_jpeg - from_png).mean() < 2.5       # same window, up to JPEG loss
        other = fused(png, seed_of(i + 1000)).numpy()
        assert np.abs(other - from_png).mean() > 10            # a different window looks different


# --- flip, colour, lighting -----------------------------------------------------------------------

def test_flip_is_an_exact_mirror_about_half_the_time():
    image = smooth_image(30, 40)
    flipped = 0
    for i in SEEDS:
        out = augment.HorizontalFlip().apply(tf.constant(image), seed_of(i)).numpy()
        if np.array_equal(out, image[:, ::-1]):
            flipped += 1
        else:
            assert np.array_equal(out, image)
    assert 70 < flipped < 130
    assert np.array_equal(augment.HorizontalFlip(1.0).apply(tf.constant(image), seed_of(0)).numpy(),
                          image[:, ::-1])


def test_lighting_matches_the_pca_formula():
    image = smooth_image(20, 30).astype(np.float32)
    eigval, eigvec = np.array(augment.IMAGENET_EIGVAL), np.array(augment.IMAGENET_EIGVEC)
    op = augment.Lighting(0.1)
    for i in range(10):
        out = op.apply(tf.constant(image), seed_of(i)).numpy()
        alpha = [0.1 * statistics.NormalDist().inv_cdf(float(u)) for u in draws_of(op, i).numpy()]
        shift = np.array([sum(eigvec[c, j] * alpha[j] * eigval[j] * 255 for j in range(3)) for c in range(3)])
        np.testing.assert_allclose(out - image, np.broadcast_to(shift, image.shape), atol=1e-3)


def luma(image):
    return image @ np.array([0.299, 0.587, 0.114])


def test_brightness_contrast_saturation_formulas():
    image = smooth_image(20, 30).astype(np.float32)
    for i in range(20):
        bright = augment.Brightness(0.4).apply(tf.constant(image), seed_of(i)).numpy()
        ratio = bright[image > 10] / image[image > 10]
        assert 0.6 <= ratio.min() and np.ptp(ratio) < 1e-4 and ratio.max() <= 1.4
        contrast = augment.Contrast(0.4).apply(tf.constant(image), seed_of(i)).numpy()
        factor = np.polyfit(image.ravel(), contrast.ravel(), 1)[0]
        np.testing.assert_allclose(contrast, factor * image + luma(image).mean() * (1 - factor), atol=1e-2)
        assert 0.6 <= factor <= 1.4
        saturated = augment.Saturation(0.4).apply(tf.constant(image), seed_of(i)).numpy()
        np.testing.assert_allclose(luma(saturated), luma(image), atol=1e-2)  # only chroma moves
        assert not np.allclose(saturated, image)


def test_a_run_of_colour_ops_is_one_matrix_with_the_same_result():
    image = smooth_image(20, 30).astype(np.float32)
    ops = [augment.Brightness(0.4), augment.Contrast(0.4), augment.Saturation(0.4), augment.Lighting(0.1)]
    composed = augment.Compose(ops)
    assert composed.color_affine and composed.draws == 6
    for i in range(5):
        u = draws_of(composed, i)
        one_by_one, start = image, 0
        for op in ops:
            one_by_one = op.transform(one_by_one, u[start:start + op.draws]).numpy()
            start += op.draws
        np.testing.assert_allclose(composed.apply(tf.constant(image), seed_of(i)).numpy(), one_by_one, atol=1e-2)
    # fb.resnet's jitter: unclipped, the three blends commute, so any order gives the same image.
    jitter = augment.color_jitter()
    u = draws_of(jitter, 0)
    parts = [u[3:4], u[4:5], u[5:6]]
    forward = jitter.ops[2].transform(jitter.ops[1].transform(jitter.ops[0].transform(image, parts[0]), parts[1]),
                                      parts[2])
    np.testing.assert_allclose(jitter.apply(tf.constant(image), seed_of(0)).numpy(), forward.numpy(), atol=1e-2)


def test_random_order_applies_each_op_once_in_both_orders():
    image = smooth_image(10, 10).astype(np.float32)
    brightness, lighting = augment.Brightness(0.4), augment.Lighting(0.1)
    op = augment.RandomOrder([brightness, lighting])
    assert op.color_affine and op.draws == 2 + 1 + 3
    orders = set()
    for i in range(40):
        u = draws_of(op, i)
        b_u, l_u = u[2:3], u[3:6]  # after the two order draws
        b_then_l = lighting.transform(brightness.transform(image, b_u), l_u).numpy()
        l_then_b = brightness.transform(lighting.transform(image, l_u), b_u).numpy()
        out = op.apply(tf.constant(image), seed_of(i)).numpy()
        if np.allclose(out, b_then_l, atol=1e-3):
            orders.add("bl")
        else:
            np.testing.assert_allclose(out, l_then_b, atol=1e-3)
            orders.add("lb")
    assert orders == {"bl", "lb"}


def test_random_apply_probability_and_passthrough():
    image = smooth_image(8, 8)
    op = augment.RandomApply(augment.HorizontalFlip(1.0), 0.3)
    applied = sum(not np.array_equal(op.apply(tf.constant(image), seed_of(i)).numpy(), image) for i in SEEDS)
    assert 35 < applied < 85


def test_normalize_and_salt_pepper():
    image = np.full((100, 100, 3), 128, np.float32)
    out = augment.Normalize(mean=(128, 0, 28), std=(1, 2, 4)).apply(tf.constant(image), seed_of(0)).numpy()
    np.testing.assert_allclose(out[0, 0], [0, 64, 25])
    noisy = augment.SaltPepper(0.05, 0.02).apply(tf.constant(image), seed_of(0)).numpy()
    white = np.all(noisy == 255, axis=-1).mean()
    black = np.all(noisy == 0, axis=-1).mean()
    assert 0.035 < white < 0.065 and 0.01 < black < 0.03
    assert np.all((noisy == 255) | (noisy == 0) | (noisy == 128))


# --- geometry -------------------------------------------------------------------------------------

def test_rotation_by_right_angle_is_rot90_and_crop_valid_has_no_fill():
    image = smooth_image(21, 21).astype(np.float32)
    rotated = rotate(tf.constant(image), tf.constant(math.pi / 2)).numpy()
    assert any(np.allclose(rotated, np.rot90(image, k), atol=1e-3) for k in (1, 3))
    height, width = (float(v) for v in valid_rotated_size(100.0, 200.0, tf.constant(0.0)))
    assert (height, width) == (100.0, 200.0)
    ones = np.full((60, 90, 3), 200, np.float32)
    for i in range(10):
        out = augment.Rotation(15, crop_valid=True).apply(tf.constant(ones), seed_of(i)).numpy()
        assert out.shape[0] <= 60 and out.shape[1] <= 90 and out.shape[0] >= 40
        assert out.min() > 100  # at most bilinear bleed at the very edge, never a filled corner


def test_resize_shorter_center_crop_paste_random_crop_random_resize():
    image = tf.constant(smooth_image(30, 60))
    assert augment.ResizeShorter(20).apply(image, seed_of(0)).shape == (20, 40, 3)
    assert augment.ResizeShorter(20).apply(tf.transpose(image, [1, 0, 2]), seed_of(0)).shape == (40, 20, 3)
    center = augment.CenterCrop((10, 20)).apply(image, seed_of(0)).numpy()
    assert np.array_equal(center, image.numpy()[10:20, 20:40])
    pasted = augment.CenterPaste((40, 70)).apply(image, seed_of(0)).numpy()
    assert np.array_equal(pasted[5:35, 5:65], image.numpy()) and pasted[:5].max() == 0
    shifts = set()
    for i in range(30):
        out = augment.RandomCrop((30, 60)).apply(tf.constant(pasted), seed_of(i)).numpy()
        found = [(dy, dx) for dy in range(11) for dx in range(11)
                 if np.array_equal(out, pasted[dy:dy + 30, dx:dx + 60])]
        shifts.add(found[0])
        resized = augment.RandomResize((0.5, 1.0), (1.0, 2.0)).apply(image, seed_of(i))
        assert 15 <= resized.shape[0] <= 30 and 60 <= resized.shape[1] <= 120
    assert len(shifts) > 10
