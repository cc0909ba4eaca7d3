"""Preprocessor (sender): download and decode with tfeed, serve the batches over tf.data service.

The seed's sender pushed tensorpack batches to a trainer over ZeroMQ.  Here the
transport is TensorFlow's own tf.data service: this process runs a dispatcher
and a worker, and registers its tfeed dataset under a fixed id; trainers read it
with ``distributed_receiver.py`` (``from_dataset_id``), on this machine or another.

Why the worker runs *in this process*: tfeed downloads in Python
(``from_generator`` and ``py_function``), and such a dataset cannot be shipped
to a separate worker process -- its Python functions exist only here.  A
worker in the process that built the dataset finds them.  To scale out, run
one sender per machine (each with its own share of the URLs, e.g.
``num_shards``/``shard_index``), all registering with one dispatcher.

    python examples/distributed_sender.py urls.csv --port 5050            # your URL list
    python examples/distributed_sender.py --demo --port 5050              # served digits, no network
    python examples/distributed_receiver.py grpc://localhost:5050 --batches 200

The first stdout line is ``ready grpc://HOST:PORT``; SIGINT/SIGTERM stop it and
print the fetch statistics.
"""

import argparse
import json
import os
import signal
import sys
import threading

import tensorflow as tf

import tfeed

DATASET_ID = "tfeed-images"


def demo_server(n=1797):
    """An ImageServer of scikit-learn's handwritten digits (upscaled), labelled 0-9."""
    import cv2

    from tfeed.testing import ImageServer, digits, encode

    images, labels = digits()
    images, labels = images[:n], labels[:n]
    files = {f"{label}/{i:04d}.png": encode(cv2.resize(image, (28, 28), interpolation=cv2.INTER_LINEAR), "png")
             for i, (image, label) in enumerate(zip(images, labels))}
    return ImageServer(files, latency=0.02, jitter=0.01)


def augmentation(name, size):
    if name == "none":
        return None
    try:
        from tfeed.augment import get_preset
    except ImportError:
        print("tfeed.augment is not installed: sending without augmentation", file=sys.stderr)
        return None
    return get_preset(name, size)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve tfeed batches over tf.data service.")
    parser.add_argument("urls", nargs="?", help="URL list (.txt/.csv/.jsonl/.parquet) with labels")
    parser.add_argument("--demo", action="store_true", help="serve scikit-learn digits locally instead")
    parser.add_argument("--demo-images", type=int, default=1797, help="digits served by --demo (default all 1797)")
    parser.add_argument("--port", type=int, default=5050, help="dispatcher port (default 5050)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment", default="mnist_train", help="tfeed.augment preset or none (default mnist_train)")
    args = parser.parse_args(argv)
    if bool(args.urls) == bool(args.demo):
        parser.error("give a URL list or --demo")

    server = None
    source = args.urls
    if args.demo:
        server = demo_server(args.demo_images).start()
        source = [(server.url(name), name.split("/")[0]) for name in server.names]
    size = (args.image_size, args.image_size)
    dataset = tfeed.image_dataset_from_urls(source, image_size=size, batch_size=args.batch_size, seed=0,
                                            augment=augmentation(args.augment, args.image_size))
    stats = dataset.stats
    served = dataset.repeat()  # trainers decide how much to read

    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=args.port))
    address = dispatcher.target.split("://")[1]
    worker = service.WorkerServer(service.WorkerConfig(dispatcher_address=address, port=0))
    service.register_dataset(dispatcher.target, served, dataset_id=DATASET_ID)
    print(f"ready {dispatcher.target}", flush=True)
    print(f"dataset {DATASET_ID!r}: {json.dumps(spec_of(served))}; classes {dataset.class_names}", file=sys.stderr)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    snapshot = stats.snapshot()
    print(json.dumps({"delivered": snapshot["delivered"], "failed": snapshot["failed"],
                      "failures": snapshot["failures"]}), flush=True)
    if server is not None:
        server.stop()
    return exit_with_servers_running(dispatcher, worker)


def exit_with_servers_running(*servers):
    """End the process, which stops ``servers``.  Not ``WorkerServer.stop()``: it holds
    the GIL while it waits for the worker's task, and a task inside one of tfeed's
    ``py_function`` steps then waits for the GIL forever (seen in tests)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spec_of(dataset):
    """The element spec as JSON-able lists (the receiver must use the same)."""
    return [{"shape": spec.shape.as_list(), "dtype": spec.dtype.name} for spec in dataset.element_spec]


if __name__ == "__main__":
    sys.exit(main())
