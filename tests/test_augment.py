"""tfeed.augment: properties of each op, the presets, seeding, the fused JPEG crop, the pipeline."""

from __future__ import annotations

import math
import statistics

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tfeed
from tfeed import augment
from tfeed.augment import randomness
from tfeed.augment.geometry import rotate, valid_rotated_size
from tfeed.testing import encode

SEEDS = range(200)


def seed_of(i):
    return tf.constant([i, 12345], tf.int64)


def draws_of(op, i):
    """The uniforms ``op`` gets for ``seed_of(i)``."""
    return randomness.draw(seed_of(i), op.draws)


def smooth_image(height=240, width=320, seed=0):
    """A smooth RGB uint8 image whose colours encode position (JPEG-friendly)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi)
    red = 255 * x / (width - 1)
    green = 255 * y / (height - 1)
    blue = 127.5 + 100 * np.sin(2 * np.pi * (x + y) / 90 + phase)
    return np.round(np.stack([red, green, blue], axis=-1)).astype(np.uint8)


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
    graph = fused.get_concrete_function(jpeg, seed_of(0)).graph
    op_types = {node.op for node in graph.as_graph_def().node}
    op_types |= {node.op for f in graph.as_graph_def().library.function for node in f.node_def}
    assert "DecodeAndCropJpeg" in op_types and "ExtractJpegShape" in op_types
    for i in range(12):
        from_jpeg, from_png = fused(jpeg, seed_of(i)).numpy(), fused(png, seed_of(i)).numpy()
        full = op.apply(tfeed.decode_image(jpeg), seed_of(i)).numpy()
        assert np.abs(from_jpeg - full).mean() < 0.5           # same window, same decoder
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


# --- in image_dataset_from_urls ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def augment_server():
    """12 smooth images, JPEG and PNG alternating, sizes 70..125 x 90..145."""
    from tfeed.testing import ImageServer
    bodies = {}
    for i in range(12):
        fmt = "jpeg" if i % 2 == 0 else "png"
        bodies[f"a{i:02d}.{'jpg' if fmt == 'jpeg' else 'png'}"] = encode(smooth_image(70 + 5 * i, 90 + 5 * i, seed=i), fmt)
    with ImageServer(bodies) as server:
        yield server, bodies


def url_rows(augment_server):
    """(url, unique int label) rows, so an example is known by its label."""
    server, bodies = augment_server
    return [(server.url(name), i) for i, name in enumerate(sorted(bodies))]


def by_label(dataset):
    images = {}
    for batch_images, batch_labels in dataset:
        for image, label in zip(batch_images.numpy(), batch_labels.numpy()):
            images[int(label)] = image
    return images


def test_pipeline_same_seed_same_batches_each_epoch_new_crops(augment_server):
    rows = url_rows(augment_server)
    make = lambda **kw: tfeed.image_dataset_from_urls(rows, augment=augment.imagenet_train(32), seed=3,
                                                      batch_size=4, **kw)
    ordered = make(shuffle=False, deterministic=True)
    assert ordered.element_spec[0].shape.as_list() == [None, 32, 32, 3]
    epoch0 = [(x.numpy(), y.numpy()) for x, y in ordered]
    epoch1 = by_label(ordered)
    again = [(x.numpy(), y.numpy()) for x, y in make(shuffle=False, deterministic=True)]
    assert len(epoch0) == 3
    for (x0, y0), (x1, y1) in zip(epoch0, again):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)
    first = {int(y): x for xs, ys in epoch0 for x, y in zip(xs, ys)}
    assert all(not np.allclose(first[label], epoch1[label]) for label in first)
    # The key comes from the URL, not the arrival order: shuffled, unordered runs give the same images.
    unordered = by_label(make(shuffle=True, deterministic=False))
    assert sorted(unordered) == sorted(first)
    for label in first:
        np.testing.assert_array_equal(unordered[label], first[label])


def test_pipeline_recipe_output_equals_the_documented_key(augment_server):
    server, bodies = augment_server
    rows = url_rows(augment_server)
    recipe = augment.imagenet_train(40)
    ds = tfeed.image_dataset_from_urls(rows, augment=recipe, seed=11, batch_size=None, shuffle=False,
                                       deterministic=True)
    got = {int(y): x.numpy() for x, y in ds}
    for (url, label), name in zip(rows, sorted(bodies)):
        key = randomness.element_key(11, 0, tf.constant(url))
        expected, _ = recipe.after_decode(recipe.decode(tf.constant(bodies[name]), key), label, key)
        np.testing.assert_allclose(got[label], expected.numpy(), atol=1e-4)


def test_pipeline_plain_op_runs_after_resize_and_size_rules(augment_server):
    server, bodies = augment_server
    rows = url_rows(augment_server)
    ds = tfeed.image_dataset_from_urls(rows, augment=augment.HorizontalFlip(1.0), image_size=(24, 24),
                                       batch_size=None, shuffle=False, deterministic=True)
    for (image, label), name in zip(ds, sorted(bodies)):
        plain = tfeed.resize_image(tfeed.decode_image(tf.constant(bodies[name])), (24, 24)).numpy()
        np.testing.assert_array_equal(image.numpy(), plain[:, ::-1])
    default = tfeed.image_dataset_from_urls(rows, batch_size=None)
    assert default.element_spec[0].shape.as_list() == [256, 256, 3]
    with pytest.raises(ValueError, match="augment makes 32x32 images"):
        tfeed.image_dataset_from_urls(rows, augment=augment.imagenet_train(32), image_size=(64, 64))
    with pytest.raises(ValueError, match="crop_to_aspect_ratio"):
        tfeed.image_dataset_from_urls(rows, augment=augment.imagenet_eval(32), crop_to_aspect_ratio=True)
    with pytest.raises(TypeError, match="augment must be"):
        tfeed.image_dataset_from_urls(rows, augment="imagenet_train")
    same = tfeed.image_dataset_from_urls(rows, augment=augment.imagenet_eval(32), image_size=(32, 32))
    assert same.element_spec[0].shape.as_list() == [None, 32, 32, 3]


def test_pipeline_recipe_skips_and_counts_undecodable_images(augment_server):
    server, bodies = augment_server
    rows = url_rows(augment_server)[:4] + [(server.url(sorted(bodies)[0], corrupt=1), 0)]
    ds = tfeed.image_dataset_from_urls(rows, augment=augment.imagenet_train(32), batch_size=None, seed=0)
    assert len(list(ds)) == 4
    snapshot = ds.stats.snapshot()
    assert snapshot["delivered"] == 4 and snapshot["failures"] == {"decode_error": 1}
