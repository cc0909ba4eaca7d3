"""The candidates of ``bench_fetch.py``: tfeed and the ways people download images without it.

Each candidate is a function ``build(work) -> tf.data.Dataset`` of
``(images float32 [B, H, W, 3], labels int64 [B])`` batches over ``work.urls``
(the ceiling reads ``work.bodies`` instead).  Every peer downloads its own way
and then runs the *same* decode stage as the ceiling: ``tfeed.decode_image`` +
``tfeed.resize_image`` in ``map(num_parallel_calls=AUTOTUNE)``, ``batch``,
``prefetch(AUTOTUNE)`` -- so the rows differ only in how bytes arrive.

A candidate that cannot run here (a missing optional package, no native op)
raises :class:`Unavailable` with the reason.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import tensorflow as tf

import tfeed
from tfeed import FetchConfig, decode_image, resize_image

import common

REQUEST_TIMEOUT = 60.0  # seconds; only a safety net, the local servers always answer
POOL_THREADS = 32


class Unavailable(RuntimeError):
    """The candidate cannot run in this environment; the message says why."""


@dataclasses.dataclass
class Work:
    """What a candidate runs over."""

    urls: List[str]
    labels: List[int]
    image_size: Sequence[int] = (224, 224)
    batch_size: int = 32
    bodies: Optional[List[bytes]] = None  # the ceiling's bytes, already in memory
    options: dict = dataclasses.field(default_factory=dict)  # candidate-specific settings (the grid's)


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    build: Callable[[Work], tf.data.Dataset]
    summary: str
    needs_bodies: bool = False


# -- the shared decode stage ---------------------------------------------------


def decode_batches(dataset: tf.data.Dataset, work: Work) -> tf.data.Dataset:
    """``(body, label)`` -> batches of ``(image, label)``, exactly as the ceiling does it."""

    def decode_one(body, label):
        return resize_image(decode_image(body), work.image_size), label

    return (dataset.map(decode_one, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(work.batch_size)
            .prefetch(tf.data.AUTOTUNE))


_BODY_LABEL = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64))


def _get(session_or_module, url: str) -> bytes:
    response = session_or_module.get(url, timeout=REQUEST_TIMEOUT)
    response.raise_for_status()
    return response.content


# -- candidates ------------------------------------------------------------------


def ceiling(work: Work) -> tf.data.Dataset:
    """The decode ceiling: the same decode + resize over bytes already in memory."""
    if work.bodies is None:
        raise ValueError("the ceiling needs work.bodies")
    bodies = tf.constant(work.bodies, dtype=tf.string)
    return decode_batches(tf.data.Dataset.from_tensor_slices((bodies, tf.constant(work.labels, tf.int64))), work)


def naive(work: Work) -> tf.data.Dataset:
    """``from_generator`` whose generator calls ``requests.get`` for one URL after another."""
    import requests

    def generate():
        for url, label in zip(work.urls, work.labels):
            yield _get(requests, url), label

    return decode_batches(tf.data.Dataset.from_generator(generate, output_signature=_BODY_LABEL), work)


def tutorial(work: Work) -> tf.data.Dataset:
    """The tf.data tutorial's pattern: ``map(py_function(requests.get), num_parallel_calls=AUTOTUNE)``."""
    import requests

    def download(url):
        return _get(requests, url.numpy().decode())

    def fetch_one(url, label):
        body = tf.py_function(download, [url], tf.string)
        body.set_shape([])
        return body, label

    pairs = tf.data.Dataset.from_tensor_slices((work.urls, tf.constant(work.labels, tf.int64)))
    return decode_batches(pairs.map(fetch_one, num_parallel_calls=tf.data.AUTOTUNE), work)


def threadpool32(work: Work) -> tf.data.Dataset:
    """The seed's design: 32 download threads (a ``requests.Session`` each) feeding
    ``from_generator``; results leave in completion order, at most 2 x 32 ahead."""
    session = common.thread_sessions()
    threads = work.options.get("threads", POOL_THREADS)

    def download(url):
        return _get(session(), url)

    def generate():
        pairs = iter(zip(work.urls, work.labels))
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            pending = {}
            while True:
                for url, label in pairs:
                    pending[pool.submit(download, url)] = label
                    if len(pending) >= 2 * threads:
                        break
                if not pending:
                    return
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    yield future.result(), pending.pop(future)

    return decode_batches(tf.data.Dataset.from_generator(generate, output_signature=_BODY_LABEL), work)


