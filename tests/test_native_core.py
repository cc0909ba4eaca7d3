"""The core kernels (tfeed.kernels.load_core, no libcurl needed): which op lives in which library,
TfeedTryCall (zeros and the error instead of failing, fallbacks in order), TfeedKeepRows and the
journal."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

from tfeed import kernels


def test_each_op_lives_in_exactly_one_library(ops, core_ops):
    def names(module):
        return {n for n in dir(module) if n.startswith("tfeed_") and not n.endswith("_eager_fallback")}

    assert names(ops) >= {"tfeed_fetch", "tfeed_fetch_pooled", "tfeed_cache_corrupt", "tfeed_curl_version"}
    assert names(core_ops) == {"tfeed_try_call", "tfeed_keep_rows", "tfeed_journal_append", "tfeed_journal_drain",
                           "tfeed_affine_mirror", "tfeed_image_header", "tfeed_orient", "tfeed_scale_plan"}
    assert not names(ops) & names(core_ops)  # no op registered twice
    assert kernels.load() is ops and kernels.load_fetch() is ops and kernels.load_core() is core_ops


def test_try_call_returns_zeros_and_the_error_instead_of_failing(core_ops, photos):
    good = photos["astronaut.jpg"]

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(body):
        return tf.cast(tf.image.resize(tf.io.decode_image(body, channels=3, expand_animations=False), (8, 8)),
                       tf.float32)

    def tried(body):
        (image,), ok, error = core_ops.tfeed_try_call([body], Tout=[tf.float32], output_shapes=[[8, 8, 3]],
                                                 f=decode.get_concrete_function())
        return image, ok, error

    batches = list(tf.data.Dataset.from_tensor_slices([good, b"not an image", good[:60]])
                   .map(tried, num_parallel_calls=2).batch(3))
    (images, ok, error), = batches  # a failing element does not fail the batch
    assert ok.numpy().tolist() == [True, False, False]
    np.testing.assert_allclose(images[0].numpy(), decode(tf.constant(good)).numpy())
    assert not images[1:].numpy().any()
    assert error[0] == b"" and b"image" in error[1].numpy().lower() and b"\n" not in error[1].numpy()


def test_try_call_falls_back_in_order_and_reports_the_last_error(core_ops, photos, small_images):
    jpeg, png = photos["astronaut.jpg"], small_images["img01.png"]
    spec = [tf.TensorSpec([], tf.string)]

    @tf.function(input_signature=spec)
    def jpeg_only(body):  # fails on anything but a JPEG (decode_jpeg itself would read a PNG)
        height, width = tf.unstack(tf.image.extract_jpeg_shape(body)[:2])
        whole = tf.image.decode_and_crop_jpeg(body, tf.stack([0, 0, height, width]), channels=3)
        return tf.image.resize(whole, (8, 8)) + 1000.0

    @tf.function(input_signature=spec)
    def any_format(body):
        return tf.image.resize(tf.io.decode_image(body, channels=3, expand_animations=False), (8, 8))

    def tried(body):
        (image,), ok, error = core_ops.tfeed_try_call(
            [body], Tout=[tf.float32], output_shapes=[[8, 8, 3]], f=jpeg_only.get_concrete_function(),
            fallbacks=[any_format.get_concrete_function()])
        return image, ok, error

    (images, ok, error), = list(tf.data.Dataset.from_tensor_slices([jpeg, png, b"neither"]).map(tried).batch(3))
    assert ok.numpy().tolist() == [True, True, False]
    assert images[0].numpy().min() >= 1000.0  # the JPEG took the first function
    np.testing.assert_allclose(images[1].numpy(), any_format(tf.constant(png)).numpy())  # the PNG, the fallback
    assert not images[2].numpy().any()
    assert b"unknown image file format" in error[2].numpy().lower()  # the last one tried: decode_image


def test_keep_rows_forwards_or_drops_rows(core_ops):
    floats = tf.reshape(tf.range(12, dtype=tf.float32), [3, 2, 2])
    strings = tf.constant(["a", "b", "c"])
    kept = core_ops.tfeed_keep_rows([True, True, True], [floats, strings])
    assert kept[0].numpy().tolist() == floats.numpy().tolist() and kept[1].numpy().tolist() == [b"a", b"b", b"c"]
    kept = core_ops.tfeed_keep_rows([True, False, True], [floats, strings])
    np.testing.assert_array_equal(kept[0].numpy(), floats.numpy()[[0, 2]])
    assert kept[1].numpy().tolist() == [b"a", b"c"]
    assert [t.shape[0] for t in core_ops.tfeed_keep_rows([False] * 3, [floats, strings])] == [0, 0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="rows"):
        core_ops.tfeed_keep_rows([True, False], [floats])


def test_journal_keeps_batches_in_order_until_drained(core_ops):
    before = time.monotonic()
    core_ops.tfeed_journal_append(tf.constant(["a", "b"]), journal="test-journal")
    core_ops.tfeed_journal_append(tf.constant(["c"]), journal="test-journal")
    core_ops.tfeed_journal_append(tf.constant(["x"]), journal="another-journal")
    urls, sizes, first_time = core_ops.tfeed_journal_drain(journal="test-journal")
    assert urls.numpy().tolist() == [b"a", b"b", b"c"] and sizes.numpy().tolist() == [2, 1]
    assert before <= float(first_time) <= time.monotonic()  # the clock of Python's time.monotonic()
    urls, sizes, first_time = core_ops.tfeed_journal_drain(journal="test-journal")
    assert urls.shape == (0,) and sizes.shape == (0,) and float(first_time) == -1
    assert core_ops.tfeed_journal_drain(journal="another-journal")[0].numpy().tolist() == [b"x"]
