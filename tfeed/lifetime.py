"""Objects that TensorFlow's dataset graphs call back into, held weakly by those graphs.

TensorFlow keeps every Python function that a dataset's graph calls
(``from_generator``, ``tf.py_function``) until the process ends: it ties them to
the outermost graph, which in eager mode is never freed.  Whatever such a function
references strongly outlives the dataset.  Measured before these references were
made weak: each dropped dataset kept its URL list (+32 MB of RSS per dataset of
200,000 URLs, six datasets in a row) and, on the Python engine, its fetch engine
(a loop thread and 19-20 open files per dataset).

So the dataset holds the object (an attribute of the dataset object, which the
datasets derived from it and every iterator over it hold in turn), and the
functions in its graph reach the object through :func:`held_by_dataset`
(:func:`generator_dataset` does both for ``from_generator``).  Long-lived
callbacks into a fetch engine (its event loop's, the stats' host table) go
through :func:`weak_method` for the same reason.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, TypeVar

import tensorflow as tf

T = TypeVar("T")


def held_by_dataset(obj: T, what: str) -> Callable[[], T]:
    """A function returning ``obj`` while anything else holds it.

    After ``obj`` is gone it raises RuntimeError naming ``what``: a graph outlived
    the dataset that owned ``obj`` (only a graph rebuilt without its Python
    dataset, such as a serialized copy, can still run then)."""
    ref = weakref.ref(obj)

    def reach() -> T:
        alive = ref()
        if alive is None:
            raise RuntimeError(f"tfeed: the {what} of this dataset was released with the dataset object that owned "
                               "it; keep the tfeed dataset (or one derived from it) alive while it is iterated")
        return alive

    return reach


def generator_dataset(generator: Callable, output_signature, what: str) -> tf.data.Dataset:
    """``tf.data.Dataset.from_generator(generator, output_signature=...)`` that holds
    ``generator`` while its graph reaches it through :func:`held_by_dataset`."""
    reach = held_by_dataset(generator, what)
    dataset = tf.data.Dataset.from_generator(lambda: reach()(), output_signature=output_signature)
    dataset._tfeed_generator = generator
    return dataset


def weak_method(method: Callable[[], T], otherwise: Any = None) -> Callable[[], T]:
    """A function calling the bound ``method`` while its object lives, else returning ``otherwise``."""
    ref = weakref.WeakMethod(method)

    def call():
        alive = ref()
        return alive() if alive is not None else otherwise

    return call
