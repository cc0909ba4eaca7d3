"""The peers of ``bench_origins.py``: ways people download a URL list without tfeed.

Each peer takes a job (``urls``, ``image_size`` (h, w), ``time_cap`` s, ``ca_file``) and
returns ``{"delivered_ids", "failures", "attempts", "first_s", "wall_s", "cut"}``: the indices
of the URLs whose image arrived and decoded, failures by tfeed's reason names
(``http_5xx``, ``http_429``, ``timeout``, ``connection``, ``decode_error``...), HTTP requests
sent, seconds to the first image and to the end, and whether the time cap stopped it
(URLs not started by then count as neither). Each peer decodes what it downloads with
``cv2.imdecode`` + ``cv2.resize`` to ``image_size``, so it does the work tfeed does.

* ``sequential``: one ``requests.Session``, one URL after another;
* ``threads32``: 32 threads with a ``requests.Session`` each;
* ``tensorpack``: tensorpack 0.11 ``MultiThreadMapData(32 threads, strict=True)``, the
  seed's engine, one attempt per URL as the seed made.

``sequential`` and ``threads32`` are polite clients: they retry 408/429/5xx, timeouts and
connection errors up to ``TRIES`` attempts, waiting ``Retry-After`` when the answer has
one, else exponential backoff with full jitter.

Nothing here imports TensorFlow or tfeed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import email.utils
import random
import threading
import time

import common

CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 20.0  # seconds, as tfeed's FetchConfig defaults
TRIES = 10  # attempts per URL of the polite peers
BACKOFF, MAX_BACKOFF = 0.1, 5.0  # seconds: first backoff, cap
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
THREADS = 32


class Unavailable(RuntimeError):
    """The peer cannot run here; the message says why."""


def reason_for(status: int) -> str:
    """tfeed's reason name for an HTTP error status."""
    return "http_5xx" if status >= 500 else f"http_{status}"


def retry_after_s(value):
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def decode(body: bytes, size) -> bool:
    """Decode and resize like tfeed (to ``size`` = (h, w)); False when the bytes are no image."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return False
    cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return True


class _Tally:
    """Thread-safe results of one peer run."""

    def __init__(self):
        self.lock = threading.Lock()
        self.delivered, self.failures, self.attempts, self.first = [], collections.Counter(), 0, None
        self.start = time.perf_counter()

    def add(self, index, reason, attempts):
        with self.lock:
            self.attempts += attempts
            if reason is None:
                self.delivered.append(index)
                if self.first is None:
                    self.first = time.perf_counter() - self.start
            elif reason != "cut":
                self.failures[reason] += 1

    def result(self, cut):
        return {"delivered_ids": sorted(self.delivered), "failures": dict(self.failures), "attempts": self.attempts,
                "first_s": self.first, "wall_s": time.perf_counter() - self.start, "cut": cut}


def fetch(session, url, *, verify, tries, stop_at):
    """GET ``url``: ``(body or None, reason or None, attempts)``; a polite client when ``tries`` > 1."""
    import requests

    reason, attempts = "cut", 0
    for attempt in range(tries):
        if time.monotonic() >= stop_at:
            break
        attempts += 1
        wait = None
        try:
            response = session.get(url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), verify=verify)
        except requests.exceptions.SSLError:
            return None, "tls", attempts
        except requests.exceptions.Timeout:
            reason = "timeout"
        except requests.exceptions.RequestException:
            reason = "connection"
        else:
            if response.status_code == 200:
                return response.content, None, attempts
            reason = reason_for(response.status_code)
            if response.status_code not in RETRY_STATUSES:
                return None, reason, attempts
            wait = retry_after_s(response.headers.get("Retry-After"))
        if attempt + 1 < tries:
            wait = wait if wait is not None else random.uniform(0, min(MAX_BACKOFF, BACKOFF * 2 ** attempt))
            time.sleep(max(0.0, min(wait, stop_at - time.monotonic())))
    return None, reason, attempts


def _verify(job):
    return job.get("ca_file") or True


def _one(session, index, url, job, tries, stop_at, tally):
    body, reason, attempts = fetch(session, url, verify=_verify(job), tries=tries, stop_at=stop_at)
    if body is not None and not decode(body, job["image_size"]):
        reason = "decode_error"
    tally.add(index, reason, attempts)


def sequential(job: dict) -> dict:
    """One ``requests.Session``, one URL after another, polite retries, decode inline."""
    import requests

    tally, stop_at = _Tally(), time.monotonic() + job["time_cap"]
    with requests.Session() as session:
        for index, url in enumerate(job["urls"]):
            if time.monotonic() >= stop_at:
                return tally.result(cut=True)
            _one(session, index, url, job, TRIES, stop_at, tally)
    return tally.result(cut=len(tally.delivered) + sum(tally.failures.values()) < len(job["urls"]))


def threads32(job: dict) -> dict:
    """``THREADS`` threads, a ``requests.Session`` each, polite retries, decode in the thread."""
    tally, stop_at = _Tally(), time.monotonic() + job["time_cap"]
    session = common.thread_sessions()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(_one_in_thread, session, i, url, job, stop_at, tally) for i, url in enumerate(job["urls"])]
        for future in futures:
            future.result()
    done = len(tally.delivered) + sum(tally.failures.values())
    return tally.result(cut=done < len(job["urls"]))


def _one_in_thread(session, index, url, job, stop_at, tally):
    if time.monotonic() >= stop_at:
        return
    _one(session(), index, url, job, TRIES, stop_at, tally)


def tensorpack(job: dict) -> dict:
    """tensorpack 0.11 ``MultiThreadMapData(THREADS, strict=True)`` over the URLs; one attempt each."""
    try:
        from tensorpack.dataflow import DataFromList, MultiThreadMapData
    except Exception as exc:  # noqa: BLE001 - any import failure makes the row unavailable
        raise Unavailable(f"tensorpack does not import: {type(exc).__name__}: {exc} "
                          "(pip install tensorpack==0.11)") from exc
    tally, stop_at = _Tally(), time.monotonic() + job["time_cap"]
    session = common.thread_sessions()

    def download(point):
        # strict mode forbids returning None: a failure travels as its reason
        index, url = point
        body, reason, attempts = fetch(session(), url, verify=_verify(job), tries=1, stop_at=stop_at)
        if body is not None and not decode(body, job["image_size"]):
            reason = "decode_error"
        return [index, reason, attempts]

    urls = job["urls"]
    flow = MultiThreadMapData(DataFromList([[i, url] for i, url in enumerate(urls)], shuffle=False),
                              num_thread=THREADS, map_func=download, strict=True, buffer_size=min(200, len(urls)))
    flow.reset_state()
    for index, reason, attempts in flow:
        tally.add(index, reason, attempts)
    done = len(tally.delivered) + sum(tally.failures.values())
    result = tally.result(cut=done < len(urls))
    # The flow's __del__ joins each parked thread for up to 5 s: signal them to stop and keep the
    # flow referenced, so a process that runs several candidates does not wait minutes.
    for thread in getattr(flow, "_threads", []):
        thread.stop()
    _FINISHED.append(flow)
    return result


_FINISHED = []


PEERS = {"sequential": sequential, "threads32": threads32, "tensorpack": tensorpack}
