"""``python -m tfeed.app.demo``: serve generated images locally, feed and train.

Starts an :class:`~tfeed.testing.ImageServer` on 127.0.0.1 with generated
shape images (circle / square / triangle) and 50 ms of latency per request,
builds a dataset with :func:`tfeed.image_dataset_from_urls`, measures
throughput, then trains a small Keras CNN on it.  Needs no network.
"""

from __future__ import annotations

import argparse
import sys
import time

CLASSES = ("circle", "square", "triangle")


def run(num_images: int = 2000, image_size: int = 64, epochs: int = 10, latency: float = 0.05,
        out=sys.stdout) -> dict:
    """Run the demo; returns ``{"images_per_s", "val_accuracy", "stats"}``.

    Epochs after the first are read from a temporary download cache."""
    import tempfile

    import tensorflow as tf

    import tfeed
    from tfeed.testing import ImageServer, encode, synthetic_shapes

    images, labels = synthetic_shapes(num_images, size=image_size, seed=0)
    files = {f"{CLASSES[label]}/{i:05d}.png": encode(image, "png") for i, (image, label) in enumerate(zip(images, labels))}
    with ImageServer(files, latency=latency, jitter=latency / 5) as server, tempfile.TemporaryDirectory() as cache:
        pairs = [(server.url(name), name.split("/")[0]) for name in sorted(files)]
        print(f"serving {len(pairs)} images at {server.base_url} with {latency * 1000:.0f} ms latency", file=out)
        train, val = tfeed.image_dataset_from_urls(pairs, image_size=(image_size, image_size), batch_size=32,
                                                   validation_split=0.2, subset="both", seed=0, cache_dir=cache)
        start, count = time.perf_counter(), 0
        for batch, _ in train:
            count += int(batch.shape[0])
        rate = count / (time.perf_counter() - start)
        print(f"feed: {count} images in one epoch, {rate:.0f} images/s", file=out)

        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([
            tf.keras.Input((image_size, image_size, 3)),
            tf.keras.layers.Rescaling(1 / 255),
            tf.keras.layers.Conv2D(32, 3, activation="relu"), tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Conv2D(64, 3, activation="relu"), tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Conv2D(64, 3, activation="relu"), tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(len(train.class_names), activation="softmax"),
        ])
        model.compile(tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(train, validation_data=val, epochs=epochs, verbose=2,
                            callbacks=[tfeed.callbacks.FetchStats(train)])
        accuracy = float(history.history["val_accuracy"][-1])
    stats = train.stats.snapshot()
    print(f"validation accuracy after {epochs} epochs: {accuracy:.3f}", file=out)
    print(f"train stats: delivered={stats['delivered']} failed={stats['failed']} "
          f"cache_hits={stats['cache_hits']} retries={stats['retries']} MB={stats['bytes'] / 1e6:.1f}", file=out)
    return {"images_per_s": rate, "val_accuracy": accuracy, "stats": stats}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tfeed demo", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="number of generated images (default 2000)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--latency", type=float, default=0.05, help="server latency in seconds (default 0.05)")
    args = parser.parse_args(argv)
    run(num_images=args.images, epochs=args.epochs, latency=args.latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
