"""``image_dataset_from_urls``: validate -> plan -> wire the stages into one tf.data pipeline.

    source (from_generator) -> fetch (engine) -> decode (tf.image)
        -> augment -> batch (+ labels) -> account -> prefetch (to device)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

from tfeed import kernels
from tfeed.batching.progress import ProgressBar
from tfeed.batching.accounting import account
from tfeed.batching.stage import batch_with_labels, finish
from tfeed.config import FetchConfig
from tfeed.decoding.stage import decode
from tfeed.elements import URL_IN_REST
from tfeed.errors import ErrorPolicy
from tfeed.fetching.cache import DiskCache
from tfeed.fetching.stage import choose_fetch_stage
from tfeed.plan import Plan, attach, make_plan
from tfeed.resume import Position
from tfeed.service.dataset import service_datasets
from tfeed.single_device import single_device_functions
from tfeed.source.generator import Selection, UrlGenerator, url_dataset
from tfeed.stats import Stats

Augment = Callable[[tf.Tensor, tf.Tensor], tuple]


def image_dataset_from_urls(
        source,
        labels: Union[str, Sequence, None] = "inferred",
        label_mode: Optional[str] = "int",
        class_names: Optional[Sequence[str]] = None,
        batch_size: Optional[int] = 32,
        image_size: Optional[Sequence[int]] = None,
        shuffle: bool = True,
        seed: Optional[int] = None,
        validation_split: Optional[float] = None,
        subset: Optional[str] = None,
        interpolation: str = "bilinear",
        crop_to_aspect_ratio: bool = False,
        pad_to_aspect_ratio: bool = False,
        *,
        augment: Optional[Augment] = None,
        url_column: str = "url",
        label_column: str = "label",
        num_shards: int = 1,
        shard_index: int = 0,
        input_context: Optional[tf.distribute.InputContext] = None,
        on_error: ErrorPolicy = "skip",
        deterministic: bool = False,
        fetch_config: Optional[FetchConfig] = None,
        num_parallel_calls: Optional[int] = None,
        shuffle_buffer_size: int = 100_000,
        prefetch_to_device: Optional[str] = None,
        cache_dir: Union[str, DiskCache, None] = None,
        resume_from: Union[str, Position, None] = None,
        progress: bool = False,
        autotune: bool = False,
        fetch_engine: str = "auto",
        service: Optional[str] = None,
        processing_mode: str = "distributed_epoch",
        job_name: Optional[str] = None,
        apply_exif_orientation: bool = True,
        alpha_background: Optional[Sequence[int]] = (255, 255, 255),
        staging_dir: Optional[str] = None,
):
    """A ``tf.data.Dataset`` of images downloaded from URLs, for ``model.fit``.

    Args:
      source: ``(url, label)`` pairs (or bare URLs) as a list/iterable, a
        zero-argument callable returning a fresh iterable (called each epoch),
        or a path to a URL list (``.txt``, ``.csv``, ``.tsv``, ``.jsonl``,
        ``.parquet``, optionally ``.gz``; see :mod:`tfeed.source.readers`).
      labels: ``"inferred"`` (from the source), ``None`` (no labels), or a list
        with one label per URL of the source.
      label_mode: ``"int"`` (int32 ``[B]``), ``"categorical"`` (float32
        ``[B, num_classes]``), ``"binary"`` (float32 ``[B, 1]``) or ``None``.
      class_names: the classes in index order; default: sorted string labels,
        or ``"0".."max"`` for integer labels.
      batch_size: examples per batch; ``None`` yields single examples.
      image_size: ``(height, width)`` of the float32 images (values 0-255);
        default ``(256, 256)``, or the size a :class:`tfeed.augment.Recipe`
        makes (a different explicit size is then a ValueError).
      shuffle / seed: reshuffle each epoch, reproducibly from ``seed``.
      validation_split / subset: fraction held out, split deterministically by
        ``hash(seed, url)``; ``subset`` is ``"training"``, ``"validation"`` or
        ``"both"`` (returns a ``(training, validation)`` tuple).
      interpolation / crop_to_aspect_ratio / pad_to_aspect_ratio: as in Keras.
      augment: a :mod:`tfeed.augment` preset or other Recipe (replaces decode
        + resize: e.g. ``imagenet_train(224)`` decodes only its JPEG crop), a
        tfeed.augment op (run after resizing), or any ``fn(image, label) ->
        (image, label)`` of graph ops (run after resizing), before batching.
        tfeed.augment ops draw from ``seed``, the epoch and the URL: the same
        seed gives the same augmented stream, each epoch new draws.
      url_column / label_column: column names in CSV, TSV, JSONL and Parquet.
      num_shards / shard_index / input_context: keep one shard of the URLs
        for multi-worker input; an ``InputContext`` sets both and the
        per-replica batch size.
      on_error: ``"skip"`` (count and continue), ``"raise"``, or a callable
        receiving each :class:`tfeed.Failure` (raise in it to stop).
      deterministic: keep source order (slower under uneven latency).
      fetch_config: a :class:`tfeed.FetchConfig` (concurrency, timeouts,
        retries, size cap, schemes).
      num_parallel_calls: decode parallelism; default: six per CPU core
        (:data:`DECODE_CALLS_PER_CORE`; downloads arrive in bursts: on 2
        cores, 12 calls gave 0.88x of the decode ceiling, 8 calls 0.87x,
        4 calls 0.82x, 2 calls 0.6x and autotune under 0.5x).
      shuffle_buffer_size: URLs held for shuffling; sources up to this size
        are fully permuted.
      prefetch_to_device: e.g. ``"/gpu:0"``, or ``"auto"`` for the first GPU
        when there is one.
      cache_dir: a directory (or a :class:`tfeed.DiskCache`) caching downloaded
        bytes across epochs, runs and processes; permanent failures (404, 410,
        not_image) are remembered for a day so dead URLs are not retried.
      resume_from: a :class:`tfeed.Position` or a path saved by
        ``tfeed.callbacks.SavePosition``: the first epoch continues where that
        run stopped, skipping the URLs it had consumed.  Needs the same source,
        seed and split/shard settings.
      progress: show a tqdm progress bar per epoch (stderr).
      fetch_engine: ``"native"`` (the libcurl op, GIL-free: compiled on first
        use, see :mod:`tfeed.kernels`), ``"python"`` (aiohttp on a background
        loop: needed for ``gs://``-style schemes), or
        ``"auto"``: native when it loads and the settings allow, else Python.
      service / processing_mode / job_name: run fetch and decode on a tf.data
        service cluster (``"grpc://host:port"`` of ``tfeed service
        dispatcher``; needs the native op), ``processing_mode``
        ``"distributed_epoch"`` (each URL once) or ``"parallel_epochs"`` (once
        per worker); see :func:`tfeed.service.service_dataset` and docs/service.md.
      apply_exif_orientation: turn JPEGs upright per their EXIF Orientation
        tag (as browsers, Pillow's ``exif_transpose`` and OpenCV's ``imread``
        do; Keras's ``image_dataset_from_directory`` does not), in every
        path: plain decode, recipes' crops (drawn in the upright frame), the
        cache, both fetch engines, service workers.
      alpha_background: ``(r, g, b)`` that transparent pixels (RGBA or
        palette PNG, WebP, AVIF, ICO with alpha) are composited onto;
        ``None`` drops alpha (the colour stored under it shows).
      staging_dir: with ``service=``, where each epoch's URLs are written as
        shard files for the workers to read: a directory every worker can
        read (local path, shared mount, ``gs://...``); default a temporary
        directory (workers on this machine).  Deleted after each epoch.
      autotune: let tf.data's autotuner pick parallelism and buffer sizes.
        Off by default: with it on, the end of an epoch was seen to wait
        0.1-2.5 s for the autotuner's next tick, and throughput was lower.

    Returns:
      A dataset of ``(images, labels)`` (or ``images`` with ``label_mode=None``)
      with static shapes, and attributes ``class_names`` (list or None) and
      ``stats`` (:class:`tfeed.Stats`: live counts of delivered and failed
      URLs by reason).  ``subset="both"`` returns two such datasets.

    Raises:
      ValueError / TypeError for invalid arguments (checked before any
      download); FileNotFoundError for a missing URL list.
    """
    plan = make_plan(source, labels, label_mode, class_names, batch_size, image_size, shuffle, seed,
                     validation_split, subset, interpolation, crop_to_aspect_ratio, pad_to_aspect_ratio,
                     augment=augment, url_column=url_column, label_column=label_column, num_shards=num_shards,
                     shard_index=shard_index, input_context=input_context, on_error=on_error,
                     deterministic=deterministic, fetch_config=fetch_config, num_parallel_calls=num_parallel_calls,
                     shuffle_buffer_size=shuffle_buffer_size, prefetch_to_device=prefetch_to_device,
                     cache_dir=cache_dir, resume_from=resume_from, progress=progress, autotune=autotune,
                     fetch_engine=fetch_engine, service=service, processing_mode=processing_mode,
                     job_name=job_name, apply_exif_orientation=apply_exif_orientation,
                     alpha_background=alpha_background, staging_dir=staging_dir)
    # Functions without Grappler: each epoch's iterator starts sooner (see tfeed.single_device).
    with single_device_functions():
        if plan.service is not None:
            datasets = service_datasets(plan)
        else:
            core = kernels.load_core()
            datasets = tuple(local_dataset(plan, selection, core) for selection in plan.selections)
    return datasets if plan.both_subsets else datasets[0]


def local_dataset(plan: Plan, selection: Selection, core=None) -> tf.data.Dataset:
    """The pipeline of one subset, fetched and decoded in this process.

    ``core``: the pipeline's own kernels (:func:`tfeed.kernels.load_core`:
    error-catching decode, row removal, the delivery journal, the colour
    tail), whichever engine fetches; ``None`` builds the same pipeline from
    graph ops alone: decode errors skipped with ``ignore_errors``, delivery
    recorded by a ``py_function`` per batch, the colour tail as the recipe's
    ops (what happens where the kernels cannot be built).
    """
    stats = Stats()
    resume = plan.resume_from if selection.subset != "validation" else None
    generator = UrlGenerator(plan.factory, selection, plan.label_index, stats, shuffle=plan.shuffle, seed=plan.seed,
                             shuffle_buffer_size=plan.shuffle_buffer_size, resume_from=resume)
    options = dataclasses.replace(plan.decode_options, ops=core, load_ops=False)
    augmentation = plan.augment.with_ops(core, options)
    # Transcoded formats shrink to cover the output, unless a recipe crops while decoding.
    cover = tuple(plan.image_size) if augmentation.decode_hooks is None else None
    fetch_stage = choose_fetch_stage(plan.fetch_engine, plan.fetch_config, stats, plan.seed, plan.cache,
                                     on_error=plan.on_error, deterministic=plan.deterministic,
                                     transcode_cover=cover)
    if plan.progress:
        ProgressBar(stats, desc=selection.subset or "tfeed")
    dataset = (url_dataset(generator)
               .apply(fetch_stage.apply)
               .apply(augmentation.keys(resume.epoch if resume is not None else 0))
               .apply(decode(plan.image_size, interpolation=plan.interpolation,
                             crop_to_aspect_ratio=plan.crop_to_aspect_ratio,
                             pad_to_aspect_ratio=plan.pad_to_aspect_ratio, skip_errors=plan.on_error != "raise",
                             isolate_errors=False, num_parallel_calls=plan.decode_calls,
                             deterministic=plan.deterministic, hooks=augmentation.decode_hooks,
                             mark_in=URL_IN_REST, ops=core, options=options)))
    dataset = batch_with_labels(dataset, plan.label_mode, max(plan.num_classes, 1), plan.batch_size,
                                augmentation.apply if augmentation.per_example else None)
    # Progress bars hear of each batch as it goes: the journal would tell them late.
    dataset = dataset.apply(augmentation.after_batch).apply(
        account(stats, ops=core, journal=core is not None and not plan.progress))
    dataset = finish(dataset, plan.prefetch_to_device, autotune=plan.autotune)
    return attach(dataset, plan, stats, fetch_stage.engine, fetch_stage.python_engine)
