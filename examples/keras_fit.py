"""Keras ``model.fit`` on images from URLs: the shortest complete use of tfeed.

    python examples/keras_fit.py urls.csv --image-size 128 --epochs 5   # columns url,label
    python examples/keras_fit.py --demo                                   # shapes served on 127.0.0.1

With ``--demo`` a local server serves generated circles, squares and triangles,
and a few URLs are broken on purpose (404s, a truncated body, an HTML page) to
show that they are skipped and counted, not fatal.  The last stdout line is a
JSON summary; ``--failures PNG`` draws the failed URLs with their reasons.
"""

import argparse
import json
import sys

import tensorflow as tf

import tfeed


def demo_server(n=600, size=64):
    """Generated shapes on an ImageServer; returns (server, pairs with a few broken URLs)."""
    from tfeed.testing import ImageServer, encode, synthetic_shapes
    from tfeed.testing.images import SHAPE_CLASSES

    images, labels = synthetic_shapes(n, size=size, seed=0)
    files = {f"{SHAPE_CLASSES[label]}/{i:05d}.png": encode(image, "png") for i, (image, label) in
             enumerate(zip(images, labels))}
    server = ImageServer(files, latency=0.03, jitter=0.01).start()
    pairs = [(server.url(name), name.split("/")[0]) for name in server.names]
    broken = [server.url("circle/missing.png"), server.url(server.names[0], status=404),
              server.url(server.names[1], truncate=0.5), server.url(server.names[2], html=1)]
    return server, pairs + [(url, "circle") for url in broken]


def small_cnn(image_size, classes):
    return tf.keras.Sequential([
        tf.keras.Input((image_size, image_size, 3)),
        tf.keras.layers.Rescaling(1 / 255),
        tf.keras.layers.Conv2D(16, 3, activation="relu"), tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Conv2D(32, 3, activation="relu"), tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Conv2D(64, 3, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(classes, activation="softmax"),
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a Keras model on (url, label) pairs with tfeed.")
    parser.add_argument("urls", nargs="?", help="URL list: .csv/.tsv (url,label), .txt (URL TAB label), .jsonl...")
    parser.add_argument("--demo", action="store_true", help="serve generated shapes locally instead")
    parser.add_argument("--demo-images", type=int, default=600, help="images served by --demo (default 600)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--failures", metavar="PNG", help="draw the failed URLs here")
    args = parser.parse_args(argv)
    if bool(args.urls) == bool(args.demo):
        parser.error("give a URL list or --demo")

    server, source = demo_server(args.demo_images) if args.demo else (None, args.urls)
    size = (args.image_size, args.image_size)
    train, val = tfeed.image_dataset_from_urls(source, image_size=size, batch_size=args.batch_size,
                                               validation_split=0.2, subset="both", seed=0)
    print(f"classes: {train.class_names}", flush=True)

    model = small_cnn(args.image_size, len(train.class_names))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, validation_data=val, epochs=args.epochs, verbose=2)

    stats = train.stats.snapshot()
    print(f"train feed: {stats['delivered']} images delivered, {stats['failed']} failed {stats['failures']}")
    for failure in train.stats.failed_urls(5):
        print(f"  {failure}")
    if args.failures:
        from tfeed.app import viz

        viz.save_figure(viz.failure_gallery(train.stats), args.failures)
    if server is not None:
        server.stop()
    print(json.dumps({"epochs": args.epochs, "val_accuracy": float(history.history["val_accuracy"][-1]),
                      "delivered": stats["delivered"], "failed": stats["failed"], "failures": stats["failures"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
