"""Source stage: the Python generator of ``(url, label)`` behind ``from_generator``.

It encodes labels to class indices, keeps this dataset's share of the URLs
(validation split, then shard), and shuffles each epoch reproducibly::

    pairs --labels--> --split by hash(seed, url)--> --shard i of n--> --shuffle(seed, epoch)-->
        --groups of 32--> tf.data.Dataset.from_generator -> (urls: tf.string [n], labels: tf.int64 [n])

A URL whose label is not a known class is counted as ``invalid_label``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfeed import contract, errors, malloc, urls
from tfeed.lifetime import generator_dataset
from tfeed.source.labels import LabelIndex
from tfeed.source.readers import PairFactory
from tfeed.resume import Position, url_key
from tfeed.stats import Stats

NO_LABEL = -1
SUBSETS = ("training", "validation")


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which URLs one dataset takes.

    ``validation_split`` in (0, 1): a URL is in the validation subset when
    ``hash(split_seed, url)`` falls below it -- deterministic, never
    overlapping, stable when URLs are added; the fraction is exact only on
    average.  Then the ``shard_index``-th of every ``num_shards`` URLs is kept.
    """

    validation_split: Optional[float] = None
    subset: Optional[str] = None
    split_seed: int = 0
    num_shards: int = 1
    shard_index: int = 0

    def __post_init__(self):
        if self.validation_split is not None:
            if not 0 < self.validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {self.validation_split!r}")
            if self.subset not in SUBSETS:
                raise ValueError(f"with validation_split, subset must be one of {SUBSETS} (or 'both'), got {self.subset!r}")
        elif self.subset is not None:
            raise ValueError(f"subset={self.subset!r} needs validation_split")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"need 0 <= shard_index < num_shards, got {self.shard_index} of {self.num_shards}")

    def in_validation(self, url: str) -> bool:
        digest = hashlib.blake2b(f"{self.split_seed}\0{url}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "little") / 2.0**64 < self.validation_split

    def select(self, pairs: Iterator) -> Iterator:
        if self.validation_split is not None:
            want_validation = self.subset == "validation"
            pairs = (p for p in pairs if self.in_validation(p[0]) == want_validation)
        if self.num_shards > 1:
            pairs = itertools.islice(pairs, self.shard_index, None, self.num_shards)
        return pairs


def with_labels(factory: PairFactory, labels: Sequence) -> Tuple[PairFactory, int]:
    """Pair the source's URLs with an explicit ``labels`` list (one pass to
    check the lengths match; ValueError if not)."""
    labels = list(labels)
    count = sum(1 for _ in factory())
    if count != len(labels):
        raise ValueError(f"labels has {len(labels)} entries but the source has {count} URLs")
    return (lambda: ((url, label) for (url, _), label in zip(factory(), labels))), count


def resolve_labels(factory: PairFactory, labels, class_names: Optional[Sequence[str]]
                   ) -> Tuple[PairFactory, Optional[LabelIndex]]:
    """Apply the ``labels`` argument of ``image_dataset_from_urls``: ``None``
    (no labels: index None), ``"inferred"`` (from the source) or a list (one
    label per URL).  Returns the pair factory to read and the class index."""
    if labels is None:
        return factory, None
    if not isinstance(labels, str):
        factory, _ = with_labels(factory, labels)
    elif labels != "inferred":
        raise ValueError(f'labels must be "inferred", None or a list, got {labels!r}')
    label_index = LabelIndex(class_names) if class_names is not None else LabelIndex.infer(pair[1] for pair in factory())
    return factory, label_index


def shuffled(items: Iterator, rng: random.Random, buffer_size: int) -> Iterator:
    """Shuffle with a buffer of ``buffer_size``; a uniform permutation when the
    whole stream fits in the buffer."""
    buffer = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = rng.randrange(buffer_size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


class UrlGenerator:
    """Callable for ``from_generator``: each call is a new epoch's iterator
    over groups of ``(urls, class_indices)`` -- numpy vectors of up to
    ``group_size`` URLs, because each step of a Python generator costs tf.data
    GIL time that is better spent once per group (per URL: 13-15 us with
    groups of 32, 5 us with 256; :func:`url_dataset` cuts them to the fetch
    stage's size in C++).  An error
    reading the source is raised in the dataset's iterator (and recorded with
    :meth:`Stats.fail`)."""

    def __init__(self, factory: PairFactory, selection: Selection, label_index: Optional[LabelIndex],
                 stats: Stats, shuffle: bool, seed: int, shuffle_buffer_size: int, group_size: int = 256,
                 resume_from: Optional[Position] = None):
        self._factory, self._selection, self._labels = factory, selection, label_index
        self._stats, self._shuffle, self._seed = stats, shuffle, seed
        self._buffer_size, self._group_size = shuffle_buffer_size, group_size
        self._epochs = itertools.count(resume_from.epoch if resume_from is not None else 0)
        self._resume = resume_from

    def __call__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        epoch = next(self._epochs)
        malloc.restore_thresholds()  # from_generator's start has just frozen them at 128 KB (see tfeed.malloc)
        resume, self._resume = self._resume, None  # only the first epoch resumes
        skip = resume.skip_set() if resume is not None and len(resume.done) else None
        self._stats.begin_epoch(epoch, resume.done if resume is not None else None)
        pairs = self._selection.select(self._factory())
        if self._shuffle:
            pairs = shuffled(pairs, random.Random(f"{self._seed}:{epoch}"), self._buffer_size)
        try:
            yield from self._groups(pairs, skip)
        except Exception as exc:  # also reported at the end of the epoch
            self._stats.fail(exc)
            raise

    def _groups(self, pairs, skip) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        urls, labels = [], []
        for url, label in pairs:
            url, index, failure = admit(url, label, self._labels)
            if failure is not None:
                self._stats.record_failure(failure)
                continue
            if skip is not None and url_key(url) in skip:
                continue
            urls.append(url)
            labels.append(index)
            if len(urls) == self._group_size:
                yield np.array(urls, dtype=object), np.array(labels, dtype=np.int64)
                urls, labels = [], []
        if urls:
            yield np.array(urls, dtype=object), np.array(labels, dtype=np.int64)



def admit(url, label, label_index: Optional[LabelIndex]) -> Tuple[Optional[str], int, Optional[errors.Failure]]:
    """``(normalised url, class index, None)``, or ``(None, 0, failure)`` for a
    URL that is ``invalid_url`` (:func:`tfeed.urls.normalize`) or whose label
    names no class (``invalid_label``)."""
    normal, why = urls.normalize(url)
    if normal is None:
        return None, 0, errors.Failure(url if isinstance(url, str) else repr(url), errors.INVALID_URL, why)
    if label_index is None:
        return normal, NO_LABEL, None
    index = label_index.encode(label)
    if index is None:
        return None, 0, errors.Failure(normal, errors.INVALID_LABEL, f"label {label!r} is not a class")
    return normal, index, None


def url_dataset(generator: UrlGenerator, group_size: int = contract.GROUP_SIZE) -> tf.data.Dataset:
    """``from_generator`` over ``generator``: groups of
    ``(urls: tf.string [n], labels: tf.int64 [n])``, ``n <= group_size`` (the
    generator's larger groups are cut up by ``rebatch``); ``.unbatch()`` gives pairs.
    The dataset holds ``generator``; its graph reaches it weakly (:mod:`tfeed.lifetime`)."""
    signature = (tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64))
    return generator_dataset(generator, signature, "URL source").rebatch(group_size)
