"""``image_dataset_from_urls(..., service="grpc://host:port")``: the pipeline split across tf.data service.

    client: source -> split/shard -> labels -> URL and label tensors (one epoch)
    workers: from_tensor_slices -> shuffle -> native fetch -> decode or fallback   (graph only)
    workers: ... -> groups of TRANSFER_GROUP
    client: watchdog reader (counts reasons, detects lost workers) -> unbatch -> labels -> batch -> account -> prefetch

The workers run only graph ops (see :mod:`tfeed.service.graph`): they need
the native fetch op, so do the client (it builds the graph) and every
``tfeed service worker`` (it loads the op before serving).
"""

from __future__ import annotations

import hashlib
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfeed import errors
from tfeed.config import FetchConfig, check_choice
from tfeed.decoding import check_image_size
from tfeed.errors import resolve_policy
from tfeed.labels import encode_labels
from tfeed.readers import pair_factory
from tfeed.service.client import WatchdogReader
from tfeed.service.graph import epoch_dataset
from tfeed.single_device import keep_working
from tfeed.source import NO_LABEL, LabelIndex, Selection, resolve_labels
from tfeed.stats import Stats

PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")
DEFAULT_STALL_TIMEOUT = 30.0
DEFAULT_IMAGE_SIZE = (256, 256)
# Elements are decoded images: snappy gains little on them and costs CPU on both sides.
COMPRESSION = None
# Workers send groups of this many examples: one gRPC element and one Python step per group, not per image.
TRANSFER_GROUP = 16


class NativeOpMissingError(RuntimeError):
    """Service mode needs the native fetch op, which could not be built or loaded."""


def service_dataset(source, *, service: str, processing_mode: str = "distributed_epoch",
                    job_name: Optional[str] = None, stall_timeout: float = DEFAULT_STALL_TIMEOUT,
                    labels="inferred", label_mode: Optional[str] = "int", class_names: Optional[Sequence[str]] = None,
                    batch_size: Optional[int] = 32, image_size: Optional[Sequence[int]] = None, shuffle: bool = True,
                    seed: int = 0, validation_split: Optional[float] = None, subset: Optional[str] = None,
                    interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                    pad_to_aspect_ratio: bool = False, url_column: str = "url", label_column: str = "label",
                    num_shards: int = 1, shard_index: int = 0, on_error="skip", deterministic: bool = False,
                    fetch_config: Optional[FetchConfig] = None, num_parallel_calls: Optional[int] = None,
                    prefetch_to_device: Optional[str] = None, progress: bool = False, autotune: bool = False,
                    augment=None, cache_dir=None, resume_from=None, fetch_engine: str = "auto"):
    """The arguments of :func:`tfeed.image_dataset_from_urls`, run on the tf.data
    service at ``service``; see there, and ``docs/service.md``.

    ``processing_mode``: ``"distributed_epoch"`` (each URL goes to one worker:
    every URL once per epoch) or ``"parallel_epochs"`` (every worker runs the
    whole epoch: each URL once per worker).  ``job_name``: trainers passing
    the same name share each epoch's job (its name gets ``-epoch<N>``); each
    trainer's stats then count only what it received, and no URL is counted
    as ``lost`` (a trainer cannot tell another's share from a lost one).
    ``stall_timeout``: seconds without an element after which the epoch ends
    and the URLs not yet seen count as ``lost``.

    Raises NativeOpMissingError when the native fetch op is unavailable, and
    ValueError for options service mode does not support (``augment``,
    ``cache_dir``, ``resume_from``, ``deterministic``, ``fetch_engine="python"``).
    """
    check_choice("processing_mode", processing_mode, PROCESSING_MODES)
    if not isinstance(service, str) or not service:
        raise ValueError(f'service must be a dispatcher address such as "grpc://host:5050", got {service!r}')
    unsupported = {"augment": augment is not None, "cache_dir": cache_dir is not None,
                   "resume_from": resume_from is not None, "deterministic": bool(deterministic),
                   'fetch_engine="python"': fetch_engine == "python"}
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise ValueError(f"service= does not support {', '.join(named)} (workers run the native op, graph only)")
    if not stall_timeout > 0:
        raise ValueError(f"stall_timeout must be > 0 seconds, got {stall_timeout!r}")
    handle = resolve_policy(on_error)
    image_size = check_image_size(image_size if image_size is not None else DEFAULT_IMAGE_SIZE)
    config = fetch_config or FetchConfig()
    ops = require_native()
    from tfeed.native.stage import fetch_kwargs

    fetch_kwargs(config)  # ValueError now for schemes the op cannot read

    factory = pair_factory(source, url_column=url_column, label_column=label_column)
    factory, label_index = resolve_labels(factory, labels, class_names)
    if label_index is None:
        label_mode = None
    num_classes = len(label_index) if label_index is not None else 0
    encode_labels(label_mode, num_classes)  # validates label_mode against the classes

    subsets = ("training", "validation") if subset == "both" else (subset,)
    datasets = []
    for name in subsets:
        selection = Selection(validation_split, name, seed, num_shards, shard_index)
        urls, indices, invalid = read_selection(factory, selection, label_index)
        stats = Stats()
        settings = dict(fetch_config=config, image_size=image_size, shuffle=shuffle, interpolation=interpolation,
                        crop_to_aspect_ratio=crop_to_aspect_ratio, pad_to_aspect_ratio=pad_to_aspect_ratio,
                        num_parallel_calls=num_parallel_calls, ops=ops)
        make = _distributed_epochs(urls, indices, settings, seed, service, processing_mode,
                                   f"{job_name}-{name}" if job_name and name else job_name)
        reader = WatchdogReader(make, list(urls), stats, handle, stall_timeout=stall_timeout, invalid=invalid,
                                shared=job_name is not None)
        dataset = tf.data.Dataset.from_generator(reader, output_signature=(
            tf.TensorSpec([None, *image_size, 3], tf.float32), tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.string))).unbatch()
        datasets.append(_client_stages(dataset, stats, max(num_classes, 1), label_mode, batch_size, prefetch_to_device,
                                       autotune, progress, name, label_index))
    return tuple(datasets) if subset == "both" else datasets[0]


