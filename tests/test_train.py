"""A real Keras model.fit on scikit-learn's digits, served as PNGs over HTTP."""

from __future__ import annotations

import numpy as np
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
