"""tfeed: (image URL, label) pairs in, a fast ``tf.data.Dataset`` out.

    source -> fetch -> decode -> labels -> augment -> batch -> account -> prefetch

The high-level entry point is :func:`image_dataset_from_urls`; each stage is
also public as a ``Dataset -> Dataset`` function for ``ds.apply(...)``.
tensorflow-io is never imported here: it is an optional extra.
"""

from tfeed.accounting import account
from tfeed.cache import DiskCache
from tfeed.config import FetchConfig
from tfeed.decode import decode, decode_image, resize_image
from tfeed.engine import FetchEngine
from tfeed.errors import Failure, FetchError
from tfeed.fetch import fetch
from tfeed.labels import encode_labels
from tfeed.pipeline import image_dataset_from_urls
from tfeed.progress import ProgressBar
from tfeed.readers import pair_factory
from tfeed.resume import Position
from tfeed.source import url_dataset
from tfeed.stats import Stats

__version__ = "0.1.0"

__all__ = [
    "image_dataset_from_urls", "FetchConfig", "FetchEngine", "Failure", "FetchError", "Stats",
    "url_dataset", "pair_factory", "fetch", "decode", "decode_image", "resize_image",
    "encode_labels", "account", "DiskCache", "Position", "ProgressBar", "__version__",
]


def __getattr__(name):
    # tfeed.callbacks imports Keras; load it only when asked for.
    if name == "callbacks":
        import importlib

        return importlib.import_module("tfeed.callbacks")
    raise AttributeError(f"module 'tfeed' has no attribute {name!r}")
