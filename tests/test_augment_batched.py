"""A Recipe's colour-and-flip tail per batch (tfeed.augment.batched and the
native TfeedAffineMirror kernel): the same images as per example."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfeed
from tfeed import augment
from tfeed.augment import randomness
from tfeed.augment.base import slices
from tfeed.augment.batched import batch_tail, tail_start
from tfeed.testing import ImageServer, encode, sample_photos

from helpers import dataset_functions


def reference(images, matrix, bias, mirror):
    """numpy: out[b, h, w] = matrix[b] @ images[b, h, w'] + bias[b], w' mirrored where mirror[b]."""
    flipped = np.where(mirror[:, None, None, None], images[:, :, ::-1], images)
    return np.einsum("bhwc,bdc->bhwd", flipped, matrix) + bias[:, None, None, :]


@pytest.mark.parametrize("shape", [(3, 4, 7, 3), (2, 3, 6, 3), (2, 2, 5, 1), (1, 1, 1, 3)])
def test_kernel_matches_the_formula(ops, shape):
    rng = np.random.default_rng(sum(shape))
    batch, channels = shape[0], shape[-1]
    images = rng.uniform(0, 255, shape).astype(np.float32)
    matrix = rng.normal(size=(batch, channels, channels)).astype(np.float32)
    bias = rng.normal(size=(batch, channels)).astype(np.float32)
    mirror = np.arange(batch) % 2 == 0
    got = ops.tfeed_affine_mirror(tf.constant(images), matrix, bias, mirror).numpy()
    np.testing.assert_allclose(got, reference(images, matrix, bias, mirror), rtol=1e-5, atol=1e-3)


def test_kernel_rejects_mismatched_shapes(ops):
    images = tf.zeros([2, 3, 4, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="matrix must be"):
        ops.tfeed_affine_mirror(images, tf.zeros([2, 2, 2]), tf.zeros([2, 3]), tf.zeros([2], tf.bool))
    with pytest.raises(tf.errors.InvalidArgumentError, match="mirror must be"):
        ops.tfeed_affine_mirror(images, tf.zeros([2, 3, 3]), tf.zeros([2, 3]), tf.zeros([3], tf.bool))
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be"):
        ops.tfeed_affine_mirror(tf.zeros([3, 4, 3]), tf.zeros([2, 3, 3]), tf.zeros([2, 3]), tf.zeros([2], tf.bool))


def test_tail_is_the_colour_and_flip_suffix():
    assert tail_start(augment.imagenet_train(32)) == 1  # crop, then jitter, lighting, flip
    assert tail_start(augment.imagenet_train(32, normalize=True)) == 1
    eval_ops = augment.imagenet_eval(32).ops
    assert tail_start(augment.imagenet_eval(32)) == len(eval_ops)  # ends with a crop: no tail
    assert tail_start(augment.imagenet_eval(32, normalize=True)) == len(eval_ops)  # Normalize only
    assert tail_start(augment.mnist_train()) == len(augment.mnist_train().ops)
    assert batch_tail(augment.mnist_train(), ops=None) is None


@pytest.mark.parametrize("normalize", [False, True])
def test_batch_tail_equals_the_recipe_per_example(ops, normalize):
    recipe = augment.imagenet_train(48, normalize=normalize)
    tail = batch_tail(recipe, ops)
    bodies = [encode(image, "jpeg") for image in sample_photos().values()]
    draws = [randomness.draw(tf.constant([i, 7], tf.int64), recipe.draws) for i in range(2 * len(bodies))]
    heads, expected = [], []
    for i, u in enumerate(draws):
        decoded = recipe.decode_drawn(tf.constant(bodies[i % len(bodies)]), u)
        heads.append(recipe.after_decode_drawn(decoded, u, tail_start(recipe)))
        expected.append(recipe.after_decode_drawn(decoded, u).numpy())
    got = tail(tf.stack(heads), tf.stack(draws)).numpy()
    scale = 0.05 if normalize else 1e-2  # float rounding of two orders of the same sums
    np.testing.assert_allclose(got, np.stack(expected), atol=scale)
    flip = next(i for i, op in enumerate(recipe.ops) if op.mirrors)
    mirrored = [bool(recipe.ops[flip].mirrored(slices(recipe.ops, u)[flip])) for u in draws]
    assert any(mirrored) and not all(mirrored)  # both branches were exercised


def op_types(dataset: tf.data.Dataset) -> set:
    return {node.op for function in dataset_functions(dataset) for node in function.node_def}


def test_pipeline_runs_the_tail_per_batch_with_the_same_images(ops):
    photos = {f"p{i}.jpg": encode(image, "jpeg") for i, image in enumerate(sample_photos().values())}
    recipe = augment.imagenet_train(40)
    with ImageServer(photos) as server:
        rows = [(server.url(name), i) for i, name in enumerate(sorted(photos))]
        kwargs = dict(augment=recipe, seed=5, shuffle=False, deterministic=True, fetch_engine="native")
        batched = tfeed.image_dataset_from_urls(rows, batch_size=3, **kwargs)
        single = tfeed.image_dataset_from_urls(rows, batch_size=None, **kwargs)
        assert "TfeedAffineMirror" in op_types(batched) and "TfeedAffineMirror" not in op_types(single)
        got = {int(y): x for xs, ys in batched for x, y in zip(xs.numpy(), ys.numpy())}
        one_by_one = {int(y): x.numpy() for x, y in single}
    assert sorted(got) == sorted(one_by_one) == list(range(len(rows)))
    for label, image in got.items():
        np.testing.assert_allclose(image, one_by_one[label], atol=1e-2)


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
