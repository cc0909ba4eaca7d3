"""tfeed: (image URL, label) pairs in, a fast ``tf.data.Dataset`` out.

    source -> fetch -> decode -> labels -> augment -> batch -> account -> prefetch

The high-level entry point is :func:`image_dataset_from_urls`; each stage is
also public as a ``Dataset -> Dataset`` function for ``ds.apply(...)``.

Names are imported on first use, so ``import tfeed`` (and ``tfeed --help``)
does not pay TensorFlow's start-up until a TensorFlow-backed name is used.
tensorflow-io is never imported here: it is an optional extra.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "image_dataset_from_urls": "tfeed.pipeline",
    "FetchConfig": "tfeed.config",
    "FetchEngine": "tfeed.engine",
    "Failure": "tfeed.errors",
    "FetchError": "tfeed.errors",
    "Stats": "tfeed.stats",
    "url_dataset": "tfeed.source",
    "pair_factory": "tfeed.readers",
    "fetch": "tfeed.fetching",
    "decode": "tfeed.decoding",
    "decode_image": "tfeed.decoding",
    "resize_image": "tfeed.decoding",
    "encode_labels": "tfeed.labels",
    "account": "tfeed.accounting",
    "DiskCache": "tfeed.cache",
    "Position": "tfeed.resume",
    "ProgressBar": "tfeed.progress",
}
_SUBMODULES = ("augment", "callbacks", "datasets", "native", "testing", "viz")

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"tfeed.{name}")
    raise AttributeError(f"module 'tfeed' has no attribute {name!r}")


def __dir__():
    return sorted([*__all__, *_SUBMODULES])
