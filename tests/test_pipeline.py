"""image_dataset_from_urls: shapes, labels, shuffling, splits, shards, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfeed
from helpers import collect, match_images

SIZE = (32, 32)


@pytest.fixture(scope="module")
def rows(server, small_images):
    names = sorted(small_images)
    return [(server.url(name), ["a", "b"][i % 2]) for i, name in enumerate(names)]


def _url_index(dataset, small_images):
    """Which source row each example came from, via exact pixels."""
    names = sorted(small_images)
    images = [image.numpy() for image, _ in dataset.unbatch()] if dataset.element_spec[0].shape.rank == 4 \
        else [image.numpy() for image, _ in dataset]
    return match_images(images, [small_images[n] for n in names], SIZE)


def test_batches_have_static_shapes_and_dtypes(rows):
    ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=8, seed=0)
    images_spec, labels_spec = ds.element_spec
    assert images_spec.shape.as_list() == [None, 32, 32, 3] and images_spec.dtype == tf.float32
    assert labels_spec.shape.as_list() == [None] and labels_spec.dtype == tf.int32
    sizes = [int(images.shape[0]) for images, _ in ds]
    assert sorted(sizes) == [8] * (len(rows) // 8) + ([len(rows) % 8] if len(rows) % 8 else [])
    for images, _ in ds.take(1):
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0


@pytest.mark.parametrize("mode,shape,dtype", [("int", [], tf.int32), ("categorical", [2], tf.float32),
                                               ("binary", [1], tf.float32)])
def test_label_modes(rows, mode, shape, dtype):
    ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=None, label_mode=mode,
                                       shuffle=False, deterministic=True)
    assert ds.element_spec[1].shape.as_list() == shape and ds.element_spec[1].dtype == dtype
    labels = [label.numpy() for _, label in ds]
    expected = [ds.class_names.index(label) for _, label in rows]
    if mode == "int":
        assert labels == expected
    elif mode == "categorical":
        assert [int(np.argmax(l)) for l in labels] == expected and all(l.sum() == 1 for l in labels)
    else:
        assert [int(l[0]) for l in labels] == expected


def test_label_mode_none_yields_images_only(rows):
    ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=4, label_mode=None)
    assert isinstance(ds.element_spec, tf.TensorSpec)
    assert sum(int(batch.shape[0]) for batch in ds) == len(rows)


def test_class_names_order_and_unknown_labels(rows, server, small_images):
    ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=None, class_names=["b", "a"],
                                       shuffle=False, deterministic=True)
    assert ds.class_names == ["b", "a"]
    assert [int(l) for _, l in ds] == [["b", "a"].index(label) for _, label in rows]
    odd = rows[:4] + [(server.url(sorted(small_images)[5]), "zebra")]
    ds = tfeed.image_dataset_from_urls(odd, image_size=SIZE, batch_size=None, class_names=["a", "b"])
    assert len(collect(ds)[0]) == 4
    assert ds.stats.snapshot()["failures"] == {"invalid_label": 1}


def test_integer_labels_give_numeric_class_names(server, small_images):
    pairs = [(server.url(n), i % 3) for i, n in enumerate(sorted(small_images)[:9])]
    ds = tfeed.image_dataset_from_urls(pairs, image_size=SIZE, label_mode="categorical", batch_size=None)
    assert ds.class_names == ["0", "1", "2"]
    assert ds.element_spec[1].shape.as_list() == [3]


def test_invalid_arguments_are_reported(rows):
    for kwargs, message in [({"label_mode": "sparse"}, "label_mode"), ({"image_size": (0, 3)}, "image_size"),
                            ({"interpolation": "fancy"}, "interpolation"), ({"on_error": "ignore"}, "on_error"),
                            ({"validation_split": 0.2}, "subset"), ({"subset": "training"}, "validation_split"),
                            ({"validation_split": 1.5, "subset": "training"}, "validation_split"),
                            ({"label_mode": "binary", "class_names": ["a", "b", "c"]}, "binary"),
                            ({"batch_size": 0}, "batch_size"), ({"fetch_engine": "curl"}, "fetch_engine"),
                            ({"crop_to_aspect_ratio": True, "pad_to_aspect_ratio": True}, "aspect")]:
        with pytest.raises(ValueError, match=message):
            tfeed.image_dataset_from_urls(rows, **kwargs)


def test_shuffle_is_reproducible_and_changes_each_epoch(rows, small_images):
    def epochs(seed):
        ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=None, shuffle=True, seed=seed,
                                           deterministic=True)
        return _url_index(ds, small_images), _url_index(ds, small_images)

    first, second = epochs(7)
    assert sorted(first) == list(range(len(rows))) and sorted(second) == sorted(first)
    assert first != second, "each epoch is reshuffled"
    assert epochs(7) == (first, second), "same seed, same order"
    assert epochs(8)[0] != first


def test_unshuffled_deterministic_keeps_source_order(rows, small_images):
    ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=5, shuffle=False, deterministic=True)
    assert _url_index(ds, small_images) == list(range(len(rows)))


def test_validation_split_is_disjoint_deterministic_and_complete(rows, small_images):
    kwargs = dict(image_size=SIZE, batch_size=None, validation_split=0.3, seed=3)
    train, val = tfeed.image_dataset_from_urls(rows, subset="both", **kwargs)
    train_ids, val_ids = set(_url_index(train, small_images)), set(_url_index(val, small_images))
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(range(len(rows)))
    assert 0 < len(val_ids) < len(rows) / 2
    again = tfeed.image_dataset_from_urls(rows, subset="validation", **kwargs)
    assert set(_url_index(again, small_images)) == val_ids
    assert train.class_names == val.class_names == ["a", "b"]


def test_shards_partition_the_urls(rows, small_images):
    seen = []
    for index in range(3):
        ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=None, num_shards=3, shard_index=index)
        seen.append(set(_url_index(ds, small_images)))
    assert set().union(*seen) == set(range(len(rows)))
    assert sum(len(s) for s in seen) == len(rows)
    with pytest.raises(ValueError, match="shard_index"):
        tfeed.image_dataset_from_urls(rows, num_shards=2, shard_index=2)


def test_input_context_sets_shard_and_per_replica_batch(rows, small_images):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=8, input_context=context, shuffle=False)
    sizes = [int(images.shape[0]) for images, _ in ds]
    assert max(sizes) == 4
    assert set(_url_index(ds, small_images)) == set(range(1, len(rows), 2))


def test_crop_and_pad_to_aspect_ratio(server, photos):
    name = "chelsea.jpg" if "chelsea.jpg" in photos else sorted(photos)[0]
    body = photos[name]
    original = tfeed.decode_image(tf.constant(body)).numpy()
    for kwargs in ({"crop_to_aspect_ratio": True}, {"pad_to_aspect_ratio": True}):
        ds = tfeed.image_dataset_from_urls([server.url(name)], labels=None, image_size=(40, 40), batch_size=None,
                                           **kwargs)
        (image,) = list(ds)
        assert image.shape == (40, 40, 3)
    # pad: a wide photo gets black bars top and bottom; crop: none
    ds = tfeed.image_dataset_from_urls([server.url(name)], labels=None, image_size=(40, 40), batch_size=None,
                                       pad_to_aspect_ratio=True)
    padded = next(iter(ds)).numpy()
    h, w = original.shape[:2]
    if w > h * 1.1:
        assert padded[0].max() == 0 and padded[-1].max() == 0


def test_mixed_good_and_bad_urls_yield_each_good_image_once(server, small_images):
    names = sorted(small_images)
    good = [(server.url(n), "x") for n in names]
    bad = [(server.url("nope.jpg"), "x"), (server.url(names[0], status=404), "x"),
           (server.url(names[1], html=1), "x"), ("http://127.0.0.1:9/closed.jpg", "x"),
           (server.url(names[5], corrupt=1), "x"), ("not a url", "x")]
    config = tfeed.FetchConfig(retries=1, backoff=0.01, deadline=5)
    ds = tfeed.image_dataset_from_urls(good + bad, image_size=SIZE, batch_size=7, fetch_config=config, seed=1)
    for _ in range(2):
        found = _url_index(ds, small_images)
        assert sorted(found) == list(range(len(names)))
    snap = ds.stats.snapshot()
    assert snap["delivered"] == 2 * len(names)
    assert snap["failures"] == {"http_404": 4, "not_image": 2, "connection": 2, "decode_error": 2, "invalid_url": 2}
    reasons = {(f.url, f.reason) for f in ds.stats.failed_urls(100)}
    assert (server.url(names[5], corrupt=1), "decode_error") in reasons
    assert ("not a url", "invalid_url") in reasons


def test_on_error_raise_and_callable(server, small_images):
    names = sorted(small_images)
    pairs = [(server.url(names[0]), "x"), (server.url("nope.jpg"), "x")]
    ds = tfeed.image_dataset_from_urls(pairs, image_size=SIZE, batch_size=None, on_error="raise")
    with pytest.raises(tf.errors.OpError, match="http_404"):
        list(ds)
    seen = []
    ds = tfeed.image_dataset_from_urls(pairs, image_size=SIZE, batch_size=None, on_error=seen.append)
    assert len(list(ds)) == 1
    assert [(f.url, f.reason) for f in seen] == [(server.url("nope.jpg"), "http_404")]


def test_abandoned_iterator_does_not_leak_into_next_epoch(rows, small_images):
    ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=None, seed=5)
    for _ in ds.take(3):
        pass
    assert sorted(_url_index(ds, small_images)) == list(range(len(rows)))


def test_errors_of_earlier_stages_are_never_swallowed(server, small_images, tmp_path):
    names = sorted(small_images)
    pairs = [(server.url(n), "x") for n in names[:20]] + [(server.url("nope.jpg"), "x")]

    def stop(failure):
        raise KeyError(f"stop at {failure.reason}")

    ds = tfeed.image_dataset_from_urls(pairs, image_size=SIZE, batch_size=4, on_error=stop)
    with pytest.raises(tf.errors.OpError, match="stop at http_404"):
        list(ds)
    path = tmp_path / "urls.jsonl"
    lines = [f'{{"url": "{server.url(n)}", "label": "x"}}' for n in names[:20]]
    path.write_text("\n".join(lines[:10] + ["{broken"] + lines[10:]) + "\n")
    with pytest.raises(ValueError, match="not JSON"):
        tfeed.image_dataset_from_urls(str(path), image_size=SIZE)  # the class-name pass reads it all
    ds = tfeed.image_dataset_from_urls(str(path), image_size=SIZE, class_names=["x"], batch_size=4)
    with pytest.raises(tf.errors.OpError, match="not JSON"):
        list(ds)
