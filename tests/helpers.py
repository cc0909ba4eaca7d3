"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import socket

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

import tfeed


def expected(body: bytes, size=(32, 32)) -> np.ndarray:
    """What the pipeline should produce for ``body``: decode + resize, float32."""
    return tfeed.resize_image(tfeed.decode_image(tf.constant(body)), size).numpy()


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dataset_functions(dataset: tf.data.Dataset) -> list:
    """The FunctionDefs in ``dataset``'s serialized graph (its stages' functions and theirs)."""
    return list(graph_pb2.GraphDef.FromString(dataset._as_serialized_graph().numpy()).library.function)
