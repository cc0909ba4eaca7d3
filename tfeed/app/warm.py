"""Fill a download cache ahead of training (img2dataset-style, resumable).

Downloads every URL of a source into a :class:`~tfeed.fetching.cache.DiskCache`
through the same engine as training, without decoding.  Interrupt it at any
time: a rerun answers what is already cached (or remembered as dead) from
disk and downloads only the rest.

Scale-out: N processes (or machines sharing the cache directory) fill one
cache from one list, each with ``shard=(i, N)``: process ``i`` takes the
``i``-th of every ``N`` URLs (the same rule as ``num_shards``/``shard_index``
of :func:`tfeed.image_dataset_from_urls`), so together they request each
URL once.  The cache is safe to share between processes.
"""

from __future__ import annotations

from typing import Optional, Tuple

from tfeed.fetching.cache import DiskCache
from tfeed.config import FetchConfig
from tfeed.fetching.stage import choose_fetch_stage
from tfeed.source.readers import pair_factory
from tfeed.source.generator import Selection, UrlGenerator, url_dataset
from tfeed.stats import Stats


def warm_cache(source, cache_dir, *, fetch_config: Optional[FetchConfig] = None, url_column: str = "url",
               progress: bool = True, max_bytes: Optional[int] = None, stats: Optional[Stats] = None,
               fetch_engine: str = "auto", shard: Tuple[int, int] = (0, 1)) -> dict:
    """Download ``source``'s URLs into ``cache_dir``; returns the stats snapshot
    (``fetched``, ``cache_hits``, ``failed``, ``failures`` by reason...).
    Pass ``stats`` to read the failed URLs afterwards.  ``fetch_engine`` as
    in :func:`tfeed.image_dataset_from_urls` (``"auto"``: native when it loads).
    ``shard``: ``(index, count)``: warm only this process's share of the URLs
    (ValueError unless ``0 <= index < count``)."""
    cache = cache_dir if isinstance(cache_dir, DiskCache) else DiskCache(cache_dir, max_bytes=max_bytes)
    stats = stats if stats is not None else Stats()
    factory = pair_factory(source, url_column=url_column)
    selection = Selection(num_shards=shard[1], shard_index=shard[0])
    generator = UrlGenerator(factory, selection, None, stats, shuffle=False, seed=0, shuffle_buffer_size=1)
    stage = choose_fetch_stage(fetch_engine, fetch_config or FetchConfig(), stats, 0, cache,
                               on_error="skip", deterministic=False)
    bodies = url_dataset(generator).apply(stage.apply).batch(64)
    bar = _bar(progress)
    try:
        for body, _, urls in bodies:
            stats.record_delivered(u.decode() for u in urls.numpy())
            if bar is not None:
                bar.update(int(urls.shape[0]))
                snap = stats.snapshot()
                bar.set_postfix(cached=snap["cache_hits"], failed=snap["failed"], refresh=False)
    finally:
        if bar is not None:
            bar.close()
        if stage.python_engine is not None:
            stage.python_engine.close()
    return stats.snapshot()


def _bar(progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc="warming cache", unit="img")
