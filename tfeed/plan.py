"""The validated plan of one ``image_dataset_from_urls`` call, shared by the local and service paths.

:func:`make_plan` checks every argument once (ValueError / TypeError naming
what was received, before any download) and resolves defaults: the seed, the
image size, the splits, the label index, the cache and the resume position.
The wiring (:mod:`tfeed.api`, :mod:`tfeed.service.dataset`) then reads the
plan's fields and never re-validates.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Optional, Tuple

import tensorflow as tf

from tfeed.augment.stage import AugmentPlan, plan as plan_augment
from tfeed.batching.labels import LABEL_MODES, encode_labels
from tfeed.config import FetchConfig, check_choice
from tfeed.errors import ErrorPolicy, resolve_policy
from tfeed.fetching.cache import DiskCache
from tfeed.fetching.stage import FETCH_ENGINES
from tfeed.resume import Position
from tfeed.source.generator import LabelIndex, Selection, resolve_labels
from tfeed.source.readers import PairFactory, pair_factory
from tfeed.upright import DecodeOptions

DECODE_CALLS_PER_CORE = 6  # default decode parallelism per CPU core (see num_parallel_calls)
PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")
DEFAULT_STALL_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """Where and how a tf.data service runs the per-URL pipeline."""

    address: str
    processing_mode: str = "distributed_epoch"
    job_name: Optional[str] = None
    stall_timeout: float = 30.0  # seconds without an element before the job ends, the rest counted lost
    staging_dir: Optional[str] = None  # where the epoch's URL shards go (workers must read it); None: a temp dir


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every argument of :func:`tfeed.image_dataset_from_urls`, validated and resolved."""

    factory: PairFactory
    label_index: Optional[LabelIndex]
    label_mode: Optional[str]
    batch_size: Optional[int]
    augment: AugmentPlan
    selections: Tuple[Selection, ...]
    both_subsets: bool
    shuffle: bool
    seed: int
    shuffle_buffer_size: int
    interpolation: str
    crop_to_aspect_ratio: bool
    pad_to_aspect_ratio: bool
    on_error: ErrorPolicy
    deterministic: bool
    fetch_config: FetchConfig
    fetch_engine: str
    decode_calls: int
    num_parallel_calls: Optional[int]
    prefetch_to_device: Optional[str]
    cache: Optional[DiskCache]
    resume_from: Optional[Position]
    progress: bool
    autotune: bool
    service: Optional[ServiceSettings]
    decode_options: DecodeOptions = DecodeOptions()

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.augment.image_size

    @property
    def num_classes(self) -> int:
        """Classes of the label index (0 without labels)."""
        return len(self.label_index) if self.label_index is not None else 0

    @property
    def class_names(self) -> Optional[list]:
        return list(self.label_index.class_names) if self.label_index is not None else None


def make_plan(source, labels="inferred", label_mode="int", class_names=None, batch_size=32, image_size=None,
              shuffle=True, seed=None, validation_split=None, subset=None, interpolation="bilinear",
              crop_to_aspect_ratio=False, pad_to_aspect_ratio=False, *, augment=None, url_column="url",
              label_column="label", num_shards=1, shard_index=0, input_context=None, on_error="skip",
              deterministic=False, fetch_config=None, num_parallel_calls=None, shuffle_buffer_size=100_000,
              prefetch_to_device=None, cache_dir=None, resume_from=None, progress=False, autotune=False,
              fetch_engine="auto", service=None, processing_mode="distributed_epoch", job_name=None,
              stall_timeout=DEFAULT_STALL_TIMEOUT, apply_exif_orientation=True, alpha_background=(255, 255, 255),
              staging_dir=None) -> Plan:
    """The :class:`Plan` of these arguments (those of :func:`tfeed.image_dataset_from_urls`,
    with the same defaults, and ``stall_timeout`` of :func:`tfeed.service.service_dataset`)."""
    check_choice("label_mode", label_mode, LABEL_MODES)
    check_choice("fetch_engine", fetch_engine, FETCH_ENGINES)
    decode_options = DecodeOptions(apply_exif_orientation=bool(apply_exif_orientation),
                                   alpha_background=alpha_background)
    resolve_policy(on_error)
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if input_context is not None:
        num_shards, shard_index = input_context.num_input_pipelines, input_context.input_pipeline_id
        if batch_size is not None:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    augment_plan = plan_augment(augment, image_size, seed, deterministic=deterministic,
                                crop_to_aspect_ratio=crop_to_aspect_ratio, pad_to_aspect_ratio=pad_to_aspect_ratio)
    subsets = ("training", "validation") if subset == "both" else (subset,)
    selections = tuple(Selection(validation_split, name, seed, num_shards, shard_index) for name in subsets)
    factory = pair_factory(source, url_column=url_column, label_column=label_column)
    factory, label_index = resolve_labels(factory, labels, class_names)
    if label_index is None:
        label_mode = None
    encode_labels(label_mode, len(label_index) if label_index is not None else 0)  # label_mode vs the classes
    return Plan(
        factory=factory, label_index=label_index, label_mode=label_mode, batch_size=batch_size,
        augment=augment_plan, selections=selections, both_subsets=subset == "both", shuffle=shuffle, seed=seed,
        shuffle_buffer_size=shuffle_buffer_size, interpolation=interpolation,
        crop_to_aspect_ratio=crop_to_aspect_ratio, pad_to_aspect_ratio=pad_to_aspect_ratio, on_error=on_error,
        deterministic=deterministic, fetch_config=fetch_config or FetchConfig(), fetch_engine=fetch_engine,
        decode_calls=num_parallel_calls or DECODE_CALLS_PER_CORE * (os.cpu_count() or 2),
        num_parallel_calls=num_parallel_calls, prefetch_to_device=prefetch_to_device,
        cache=DiskCache(cache_dir) if isinstance(cache_dir, (str, os.PathLike)) else cache_dir,
        resume_from=Position.load(os.fspath(resume_from)) if isinstance(resume_from, (str, os.PathLike))
        else resume_from,
        progress=progress, autotune=autotune,
        service=_service_settings(service, processing_mode, job_name, stall_timeout, staging_dir),
        decode_options=decode_options)


def _service_settings(service, processing_mode, job_name, stall_timeout, staging_dir) -> Optional[ServiceSettings]:
    if service is None:
        return None
    check_choice("processing_mode", processing_mode, PROCESSING_MODES)
    if not isinstance(service, str) or not service:
        raise ValueError(f'service must be a dispatcher address such as "grpc://host:5050", got {service!r}')
    if not stall_timeout > 0:
        raise ValueError(f"stall_timeout must be > 0 seconds, got {stall_timeout!r}")
    if staging_dir is not None and not isinstance(staging_dir, (str, os.PathLike)):
        raise TypeError(f"staging_dir must be a path (local or tf.io.gfile, e.g. gs://...), got {staging_dir!r}")
    return ServiceSettings(service, processing_mode, job_name, float(stall_timeout),
                           os.fspath(staging_dir) if staging_dir is not None else None)


def attach(dataset: tf.data.Dataset, plan: Plan, stats, engine: str, keep_alive=None) -> tf.data.Dataset:
    """``dataset`` with the attributes users read: ``class_names``, ``stats``, ``fetch_engine``."""
    dataset.class_names = plan.class_names
    dataset.stats = stats
    dataset.fetch_engine = engine
    dataset._tfeed_engine = keep_alive  # keeps a Python engine alive as long as the dataset
    return dataset
