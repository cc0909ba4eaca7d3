"""A Recipe's colour-and-flip tail as one native step (tfeed.augment.tail and
the TfeedAffineMirror kernel): the same images as the recipe's graph ops."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfeed
from tfeed import augment
from tfeed.api import local_dataset
from tfeed.augment import color, randomness
from tfeed.augment.base import slices
from tfeed.augment.tail import color_tail, tail_start
from tfeed.plan import make_plan
from tfeed.testing import ImageServer, encode, sample_photos

from helpers import dataset_functions


def reference(images, matrix, bias, gain, mirror):
    """numpy, for [B, H, W, C] images: out = matrix @ mirrored(image) + bias + gain @ mean(image)."""
    flipped = np.where(mirror[:, None, None, None], images[:, :, ::-1], images)
    offset = bias + np.einsum("bdc,bc->bd", gain, images.mean(axis=(1, 2), dtype=np.float64))
    return np.einsum("bhwc,bdc->bhwd", flipped, matrix) + offset[:, None, None, :]


@pytest.mark.parametrize("shape", [(3, 4, 7, 3), (2, 3, 6, 3), (2, 2, 5, 1), (1, 1, 1, 3)])
def test_kernel_matches_the_formula(core_ops, shape):
    rng = np.random.default_rng(sum(shape))
    batch, channels = shape[0], shape[-1]
    images = rng.uniform(0, 255, shape).astype(np.float32)
    matrix = rng.normal(size=(batch, channels, channels)).astype(np.float32)
    bias = rng.normal(size=(batch, channels)).astype(np.float32)
    gain = rng.normal(size=(batch, channels, channels)).astype(np.float32)
    gain[0] = 0  # the mean pass is skipped for this one
    mirror = np.arange(batch) % 2 == 0
    expected = reference(images, matrix, bias, gain, mirror)
    got = core_ops.tfeed_affine_mirror(tf.constant(images), matrix, bias, gain, mirror).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    # One image (no batch dim) and two leading dims give the same pixels.
    one = core_ops.tfeed_affine_mirror(tf.constant(images[-1]), matrix[-1], bias[-1], gain[-1], mirror[-1]).numpy()
    np.testing.assert_allclose(one, expected[-1], rtol=1e-5, atol=1e-3)
    if batch % 2 == 0:
        pairs = lambda a: a.reshape((2, batch // 2) + a.shape[1:])
        two = core_ops.tfeed_affine_mirror(tf.constant(pairs(images)), pairs(matrix), pairs(bias), pairs(gain),
                                      pairs(mirror)).numpy()
        np.testing.assert_allclose(two.reshape(shape), expected, rtol=1e-5, atol=1e-3)


def test_kernel_rejects_mismatched_shapes(core_ops):
    images, square, vector, flips = tf.zeros([2, 3, 4, 3]), tf.zeros([2, 3, 3]), tf.zeros([2, 3]), tf.zeros([2], tf.bool)
    with pytest.raises(tf.errors.InvalidArgumentError, match="matrix must be"):
        core_ops.tfeed_affine_mirror(images, tf.zeros([2, 2, 2]), vector, square, flips)
    with pytest.raises(tf.errors.InvalidArgumentError, match="mean_gain must be"):
        core_ops.tfeed_affine_mirror(images, square, vector, tf.zeros([3, 3]), flips)
    with pytest.raises(tf.errors.InvalidArgumentError, match="mirror must be"):
        core_ops.tfeed_affine_mirror(images, square, vector, square, tf.zeros([3], tf.bool))
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be"):
        core_ops.tfeed_affine_mirror(tf.zeros([4, 3]), tf.zeros([3, 3]), tf.zeros([3]), tf.zeros([3, 3]), False)


@pytest.mark.parametrize("op", [color.Brightness(0.4), color.Contrast(0.4), color.Saturation(0.4), color.Lighting(0.1),
                                color.Normalize()])
def test_colour_ops_are_affine_in_the_mean_colour(op):
    # The tail's (matrix, bias, mean_gain) form rests on this contract of ColorOp.affine.
    u = randomness.draw(tf.constant([3, 1], tf.int64), op.draws)
    means = np.random.default_rng(0).uniform(0, 255, (4, 3)).astype(np.float32)
    matrices, biases = zip(*[(m.numpy(), b.numpy()) for m, b in (op.affine(tf.constant(mean), u) for mean in means)])
    for matrix in matrices[1:]:
        np.testing.assert_array_equal(matrix, matrices[0])  # the matrix does not read the mean
    # bias(a + t (b - a)) is linear in t
    a, b = means[0], means[1]
    mid = op.affine(tf.constant((a + b) / 2), u)[1].numpy()
    np.testing.assert_allclose(mid, (biases[0] + biases[1]) / 2, rtol=1e-5, atol=1e-3)


def test_tail_is_the_colour_and_flip_suffix(core_ops):
    assert tail_start(augment.imagenet_train(32)) == 1  # crop, then jitter, lighting, flip
    assert tail_start(augment.imagenet_train(32, normalize=True)) == 1
    eval_ops = augment.imagenet_eval(32).ops
    assert tail_start(augment.imagenet_eval(32)) == len(eval_ops)  # ends with a crop: no tail
    assert tail_start(augment.imagenet_eval(32, normalize=True)) == len(eval_ops)  # Normalize only
    assert tail_start(augment.mnist_train()) == len(augment.mnist_train().ops)
    assert color_tail(augment.mnist_train(), core_ops) is None
    assert color_tail(augment.imagenet_train(32), ops=None) is None


@pytest.mark.parametrize("normalize", [False, True])
def test_tail_equals_the_recipe_as_graph_ops(core_ops, normalize):
    recipe = augment.imagenet_train(48, normalize=normalize)
    tail = color_tail(recipe, core_ops)
    bodies = [encode(image, "jpeg") for image in sample_photos().values()]
    keys = tf.constant([[i, 7] for i in range(2 * len(bodies))], tf.int64)
    draws = randomness.draw_each(keys, recipe.draws)
    parameters = tail.parameters(draws)
    assert parameters.shape == (len(keys), tail.SIZE)
    heads, expected = [], []
    for i, u in enumerate(draws):
        decoded = recipe.decode_drawn(tf.constant(bodies[i % len(bodies)]), u)
        heads.append(recipe.after_decode_drawn(decoded, u, tail.start))
        expected.append(recipe.after_decode_drawn(decoded, u).numpy())
        one = tail.apply(heads[-1], parameters[i]).numpy()
        np.testing.assert_allclose(one, expected[-1], rtol=1e-5, atol=1e-3)
    batched = tail.apply(tf.stack(heads), parameters).numpy()  # the same step on a batch
    np.testing.assert_allclose(batched, np.stack(expected), rtol=1e-5, atol=1e-3)
    flip = next(i for i, op in enumerate(recipe.ops) if op.mirrors)
    mirrored = [bool(recipe.ops[flip].mirrored(slices(recipe.ops, u)[flip])) for u in draws]
    assert any(mirrored) and not all(mirrored)  # both branches were exercised


def op_types(dataset: tf.data.Dataset) -> set:
    return {node.op for function in dataset_functions(dataset) for node in function.node_def}


def test_pipeline_runs_the_native_tail_with_the_same_images(ops):
    photos = {f"p{i}.jpg": encode(image, "jpeg") for i, image in enumerate(sample_photos().values())}
    recipe = augment.imagenet_train(40)
    with ImageServer(photos) as server:
        rows = [(server.url(name), i) for i, name in enumerate(sorted(photos))]
        kwargs = dict(augment=recipe, seed=5, shuffle=False, deterministic=True)
        native = tfeed.image_dataset_from_urls(rows, batch_size=3, fetch_engine="native", **kwargs)
        single = tfeed.image_dataset_from_urls(rows, batch_size=None, fetch_engine="native", **kwargs)
        plan = make_plan(rows, batch_size=3, fetch_engine="python", **kwargs)
        graph_ops = local_dataset(plan, plan.selections[0], core=None)  # no kernels: the tail's graph ops
        assert "TfeedAffineMirror" in op_types(native) and "TfeedAffineMirror" in op_types(single)
        assert "TfeedAffineMirror" not in op_types(graph_ops)
        got = {int(y): x for xs, ys in native for x, y in zip(xs.numpy(), ys.numpy())}
        one_by_one = {int(y): x.numpy() for x, y in single}
        expected = {int(y): x for xs, ys in graph_ops for x, y in zip(xs.numpy(), ys.numpy())}
    assert sorted(got) == sorted(one_by_one) == sorted(expected) == list(range(len(rows)))
    for label, image in got.items():
        np.testing.assert_array_equal(image, one_by_one[label])  # batching does not change an image
        np.testing.assert_allclose(image, expected[label], rtol=1e-5, atol=1e-3)


def test_other_formats_fall_back_quietly_from_the_jpeg_crop(ops, capfd):
    # The pipeline tries the JPEG-only crop first; a PNG must fall back to the general
    # path without libjpeg's "Not a JPEG file" on stderr, and without a failure.
    rng = np.random.default_rng(3)
    bodies = {f"{i}.{fmt}": encode(rng.integers(0, 256, (50 + i, 60, 3), dtype=np.uint8), fmt.replace("jpg", "jpeg"))
              for i, fmt in enumerate(["png", "jpg", "webp", "png", "jpg", "bmp"])}
    with ImageServer(bodies) as server:
        ds = tfeed.image_dataset_from_urls([(server.url(name), 0) for name in bodies], augment=augment.imagenet_train(24),
                                           batch_size=3, seed=0, fetch_engine="native")
        assert sum(int(images.shape[0]) for images, _ in ds) == len(bodies)
    assert ds.stats.snapshot()["failed"] == 0
    assert "Not a JPEG" not in capfd.readouterr().err
