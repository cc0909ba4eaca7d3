"""Download one URL: attempts, retries, timeouts, size cap and sniffing.

:func:`download` is a coroutine that never raises for a bad URL: it returns a
:class:`Outcome` whose ``failure`` names the reason.  Run it on an event loop
with an :class:`aiohttp.ClientSession` (see :mod:`tfeed.fetching.python.engine`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import os
import random
import socket
import time
import urllib.parse
from typing import Callable, Optional

import aiohttp

from tfeed import contract, errors, safefs, urls
from tfeed.fetching import sniff
from tfeed.fetching.python.guard import blocked
from tfeed.config import FetchConfig

_CHUNK = 1 << 16


@dataclasses.dataclass
class Outcome:
    """Result of one URL: ``body`` (image bytes a graph decoder can read) or
    ``failure``; ``attempts`` tries were made (1 = no retry)."""

    body: Optional[bytes] = None
    failure: Optional[errors.Failure] = None
    attempts: int = 1
    overload: Optional["Overload"] = None  # set instead of body/failure when the host said it is overloaded
    latency: float = 0.0  # seconds of the last attempt (request to response end)


@dataclasses.dataclass(frozen=True)
class Overload:
    """The host is overloaded: ``status`` 429 or 503, or 0 for a refused, reset
    or timed-out connection; ``retry_after`` seconds if the host said so."""

    status: int
    retry_after: Optional[float]
    detail: str


@dataclasses.dataclass
class _Attempt:
    body: Optional[bytes] = None
    reason: Optional[str] = None
    detail: str = ""
    retryable: bool = False
    retry_after: Optional[float] = None
    overload_status: Optional[int] = None  # 429/503, or 0 for a refused/reset/timed-out connection
    connect_timed_out: bool = False


def backoff_delay(attempt: int, config: FetchConfig, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): exponential,
    capped at ``max_backoff``, with "equal jitter" (half fixed, half random)."""
    ceiling = contract.backoff_ceiling(attempt, config.backoff, config.max_backoff)
    fixed = ceiling * contract.BACKOFF_FIXED_SHARE
    return fixed + rng.uniform(0, ceiling - fixed)


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def download(session: aiohttp.ClientSession, url: str, config: FetchConfig,
                   rng: random.Random, *, stop_on_overload: Callable[[int], bool] = lambda status: False,
                   on_bytes: Optional[Callable[[int], None]] = None, transcode_cover=None,
                   connections=None) -> Outcome:
    """Fetch ``url`` within ``config.deadline`` seconds, retrying what is
    retryable, and check that the body is an image.

    ``stop_on_overload(status)``: whether an attempt that finds the host
    overloaded (``status`` 429 or 503, or 0 for a refused, reset or timed-out
    connection) ends the call with ``Outcome.overload`` instead of being
    retried: the caller's host limiter then decides when the URL goes again.

    ``on_bytes(n)``: called as body bytes arrive (a known Content-Length
    counts when the response starts), so the caller can count partial bodies
    against ``max_in_flight_bytes``.  ``transcode_cover``: the size a
    transcoded body is reduced to cover (:func:`tfeed.fetching.sniff.reduce_to_cover`).

    ``connections``: the request's :class:`~tfeed.fetching.limiter.RequestConnections`
    (or None): they set each attempt's connect timeout and hear which timed out.
    """
    refused = urls.refusal(url)
    if refused is not None:  # as the native op: never truncated at a NUL, never guessed at
        return Outcome(failure=errors.Failure(url, errors.INVALID_URL, refused))
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("http", "https") and scheme in config.schemes:
        fetch = _fetch_http(session, url, config, rng, stop_on_overload, on_bytes or _ignore, connections)
    elif scheme in ("", "file") and "file" in config.schemes:
        fetch = _read_local(url, config)
    elif scheme and scheme in config.schemes:
        fetch = _read_gfile(url, config)
    else:
        allowed = ", ".join(config.schemes)
        return Outcome(failure=errors.Failure(url, errors.INVALID_URL, f"scheme not in ({allowed})"))
    try:
        outcome = await asyncio.wait_for(fetch, config.deadline)
    except (TimeoutError, asyncio.TimeoutError):
        return Outcome(failure=errors.Failure(url, errors.TIMEOUT, f"deadline of {config.deadline}s passed"))
    if outcome.body is not None:
        outcome = await _check_image(url, outcome, config.max_pixels, transcode_cover)
    return outcome


