"""Trainer (receiver): read the sender's batches from tf.data service and measure images/s.

The seed's receiver was ``RemoteDataZMQ`` + ``TestDataSpeed``; this one reads the
dataset that ``distributed_sender.py`` registered, with ``from_dataset_id``::

    python examples/distributed_receiver.py grpc://localhost:5050 --batches 200

Prints one JSON line: images received, images/s, batch shape, labels seen.
Feed the same dataset to ``model.fit`` to train on it.
"""

import argparse
import collections
import json
import os
import sys
import threading
import time

import tensorflow as tf

DATASET_ID = "tfeed-images"  # as in distributed_sender.py


def open_dataset(service, image_size, wait_s):
    """The registered dataset; retries while the sender is still starting."""
    spec = (tf.TensorSpec([None, image_size, image_size, 3], tf.float32), tf.TensorSpec([None], tf.int32))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            dataset = tf.data.experimental.service.from_dataset_id(
                "parallel_epochs", service, dataset_id=DATASET_ID, element_spec=spec)
            iterator = iter(dataset)
            return iterator, next(iterator)
        except (tf.errors.NotFoundError, tf.errors.UnavailableError, tf.errors.DeadlineExceededError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class Watchdog:
    """Ends the process (status 1) when no batch arrives for ``seconds``: a tf.data
    service client otherwise waits forever for a sender that stopped producing."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.last = time.monotonic()
        threading.Thread(target=self._watch, daemon=True).start()

    def tick(self):
        self.last = time.monotonic()

    def _watch(self):
        while True:
            time.sleep(1.0)
            if time.monotonic() - self.last > self.seconds:
                print(f"no batch for {self.seconds:.0f} s: giving up", file=sys.stderr, flush=True)
                os._exit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Read tfeed batches from tf.data service.")
    parser.add_argument("service", help="the sender's dispatcher, e.g. grpc://localhost:5050")
    parser.add_argument("--image-size", type=int, default=28, help="as given to the sender (default 28)")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--wait", type=float, default=90.0, help="seconds to wait for the sender (default 90)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="give up when no batch arrives for this many seconds (default 60)")
    args = parser.parse_args(argv)

    watchdog = Watchdog(args.wait + args.timeout)
    iterator, first = open_dataset(args.service, args.image_size, args.wait)
    watchdog.seconds = args.timeout
    watchdog.tick()
    start = time.perf_counter()
    labels = collections.Counter(first[1].numpy().tolist())
    images, shape = int(first[0].shape[0]), first[0].shape.as_list()
    for _ in range(args.batches - 1):
        batch, label = next(iterator)
        watchdog.tick()
        images += int(batch.shape[0])
        labels.update(label.numpy().tolist())
    seconds = time.perf_counter() - start
    print(json.dumps({"batches": args.batches, "images": images, "images_per_s": round(images / seconds, 1),
                      "batch_shape": shape, "labels": {str(k): v for k, v in sorted(labels.items())}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
