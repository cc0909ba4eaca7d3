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
    "image_dataset_from_urls": "tfeed.api",
    "FetchConfig": "tfeed.config",
    "PRIVATE_NETWORKS": "tfeed.contract",
    "DEFAULT_DENY_NETWORKS": "tfeed.contract",
    "FetchEngine": "tfeed.fetching.python.engine",
    "Failure": "tfeed.errors",
    "FetchError": "tfeed.errors",
    "Stats": "tfeed.stats",
    "url_dataset": "tfeed.source.generator",
    "pair_factory": "tfeed.source.readers",
    "fetch": "tfeed.fetching.python.stage",
    "decode": "tfeed.decoding.stage",
    "decode_image": "tfeed.images",
    "resize_image": "tfeed.images",
    "decode_resized": "tfeed.upright",
    "decode_full": "tfeed.upright",
    "DecodeOptions": "tfeed.upright",
    "encode_labels": "tfeed.batching.labels",
    "account": "tfeed.batching.accounting",
    "DiskCache": "tfeed.fetching.cache",
    "Position": "tfeed.resume",
    "ProgressBar": "tfeed.batching.progress",
}
_SUBMODULES = {"augment": "tfeed.augment", "callbacks": "tfeed.app.callbacks", "datasets": "tfeed.datasets",
               "kernels": "tfeed.kernels", "service": "tfeed.service", "testing": "tfeed.testing", "viz": "tfeed.app.viz"}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'tfeed' has no attribute {name!r}")


def __dir__():
    return sorted([*__all__, *_SUBMODULES])
