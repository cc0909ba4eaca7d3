"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import itertools
import os
import socket
import threading

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

import tfeed
from tfeed import contract
from tfeed.fetching.native import fetch_kwargs


def expected(body: bytes, size=(32, 32)) -> np.ndarray:
    """What the pipeline should produce for ``body``: decode + resize, float32."""
    return tfeed.decode_resized(tf.constant(body), size).numpy()


def collect(dataset):
    """All elements of an unbatched (image, label) dataset as two lists."""
    images, labels = [], []
    for image, label in dataset:
        images.append(image.numpy())
        labels.append(label.numpy())
    return images, labels


def match_images(images, bodies, size=(32, 32)):
    """Index of the body each image came from (exact pixel match), in order."""
    references = [expected(body, size) for body in bodies]
    found = []
    for image in images:
        hits = [i for i, ref in enumerate(references) if np.array_equal(ref, image)]
        assert len(hits) == 1, f"image matches {len(hits)} references"
        found.append(hits[0])
    return found


def nginx_origin():
    """The NginxOrigin class; skips the test when no nginx binary is installed."""
    import pytest

    from tfeed.testing.nginx import NginxUnavailable, find_nginx
    from tfeed.testing.origin_nginx import NginxOrigin

    try:
        find_nginx()
    except NginxUnavailable as exc:
        pytest.skip(str(exc))
    return NginxOrigin


def loop_may_use_realtime() -> bool:
    """Whether a fetch loop (either engine) should run SCHED_FIFO here: ``TFEED_LOOP_REALTIME`` is not ``0`` and a
    thread of this process may switch itself to SCHED_FIFO (tried on a throwaway thread)."""
    if os.environ.get(contract.LOOP_REALTIME_SWITCH) == "0":
        return False
    allowed = []

    def attempt():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(os.sched_get_priority_min(os.SCHED_FIFO)))
            allowed.append(True)
        except OSError:
            allowed.append(False)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return allowed[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dataset_functions(dataset: tf.data.Dataset) -> list:
    """The FunctionDefs in ``dataset``'s serialized graph (its stages' functions and theirs)."""
    return list(graph_pb2.GraphDef.FromString(dataset._as_serialized_graph().numpy()).library.function)


# -- the native fetch op (tests/test_native*.py) --------------------------------------------------

# Fixed windows: the op tests pin the retry machinery (429/503 retried per URL); tests/test_adaptive.py
# covers adaptive windows.
FAST = tfeed.FetchConfig(retries=2, backoff=0.01, max_backoff=0.05, deadline=10, read_timeout=5, adaptive=False)
_unique = itertools.count()  # one counter for every test file: the ImageServer fixture is session-wide


def fetch(ops, urls, config=FAST, **attrs):
    """Run the op once; returns a list of (body, reason, attempts, detail)."""
    kwargs = {**fetch_kwargs(config), **attrs}
    bodies, reasons, attempts, details = ops.tfeed_fetch(tf.constant(urls, tf.string), **kwargs)
    return [(b, r.decode(), int(a), d.decode())
            for b, r, a, d in zip(bodies.numpy(), reasons.numpy(), attempts.numpy(), details.numpy())]


def fresh(server, name, **faults):
    """A URL no other test requested (``fail=K`` counts per exact URL)."""
    return server.url(name, n=next(_unique), **faults)


# -- tfeed.augment (tests/test_augment*.py) ------------------------------------------------------

def seed_of(i):
    return tf.constant([i, 12345], tf.int64)


def smooth_image(height=240, width=320, seed=0):
    """A smooth RGB uint8 image whose colours encode position (JPEG-friendly)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi)
    red = 255 * x / (width - 1)
    green = 255 * y / (height - 1)
    blue = 127.5 + 100 * np.sin(2 * np.pi * (x + y) / 90 + phase)
    return np.round(np.stack([red, green, blue], axis=-1)).astype(np.uint8)
