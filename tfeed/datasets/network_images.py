"""``NetworkImages``: the seed's URL dataflow, same API, on tfeed's fetch engine.

The 2018 class downloaded one URL at a time with ``requests`` unless wrapped in
tensorpack's thread pool.  This one keeps its contract -- a subclass fills
``self.datapoints = [[url, label, ...], ...]``, ``get_data()`` yields
``[image, label, ...]`` with ``image`` a BGR uint8 ``[H, W, 3]`` array at its
original size -- but every pass runs on a :class:`tfeed.FetchEngine` (many
downloads in flight on one event loop) and decodes with OpenCV on a small
thread pool (``cv2.imdecode`` releases the GIL)::

    datapoints --groups of 16--> engine.submit --(window of URLs in flight)-->
        engine.collect --> cv2.imdecode (threads) --> [image, label, ...]

``get_data()`` keeps datapoint order; ``parallel(num_threads)`` yields in
completion order.  Failed URLs are skipped and counted in ``self.stats`` (a
:class:`tfeed.Stats` of the latest pass) unless ``on_error`` says otherwise.
"""

from __future__ import annotations

import collections
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional

import cv2
import numpy as np

from tfeed import errors
from tfeed.config import FetchConfig
from tfeed.fetching.python.engine import FetchEngine
from tfeed.errors import ErrorPolicy, resolve_policy
from tfeed.stats import Stats

GROUP_SIZE = 16
DECODE_THREADS = 4


def decode_bgr(body: bytes) -> Optional[np.ndarray]:
    """Image bytes to BGR uint8 ``[H, W, 3]`` as OpenCV reads them, or None.

    Formats this OpenCV build cannot read (GIF on some builds) go through
    ``tf.io.decode_image`` instead.
    """
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if image is not None:
        return image
    import tensorflow as tf

    try:
        rgb = tf.io.decode_image(body, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        return None
    return np.ascontiguousarray(rgb[..., ::-1])


class NetworkImages:
    """A list of ``[url, label, ...]`` datapoints read over HTTP.

    Subclass it as in 2018::

        class MyImages(NetworkImages):
            def __init__(self, shuffle=False):
                super().__init__(shuffle)
                self.datapoints = [["http://host/a.jpg", 0], ["http://host/b.jpg", 1]]

        for image, label in MyImages().get_data():   # BGR uint8, original size
            ...

    Args:
      shuffle: visit datapoints in a new random order on every pass.
      seed: seeds that order (``reset_state()`` restarts it).
      fetch_config: a :class:`tfeed.FetchConfig` (timeouts, retries...).
      on_error: ``"skip"`` (count in ``stats`` and go on), ``"raise"``
        (:class:`tfeed.FetchError`), or a callable receiving each
        :class:`tfeed.Failure`.
      window: URLs submitted ahead of the one being yielded by ``get_data()``.
    """

    class_names: Optional[List[str]] = None

    def __init__(self, shuffle: bool = False, *, seed: Optional[int] = None,
                 fetch_config: Optional[FetchConfig] = None, on_error: ErrorPolicy = "skip", window: int = 256):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        resolve_policy(on_error)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.fetch_config = fetch_config or FetchConfig()
        self.on_error = on_error
        self.window = window
        self.datapoints: List[list] = []
        self.stats = Stats()
        self.reset_state()

    # -- the dataflow contract -------------------------------------------------
    def reset_state(self) -> None:
        """Restart the shuffling RNG from ``seed`` (tensorpack called this once per process)."""
        self.rng = np.random.default_rng(self.seed)

    def size(self) -> int:
        return len(self.datapoints)

    def __len__(self) -> int:
        return self.size()

    def get_data(self) -> Iterator[list]:
        """One pass: ``[image, label, ...]`` per URL that downloads and decodes, in datapoint order."""
        return self._stream(self.fetch_config, ordered=True, window=self.window)

    def __iter__(self) -> Iterator[list]:
        return self.get_data()

    # -- the seed's combinators ---------------------------------------------------
    def partitioning(self, num_partition: int, partition_index: int = 0) -> "NetworkImages":
        """Keep every ``num_partition``-th datapoint starting at ``partition_index``
        (one machine's share); returns ``self``."""
        if num_partition < 1 or not 0 <= partition_index < num_partition:
            raise ValueError(f"need 0 <= partition_index < num_partition, got partition_index={partition_index}, "
                             f"num_partition={num_partition}")
        self.datapoints = self.datapoints[partition_index::num_partition]
        return self

    def parallel(self, num_threads: int, buffer_size: int = 200, strict: bool = False) -> "ParallelNetworkImages":
        """A dataflow yielding in completion order with ``num_threads``
        downloads in flight (they are coroutines, not threads: hundreds are
        cheap).  ``buffer_size``: URLs submitted ahead.  ``strict`` is accepted
        for compatibility: every datapoint is always produced at most once per
        pass."""
        del strict
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads!r}")
        return ParallelNetworkImages(self, num_threads, max(buffer_size, num_threads))

    def to_dataset(self, **kwargs):
        """A ``tf.data.Dataset`` of these datapoints via
        :func:`tfeed.image_dataset_from_urls` (``kwargs`` are its arguments;
        ``shuffle``, ``seed``, ``fetch_config``, ``on_error`` and
        ``class_names`` default to this object's)."""
        from tfeed.api import image_dataset_from_urls

        labelled = bool(self.datapoints) and all(len(dp) > 1 for dp in self.datapoints)
        pairs = [(dp[0], dp[1]) for dp in self.datapoints] if labelled else [dp[0] for dp in self.datapoints]
        kwargs.setdefault("shuffle", self.shuffle)
        kwargs.setdefault("fetch_config", self.fetch_config)
        kwargs.setdefault("on_error", self.on_error)
        if self.seed is not None:
            kwargs.setdefault("seed", self.seed)
        if not labelled:
            kwargs.setdefault("labels", None)
        elif self.class_names is not None:
            kwargs.setdefault("class_names", self.class_names)
        return image_dataset_from_urls(pairs, **kwargs)

    # -- the engine ---------------------------------------------------------------
    def _order(self) -> List[list]:
        points = list(self.datapoints)
        if self.shuffle:
            self.rng.shuffle(points)
        return points

    def _stream(self, config: FetchConfig, ordered: bool, window: int) -> Iterator[list]:
        self.stats = stats = Stats()
        return _pass(self._order(), config, stats, resolve_policy(self.on_error), ordered, window)