def require_native():
    """The native op module, or NativeOpMissingError saying what is missing."""
    from tfeed import native
    from tfeed.native import build

    ops = native.load()
    if ops is not None:
        return ops
    try:
        build.build()
        reason = "it built but did not load (see the warning above)"
    except build.BuildError as exc:
        reason = str(exc)
    raise NativeOpMissingError(
        "service= needs tfeed's native fetch op (tf.data service workers cannot run the Python engine), "
        f"and it is unavailable: {reason}. Install a C++ compiler and libcurl headers "
        f"({build.INSTALL_HINT}), then run python -m tfeed.native.build; without service= tfeed falls "
        "back to the Python engine.")


def read_selection(factory, selection: Selection, label_index: Optional[LabelIndex]
                   ) -> Tuple[np.ndarray, np.ndarray, Tuple[errors.Failure, ...]]:
    """``(urls, class indices, invalid-label failures)`` of the selected pairs, read on the client."""
    urls: List[str] = []
    indices: List[int] = []
    invalid: List[errors.Failure] = []
    for url, label in selection.select(factory()):
        if label_index is None:
            index = NO_LABEL
        else:
            index = label_index.encode(label)
            if index is None:
                invalid.append(errors.Failure(url, errors.INVALID_LABEL, f"label {label!r} is not a class"))
                continue
        urls.append(url)
        indices.append(index)
    return np.array(urls, dtype=object), np.array(indices, dtype=np.int64), tuple(invalid)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of ``epoch``: a new order each epoch, reproducible from ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31)


def _distributed_epochs(urls, indices, settings, seed, service, processing_mode, job_name):
    options = keep_working(tf.data.Options())
    options.threading.private_threadpool_size = 2 * (os.cpu_count() or 2) + 8
    options.autotune.enabled = False

    def make(epoch: int) -> tf.data.Dataset:
        worker_side = (epoch_dataset(urls, indices, seed=epoch_seed(seed, epoch), **settings)
                       .batch(TRANSFER_GROUP).with_options(options))
        return worker_side.apply(tf.data.experimental.service.distribute(
            processing_mode, service, job_name=f"{job_name}-epoch{epoch}" if job_name else None,
            compression=COMPRESSION))

    return make


def _client_stages(dataset, stats, num_classes, label_mode, batch_size, prefetch_to_device, autotune, progress,
                   name, label_index):
    from tfeed.accounting import account
    from tfeed.pipeline import batch_with_labels, finish
    from tfeed.progress import ProgressBar

    dataset = batch_with_labels(dataset, label_mode, num_classes, batch_size)
    dataset = finish(dataset.apply(account(stats)), prefetch_to_device, autotune=autotune)
    if progress:
        ProgressBar(stats, desc=name or "tfeed")
    dataset.class_names = list(label_index.class_names) if label_index is not None else None
    dataset.stats = stats
    dataset.fetch_engine = "service"
    return dataset
