"""The fetch stage: which engine downloads the URLs.

Both engines keep one contract (:mod:`tfeed.contract`): every URL
yields one ``(body, label, url)`` element or one counted failure reason.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import tensorflow as tf

from tfeed import kernels
from tfeed.config import FetchConfig
from tfeed.errors import ErrorPolicy
from tfeed.fetching.cache import DiskCache
from tfeed.fetching.native import NATIVE_SCHEMES, fetch_native
from tfeed.fetching.python.engine import FetchEngine
from tfeed.fetching.python.stage import fetch
from tfeed.stats import Stats

FETCH_ENGINES = ("auto", "native", "python")


@dataclasses.dataclass(frozen=True)
class FetchStage:
    """The chosen engine's ``Dataset -> Dataset`` stage.

    ``engine``: ``"native"`` or ``"python"``; ``python_engine`` the
    :class:`~tfeed.fetching.python.engine.FetchEngine` (kept alive with the
    dataset) or None.
    """

    apply: Callable[[tf.data.Dataset], tf.data.Dataset]
    engine: str
    python_engine: Optional[FetchEngine] = None


def choose_fetch_stage(choice: str, config: FetchConfig, stats: Stats, seed: int, cache: Optional[DiskCache], *,
                       on_error: ErrorPolicy, deterministic: bool,
                       transcode_cover: Optional[Tuple[int, int]] = None) -> FetchStage:
    """The fetch stage for ``choice`` (one of :data:`FETCH_ENGINES`).

    ``"auto"``: the native engine when its library loads and it reads every
    scheme in ``config.schemes``, else the Python engine.  ``"native"``
    raises ValueError for schemes it cannot read and RuntimeError when the
    library is unavailable.  ``transcode_cover``: the size transcoded
    formats are reduced to cover (see :func:`tfeed.fetching.sniff.reduce_to_cover`).
    """
    native_ok = {s.lower() for s in config.schemes} <= set(NATIVE_SCHEMES)
    if choice == "native" and not native_ok:
        raise ValueError(f"fetch_engine='native' cannot read schemes beyond {NATIVE_SCHEMES}; "
                         "use fetch_engine='python'")
    ops = kernels.load_fetch() if choice != "python" and native_ok else None
    if ops is None and choice == "native":
        raise RuntimeError("fetch_engine='native': the native fetch op is unavailable (see the warning above)")
    if ops is not None:
        return FetchStage(fetch_native(config, stats, on_error=on_error, deterministic=deterministic, ops=ops,
                                       cache=cache, transcode_cover=transcode_cover), "native")
    engine = FetchEngine(config, stats, seed=seed, cache=cache, transcode_cover=transcode_cover)
    return FetchStage(fetch(engine, on_error=on_error, deterministic=deterministic), "python", engine)
