"""A real Keras model.fit on scikit-learn's digits, served as PNGs over HTTP."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfeed
from tfeed.testing import ImageServer, digits, encode


def test_model_fit_on_digits_reaches_90_percent():
    images, labels = digits()
    files = {f"{label}/{i:04d}.png": encode(image, "png") for i, (image, label) in enumerate(zip(images, labels))}
    with ImageServer(files, latency=0.005) as server:
        pairs = [(server.url(name), int(name.split("/")[0])) for name in files]
        train, val = tfeed.image_dataset_from_urls(pairs, image_size=(16, 16), batch_size=32, seed=1,
                                                   validation_split=0.2, subset="both")
        assert train.class_names == [str(d) for d in range(10)]
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([
            tf.keras.Input((16, 16, 3)),
            tf.keras.layers.Rescaling(1 / 255),
            tf.keras.layers.Conv2D(16, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(tf.keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(train, validation_data=val, epochs=6, verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.90, history.history
    train_count, val_count = train.stats.snapshot()["delivered"], val.stats.snapshot()["delivered"]
    # every epoch delivered every training image once, and the split is disjoint and complete
    assert train_count % 6 == 0 and val_count % 6 == 0
    assert train_count // 6 + val_count // 6 == len(files)
    assert 0.1 < (val_count // 6) / len(files) < 0.3
    assert train.stats.snapshot()["failed"] == 0 and np.isfinite(history.history["loss"][-1])


class _StepsPerEpoch(tf.keras.callbacks.Callback):
    """The training steps of each epoch of the last ``fit``."""

    def on_train_begin(self, logs=None):
        self.steps = []

    def on_epoch_begin(self, epoch, logs=None):
        self.steps.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.steps[-1] += 1


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_keras_fit_over_epochs_of_different_lengths():
    """Keras learns an epoch's length from the first one: when a later epoch is longer (failures
    that came and went), ``fit(ds)`` cuts it short, and ``fit(ds.repeat(), steps_per_epoch=...)``,
    as the README advises, trains tfeed's epochs back to back."""
    images, labels = digits()
    files = {f"{i:02d}.png": encode(image, "png") for i, image in enumerate(images[:64])}
    with ImageServer(files) as server:
        def build(attempt):  # the first 16 URLs answer 404 once: epoch 1 has 48 images, later ones 64
            urls = [server.url(name, fail=1, fail_status=404, attempt=attempt) if i < 16 else server.url(name)
                    for i, name in enumerate(sorted(files))]
            return tfeed.image_dataset_from_urls(list(zip(urls, labels[:64])), image_size=(8, 8), batch_size=8)

        model = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), tf.keras.layers.Flatten(),
                                     tf.keras.layers.Dense(10)])
        model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        counter = _StepsPerEpoch()
        plain = build(1)
        model.fit(plain, epochs=3, verbose=0, callbacks=[counter])
        cut = counter.steps
        repeated = build(2)
        model.fit(repeated.repeat(), steps_per_epoch=8, epochs=3, verbose=0, callbacks=[counter])
        whole = counter.steps
        delivered = repeated.stats.snapshot()["delivered"]
    assert plain.stats.snapshot()["delivered"] == 48 + 64 + 64
    assert cut[0] == 6 and sum(cut) < 6 + 8 + 8, cut  # Keras 3.15: [6, 7, 7], a batch of 8 images left out twice
    assert whole == [8, 8, 8]
    assert delivered >= 48 + 64 + 64 + 16  # 24 steps: tfeed's epochs 1-3 whole, then two batches of the 4th
