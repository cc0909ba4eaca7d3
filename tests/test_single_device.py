"""tfeed.single_device: tf.data functions built inside the block skip Grappler
(they carry the single-device attribute); nothing else is touched."""

import threading

import tensorflow as tf

import tfeed
from tfeed.single_device import ATTRIBUTE, single_device_functions

from helpers import dataset_functions


def function_attributes(dataset: tf.data.Dataset) -> dict:
    """Function name -> whether it carries the attribute, from the dataset's graph."""
    return {f.signature.name: f.attr[ATTRIBUTE].b if ATTRIBUTE in f.attr else False
            for f in dataset_functions(dataset)}


def test_functions_built_inside_carry_the_attribute_and_still_run():
    with single_device_functions() as active:
        inside = tf.data.Dataset.range(4).map(lambda x: x * 2).filter(lambda x: x > 0)
    assert active
    outside = tf.data.Dataset.range(4).map(lambda x: x * 2)
    assert function_attributes(inside) and all(function_attributes(inside).values())
    assert function_attributes(outside) and not any(function_attributes(outside).values())
    assert list(inside.as_numpy_iterator()) == [2, 4, 6]


def test_other_threads_are_untouched():
    built = {}
    started, release = threading.Event(), threading.Event()

    def other():
        started.wait()
        built["other"] = tf.data.Dataset.range(2).map(lambda x: x + 1)
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with single_device_functions():
        started.set()
        release.wait(60)
    thread.join()
    assert not any(function_attributes(built["other"]).values())


def test_pipeline_functions_are_single_device(server, small_images):
    urls = [server.url(name) for name in sorted(small_images)[:3]]
    ds = tfeed.image_dataset_from_urls([(url, "a") for url in urls], image_size=(8, 8), batch_size=2, seed=0)
    # The dataset-level functions (those tf.data instantiates per iterator);
    # branches of tf.cond and the like are instantiated by their ops, without Grappler anyway.
    attributes = {name: on for name, on in function_attributes(ds).items() if "_Dataset_" in name}
    assert len(attributes) >= 8 and all(attributes.values()), attributes
    assert sum(int(images.shape[0]) for images, _ in ds) == 3


def test_autotune_pipelines_still_iterate(server, small_images):
    # tf.data's inject_prefetch rewrite fails on single-device functions returning an
    # int32 among several outputs (labels) once autotune is on; tfeed turns it off.
    rows = [(server.url(name), name[-3:]) for name in sorted(small_images)[:5]]
    tuned = tfeed.image_dataset_from_urls(rows, image_size=(8, 8), batch_size=2, seed=0, autotune=True)
    assert sum(int(labels.shape[0]) for _, labels in tuned) == 5
    options = tf.data.Options()
    options.autotune.enabled = True  # a caller switching autotune on afterwards
    later = tfeed.image_dataset_from_urls(rows, image_size=(8, 8), batch_size=2, seed=0).with_options(options)
    assert sum(int(labels.shape[0]) for _, labels in later) == 5


def test_a_callers_own_augment_function_keeps_the_default_build(server, small_images):
    rows = [(server.url(name), "a") for name in sorted(small_images)[:2]]

    def brighter(image, label):  # the caller's function: may use resources on other devices
        return image * 1.5, label

    ds = tfeed.image_dataset_from_urls(rows, image_size=(8, 8), batch_size=2, seed=0, augment=brighter)
    attributes = {name: on for name, on in function_attributes(ds).items() if "_Dataset_" in name}
    off = [name for name, on in attributes.items() if not on]
    assert len(off) == 1 and "map" in off[0], attributes  # only the map calling brighter
    assert len(attributes) - len(off) >= 8  # tfeed's own functions still are single-device
    with single_device_functions():
        with single_device_functions(enabled=False):
            nested = tf.data.Dataset.range(2).map(lambda x: x + 1)
    assert not any(function_attributes(nested).values())