def _ignore(nbytes: int) -> None:
    del nbytes


async def _fetch_http(session, url, config, rng, stop_on_overload, on_bytes, connections) -> Outcome:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.deadline
    attempts = 0
    while True:
        attempts += 1
        began = loop.time()
        connect = connections.connect_timeout(config.connect_timeout) if connections else config.connect_timeout
        attempt = await _attempt_http(session, url, config, on_bytes, connect)
        latency = loop.time() - began
        if attempt.connect_timed_out and connections is not None:
            connections.connect_missed()
        if attempt.body is not None:
            return Outcome(body=attempt.body, attempts=attempts, latency=latency)
        if attempt.overload_status is not None and stop_on_overload(attempt.overload_status):
            overload = Overload(attempt.overload_status, attempt.retry_after, attempt.detail)
            return Outcome(overload=overload, attempts=attempts, latency=latency)
        failure = errors.Failure(url, attempt.reason, attempt.detail)
        if not attempt.retryable or attempts > config.retries:
            return Outcome(failure=failure, attempts=attempts, latency=latency)
        delay = backoff_delay(attempts, config, rng)
        if attempt.retry_after is not None:
            delay = max(delay, attempt.retry_after)
        if loop.time() + delay >= deadline:
            return Outcome(failure=failure, attempts=attempts)
        await asyncio.sleep(delay)


async def _attempt_http(session, url, config, on_bytes, connect_timeout) -> _Attempt:
    timeout = aiohttp.ClientTimeout(total=None, connect=config.connect_timeout,
                                    sock_connect=connect_timeout, sock_read=config.read_timeout)
    try:
        async with session.get(url, timeout=timeout, max_redirects=config.max_redirects) as response:
            if response.status >= 400:
                status = response.status
                retryable = contract.is_retryable_status(status)
                return _Attempt(reason=errors.http_reason(status), detail=f"HTTP {status} {response.reason}",
                                retryable=retryable,
                                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                                overload_status=status if status in contract.OVERLOAD_STATUSES else None)
            robots = response.headers.getall(contract.OPT_OUT_HEADER, ())
            if config.respect_opt_out and any(map(contract.opts_out, robots)):
                return _Attempt(reason=errors.OPTED_OUT, detail=contract.OPT_OUT_DETAIL)
            return await _read_body(response, config, on_bytes)
    except aiohttp.ClientConnectorError as exc:
        return _connector_error(exc)
    except aiohttp.ServerDisconnectedError as exc:  # reset or closed before the response: the host shed us
        return _Attempt(reason=errors.CONNECTION, detail=f"{type(exc).__name__}: {exc}", retryable=True,
                        overload_status=0)
    except aiohttp.ConnectionTimeoutError as exc:
        return _Attempt(reason=errors.TIMEOUT, detail=str(exc) or "no connection within connect_timeout",
                        retryable=True, overload_status=0, connect_timed_out=True)
    except aiohttp.ClientPayloadError as exc:
        return _Attempt(reason=errors.TRUNCATED, detail=str(exc), retryable=True)
    except (TimeoutError, asyncio.TimeoutError) as exc:
        return _Attempt(reason=errors.TIMEOUT, detail=str(exc) or "no data within read_timeout", retryable=True)
    except aiohttp.TooManyRedirects:
        return _Attempt(reason=errors.TOO_MANY_REDIRECTS, detail=f"more than {config.max_redirects} redirects")
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError) as exc:
        return _Attempt(reason=errors.INVALID_URL, detail=str(exc) or type(exc).__name__)
    except (aiohttp.ClientError, OSError) as exc:
        return _Attempt(reason=errors.CONNECTION, detail=f"{type(exc).__name__}: {exc}", retryable=True)


def _connector_error(exc: aiohttp.ClientConnectorError) -> _Attempt:
    """The attempt of a request that opened no connection: blocked, TLS, DNS or connection."""
    denied = blocked(exc)
    if denied is not None:  # never retried: the address will not change its network
        return _Attempt(reason=errors.BLOCKED_ADDRESS, detail=str(denied.strerror))
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _Attempt(reason=errors.TLS, detail=str(exc))
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return _Attempt(reason=errors.TLS, detail=str(exc), retryable=True)
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(exc.os_error, socket.gaierror):
        return _Attempt(reason=errors.DNS, detail=str(exc), retryable=True)
    refused = isinstance(exc.os_error, (ConnectionRefusedError, ConnectionResetError))
    return _Attempt(reason=errors.CONNECTION, detail=str(exc), retryable=True, overload_status=0 if refused else None)


