"""``image_dataset_from_urls``: the stages wired into one tf.data pipeline.

    source (from_generator) -> fetch (engine) -> decode (tf.image)
        -> labels -> augment -> batch -> account -> prefetch (to device)
"""

from __future__ import annotations

import os
import random
from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

from tfeed.accounting import account
from tfeed.augment.stage import plan as plan_augment
from tfeed.cache import DiskCache
from tfeed.config import FetchConfig, check_choice
from tfeed.decoding import decode
from tfeed.engine import FetchEngine
from tfeed.errors import ErrorPolicy, resolve_policy
from tfeed.fetching import fetch
from tfeed.labels import LABEL_MODES, encode_labels
from tfeed.progress import ProgressBar
from tfeed.readers import pair_factory
from tfeed.resume import Position
from tfeed.single_device import keep_working, single_device_functions
from tfeed.source import Selection, UrlGenerator, resolve_labels, url_dataset
from tfeed.stats import Stats

Augment = Callable[[tf.Tensor, tf.Tensor], tuple]
DECODE_CALLS_PER_CORE = 6  # default decode parallelism per CPU core (see num_parallel_calls)
URL_COLUMN = 1  # after fetch, elements are (body, label, url[, key]): the URL is rest[1] for decode


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
):
    """A ``tf.data.Dataset`` of images downloaded from URLs, for ``model.fit``.

    Args:
      source: ``(url, label)`` pairs (or bare URLs) as a list/iterable, a
        zero-argument callable returning a fresh iterable (called each epoch),
        or a path to a URL list (``.txt``, ``.csv``, ``.tsv``, ``.jsonl``,
        ``.parquet``, optionally ``.gz``; see :mod:`tfeed.readers`).
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
        use, see :mod:`tfeed.native`), ``"python"`` (aiohttp on a background
        loop: needed for a size-capped cache and ``gs://``-style schemes), or
        ``"auto"``: native when it loads and the settings allow, else Python.
      service / processing_mode / job_name: run fetch and decode on a tf.data
        service cluster (``"grpc://host:port"`` of ``tfeed service
        dispatcher``; needs the native op), ``processing_mode``
        ``"distributed_epoch"`` (each URL once) or ``"parallel_epochs"`` (once
        per worker); see :func:`tfeed.service.service_dataset` and docs/service.md.
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
    check_choice("label_mode", label_mode, LABEL_MODES)
    check_choice("fetch_engine", fetch_engine, FETCH_ENGINES)
    resolve_policy(on_error)
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if input_context is not None:
        num_shards, shard_index = input_context.num_input_pipelines, input_context.input_pipeline_id
        if batch_size is not None:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    if service is not None:
        from tfeed.service.dataset import service_dataset

        with single_device_functions():
            return service_dataset(
                source, service=service, processing_mode=processing_mode, job_name=job_name, labels=labels,
                label_mode=label_mode, class_names=class_names, batch_size=batch_size, image_size=image_size,
                shuffle=shuffle, seed=seed, validation_split=validation_split, subset=subset,
                interpolation=interpolation, crop_to_aspect_ratio=crop_to_aspect_ratio,
                pad_to_aspect_ratio=pad_to_aspect_ratio, url_column=url_column, label_column=label_column,
                num_shards=num_shards, shard_index=shard_index, on_error=on_error, deterministic=deterministic,
                fetch_config=fetch_config, num_parallel_calls=num_parallel_calls, prefetch_to_device=prefetch_to_device,
                progress=progress, autotune=autotune, augment=augment, cache_dir=cache_dir, resume_from=resume_from,
                fetch_engine=fetch_engine)
    planned = plan_augment(augment, image_size, seed, deterministic=deterministic,
                           crop_to_aspect_ratio=crop_to_aspect_ratio, pad_to_aspect_ratio=pad_to_aspect_ratio)
    image_size = planned.image_size
    subsets = ("training", "validation") if subset == "both" else (subset,)
    selections = [Selection(validation_split, name, seed, num_shards, shard_index) for name in subsets]

    cache = DiskCache(cache_dir) if isinstance(cache_dir, (str, os.PathLike)) else cache_dir
    if isinstance(resume_from, (str, os.PathLike)):
        resume_from = Position.load(os.fspath(resume_from))
    factory = pair_factory(source, url_column=url_column, label_column=label_column)
    factory, label_index = resolve_labels(factory, labels, class_names)
    if label_index is None:
        label_mode = None
    num_classes = len(label_index) if label_index is not None else 0
    encode_labels(label_mode, num_classes)  # validates label_mode against the classes

    decode_calls = num_parallel_calls or DECODE_CALLS_PER_CORE * (os.cpu_count() or 2)
    datasets = []
    # Functions without Grappler: each epoch's iterator starts ~35 ms sooner (see tfeed.single_device).
    with single_device_functions():
        for selection in selections:
            stats = Stats()
            generator_resume = resume_from if selection.subset != "validation" else None
            generator = UrlGenerator(factory, selection, label_index, stats, shuffle=shuffle, seed=seed,
                                     shuffle_buffer_size=shuffle_buffer_size, resume_from=generator_resume)
            fetch_stage, engine, ops = choose_fetch_stage(fetch_engine, fetch_config or FetchConfig(), stats, seed,
                                                          cache, on_error=on_error, deterministic=deterministic)
            augmentation = planned.with_ops(ops)
            if progress:
                ProgressBar(stats, desc=selection.subset or "tfeed")
            first_epoch = generator_resume.epoch if generator_resume is not None else 0
            dataset = (url_dataset(generator)
                       .apply(fetch_stage)
                       .apply(augmentation.keys(first_epoch))
                       .apply(decode(image_size, interpolation=interpolation, crop_to_aspect_ratio=crop_to_aspect_ratio,
                                     pad_to_aspect_ratio=pad_to_aspect_ratio, skip_errors=on_error != "raise",
                                     isolate_errors=False,
                                     num_parallel_calls=decode_calls,
                                     deterministic=deterministic, decoder=augmentation.decoder,
                                     jpeg_decoder=augmentation.jpeg_decoder,
                                     finisher=augmentation.finisher, mark_in=URL_COLUMN, ops=ops)))
            dataset = batch_with_labels(dataset, label_mode, max(num_classes, 1), batch_size,
                                        augmentation.apply if augmentation.per_example else None)
            # Progress bars hear of each batch as it goes: the journal would tell them late.
            dataset = dataset.apply(augmentation.after_batch).apply(
                account(stats, ops=ops, journal=ops is not None and not progress))
            dataset = finish(dataset, prefetch_to_device, autotune=autotune)
            dataset.class_names = list(label_index.class_names) if label_index is not None else None
            dataset.stats = stats
            dataset.fetch_engine = "python" if engine is not None else "native"
            dataset._tfeed_engine = engine  # keeps the Python engine alive as long as the dataset
            datasets.append(dataset)
    return tuple(datasets) if subset == "both" else datasets[0]


FETCH_ENGINES = ("auto", "native", "python")


def batch_with_labels(dataset: tf.data.Dataset, label_mode: Optional[str], num_classes: int,
                      batch_size: Optional[int], augment_stage: Optional[Callable] = None) -> tf.data.Dataset:
    """``(image, index, *rest)`` examples -> batches of ``(image[, label], *rest)``.

    Labels are encoded once per batch, not per example (a sequential
    per-example map there cost 5-10% of throughput), unless ``augment_stage``
    (``Dataset -> Dataset`` over ``(image, label, *rest)``) must see them per
    example.
    """
    if augment_stage is not None:
        dataset = dataset.apply(encode_labels(label_mode or "int", num_classes)).apply(augment_stage)
    if batch_size is not None:
        dataset = dataset.batch(int(batch_size))
    if augment_stage is None:
        return dataset.apply(encode_labels(label_mode, num_classes))
    return dataset.map(lambda image, label, *rest: (image, *rest)) if label_mode is None else dataset


def choose_fetch_stage(choice: str, config: FetchConfig, stats: Stats, seed: int, cache: Optional[DiskCache], *,
                       on_error: ErrorPolicy, deterministic: bool):
    """``(stage, engine, ops)``: the native stage (engine None, ops the loaded
    op module) or the Python engine's (ops None)."""
    from tfeed import native
    from tfeed.native.stage import NATIVE_SCHEMES, fetch_native

    native_ok = {s.lower() for s in config.schemes} <= set(NATIVE_SCHEMES)
    if choice == "native" and not native_ok:
        raise ValueError(f"fetch_engine='native' cannot read schemes beyond {NATIVE_SCHEMES}; "
                         "use fetch_engine='python'")
    ops = native.load() if choice != "python" and native_ok else None
    if ops is None and choice == "native":
        raise RuntimeError("fetch_engine='native': the native fetch op is unavailable (see the warning above)")
    if ops is not None:
        return fetch_native(config, stats, on_error=on_error, deterministic=deterministic, ops=ops,
                            cache=cache), None, ops
    engine = FetchEngine(config, stats, seed=seed, cache=cache)
    return fetch(engine, on_error=on_error, deterministic=deterministic), engine, None


def finish(dataset: tf.data.Dataset, prefetch_to_device: Optional[str] = None, *,
           autotune: bool = False, buffer_batches: int = 2) -> tf.data.Dataset:
    """Options and the final prefetch of ``buffer_batches`` (onto
    ``prefetch_to_device`` if given).

    Blocking fetch calls run on a private thread pool sized so that decoding
    always has every core (tf.data's default pool has one thread per core).
    """
    options = keep_working(tf.data.Options())  # this ends with its own prefetch anyway
    options.threading.private_threadpool_size = 2 * (os.cpu_count() or 2) + 8
    options.autotune.enabled = autotune
    dataset = dataset.with_options(options)
    device = _resolve_device(prefetch_to_device)
    if device is not None:
        return dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_batches))
    return dataset.prefetch(tf.data.AUTOTUNE if autotune else buffer_batches)


def _resolve_device(prefetch_to_device: Optional[str]) -> Optional[str]:
    if prefetch_to_device != "auto":
        return prefetch_to_device
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else None