class ParallelNetworkImages:
    """What :meth:`NetworkImages.parallel` returns: the same datapoints,
    yielded as soon as each arrives, ``num_threads`` downloads in flight."""

    def __init__(self, source: NetworkImages, num_threads: int, buffer_size: int):
        self.source = source
        self.num_threads = num_threads
        self.buffer_size = buffer_size

    @property
    def stats(self) -> Stats:
        return self.source.stats

    def reset_state(self) -> None:
        self.source.reset_state()

    def size(self) -> int:
        return self.source.size()

    def __len__(self) -> int:
        return self.size()

    def get_data(self) -> Iterator[list]:
        config = self.source.fetch_config.replace(max_in_flight=self.num_threads)
        return self.source._stream(config, ordered=False, window=self.buffer_size)

    def __iter__(self) -> Iterator[list]:
        return self.get_data()


def _pass(datapoints: List[list], config: FetchConfig, stats: Stats, handle, ordered: bool,
          window: int) -> Iterator[list]:
    """Fetch every datapoint's URL (``window`` ahead), decode, yield ``[image, *rest]``.

    Each datapoint travels through the engine under its serial number as the
    label, so results in completion order find their datapoint again.
    """
    engine = FetchEngine(config, stats)
    run = engine.new_run()
    numbered = enumerate(datapoints)
    in_flight = {}
    tickets = collections.deque()
    decoding = collections.deque()

    def submit_more() -> None:
        while len(in_flight) < window:
            group = list(itertools.islice(numbered, min(GROUP_SIZE, window - len(in_flight))))
            if not group:
                return
            in_flight.update(group)
            urls = [str(dp[0]) for _, dp in group]
            tickets.append(engine.submit(run, urls, [serial for serial, _ in group], ordered))

    try:
        with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="tfeed-decode") as pool:
            submit_more()
            while tickets or decoding:
                if tickets:
                    for result in engine.collect(tickets.popleft()):
                        datapoint = in_flight.pop(result.label)
                        if result.failure is not None:
                            handle(result.failure)
                        else:
                            decoding.append((result.url, datapoint, pool.submit(decode_bgr, result.body)))
                    submit_more()
                while decoding and (len(decoding) > GROUP_SIZE or not tickets):
                    url, datapoint, future = decoding.popleft()
                    image = future.result()
                    if image is None:
                        handle(errors.Failure(url, errors.DECODE_ERROR, "OpenCV and TensorFlow cannot decode it"))
                        continue
                    stats.record_delivered([url])
                    yield [image, *datapoint[1:]]
        stats.finish_epoch()  # fetched but never delivered: counted as decode_error
    finally:
        engine.close()