async def _read_body(response: aiohttp.ClientResponse, config: FetchConfig, on_bytes) -> _Attempt:
    length = response.content_length
    if length is not None and length > config.max_bytes:
        return _Attempt(reason=errors.TOO_LARGE, detail=f"Content-Length {length} > max_bytes {config.max_bytes}")
    if length is not None and "Content-Encoding" not in response.headers:
        on_bytes(length)
        return _Attempt(body=await response.read())
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        on_bytes(len(chunk))
        size += len(chunk)
        if size > config.max_bytes:
            return _Attempt(reason=errors.TOO_LARGE, detail=f"body exceeds max_bytes {config.max_bytes}")
        chunks.append(chunk)
    return _Attempt(body=b"".join(chunks))


async def _read_local(url: str, config: FetchConfig) -> Outcome:
    # bytes, as the native op sees them: a percent-encoded byte that is not UTF-8 stays that byte
    path = urllib.parse.unquote_to_bytes(urllib.parse.urlsplit(url).path) if url.startswith("file:") else os.fsencode(url)
    return await asyncio.get_running_loop().run_in_executor(None, _read_regular_file, url, path, config)


def _read_regular_file(url: str, path: bytes, config: FetchConfig) -> Outcome:
    """A local file: only a regular file (a FIFO or device is a read_error, its
    open never blocks), at most ``max_bytes`` (else too_large), and with
    ``config.file_root`` only one that resolves beneath it (else
    outside_file_root, never opened; see :func:`tfeed.safefs.open_beneath`)."""
    if b"\0" in path:  # percent-encoded: open() would stop at it and read another file
        return Outcome(failure=errors.Failure(url, errors.INVALID_URL, "NUL byte in the file path"))
    try:
        if config.file_root is not None:
            body = safefs.read_beneath(config.file_root, path, config.max_bytes)
        else:
            body = safefs.read_regular(path, config.max_bytes, follow=True)
    except safefs.OutsideRoot as exc:
        return Outcome(failure=errors.Failure(url, errors.OUTSIDE_FILE_ROOT, str(exc)))
    except OSError as exc:
        return Outcome(failure=errors.Failure(url, errors.READ_ERROR, f"{type(exc).__name__}: {exc}"))
    if body is None:
        return Outcome(failure=errors.Failure(url, errors.TOO_LARGE, f"file exceeds max_bytes {config.max_bytes}"))
    return Outcome(body=body)


async def _read_gfile(url: str, config: FetchConfig) -> Outcome:
    import tensorflow as tf

    return await asyncio.get_running_loop().run_in_executor(
        None, _read_file, url, url, tf.io.gfile.GFile, lambda p: tf.io.gfile.stat(p).length, config)


def _read_file(url, path, opener, size_of, config) -> Outcome:
    try:
        size = size_of(path)
        if size > config.max_bytes:
            return Outcome(failure=errors.Failure(url, errors.TOO_LARGE, f"{size} bytes > max_bytes {config.max_bytes}"))
        with opener(path, "rb") as handle:
            body = handle.read(config.max_bytes + 1)  # never more than the cap, whatever the size said
        if len(body) > config.max_bytes:
            return Outcome(failure=errors.Failure(url, errors.TOO_LARGE, f"file exceeds max_bytes {config.max_bytes}"))
        return Outcome(body=body)
    except Exception as exc:  # noqa: BLE001 - any storage error is a counted read_error
        return Outcome(failure=errors.Failure(url, errors.READ_ERROR, f"{type(exc).__name__}: {exc}"))


async def _check_image(url: str, outcome: Outcome, max_pixels: Optional[int], cover=None) -> Outcome:
    verdict = sniff.check(outcome.body, max_pixels)
    if verdict.reason is not None:
        return Outcome(failure=errors.Failure(url, verdict.reason, verdict.detail), attempts=outcome.attempts)
    if verdict.transcode is None:
        return outcome
    png = await asyncio.get_running_loop().run_in_executor(None, sniff.transcode_to_png, outcome.body, cover)
    if png is not None:
        return Outcome(body=png, attempts=outcome.attempts)
    return Outcome(failure=errors.Failure(url, errors.DECODE_ERROR, f"could not read {verdict.detail}"),
                   attempts=outcome.attempts)
