"""``image_dataset_from_urls(..., service="grpc://host:port")``: the pipeline split across tf.data service.

    client: source -> split/shard -> labels -> shard files under staging_dir (streamed, a thread)
    workers: shard files (one split each) -> lines -> shuffle -> native fetch -> decode or fallback
             -> uint8 -> groups of TRANSFER_GROUP                                     (graph only)
    client: watchdog reader (per-shard books: reasons, lost) -> unbatch -> float32 -> labels -> batch
            -> account -> prefetch

The workers run only graph ops (see :mod:`tfeed.service.graph`): they need
the native fetch op, so do the client (it builds the graph) and every
``tfeed service worker`` (it loads the op before serving).
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from typing import List, Optional

import tensorflow as tf

from tfeed import kernels
from tfeed.batching.progress import ProgressBar
from tfeed.batching.accounting import account
from tfeed.batching.stage import batch_with_labels, finish, pipeline_options
from tfeed.errors import resolve_policy
from tfeed.lifetime import generator_dataset
from tfeed.plan import Plan, ServiceSettings, attach, make_plan
from tfeed.service.client import WatchdogReader
from tfeed.service.graph import epoch_dataset
from tfeed.service.staging import EpochStaging, RowOrder, StagingRoot, check_classes
from tfeed.stats import Stats

# Snappy on each element (tf.data service's "AUTO"): the uint8 pixels of web photos resized to
# 224 px shrink by about 14%, so an image crosses in fewer bytes than its pixels: 129,700-131,400
# against 150,528 (URL, tag and framing included), 150,590-151,140 uncompressed in groups of 16 or
# 64; about 0.24 ms of CPU per image to compress on the worker, 0.18 ms to uncompress on the
# client (benchmarks/bench_service.py; docs/service.md).
COMPRESSION = "AUTO"
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
    ``stall_timeout``: seconds without an element after which the job ends
    and the URLs of its shards not yet seen count as ``lost`` (default 30).
    ``staging_dir``: where each epoch's URLs are written as shard files for
    the workers (:mod:`tfeed.service.staging`); it must be readable by every
    worker; default a temporary directory (workers on this machine).

    Images travel as uint8 (the resized pixels rounded to integers) and are
    float32 again on the client: they equal the local pipeline's images
    rounded half to even.  ``image_dtype=tf.uint8`` (or ``"uint8"``) keeps
    them uint8 and leaves the conversion to the model (e.g. on the GPU),
    saving the trainer that work and 3/4 of the batch memory.
    """
    image_dtype = tf.dtypes.as_dtype(arguments.pop("image_dtype", tf.float32))
    if image_dtype not in (tf.float32, tf.uint8):
        raise ValueError(f"image_dtype must be float32 or uint8, got {image_dtype.name}")
    plan = make_plan(source, service=service, **arguments)
    datasets = service_datasets(plan, image_dtype)
    return datasets if plan.both_subsets else datasets[0]


