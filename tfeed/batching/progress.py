"""Opt-in live progress: a tqdm bar fed by a dataset's :class:`~tfeed.stats.Stats`."""

from __future__ import annotations

import time
from typing import Optional

from tfeed.stats import Stats


class ProgressBar:
    """A tqdm bar per epoch showing images delivered, images/s and failures;
    once a host throttles, the throttle count and the host throttling most
    (``throttling="http://host:port w=3"``: its current window).

    ``ProgressBar(ds.stats)`` or ``image_dataset_from_urls(..., progress=True)``.
    ``total``: examples expected per epoch, if known.  Writes to stderr.
    """

    def __init__(self, stats: Stats, total: Optional[int] = None, desc: str = "tfeed", refresh_s: float = 0.5):
        try:
            import tqdm  # noqa: F401
        except ImportError:
            raise ImportError("progress bars need tqdm: pip install 'tfeed[progress]'") from None
        self._stats, self._total, self._desc, self._refresh_s = stats, total, desc, refresh_s
        self._bar = None
        self._last_postfix = 0.0
        stats.add_listener(self._on_event)

    def _on_event(self, event: str, value: int) -> None:
        if event == "delivered":
            if self._bar is None:
                from tqdm.auto import tqdm

                epoch = self._stats.snapshot()["epochs"] + 1
                self._bar = tqdm(total=self._total, desc=f"{self._desc} epoch {epoch}", unit="img", leave=True)
            self._bar.update(value)
            now = time.monotonic()
            if now - self._last_postfix >= self._refresh_s:
                self._last_postfix = now
                self._bar.set_postfix(self._postfix(), refresh=False)
        elif event == "epoch_end" and self._bar is not None:
            self._bar.set_postfix(self._postfix(), refresh=False)
            self._bar.close()
            self._bar = None

    def _postfix(self) -> dict:
        snap = self._stats.snapshot()
        postfix = {"failed": snap["failed"]}
        if snap["cache_hits"]:
            postfix["cached"] = snap["cache_hits"]
        if snap["throttled"]:
            postfix["throttled"] = snap["throttled"]
            worst = max(self._stats.hosts(1000), key=lambda row: row["throttles"], default=None)
            if worst is not None and worst["throttles"]:
                postfix["throttling"] = f"{worst['host']} w={worst['window']:g}"
        return postfix
