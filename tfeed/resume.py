"""Where an epoch stopped, so an interrupted run continues without repeats.

A :class:`Position` is the epoch number and the keys of the URLs already
*consumed* in it.  Because fast responses overtake slow ones, the consumed
URLs are a set, not a prefix; the source skips them when the dataset is
rebuilt with ``resume_from=``.

Guarantee: with the same source, ``seed`` and split/shard settings, the
resumed epoch yields every URL of that epoch that is not in the position
exactly once (subject to the usual failures), and later epochs are complete.
Batches produced but not yet consumed when the position was taken (the
prefetch buffer) are *not* in it, so they are served again: no example is
lost, none consumed twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np


def url_key(url: str) -> int:
    """A stable 64-bit key of ``url``."""
    return int.from_bytes(hashlib.blake2b(url.encode("utf-8"), digest_size=8).digest(), "little")


@dataclasses.dataclass(frozen=True)
class Position:
    """``epoch`` (0-based) and ``done``: uint64 keys of URLs consumed in it."""

    epoch: int
    done: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint64))

    def save(self, path: str) -> None:
        """Write atomically to ``path`` (an ``.npz`` file)."""
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, epoch=np.int64(self.epoch), done=np.asarray(self.done, np.uint64))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Position":
        with np.load(path) as data:
            return cls(int(data["epoch"]), data["done"].astype(np.uint64))

    def skip_set(self) -> set:
        return set(int(key) for key in self.done)