def service_datasets(plan: Plan, image_dtype: tf.dtypes.DType = tf.float32) -> tuple:
    """One dataset per subset of ``plan`` (whose ``service`` is set), run on
    the tf.data service; images are ``image_dtype`` (float32 or uint8).

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
    check_classes(plan.num_classes)
    settings = plan.service
    shared = settings.job_name is not None  # trainers sharing a job: one job, one set of shard paths
    datasets = []
    for selection in plan.selections:
        name = selection.subset
        root = StagingRoot(*_staging_place(settings, name, plan.seed if plan.shuffle else None))
        stats = Stats()
        worker_settings = dict(fetch_config=plan.fetch_config, image_size=plan.image_size,
                               interpolation=plan.interpolation, crop_to_aspect_ratio=plan.crop_to_aspect_ratio,
                               pad_to_aspect_ratio=plan.pad_to_aspect_ratio,
                               num_parallel_calls=plan.num_parallel_calls, ops=ops,
                               decode_options=plan.decode_options)
        job_name = f"{settings.job_name}-{name}" if settings.job_name and name else settings.job_name
        make = _distributed_jobs(worker_settings, plan.shuffle, plan.seed, settings.address,
                                 settings.processing_mode, job_name)

        def stage(epoch: int, selection=selection, root=root) -> EpochStaging:
            order = RowOrder(epoch_seed(plan.seed, epoch), plan.shuffle_buffer_size) if plan.shuffle else None
            return EpochStaging(root.epoch_dir(epoch), plan.factory, selection, plan.label_index,
                                owned=_spent(root, epoch, shared), shuffle=order)

        reader = WatchdogReader(make, stage, stats, handle, stall_timeout=settings.stall_timeout, shared=shared)
        # (the reader's rows and staging root go with the dataset)
        dataset = generator_dataset(reader, (tf.TensorSpec([None, *plan.image_size, 3], tf.uint8),
                                             tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string)),
                                    "service reader")
        if image_dtype == tf.float32:  # per group of up to 16: one cast op per group, not per image
            dataset = dataset.map(_to_float, num_parallel_calls=2, deterministic=True)
        dataset = dataset.unbatch()
        datasets.append(_client_stages(dataset, plan, stats, name))
        datasets[-1]._tfeed_staging = root  # the staging directory lives as long as a dataset using it
    return tuple(datasets)


def _staging_place(settings: ServiceSettings, subset: Optional[str], seed: Optional[int]):
    """``(staging_dir, name)`` of a subset's staging root: trainers sharing a job name stage to the
    same paths (the job's graph must be the same for all), others to a directory of their own.
    ``seed``: the shuffle seed (None: no shuffle); trainers with another seed stage other rows into
    each shard, so they get paths of their own (and the dispatcher refuses their different graph)."""
    if settings.job_name is None:
        return settings.staging_dir, None
    order = "" if seed is None else f"-seed{seed}"
    return settings.staging_dir or tempfile.gettempdir(), f"tfeed-staging-{settings.job_name}-{subset or 'all'}{order}"


def _spent(root: StagingRoot, epoch: int, shared: bool) -> str:
    """What to delete when ``epoch`` ends: the whole root, or, for trainers sharing a job name, the
    previous epoch's shards only: another trainer may still be staging this epoch's (it writes the
    same files), and it finished the previous one before this epoch's job could end."""
    return root.epoch_dir(epoch - 1) if shared else root.path


def _to_float(images, labels, urls):
    return tf.cast(images, tf.float32), labels, urls


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


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of ``epoch``: a new order each epoch, reproducible from ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31)


def _distributed_jobs(settings, shuffle, seed, service, processing_mode, job_name):
    """``make(epoch, wave, paths)``: the distributed dataset of one job over shard files ``paths``,
    visited in an order drawn from ``(seed, epoch, wave)`` when ``shuffle``."""
    options = pipeline_options()

    def make(epoch: int, wave: int, paths: List[str]) -> tf.data.Dataset:
        order = list(paths)
        if shuffle:
            random.Random(epoch_seed(seed, epoch) + wave).shuffle(order)
        worker_side = (epoch_dataset(order, **settings)
                       .batch(TRANSFER_GROUP).with_options(options))
        name = f"{job_name}-epoch{epoch}" + (f"-wave{wave}" if wave else "") if job_name else None
        return worker_side.apply(tf.data.experimental.service.distribute(
            processing_mode, service, job_name=name, compression=COMPRESSION))

    return make


def _client_stages(dataset, plan: Plan, stats: Stats, name: Optional[str]) -> tf.data.Dataset:
    dataset = batch_with_labels(dataset, plan.label_mode, max(plan.num_classes, 1), plan.batch_size)
    dataset = finish(dataset.apply(account(stats)), plan.prefetch_to_device, autotune=plan.autotune)
    if plan.progress:
        ProgressBar(stats, desc=name or "tfeed")
    return attach(dataset, plan, stats, "service")
