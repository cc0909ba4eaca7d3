"""Keras callbacks: fetch statistics in the training logs, and resumable epochs.

Imported on demand (``tfeed.app.callbacks``) so that ``import tfeed`` stays light.
"""

from __future__ import annotations

import time
from typing import Optional

import tensorflow as tf

from tfeed.stats import Stats


def _stats_of(dataset_or_stats) -> Stats:
    stats = getattr(dataset_or_stats, "stats", dataset_or_stats)
    if not isinstance(stats, Stats):
        raise TypeError("expected a tfeed dataset (with .stats) or a tfeed.Stats")
    return stats


class FetchStats(tf.keras.callbacks.Callback):
    """Adds each epoch's fetch statistics to the Keras logs (so ``History``
    and -- when listed before it -- ``TensorBoard`` record them):

    ``<prefix>images_per_s``, ``<prefix>mb_per_s``, ``<prefix>cache_hit_rate``
    (0-1), ``<prefix>failed`` and ``<prefix>failed_<reason>`` per reason,
    ``<prefix>throttled`` (429/503/refusals: the URL waited and went again),
    all for the epoch that just ended.
    """

    def __init__(self, dataset_or_stats, prefix: str = "fetch_"):
        super().__init__()
        self._stats = _stats_of(dataset_or_stats)
        self._prefix = prefix
        self._start = None
        self._before = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._before = time.monotonic(), self._stats.snapshot()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._before is None:
            return
        seconds = max(time.monotonic() - self._start, 1e-9)
        now, before, p = self._stats.snapshot(), self._before, self._prefix
        fetched = now["fetched"] - before["fetched"]
        logs[p + "images_per_s"] = (now["delivered"] - before["delivered"]) / seconds
        logs[p + "mb_per_s"] = (now["bytes"] - before["bytes"]) / 1e6 / seconds
        logs[p + "cache_hit_rate"] = (now["cache_hits"] - before["cache_hits"]) / fetched if fetched else 0.0
        logs[p + "failed"] = float(now["failed"] - before["failed"])
        logs[p + "throttled"] = float(now["throttled"] - before["throttled"])
        for reason, count in now["failures"].items():
            logs[f"{p}failed_{reason}"] = float(count - before["failures"].get(reason, 0))


class SavePosition(tf.keras.callbacks.Callback):
    """Saves the training dataset's :class:`~tfeed.resume.Position` to ``path``
    every ``save_freq`` batches and at each epoch end, counting only batches
    the model has consumed.  Rebuild the dataset with ``resume_from=path`` (and
    restore the model, e.g. with ``BackupAndRestore`` or your own checkpoint,
    passing ``initial_epoch``) to continue where training stopped.
    """

    def __init__(self, dataset, path: str, save_freq: Optional[int] = 100):
        super().__init__()
        self._stats = _stats_of(dataset)
        self._path, self._save_freq = path, save_freq
        self._consumed = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._consumed = 0

    def on_train_batch_end(self, batch, logs=None):
        self._consumed += 1
        if self._save_freq and self._consumed % self._save_freq == 0:
            self._stats.position(consumed_batches=self._consumed).save(self._path)

    def on_epoch_end(self, epoch, logs=None):
        self._stats.position(consumed_batches=self._consumed).save(self._path)
