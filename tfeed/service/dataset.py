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
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfeed import errors, kernels
from tfeed.batching.progress import ProgressBar
from tfeed.batching.accounting import account
from tfeed.batching.stage import batch_with_labels, finish, pipeline_options
from tfeed.errors import resolve_policy
from tfeed.plan import Plan, attach, make_plan
from tfeed.service.client import WatchdogReader
from tfeed.service.graph import epoch_dataset
from tfeed.source.generator import LabelIndex, Selection, admit
from tfeed.stats import Stats

# Elements are decoded images: snappy gains little on them and costs CPU on both sides.
COMPRESSION = None
# Workers send groups of this many examples: one gRPC element and one Python step per group, not per image.
TRANSFER_GROUP = 16


class NativeOpMissingError(RuntimeError):
    """Service mode needs the native fetch op, which could not be built or loaded."""


def service_dataset(source, *, service: str, **arguments):
    """``tfeed.image_dataset_from_urls(source, service=service, **arguments)``;
    ``arguments`` may also hold ``stall_timeout`` (below).  See
    ``docs/service.md``.

    ``processing_mode``: ``"distributed_epoch"`` (each URL goes to one worker:
    every URL once per epoch) or ``"parallel_epochs"`` (every worker runs the
    whole epoch: each URL once per worker).  ``job_name``: trainers passing
    the same name share each epoch's job (its name gets ``-epoch<N>``); each
    trainer's stats then count only what it received, and no URL is counted
    as ``lost`` (a trainer cannot tell another's share from a lost one).
    ``stall_timeout``: seconds without an element after which the epoch ends
    and the URLs not yet seen count as ``lost`` (default 30).
    """
    plan = make_plan(source, service=service, **arguments)
    datasets = service_datasets(plan)
    return datasets if plan.both_subsets else datasets[0]


def service_datasets(plan: Plan) -> tuple:
    """One dataset per subset of ``plan`` (whose ``service`` is set), run on
    the tf.data service.

    Raises NativeOpMissingError when the native fetch op is unavailable, and
    ValueError for options service mode does not support (``augment``,
    ``cache_dir``, ``resume_from``, ``deterministic``, ``fetch_engine="python"``).
    """
    unsupported = {"augment": plan.augment.augment is not None, "cache_dir": plan.cache is not None,
                   "resume_from": plan.resume_from is not None, "deterministic": bool(plan.deterministic),
                   'fetch_engine="python"': plan.fetch_engine == "python"}
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise ValueError(f"service= does not support {', '.join(named)} (workers run the native op, graph only)")
    handle = resolve_policy(plan.on_error)
    ops = require_native()
    from tfeed.fetching.native import fetch_kwargs

    fetch_kwargs(plan.fetch_config)  # ValueError now for schemes the op cannot read
    settings = plan.service
    datasets = []
    for selection in plan.selections:
        name = selection.subset
        urls, indices, invalid = read_selection(plan.factory, selection, plan.label_index)
        stats = Stats()
        # Workers keep fixed windows: with adaptive ones a worker was seen to stop delivering
        # mid-epoch (the URLs counted lost), a fault not yet found; local pipelines adapt.
        worker_settings = dict(fetch_config=plan.fetch_config.replace(adaptive=False), image_size=plan.image_size,
                               shuffle=plan.shuffle,
                               interpolation=plan.interpolation, crop_to_aspect_ratio=plan.crop_to_aspect_ratio,
                               pad_to_aspect_ratio=plan.pad_to_aspect_ratio,
                               num_parallel_calls=plan.num_parallel_calls, ops=ops,
                               decode_options=plan.decode_options)
        job_name = f"{settings.job_name}-{name}" if settings.job_name and name else settings.job_name
        make = _distributed_epochs(urls, indices, worker_settings, plan.seed, settings.address,
                                   settings.processing_mode, job_name)
        reader = WatchdogReader(make, list(urls), stats, handle, stall_timeout=settings.stall_timeout,
                                invalid=invalid, shared=settings.job_name is not None)
        dataset = tf.data.Dataset.from_generator(reader, output_signature=(
            tf.TensorSpec([None, *plan.image_size, 3], tf.float32), tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.string))).unbatch()
        datasets.append(_client_stages(dataset, plan, stats, name))
    return tuple(datasets)


def require_native():
    """The native op module, or NativeOpMissingError saying what is missing."""
    from tfeed.kernels import build

    ops = kernels.load_fetch()
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
        f"({build.INSTALL_HINT}), then run python -m tfeed.kernels.build; without service= tfeed falls "
        "back to the Python engine.")


def read_selection(factory, selection: Selection, label_index: Optional[LabelIndex]
                   ) -> Tuple[np.ndarray, np.ndarray, Tuple[errors.Failure, ...]]:
    """``(urls, class indices, invalid-label failures)`` of the selected pairs, read on the client."""
    urls: List[str] = []
    indices: List[int] = []
    invalid: List[errors.Failure] = []
    for url, label in selection.select(factory()):
        url, index, failure = admit(url, label, label_index)
        if failure is not None:
            invalid.append(failure)
            continue
        urls.append(url)
        indices.append(index)
    return np.array(urls, dtype=object), np.array(indices, dtype=np.int64), tuple(invalid)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of ``epoch``: a new order each epoch, reproducible from ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31)


def _distributed_epochs(urls, indices, settings, seed, service, processing_mode, job_name):
    options = pipeline_options()

    def make(epoch: int) -> tf.data.Dataset:
        worker_side = (epoch_dataset(urls, indices, seed=epoch_seed(seed, epoch), **settings)
                       .batch(TRANSFER_GROUP).with_options(options))
        return worker_side.apply(tf.data.experimental.service.distribute(
            processing_mode, service, job_name=f"{job_name}-epoch{epoch}" if job_name else None,
            compression=COMPRESSION))

    return make


def _client_stages(dataset, plan: Plan, stats: Stats, name: Optional[str]) -> tf.data.Dataset:
    dataset = batch_with_labels(dataset, plan.label_mode, max(plan.num_classes, 1), plan.batch_size)
    dataset = finish(dataset.apply(account(stats)), plan.prefetch_to_device, autotune=plan.autotune)
    if plan.progress:
        ProgressBar(stats, desc=name or "tfeed")
    return attach(dataset, plan, stats, "service")