def tensorpack(work: Work) -> tf.data.Dataset:
    """The seed's own engine: tensorpack 0.11 ``MultiThreadMapData(strict=True)`` of 32
    threads (a ``requests.Session`` each) feeding ``from_generator``."""
    try:
        from tensorpack.dataflow import DataFromList, MultiThreadMapData
    except Exception as exc:  # noqa: BLE001 - any import failure makes the row unavailable
        raise Unavailable(f"tensorpack does not import: {type(exc).__name__}: {exc} "
                          "(pip install tensorpack==0.11)") from exc
    session = common.thread_sessions()

    def download(pair):
        url, label = pair
        return _get(session(), url), label

    # One dataflow for the dataset's lifetime, iterated once per epoch, as tensorpack
    # intends; its threads are daemons and stay parked between epochs.
    source = DataFromList([[url, label] for url, label in zip(work.urls, work.labels)], shuffle=False)
    flow = MultiThreadMapData(source, num_thread=POOL_THREADS, map_func=download, strict=True)
    started = []

    def generate():
        if not started:
            flow.reset_state()
            started.append(True)
        yield from flow

    return decode_batches(tf.data.Dataset.from_generator(generate, output_signature=_BODY_LABEL), work)


def tfeed_default(work: Work) -> tf.data.Dataset:
    """``tfeed.image_dataset_from_urls`` with default settings (``work.options`` may set
    ``max_in_flight`` and ``num_parallel_calls`` for the grid, ``ca_file`` for https)."""
    options = dict(work.options)
    kwargs = {}
    config = FetchConfig(ca_file=options.pop("ca_file", None))
    if "max_in_flight" in options:
        config = config.replace(max_in_flight=int(options.pop("max_in_flight")))
    if "num_parallel_calls" in options:
        calls = options.pop("num_parallel_calls")
        kwargs["num_parallel_calls"] = tf.data.AUTOTUNE if calls in (None, "AUTOTUNE") else int(calls)
    if options:
        raise ValueError(f"unknown tfeed options: {sorted(options)}")
    return _tfeed(work, fetch_config=config, **kwargs)


def tfeed_fixed(work: Work) -> tf.data.Dataset:
    """tfeed's defaults with fixed windows (``FetchConfig(adaptive=False)``): every host gets
    ``connections_per_host`` open requests from the start, as before per-host adaptive windows."""
    return _tfeed(work, fetch_config=FetchConfig(adaptive=False))


def tfeed_python(work: Work) -> tf.data.Dataset:
    """``image_dataset_from_urls`` with the Python (aiohttp) engine instead of the default native one."""
    return _tfeed(work, fetch_engine="python")


def _tfeed(work: Work, **kwargs) -> tf.data.Dataset:
    return tfeed.image_dataset_from_urls(list(zip(work.urls, work.labels)), image_size=tuple(work.image_size),
                                         batch_size=work.batch_size, **kwargs)


CANDIDATES: Dict[str, Candidate] = {c.name: c for c in (
    Candidate("ceiling", ceiling, "decode + resize of bytes already in memory", needs_bodies=True),
    Candidate("naive", naive, "from_generator, sequential requests.get"),
    Candidate("tutorial", tutorial, "map(py_function(requests.get), AUTOTUNE)"),
    Candidate("threadpool32", threadpool32, "32 threads x requests.Session -> from_generator"),
    Candidate("tensorpack", tensorpack, "tensorpack 0.11 MultiThreadMapData(32, strict=True)"),
    Candidate("tfeed", tfeed_default, "tfeed.image_dataset_from_urls, defaults (native engine when built)"),
    Candidate("tfeed-python", tfeed_python, "tfeed with fetch_engine='python' (aiohttp)"),
    Candidate("tfeed-fixed", tfeed_fixed, "tfeed with fixed windows, FetchConfig(adaptive=False)"),
)}

PEERS = ("naive", "tutorial", "threadpool32", "tensorpack")
