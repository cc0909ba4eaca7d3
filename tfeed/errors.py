"""Failure reasons, the failure value, and the error policy.

Every URL either yields exactly one example or is counted under exactly one
named reason.  Fetch failures travel as values (:class:`Failure`), never as
exceptions, until the error policy decides what to do with them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Union

# Failure reasons.  HTTP client errors are reported as ``http_<code>``
# (``http_404``, ``http_403``, ``http_410`` ...); all server errors as ``http_5xx``.
TIMEOUT = "timeout"
CONNECTION = "connection"
DNS = "dns"
TOO_LARGE = "too_large"  # body over max_bytes, or header over max_pixels
TRUNCATED = "truncated"
TOO_MANY_REDIRECTS = "too_many_redirects"
NOT_IMAGE = "not_image"
UNSUPPORTED_FORMAT = "unsupported_format"  # an image format no installed decoder reads (HEIC)
DECODE_ERROR = "decode_error"
INVALID_URL = "invalid_url"
INVALID_LABEL = "invalid_label"
READ_ERROR = "read_error"
HTTP_5XX = "http_5xx"
RATE_LIMITED = "rate_limited"  # the host answered only 429/503/refusals for longer than host_patience
OPTED_OUT = "opted_out"  # FetchConfig.respect_opt_out: the response carried X-Robots-Tag: noai / noimageai
BLOCKED_ADDRESS = "blocked_address"  # the address is in FetchConfig.deny_networks: never requested, never retried
OUTSIDE_FILE_ROOT = "outside_file_root"  # a local path resolving outside FetchConfig.file_root: never opened
TLS = "tls"  # the server's certificate is not trusted (not retried) or the TLS handshake failed


def http_reason(status: int) -> str:
    """Reason name for a final HTTP error status (``http_404``, ``http_5xx``...)."""
    return HTTP_5XX if status >= 500 else f"http_{status}"


@dataclasses.dataclass(frozen=True)
class Failure:
    """One URL that produced no example: where, why, and a human detail."""

    url: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.url} failed ({self.reason}){detail}"


class FetchError(RuntimeError):
    """Raised under ``on_error="raise"`` for the first URL that fails."""

    def __init__(self, failure: Failure):
        super().__init__(str(failure))
        self.failure = failure


ErrorPolicy = Union[str, Callable[[Failure], None]]
_POLICIES = ("skip", "raise")


def resolve_policy(on_error: ErrorPolicy) -> Callable[[Failure], None]:
    """Turn ``on_error`` into a handler called once per failed URL.

    ``"skip"``: count and continue.  ``"raise"``: raise :class:`FetchError`.
    A callable receives the :class:`Failure`; returning skips the URL, raising
    stops the epoch with that exception.
    """
    if callable(on_error):
        return on_error
    if on_error == "skip":
        return _skip
    if on_error == "raise":
        return _raise
    raise ValueError(f"on_error must be one of {_POLICIES} or a callable, got {on_error!r}")


def _skip(failure: Failure) -> None:
    del failure


def _raise(failure: Failure) -> None:
    raise FetchError(failure)
